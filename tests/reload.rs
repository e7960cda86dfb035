//! SIGHUP reloads of `--config` with the real binary, every engine: the upstream set changed
//! three times under a steady stream of connections (none fails, new ones follow the new
//! set, open ones stay on their upstream), a file that does not check or a change that needs
//! new sockets leaves the running configuration serving, a new `idle-timeout` applies to new
//! connections.

#[macro_use]
mod matrix;
mod support;

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{proxy_config, wait_until, Dir, Ringd, Tagged, Through};

/// Connections made by the client loop: (phase when it started, phase when it ended, tag
/// reached). Phase `2k - 1`: reload `k` is on its way; `2k`: it is in force.
type Seen = Arc<Mutex<Vec<(u64, u64, u8)>>>;

/// Connects through `proxy` in a loop until `stop`, each connection one round trip; counts
/// the ones that fail.
fn client_loop(
    proxy: std::net::SocketAddr,
    epoch: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    seen: Seen,
    failed: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let e = epoch.load(Ordering::SeqCst);
            let ok = Through::open(proxy).and_then(|mut t| t.round_trip(b"ping").then_some(t.tag));
            match ok {
                Some(tag) => seen
                    .lock()
                    .unwrap()
                    .push((e, epoch.load(Ordering::SeqCst), tag)),
                None => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
}

/// Waits until the client loop has made `n` more connections.
fn more(seen: &Seen, n: usize) {
    let start = seen.lock().unwrap().len();
    wait_until("connections through the proxy", || {
        seen.lock().unwrap().len() >= start + n
    });
}

every_engine! {
    #[test]
    fn reloads_under_load_change_the_upstream_set() {
        let ups: Vec<Tagged> = (b'A'..=b'D').map(Tagged::start).collect();
        let addr = |i: usize| ups[i].addr.to_string();
        let dir = Dir::new(&format!("reload-load-{}", ENGINE.name()));
        let sets = [
            vec![addr(0), addr(1), addr(2)],
            vec![addr(1), addr(2)],
            vec![addr(1), addr(2), addr(3)],
            vec![format!("{},weight=3", addr(1)), addr(2), addr(3)],
        ];
        let file = dir.write("ringd.toml", &proxy_config(ENGINE.name(), "", &sets[0]));
        let ringd = Ringd::start(&["--config", &file]);
        // Connections opened before any reload, one per upstream of the first set at least.
        let mut old: Vec<Through> = (0..6).map(|_| Through::open(ringd.addr).unwrap()).collect();
        assert!(old.iter().any(|t| t.tag == b'A'));
        let (epoch, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let seen: Seen = Arc::default();
        let failed = Arc::new(AtomicU64::new(0));
        let client = client_loop(ringd.addr, epoch.clone(), stop.clone(), seen.clone(), failed.clone());
        more(&seen, 50);
        for (k, set) in sets.iter().enumerate().skip(1) {
            dir.write("ringd.toml", &proxy_config(ENGINE.name(), "", set));
            epoch.store(2 * k as u64 - 1, Ordering::SeqCst);
            let line = ringd.reload();
            assert!(line.contains("reloaded"), "{line}");
            epoch.store(2 * k as u64, Ordering::SeqCst);
            more(&seen, 200);
        }
        stop.store(true, Ordering::Relaxed);
        client.join().unwrap();
        assert_eq!(failed.load(Ordering::Relaxed), 0, "connections failed during reloads");
        let seen = seen.lock().unwrap();
        // Connections that began and ended while reload `k` was in force.
        let tags = |k: u64| {
            seen.iter()
                .filter(move |(a, b, _)| *a == 2 * k && *b == 2 * k)
                .map(|(_, _, t)| *t)
        };
        let after_first = seen.iter().filter(|(a, _, _)| *a >= 2).map(|(_, _, t)| *t);
        assert!(after_first.clone().count() >= 400);
        assert!(after_first.into_iter().all(|t| t != b'A'), "A was removed");
        assert!(tags(1).all(|t| t != b'D'), "D was not added yet");
        assert!(tags(2).any(|t| t == b'D'), "D was added");
        let count = |t: u8| tags(3).filter(|&x| x == t).count();
        assert!(count(b'B') > count(b'C') + count(b'D'), "B weighs 3 of 5");
        for t in &mut old {
            assert!(t.round_trip(b"still there"), "an open connection was cut");
        }
        assert!(old.iter().any(|t| t.tag == b'A'), "and kept its upstream");
        assert_eq!(ringd.metric("ringd_config_reloads_total{result=\"ok\"}"), Some(3.0));
        assert_eq!(ringd.stop(), 0);
    }

    #[test]
    fn a_file_that_does_not_check_leaves_the_old_configuration() {
        let (a, b) = (Tagged::start(b'A'), Tagged::start(b'B'));
        let dir = Dir::new(&format!("reload-bad-{}", ENGINE.name()));
        let good = proxy_config(ENGINE.name(), "", &[a.addr.to_string()]);
        let file = dir.write("ringd.toml", &good);
        let ringd = Ringd::start(&["--config", &file]);
        let sha = |r: &Ringd| {
            let text = support::scrape(r.metrics.unwrap());
            text.lines().find(|l| l.starts_with("ringd_config_info")).map(str::to_string)
        };
        let loaded = sha(&ringd).expect("ringd_config_info");
        let bad = proxy_config(ENGINE.name(), "idle-timout = \"1s\"", &[b.addr.to_string()]);
        dir.write("ringd.toml", &bad);
        let line = ringd.reload();
        assert!(line.contains("refused") && line.contains("did you mean idle-timeout"), "{line}");
        let moved = good.replace("127.0.0.1:0\"\nmetrics", "127.0.0.2:0\"\nmetrics")
            + "idle-timeout = \"9s\"\n";
        dir.write("ringd.toml", &moved);
        let line = ringd.reload();
        assert!(line.contains("listen") && line.contains("SIGUSR2"), "{line}");
        assert_eq!(Through::open(ringd.addr).unwrap().tag, b'A');
        assert_eq!(ringd.metric("ringd_config_reloads_total{result=\"failed\"}"), Some(2.0));
        assert_eq!(ringd.metric("ringd_config_reloads_total{result=\"ok\"}"), Some(0.0));
        assert_eq!(sha(&ringd).unwrap(), loaded, "the file in force is the first one");
        assert_eq!(ringd.stop(), 0);
    }

    #[test]
    fn a_new_idle_timeout_applies_to_new_connections() {
        let dir = Dir::new(&format!("reload-idle-{}", ENGINE.name()));
        let text = |idle: &str| {
            format!(
                "listen = \"127.0.0.1:0\"\nengine = \"{}\"\nthreads = 1\nidle-timeout = \"{idle}\"\n",
                ENGINE.name()
            )
        };
        let file = dir.write("ringd.toml", &text("60s"));
        let ringd = Ringd::start(&["--config", &file]);
        dir.write("ringd.toml", &text("200ms"));
        assert!(ringd.reload().contains("reloaded"));
        let mut c = std::net::TcpStream::connect(ringd.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(c.read(&mut b).unwrap(), 0, "closed for idleness");
        assert_eq!(ringd.stop(), 0);
    }
}

#[test]
fn sighup_without_a_file_is_a_logged_line() {
    let ringd = Ringd::start(&["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
    let line = ringd.reload();
    assert!(line.contains("without --config"), "{line}");
    let mut c = std::net::TcpStream::connect(ringd.addr).unwrap();
    std::io::Write::write_all(&mut c, b"x").unwrap();
    let mut b = [0u8; 1];
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"x", "still serving");
    assert_eq!(
        ringd.metric("ringd_config_reloads_total{result=\"failed\"}"),
        Some(0.0)
    );
    assert_eq!(ringd.stop(), 0);
}
