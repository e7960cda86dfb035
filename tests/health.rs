//! Active health checks through the real proxy, every engine: an upstream that stops
//! listening is marked down by its checks before any client is sent to it, and comes back
//! once it passes again.

#[macro_use]
mod matrix;
mod support;

use support::{proxy_config, wait_until, Dir, Ringd, Tagged, Through};

every_engine! {
    #[test]
    fn a_dead_upstream_is_skipped_before_any_client_reaches_it() {
        let (a, b) = (Tagged::start(b'A'), Tagged::start(b'B'));
        let dir = Dir::new(&format!("health-{}", ENGINE.name()));
        let extra = "check-interval = \"50ms\"\ncheck-timeout = \"500ms\"\ncheck-fall = 3\n\
                     check-rise = 2\nupstream-down-for = \"60s\"";
        let ups = [a.addr.to_string(), b.addr.to_string()];
        let file = dir.write("ringd.toml", &proxy_config(ENGINE.name(), extra, &ups));
        let ringd = Ringd::start(&["--config", &file]);
        let series = |name: &str, u: &Tagged| format!("{name}{{upstream=\"{}\"}}", u.addr);
        let up = |u: &Tagged| ringd.metric(&series("ringd_upstream_up", u));
        let passed = format!("ringd_upstream_checks_total{{upstream=\"{}\",result=\"passed\"}}", a.addr);
        wait_until("checks passing", || ringd.metric(&passed).is_some_and(|n| n >= 2.0));
        a.stop();
        wait_until("A marked down by its checks", || up(&a) == Some(0.0));
        for _ in 0..40 {
            assert_eq!(Through::open(ringd.addr).map(|t| t.tag), Some(b'B'));
        }
        let failures = series("ringd_upstream_connect_failures_total", &a);
        assert_eq!(ringd.metric(&failures), Some(0.0), "a client was sent to A");
        let back = Tagged::on(a.addr, b'A');
        wait_until("A back after its checks pass", || up(&a) == Some(1.0));
        wait_until("a client on A again", || {
            Through::open(ringd.addr).map(|t| t.tag) == Some(b'A')
        });
        drop(back);
        assert_eq!(ringd.stop(), 0);
    }
}

#[test]
fn a_reload_that_turns_the_checks_off_lifts_their_marks() {
    let (a, b) = (Tagged::start(b'A'), Tagged::start(b'B'));
    let dir = Dir::new("health-off");
    let ups = [a.addr.to_string(), b.addr.to_string()];
    let checked = "check-interval = \"50ms\"\ncheck-fall = 2\nupstream-down-for = \"60s\"";
    let file = dir.write("ringd.toml", &proxy_config("epoll", checked, &ups));
    let ringd = Ringd::start(&["--config", &file]);
    let up = format!("ringd_upstream_up{{upstream=\"{}\"}}", a.addr);
    a.stop();
    wait_until("A marked down by its checks", || {
        ringd.metric(&up) == Some(0.0)
    });
    let unchecked = "upstream-down-for = \"60s\"";
    dir.write("ringd.toml", &proxy_config("epoll", unchecked, &ups));
    assert!(ringd.reload().contains("reloaded"));
    wait_until("A's check mark lifted", || ringd.metric(&up) == Some(1.0));
    assert_eq!(ringd.stop(), 0);
}
