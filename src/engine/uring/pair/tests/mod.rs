//! A randomized test of [`UPair`] against a simulated kernel and two simulated peers, the
//! client and the upstream: connects that succeed, are refused or hang until the connect
//! timeout cancels them; a PROXY header; bytes both ways in random pieces; FINs in either
//! order; resets on either side; peers that read slowly or not at all (backpressure); a
//! small buffer ring that runs dry (ENOBUFS); recvs capped at their room; sends that
//! complete short; cancels that race with data; time that passes (connect and idle
//! timeouts). Whatever the order, each direction's bytes must arrive whole and in order
//! before the FIN passed on, nothing may be submitted to a socket after its close or twice
//! at once, both sockets must be closed exactly once (the other one with a reset when one
//! was reset), each direction must hold no more than its bound, and every buffer must be
//! back at the end.

mod sim;

use super::*;
use crate::engine::uring::fake_pool::FakePool;
use crate::proxy::Balance;
use rand::Rng;
use sim::*;
use std::net::SocketAddr;
use std::time::Duration;

/// What a pair's events need from the simulation.
fn env<'a>(sim: &'a mut Sim, subs: &'a mut Vec<Submit>) -> Env<'a, FakePool> {
    Env {
        now: sim.now,
        limits: &sim.limits,
        pool: &mut sim.pool,
        stats: &sim.stats,
        submit: subs,
    }
}

/// What the worker does with the pair's submissions. A connect needs a socket first, which
/// may fail (no descriptor), and then the connect is not submitted.
fn submit(sim: &mut Sim, pair: &mut UPair, subs: &mut Vec<Submit>) {
    let mut i = 0;
    while i < subs.len() {
        if subs[i] != Submit::Connect || !sim.rng.gen_bool(0.03) {
            i += 1;
            continue;
        }
        subs.remove(i);
        sim.seen.local_failure = true;
        pair.upstream_socket = sim.attempts > 0;
        let err = std::io::Error::from_raw_os_error(libc::EMFILE);
        pair.on_local_failure(&err, &mut env(sim, subs));
    }
    sim.take(subs);
}

/// Runs one scenario to its end and checks it; returns the simulation and the pair.
fn run(seed: u64) -> (Sim, UPair) {
    let mut sim = Sim::new(seed);
    let addrs: Vec<SocketAddr> = (1..=sim.outcomes.len())
        .map(|i| SocketAddr::from(([127, 0, 0, 1], i as u16)))
        .collect();
    // Never marked down, so each connect goes to the next upstream not tried yet.
    let ups = Upstreams::new(addrs, Balance::RoundRobin, Duration::ZERO);
    let mut cursor = 0;
    let connect_ms = sim.rng.gen_range(200..=1000);
    let relay = Relay::new(sim.now, sim.now + connect_ms);
    let mut pair = UPair::new(relay, sim.announce, 0, None);
    let mut up = Upstream {
        ups: &ups,
        sni: None,
        cursor: &mut cursor,
        connect_ms,
    };
    let subs = &mut Vec::new();
    pair.start(&mut env(&mut sim, subs), &mut up);
    submit(&mut sim, &mut pair, subs);
    let mut closes_done = 0;
    for _ in 0..50_000 {
        if pair.teardown == Teardown::Done {
            break;
        }
        if sim.rng.gen_bool(0.05) {
            sim.now += sim.rng.gen_range(1..200);
            pair.on_time(&mut env(&mut sim, subs));
            submit(&mut sim, &mut pair, subs);
        }
        if pair.socks.iter().any(|s| s.starved) && sim.pool.available() > 0 {
            pair.on_buffers(&mut env(&mut sim, subs));
            submit(&mut sim, &mut pair, subs);
        }
        let Some(cqe) = sim.event() else {
            // Nothing can complete now: only time moves the pair on.
            sim.now += 500;
            pair.on_time(&mut env(&mut sim, subs));
            submit(&mut sim, &mut pair, subs);
            continue;
        };
        deliver(&mut sim, &mut pair, &mut up, subs, cqe, &mut closes_done);
        submit(&mut sim, &mut pair, subs);
        check_bounds(&mut sim, &pair);
    }
    assert_eq!(
        pair.teardown,
        Teardown::Done,
        "seed {seed}: the pair never closed ({pair:?})"
    );
    pair.release(&ups);
    check_end(seed, &sim, &pair, &ups);
    (sim, pair)
}

