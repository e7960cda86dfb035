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

/// A connection to upstream `i` opened: the place a pick takes, then the connect.
fn hold(u: &Upstreams, i: usize) {
    u.get(i).stats.active.fetch_add(1, Ordering::Relaxed);
    u.connected(i);
}

/// A connect to upstream `i` (with the place a pick took) failed.
fn fail(u: &Upstreams, i: usize) {
    u.get(i).stats.active.fetch_add(1, Ordering::Relaxed);
    u.connect_failed(i);
}

#[test]
fn round_robin_skips_down_and_tried() {
    let u = three(Balance::RoundRobin);
    let mut cur = 0;
    assert_eq!(u.pick(&mut cur, 0), Some(0));
    assert_eq!(u.pick(&mut cur, 0), Some(1));
    assert_eq!(u.pick(&mut cur, 0), Some(2));
    assert_eq!(u.pick(&mut cur, 0), Some(0));
    fail(&u, 1);
    assert!(!u.is_up(1));
    assert_eq!(u.get(1).stats.marked_down.load(Ordering::Relaxed), 1);
    fail(&u, 1);
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
    hold(&u, 0);
    hold(&u, 0);
    hold(&u, 1);
    assert_eq!(u.pick(&mut cur, 0), Some(2));
    hold(&u, 2);
    hold(&u, 2);
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
    fail(&u, 0);
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
            fail(&u, i);
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
    fail(&u, 0);
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
        fail(&u, 0);
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
    hold(&u, 0);
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
    hold(&old, 1);
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

#[test]
fn picks_take_their_place_before_any_connect_completes() {
    let u = Upstreams::with_specs(
        vec![spec(1, 1, false, 2), spec(2, 1, false, 0)],
        Balance::LeastConn,
        Duration::ZERO,
    );
    let mut cur = 0;
    // Clients arriving together: no connect has completed when the next is picked.
    let picks: Vec<usize> = (0..10).filter_map(|_| u.pick(&mut cur, 0b10)).collect();
    assert_eq!(
        picks,
        [0, 0],
        "max-conns 2 holds while the connects are in flight"
    );
    u.connect_failed(0);
    assert_eq!(
        u.pick(&mut cur, 0b10),
        Some(0),
        "a failed connect gives its place back"
    );
    u.released(0);
    u.released(0);
    assert_eq!(u.get(0).stats.active.load(Ordering::Relaxed), 0);
    // Least connections sees the connects in flight too.
    let spread: Vec<usize> = (0..4).filter_map(|_| u.pick(&mut cur, 0)).collect();
    assert_eq!(spread.iter().filter(|&&i| i == 1).count(), 2, "{spread:?}");
}

#[test]
fn a_successor_that_does_not_fit_fills_no_slot() {
    let first: Vec<UpstreamSpec> = (1..=62).map(|p| spec(p, 1, false, 0)).collect();
    let old = Upstreams::with_specs(first, Balance::RoundRobin, Duration::from_secs(60));
    let more: Vec<UpstreamSpec> = (100..110).map(|p| spec(p, 1, false, 0)).collect();
    let next = Upstreams::with_specs(more, Balance::RoundRobin, Duration::from_secs(60));
    assert!(
        next.succeed(&old).is_err(),
        "10 new addresses do not fit beside 62"
    );
    assert_eq!(old.list().len(), 62, "a refused successor takes no slot");
    let two: Vec<UpstreamSpec> = (100..102).map(|p| spec(p, 1, false, 0)).collect();
    let next = Upstreams::with_specs(two, Balance::RoundRobin, Duration::from_secs(60));
    assert_eq!(next.succeed(&old).unwrap().member_slots(), [62, 63]);
}
