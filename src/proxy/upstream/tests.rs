//! Unit tests of the upstream choice: balancing, weights, backups, limits and health.

use super::*;

fn three(balance: Balance) -> Upstreams {
    let addrs = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"];
    Upstreams::new(
        addrs.iter().map(|a| a.parse().unwrap()).collect(),
        balance,
        Duration::from_secs(60),
    )
}

#[test]
fn round_robin_skips_down_and_tried() {
    let u = three(Balance::RoundRobin);
    let mut cur = 0;
    assert_eq!(u.pick(&mut cur, 0), Some(0));
    assert_eq!(u.pick(&mut cur, 0), Some(1));
    assert_eq!(u.pick(&mut cur, 0), Some(2));
    assert_eq!(u.pick(&mut cur, 0), Some(0));
    u.connect_failed(1);
    assert!(!u.is_up(1));
    assert_eq!(u.get(1).stats.marked_down.load(Ordering::Relaxed), 1);
    u.connect_failed(1);
    assert_eq!(
        u.get(1).stats.marked_down.load(Ordering::Relaxed),
        1,
        "already down"
    );
    assert_eq!(u.get(1).stats.failed_connects.load(Ordering::Relaxed), 2);
    assert_eq!(u.pick(&mut cur, 0), Some(2));
    assert_eq!(u.pick(&mut cur, 0b001), Some(2), "0 was tried");
    assert_eq!(u.pick(&mut cur, 0b101), None, "0 tried, 1 down, 2 tried");
}

#[test]
fn least_conn_takes_the_least_busy() {
    let u = three(Balance::LeastConn);
    let mut cur = 0;
    u.connected(0);
    u.connected(0);
    u.connected(1);
    assert_eq!(u.pick(&mut cur, 0), Some(2));
    u.connected(2);
    u.connected(2);
    assert_eq!(u.pick(&mut cur, 0), Some(1));
    u.released(0);
    u.released(0);
    assert_eq!(u.pick(&mut cur, 0), Some(0));
}

#[test]
fn down_ends_after_its_time() {
    let u = Upstreams::new(
        vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ],
        Balance::RoundRobin,
        Duration::from_millis(30),
    );
    u.connect_failed(0);
    assert_eq!(u.pick(&mut 0, 0), Some(1));
    assert_eq!(u.pick(&mut 0, 0b10), None, "0 down while 1 is up");
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(u.pick(&mut 0, 0), Some(0));
}

#[test]
fn every_upstream_down_tries_them_anyway() {
    for balance in [Balance::RoundRobin, Balance::LeastConn] {
        let u = three(balance);
        for i in 0..3 {
            u.connect_failed(i);
        }
        assert!((0..3).all(|i| !u.is_up(i)));
        let mut cur = 0;
        assert_eq!(u.pick(&mut cur, 0), Some(0), "{balance:?}");
        assert_eq!(u.pick(&mut cur, 0b001), Some(1), "{balance:?}");
        assert_eq!(u.pick(&mut cur, 0b011), Some(2), "{balance:?}");
        assert_eq!(u.pick(&mut cur, 0b111), None, "{balance:?}: all tried");
    }
    // One down of one: the only upstream is still tried.
    let u = Upstreams::new(
        vec!["127.0.0.1:1".parse().unwrap()],
        Balance::RoundRobin,
        Duration::from_secs(60),
    );
    u.connect_failed(0);
    assert_eq!(u.pick(&mut 0, 0), Some(0));
}

fn spec(port: u16, weight: u32, backup: bool, max: u64) -> UpstreamSpec {
    UpstreamSpec {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        weight,
        backup,
        max_connections: max,
    }
}

#[test]
fn smooth_order_interleaves_by_weight() {
    assert_eq!(
        smooth_order(&[(0, 5), (1, 1), (2, 1)]),
        [0, 0, 1, 0, 2, 0, 0]
    );
    assert_eq!(smooth_order(&[(0, 1), (1, 3)]), [1, 0, 1, 1]);
    assert!(smooth_order(&[]).is_empty());
}