/// Hands the completion `cqe` to the pair.
fn deliver(
    sim: &mut Sim,
    pair: &mut UPair,
    up: &mut Upstream,
    subs: &mut Vec<Submit>,
    cqe: Cqe,
    closes_done: &mut usize,
) {
    let open = pair.relay.phase() != Phase::Closed;
    let failed = |sim: &mut Sim, side: Side, res: i32| {
        if open && res < 0 && res != -libc::ECANCELED && res != -libc::ENOBUFS {
            sim.seen.error_from.get_or_insert(side);
        }
    };
    let ups = up.ups;
    match cqe {
        Cqe::Recv {
            side,
            res,
            more,
            bid,
        } => {
            failed(sim, side, res);
            if !more {
                sim.peer(side).recv_out = false;
            }
            pair.on_recv(side, res, more, bid, &mut env(sim, subs), up);
        }
        Cqe::Send(side, res) => {
            failed(sim, side, res);
            sim.peer(side).send_out = false;
            let buf = sim.peer(side).returned.take().expect("the send's bytes");
            pair.on_send(side, res, buf, &mut env(sim, subs), ups);
        }
        Cqe::Fin(side, res) => {
            failed(sim, side, res);
            sim.peer(side).fin_out = false;
            pair.on_fin(side, res, &mut env(sim, subs));
        }
        Cqe::Connect(res) => {
            sim.connect_out = false;
            pair.on_connect(res, &mut env(sim, subs), up);
        }
        Cqe::Cancel => pair.on_cancel(&mut env(sim, subs)),
        Cqe::Close(_) => {
            *closes_done += 1;
            let done = pair.on_close();
            let expected = 1 + usize::from(pair.upstream_socket);
            assert_eq!(
                done,
                *closes_done == expected,
                "seed {}: done after {closes_done} of {expected} closes",
                sim.seed
            );
        }
    }
}

/// Each direction holds no more than its bound, give or take the last buffer a recv filled,
/// and the PROXY header on the client's.
fn check_bounds(sim: &mut Sim, pair: &UPair) {
    for (side, extra) in [(Side::Client, sim.header.len()), (Side::Upstream, 0)] {
        let bound = sim.limits.max_pending + sim.pool.size + extra;
        sim.seen.paused[side.index()] |= pair.relay.queued(side) > sim.limits.max_pending;
        assert!(
            pair.relay.queued(side) <= bound,
            "seed {}: {side:?} holds {} bytes, over {bound}",
            sim.seed,
            pair.relay.queued(side)
        );
    }
}

