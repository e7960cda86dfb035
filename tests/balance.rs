//! Weighted balancing through the real proxy: weights 1:3 split connections 1:3, backups
//! take over only when every primary is down, `max-conns` sends the next connection
//! elsewhere or refuses it (counted) when no upstream has room.

mod support;

use support::{proxy_config, wait_until, Dir, Ringd, Tagged, Through};

/// One connection through `proxy`: the tag it reached, closed with a reset (no TIME_WAIT
/// left behind for thousands of them).
fn one(proxy: std::net::SocketAddr) -> Option<u8> {
    let t = Through::open(proxy)?;
    socket2::SockRef::from(&t.stream)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
    Some(t.tag)
}

#[test]
fn weights_one_to_three_split_connections_one_to_three() {
    let (a, b) = (Tagged::start(b'A'), Tagged::start(b'B'));
    let dir = Dir::new("balance-weights");
    let ups = [
        format!("{},weight=1", a.addr),
        format!("{},weight=3", b.addr),
    ];
    let file = dir.write("ringd.toml", &proxy_config("uring", "", &ups));
    let ringd = Ringd::start(&["--config", &file]);
    let mut counts = [0u32; 2];
    for _ in 0..4000 {
        counts[usize::from(one(ringd.addr).expect("an upstream") - b'A')] += 1;
    }
    let ratio = f64::from(counts[1]) / f64::from(counts[0]);
    assert!((ratio / 3.0 - 1.0).abs() <= 0.05, "{counts:?}");
    assert_eq!(ringd.stop(), 0);
}

#[test]
fn backups_take_over_only_when_every_primary_is_down() {
    let (p1, p2, k) = (
        Tagged::start(b'1'),
        Tagged::start(b'2'),
        Tagged::start(b'K'),
    );
    let dir = Dir::new("balance-backup");
    let ups = [
        p1.addr.to_string(),
        format!("{},backup", k.addr),
        p2.addr.to_string(),
    ];
    let extra = "upstream-down-for = \"300ms\"";
    let file = dir.write("ringd.toml", &proxy_config("uring", extra, &ups));
    let ringd = Ringd::start(&["--config", &file]);
    let tags = |n: usize| {
        (0..n)
            .map(|_| one(ringd.addr).expect("an upstream"))
            .collect::<Vec<_>>()
    };
    assert!(tags(50).iter().all(|&t| t != b'K'), "primaries up");
    p1.stop();
    assert!(tags(50).iter().all(|&t| t == b'2'), "one primary left");
    p2.stop();
    assert!(tags(50).iter().all(|&t| t == b'K'), "every primary down");
    let back = Tagged::on(p1.addr, b'1');
    wait_until("the primary back", || one(ringd.addr) == Some(b'1'));
    assert!(
        tags(20).iter().all(|&t| t == b'1'),
        "the backup steps aside"
    );
    drop(back);
    assert_eq!(ringd.stop(), 0);
}

#[test]
fn max_conns_sends_elsewhere_then_refuses() {
    let (a, b) = (Tagged::start(b'A'), Tagged::start(b'B'));
    let dir = Dir::new("balance-max");
    let ups = [
        format!("{},max-conns=2", a.addr),
        format!("{},max-conns=1", b.addr),
    ];
    let file = dir.write("ringd.toml", &proxy_config("uring", "", &ups));
    let ringd = Ringd::start(&["--config", &file]);
    let mut held: Vec<Through> = (0..3)
        .map(|_| Through::open(ringd.addr).expect("room left"))
        .collect();
    let mut tags: Vec<u8> = held.iter().map(|t| t.tag).collect();
    tags.sort_unstable();
    assert_eq!(tags, b"AAB");
    assert!(Through::open(ringd.addr).is_none(), "no upstream has room");
    assert_eq!(ringd.metric("ringd_upstream_refused_total"), Some(1.0));
    let i = held.iter().position(|t| t.tag == b'A').unwrap();
    drop(held.remove(i));
    wait_until("the place given back", || {
        ringd.metric(&format!(
            "ringd_upstream_connections_active{{upstream=\"{}\"}}",
            a.addr
        )) == Some(1.0)
    });
    assert_eq!(Through::open(ringd.addr).map(|t| t.tag), Some(b'A'));
    assert_eq!(ringd.stop(), 0);
}