#[test]
fn round_robin_follows_the_weights() {
    let u = Upstreams::with_specs(
        vec![spec(1, 1, false, 0), spec(2, 3, false, 0)],
        Balance::RoundRobin,
        Duration::from_secs(60),
    );
    let mut cur = 0;
    let mut counts = [0; 2];
    for _ in 0..400 {
        counts[u.pick(&mut cur, 0).unwrap()] += 1;
    }
    assert_eq!(counts, [100, 300]);
}

#[test]
fn least_conn_weighs_the_load() {
    let u = Upstreams::with_specs(
        vec![spec(1, 1, false, 0), spec(2, 3, false, 0)],
        Balance::LeastConn,
        Duration::from_secs(60),
    );
    let mut cur = 0;
    for _ in 0..8 {
        let i = u.pick(&mut cur, 0).unwrap();
        u.connected(i);
    }
    let active = |i: usize| u.get(i).stats.active.load(Ordering::Relaxed);
    assert_eq!((active(0), active(1)), (2, 6));
}

#[test]
fn backups_only_when_every_primary_is_down() {
    for balance in [Balance::RoundRobin, Balance::LeastConn] {
        let u = Upstreams::with_specs(
            vec![
                spec(1, 1, false, 0),
                spec(2, 1, true, 0),
                spec(3, 1, false, 0),
            ],
            balance,
            Duration::from_secs(60),
        );
        let mut cur = 0;
        for _ in 0..6 {
            assert_ne!(
                u.pick(&mut cur, 0),
                Some(1),
                "{balance:?}: primaries are up"
            );
        }
        u.connect_failed(0);
        assert_eq!(u.pick(&mut cur, 0), Some(2), "{balance:?}");
        assert!(u.set_checked_down(2, true));
        assert_eq!(
            u.pick(&mut cur, 0),
            Some(1),
            "{balance:?}: every primary is down"
        );
        assert!(u.set_checked_down(2, false));
        assert_eq!(u.pick(&mut cur, 0), Some(2), "{balance:?}");
    }
}

#[test]
fn checked_down_is_never_picked_and_full_ones_are_skipped() {
    let u = Upstreams::with_specs(
        vec![spec(1, 1, false, 1), spec(2, 1, false, 0)],
        Balance::RoundRobin,
        Duration::from_secs(60),
    );
    u.set_checked_down(1, true);
    let mut cur = 0;
    assert_eq!(u.pick(&mut cur, 0), Some(0));
    u.connected(0);
    assert_eq!(
        u.pick(&mut cur, 0),
        None,
        "0 is at its max-conns, 1 is down"
    );
    assert_eq!(u.refused(), 1);
    u.set_checked_down(0, true);
    u.released(0);
    assert_eq!(
        u.pick(&mut cur, 0),
        None,
        "checks down are not tried anyway"
    );
}

#[test]
fn a_successor_keeps_slots_and_counters() {
    let old = Upstreams::with_specs(
        vec![spec(1, 1, false, 0), spec(2, 1, false, 0)],
        Balance::RoundRobin,
        Duration::from_secs(60),
    );
    old.connected(1);
    let next = Upstreams::with_specs(
        vec![spec(3, 1, false, 0), spec(2, 2, false, 0)],
        Balance::LeastConn,
        Duration::from_secs(60),
    )
    .succeed(&old)
    .unwrap();
    assert_eq!(next.member_slots(), [2, 1]);
    assert_eq!(next.get(1).stats.active.load(Ordering::Relaxed), 1);
    assert_eq!(
        next.list().len(),
        3,
        "the removed upstream's counters remain"
    );
    let mut cur = 0;
    assert_eq!(next.pick(&mut cur, 0), Some(2), "least loaded");
    next.released(1);
    assert_eq!(old.get(1).stats.active.load(Ordering::Relaxed), 0);
}