/// What must hold once both sockets are closed.
fn check_end(seed: u64, sim: &Sim, pair: &UPair, ups: &Upstreams) {
    assert!(!pair.busy(), "seed {seed}: operations in flight at the end");
    assert!(
        sim.posted.is_empty()
            && sim.late.is_empty()
            && sim.cancels.is_empty()
            && sim.connect_live.is_none(),
        "seed {seed}: completions still to come at the end"
    );
    assert_eq!(
        sim.pool.available(),
        sim.pool.entries(),
        "seed {seed}: buffers not returned"
    );
    for u in ups.list() {
        let active = u.stats.active.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(active, 0, "seed {seed}: an upstream still counts the pair");
    }
    let upstream_socket = sim.attempts > 0;
    for side in [Side::Client, Side::Upstream] {
        let p = &sim.peers[side.index()];
        assert!(
            !(p.recv_live || p.send_live.is_some() || p.fin_live),
            "seed {seed}: {side:?} has operations in the kernel at the end"
        );
        let want = u32::from(side == Side::Client || upstream_socket);
        assert_eq!(
            p.closes, want,
            "seed {seed}: {side:?} closed {} times",
            p.closes
        );
        if let Some(at) = p.fin_at {
            // The FIN passed on follows everything the other peer sent before its own.
            let other = &sim.peers[side.other().index()];
            assert!(
                other.eof_delivered,
                "seed {seed}: FIN to {side:?} out of nowhere"
            );
            assert_eq!(
                p.got[..at],
                sim.expected(side)[..],
                "seed {seed}: FIN to {side:?} before its bytes were whole"
            );
            assert_eq!(p.got.len(), at, "seed {seed}: bytes after the FIN");
        }
    }
    let [client, upstream] = &sim.peers;
    if client.fin_at.is_some() && upstream.fin_at.is_some() {
        assert_eq!(pair.relay.close_reason(), CloseReason::Peer);
        assert!(
            client.closed_reset == Some(false) && upstream.closed_reset == Some(false),
            "seed {seed}: a graceful end closed with a reset"
        );
    }
    if let Some(side) = sim.seen.error_from {
        let other = &sim.peers[side.other().index()];
        if other.closes > 0 {
            assert_eq!(
                other.closed_reset,
                Some(true),
                "seed {seed}: {side:?} was reset, {:?} closed without a reset",
                side.other()
            );
        }
    }
}

#[test]
fn relays_both_ways_whole_and_in_order_and_closes_once() {
    #[derive(Debug, Default)]
    struct Counts {
        graceful: u32,
        half_close_client_first: u32,
        half_close_upstream_first: u32,
        reset: u32,
        backpressure: u32,
        starved: u32,
        refused: u32,
        connect_timeout: u32,
        no_upstream: u32,
        local_failure: u32,
        late_cancel: u32,
        idle: u32,
        header: u32,
    }
    let mut c = Counts::default();
    for seed in 0..3000 {
        let (sim, pair) = run(seed);
        let s = &sim.seen;
        let [client, upstream] = &sim.peers;
        c.graceful += u32::from(client.fin_at.is_some() && upstream.fin_at.is_some());
        if s.half_open_traffic {
            match s.first_fin {
                Some(Side::Client) => c.half_close_client_first += 1,
                _ => c.half_close_upstream_first += 1,
            }
        }
        c.reset += u32::from(s.error_from.is_some());
        // Over the bound because the peer it goes to reads slowly or not at all.
        let held_back = |side: Side| {
            s.paused[side.index()] && sim.peers[side.other().index()].reads != Reads::Normal
        };
        c.backpressure += u32::from(held_back(Side::Client) || held_back(Side::Upstream));
        c.starved += u32::from(s.starved);
        c.refused += u32::from(s.refused);
        c.connect_timeout += u32::from(s.connect_timeout);
        c.local_failure += u32::from(s.local_failure);
        c.late_cancel += u32::from(s.late_cancel);
        c.header += u32::from(!sim.header.is_empty() && upstream.fin_at.is_some());
        match pair.relay.close_reason() {
            CloseReason::NoUpstream => c.no_upstream += 1,
            CloseReason::Idle => c.idle += 1,
            _ => {}
        }
    }
    eprintln!("{c:?}");
    // The scenarios explored what they should, not only early ends (about twice these).
    assert!(c.graceful > 500, "{c:?}");
    assert!(c.half_close_client_first > 300, "{c:?}");
    assert!(c.half_close_upstream_first > 300, "{c:?}");
    assert!(c.reset > 250 && c.backpressure > 400, "{c:?}");
    assert!(c.starved > 1000 && c.idle > 400, "{c:?}");
    assert!(c.refused > 200 && c.connect_timeout > 200, "{c:?}");
    assert!(c.no_upstream > 150 && c.local_failure > 40, "{c:?}");
    assert!(c.header > 250 && c.late_cancel > 100, "{c:?}");
}
