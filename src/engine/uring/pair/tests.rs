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

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::connection::{Limits, Millis};
use crate::proxy::Balance;

/// A small buffer ring shared by both sockets, so that it runs dry often.
struct FakePool {
    size: usize,
    data: Vec<Vec<u8>>,
    /// In the ring, in the order the kernel takes them.
    ring: VecDeque<u16>,
    /// Filled by the kernel and not yet given back.
    out: HashSet<u16>,
}

impl FakePool {
    fn new(n: u16, size: usize) -> Self {
        FakePool {
            size,
            data: vec![vec![0; size]; n as usize],
            ring: (0..n).collect(),
            out: HashSet::new(),
        }
    }

    /// The kernel fills a buffer; `None` when the ring is empty.
    fn fill(&mut self, bytes: &[u8]) -> Option<u16> {
        let bid = self.ring.pop_front()?;
        self.data[bid as usize][..bytes.len()].copy_from_slice(bytes);
        self.out.insert(bid);
        Some(bid)
    }
}

impl Pool for FakePool {
    fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        assert!(self.out.contains(&bid), "reading buffer {bid} not ours");
        &self.data[bid as usize][..len]
    }
    fn taken(&mut self, bid: u16) {
        assert!(self.out.contains(&bid), "took buffer {bid} twice");
    }
    fn give(&mut self, bid: u16) {
        assert!(self.out.remove(&bid), "gave back buffer {bid} not out");
        self.ring.push_back(bid);
    }
    fn available(&self) -> usize {
        self.ring.len()
    }
    fn entries(&self) -> usize {
        self.data.len()
    }
}

/// A completion the simulated kernel will post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cqe {
    Recv {
        side: Side,
        res: i32,
        more: bool,
        bid: Option<u16>,
    },
    Send(Side, i32),
    Fin(Side, i32),
    Connect(i32),
    Cancel,
    Close(Side),
}

/// How a peer reads what the pair sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// Sends to it complete as often as anything else.
    Normal,
    /// Sends to it complete rarely (the window is mostly closed).
    Slow,
    /// Sends to it never complete (only a cancel or its reset ends them).
    Never,
}

/// How a connect attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Refused,
    /// No answer: only the connect timeout's cancel ends it.
    Hangs,
}

/// One peer and what the pair has in flight on its socket.
#[derive(Debug)]
struct Peer {
    /// What the peer sends, and how much of it the pair has received.
    input: Vec<u8>,
    delivered: usize,
    /// The peer sends its FIN after its input; the pair has seen it.
    fin: bool,
    eof_delivered: bool,
    /// The peer resets once the pair has received this much of its input.
    reset_after: Option<usize>,
    reset: bool,
    reads: Reads,
    /// Operations the kernel can still complete.
    recv_live: bool,
    /// Bytes the live recv may still deliver before it ends by itself.
    recv_room: usize,
    send_live: Option<(*const u8, u32, bool)>,
    fin_live: bool,
    /// Operations whose last completion the pair has not been handed yet.
    recv_out: bool,
    send_out: bool,
    fin_out: bool,
    /// Closes submitted, and whether the last was a reset.
    closes: u32,
    closed_reset: Option<bool>,
    /// What the pair sent to this peer, and how much of it when the FIN arrived.
    got: Vec<u8>,
    fin_at: Option<usize>,
}

impl Peer {
    fn new(rng: &mut StdRng) -> Self {
        let input: Vec<u8> = (0..rng.gen_range(0..1200)).map(|_| rng.gen()).collect();
        let reset_after = rng.gen_bool(0.12).then(|| rng.gen_range(0..=input.len()));
        let reads = match rng.gen_range(0..100) {
            0..=74 => Reads::Normal,
            75..=94 => Reads::Slow,
            _ => Reads::Never,
        };
        Peer {
            input,
            delivered: 0,
            fin: rng.gen_bool(0.8),
            eof_delivered: false,
            reset_after,
            reset: false,
            reads,
            recv_live: false,
            recv_room: 0,
            send_live: None,
            fin_live: false,
            recv_out: false,
            send_out: false,
            fin_out: false,
            closes: 0,
            closed_reset: None,
            got: Vec::new(),
            fin_at: None,
        }
    }

    /// The recv has something to deliver: bytes, the FIN or the reset.
    fn has_input(&self) -> bool {
        self.reset || self.delivered < self.input.len() || (self.fin && !self.eof_delivered)
    }
}

/// What a scenario went through, for the counts that show the test explores.
#[derive(Debug, Default)]
struct Seen {
    /// `paused[side]`: the direction from `side` went over its bound, so `side` was not
    /// read until it drained.
    paused: [bool; 2],
    starved: bool,
    refused: bool,
    connect_timeout: bool,
    local_failure: bool,
    /// The side whose peer failed (reset) while the pair was not yet closed.
    error_from: Option<Side>,
    /// The first FIN passed on went to this side.
    first_fin: Option<Side>,
    /// Bytes went one way after the FIN had gone the other way.
    half_open_traffic: bool,
    /// A cancelled operation completed after the cancel.
    late_cancel: bool,
}

/// The simulated kernel and both peers of one pair.
struct Sim {
    seed: u64,
    rng: StdRng,
    pool: FakePool,
    limits: Limits,
    stats: WorkerStats,
    now: Millis,
    /// `peers[side]`.
    peers: [Peer; 2],
    header: Vec<u8>,
    /// Each connect attempt's end, in the order of the attempts.
    outcomes: Vec<Outcome>,
    /// Upstream sockets made (connects submitted to the kernel).
    attempts: usize,
    connect_live: Option<Outcome>,
    connect_out: bool,
    /// The upstream peer accepted a connection.
    accepted: bool,
    cancels: VecDeque<Submit>,
    /// Completions posted, in order (those of cancelled operations before the cancel's).
    posted: VecDeque<Cqe>,
    /// Completions of cancelled operations that come in any order after the cancel's.
    late: Vec<Cqe>,
    seen: Seen,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let pool = FakePool::new(rng.gen_range(1..=6), rng.gen_range(8..=64));
        let max_pending = rng.gen_range(64..=512);
        let idle = rng.gen_range(1500..=4000);
        let header = match rng.gen_bool(0.3) {
            true => (0..rng.gen_range(8..=60)).map(|_| rng.gen()).collect(),
            false => Vec::new(),
        };
        let outcomes = (0..rng.gen_range(1..=3))
            .map(|_| match rng.gen_range(0..100) {
                0..=69 => Outcome::Accepted,
                70..=84 => Outcome::Refused,
                _ => Outcome::Hangs,
            })
            .collect();
        let peers = [Peer::new(&mut rng), Peer::new(&mut rng)];
        Sim {
            pool,
            limits: Limits::for_tests(idle, 300, max_pending),
            stats: WorkerStats::default(),
            now: 1,
            peers,
            header,
            outcomes,
            attempts: 0,
            connect_live: None,
            connect_out: false,
            accepted: false,
            cancels: VecDeque::new(),
            posted: VecDeque::new(),
            late: Vec::new(),
            seen: Seen::default(),
            seed,
            rng,
        }
    }

    fn peer(&mut self, side: Side) -> &mut Peer {
        &mut self.peers[side.index()]
    }

    /// What `side`'s peer should receive in all: the other peer's input, after the PROXY
    /// header for the upstream.
    fn expected(&self, side: Side) -> Vec<u8> {
        let mut v = match side {
            Side::Upstream => self.header.clone(),
            Side::Client => Vec::new(),
        };
        v.extend_from_slice(&self.peers[side.other().index()].input);
        v
    }

    /// Takes what the pair submitted, checking it never asks for two of a kind at once on
    /// a socket, or for anything on a socket after its close.
    fn take(&mut self, subs: &mut Vec<Submit>) {
        let seed = self.seed;
        for s in subs.drain(..) {
            let side = match s {
                Submit::Recv { side, .. }
                | Submit::Send { side, .. }
                | Submit::Fin(side)
                | Submit::CancelRecv(side)
                | Submit::CancelAll(side)
                | Submit::Close { side, .. } => side,
                Submit::Connect | Submit::CancelConnect => Side::Upstream,
            };
            let p = &mut self.peers[side.index()];
            assert_eq!(p.closes, 0, "seed {seed}: {s:?} after the close");
            match s {
                Submit::Recv { room, .. } => {
                    assert!(!p.recv_out, "seed {seed}: two recvs on {side:?}");
                    p.recv_live = true;
                    p.recv_out = true;
                    p.recv_room = room.max(1);
                }
                Submit::Send { ptr, len, fin, .. } => {
                    assert!(
                        !p.send_out && !p.fin_out,
                        "seed {seed}: a send beside another or a FIN on {side:?}"
                    );
                    assert!(p.fin_at.is_none(), "seed {seed}: send after the FIN");
                    assert!(len > 0, "seed {seed}: empty send");
                    p.send_live = Some((ptr, len, fin));
                    p.send_out = true;
                    p.fin_out = fin;
                }
                Submit::Fin(_) => {
                    assert!(
                        !p.send_out && !p.fin_out && p.fin_at.is_none(),
                        "seed {seed}: a FIN beside a send or another FIN on {side:?}"
                    );
                    p.fin_live = true;
                    p.fin_out = true;
                }
                Submit::CancelConnect => {
                    self.seen.connect_timeout = true;
                    self.cancels.push_back(s);
                }
                Submit::CancelRecv(_) | Submit::CancelAll(_) => self.cancels.push_back(s),
                Submit::Connect => {
                    assert!(!self.connect_out, "seed {seed}: two connects");
                    let outcome = self.outcomes.get(self.attempts).copied();
                    let outcome = outcome.expect("no more connects than upstreams");
                    self.attempts += 1;
                    self.connect_live = Some(outcome);
                    self.connect_out = true;
                }
                Submit::Close { reset, .. } => {
                    let connect = side == Side::Upstream && self.connect_out;
                    assert!(
                        !(p.recv_out || p.send_out || p.fin_out || connect),
                        "seed {seed}: {side:?} closed with operations in flight"
                    );
                    p.closes += 1;
                    p.closed_reset = Some(reset);
                    self.posted.push_back(Cqe::Close(side));
                }
            }
        }
    }

    /// One random thing the kernel or a peer does; `None` when only time can help.
    fn event(&mut self) -> Option<Cqe> {
        #[derive(Clone, Copy)]
        enum Ev {
            Recv(Side),
            Send(Side),
            Fin(Side),
            Connect,
            Cancel,
            Late(usize),
            Reset(Side),
        }
        loop {
            if let Some(c) = self.posted.pop_front() {
                return Some(c);
            }
            let mut options = Vec::new();
            let mut stalled = Vec::new();
            for side in [Side::Client, Side::Upstream] {
                let p = &self.peers[side.index()];
                if p.recv_live && p.has_input() {
                    options.extend([Ev::Recv(side); 3]);
                }
                if p.send_live.is_some() {
                    match p.reads {
                        _ if p.reset => options.push(Ev::Send(side)),
                        Reads::Normal => options.extend([Ev::Send(side); 2]),
                        Reads::Slow if self.rng.gen_bool(0.1) => options.push(Ev::Send(side)),
                        Reads::Slow => stalled.push(Ev::Send(side)),
                        Reads::Never => {}
                    }
                }
                if p.fin_live {
                    options.push(Ev::Fin(side));
                }
                let exists = side == Side::Client || self.accepted;
                let due = p.reset_after.is_some_and(|r| p.delivered >= r);
                if exists && due && !p.reset && p.closes == 0 {
                    options.push(Ev::Reset(side));
                }
            }
            if self.connect_live.is_some_and(|o| o != Outcome::Hangs) {
                options.push(Ev::Connect);
            }
            if !self.cancels.is_empty() {
                options.push(Ev::Cancel);
            }
            options.extend((0..self.late.len()).map(Ev::Late));
            if options.is_empty() {
                // A slow reader reads at last rather than let the idle timeout end it.
                options = stalled;
            }
            if options.is_empty() {
                return None;
            }
            return Some(match options[self.rng.gen_range(0..options.len())] {
                Ev::Recv(side) => self.recv(side),
                Ev::Send(side) => self.complete_send(side),
                Ev::Fin(side) => {
                    let p = &mut self.peers[side.index()];
                    p.fin_live = false;
                    match p.reset {
                        true => Cqe::Fin(side, -libc::ENOTCONN),
                        false => {
                            p.fin_at = Some(p.got.len());
                            self.seen.first_fin.get_or_insert(side);
                            Cqe::Fin(side, 0)
                        }
                    }
                }
                Ev::Connect => {
                    let res = match self.connect_live.take() {
                        Some(Outcome::Accepted) => {
                            self.accepted = true;
                            0
                        }
                        _ => {
                            self.seen.refused = true;
                            -libc::ECONNREFUSED
                        }
                    };
                    Cqe::Connect(res)
                }
                Ev::Cancel => self.cancel(),
                Ev::Late(i) => self.late.swap_remove(i),
                Ev::Reset(side) => {
                    self.peer(side).reset = true;
                    continue;
                }
            });
        }
    }

    fn recv(&mut self, side: Side) -> Cqe {
        let size = self.pool.size;
        let p = &mut self.peers[side.index()];
        if p.reset || p.delivered == p.input.len() {
            p.recv_live = false;
            let res = match p.reset {
                true => -libc::ECONNRESET,
                false => {
                    p.eof_delivered = true;
                    0
                }
            };
            return Cqe::Recv {
                side,
                res,
                more: false,
                bid: None,
            };
        }
        // The kernel may fill several buffers before the worker looks: a burst.
        for _ in 0..self.rng.gen_range(1..=4) {
            let p = &mut self.peers[side.index()];
            let left = p.input.len() - p.delivered;
            if left == 0 || !p.recv_live {
                break;
            }
            let n = self.rng.gen_range(1..=left.min(size));
            let chunk = &p.input[p.delivered..p.delivered + n];
            let cqe = match self.pool.fill(chunk) {
                Some(bid) => {
                    p.delivered += n;
                    // The recv ends once it has delivered its room (the last buffer may go
                    // past it), and now and then the kernel ends one that has data.
                    p.recv_room = p.recv_room.saturating_sub(n);
                    let more = p.recv_room > 0 && self.rng.gen_bool(0.95);
                    p.recv_live = more;
                    Cqe::Recv {
                        side,
                        res: n as i32,
                        more,
                        bid: Some(bid),
                    }
                }
                None => {
                    p.recv_live = false;
                    self.seen.starved = true;
                    Cqe::Recv {
                        side,
                        res: -libc::ENOBUFS,
                        more: false,
                        bid: None,
                    }
                }
            };
            self.posted.push_back(cqe);
        }
        self.posted.pop_front().expect("at least one completion")
    }

    fn complete_send(&mut self, side: Side) -> Cqe {
        let expected = self.expected(side);
        let other_fin = self.peers[side.other().index()].fin_at.is_some();
        let p = &mut self.peers[side.index()];
        let (ptr, len, fin) = p.send_live.take().expect("a send in flight");
        if p.reset {
            if fin {
                p.fin_live = false;
                self.posted.push_back(Cqe::Fin(side, -libc::ECANCELED));
            }
            return Cqe::Send(side, -libc::ECONNRESET);
        }
        let short = p.reads != Reads::Normal || self.rng.gen_bool(0.3);
        let n = match short {
            true => self.rng.gen_range(1..=len),
            false => len,
        };
        // SAFETY: the pair keeps the bytes of an in-flight send alive and unmoved until its
        // completion, which is being posted now.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, n as usize) };
        p.got.extend_from_slice(bytes);
        assert!(
            expected.starts_with(&p.got),
            "seed {}: {side:?} received bytes out of order or not sent to it",
            self.seed
        );
        if other_fin {
            self.seen.half_open_traffic = true;
        }
        if fin {
            // A send that is not whole fails its link: the FIN must not run.
            p.fin_live = false;
            let res = match n == len {
                true => {
                    p.fin_at = Some(p.got.len());
                    0
                }
                false => -libc::ECANCELED,
            };
            self.posted.push_back(Cqe::Fin(side, res));
        }
        Cqe::Send(side, n as i32)
    }

    /// The completion of an operation a cancel ends: before the cancel's own, or, now and
    /// then, after it (the operation was running and stops later).
    fn cancelled(&mut self, cqe: Cqe) {
        match self.rng.gen_bool(0.25) {
            true => {
                self.seen.late_cancel = true;
                self.late.push(cqe);
            }
            false => self.posted.push_back(cqe),
        }
    }

    fn cancel(&mut self) -> Cqe {
        let which = self.cancels.pop_front().expect("a cancel in flight");
        let (side, all) = match which {
            Submit::CancelRecv(side) => (Some(side), false),
            Submit::CancelAll(side) => (Some(side), true),
            Submit::CancelConnect => (None, false),
            other => unreachable!("{other:?} is no cancel"),
        };
        if let Some(side) = side {
            let p = &mut self.peers[side.index()];
            // A multishot recv waits on the socket's poll: always cancelled at once.
            if p.recv_live {
                p.recv_live = false;
                self.posted.push_back(Cqe::Recv {
                    side,
                    res: -libc::ECANCELED,
                    more: false,
                    bid: None,
                });
            }
            if all && p.send_live.take().is_some() {
                self.cancelled(Cqe::Send(side, -libc::ECANCELED));
            }
            let p = &mut self.peers[side.index()];
            if all && std::mem::take(&mut p.fin_live) {
                self.cancelled(Cqe::Fin(side, -libc::ECANCELED));
            }
        }
        if (side.is_none() || (all && side == Some(Side::Upstream)))
            && self.connect_live.take().is_some()
        {
            self.cancelled(Cqe::Connect(-libc::ECANCELED));
        }
        self.posted.push_back(Cqe::Cancel);
        self.posted.pop_front().expect("posted above")
    }
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
    let header = (!sim.header.is_empty()).then(|| sim.header.clone());
    let mut pair = UPair::new(Relay::new(sim.now, sim.now + connect_ms), header);
    let mut up = Upstream {
        ups: &ups,
        cursor: &mut cursor,
        connect_ms,
    };
    let mut subs = Vec::new();
    macro_rules! env {
        () => {
            Env {
                now: sim.now,
                limits: &sim.limits,
                pool: &mut sim.pool,
                stats: &sim.stats,
                submit: &mut subs,
            }
        };
    }
    // What the worker does with a connect: make a socket first, which may fail (no
    // descriptor), and then the connect is not submitted.
    macro_rules! submit {
        () => {
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
                pair.on_local_failure(&err, &mut env!());
            }
            sim.take(&mut subs);
        };
    }
    pair.start(&mut env!(), &mut up);
    submit!();
    let mut closes_done = 0;
    for _ in 0..50_000 {
        if pair.teardown == Teardown::Done {
            break;
        }
        if sim.rng.gen_bool(0.05) {
            sim.now += sim.rng.gen_range(1..200);
            pair.on_time(&mut env!());
            submit!();
        }
        if pair.socks.iter().any(|s| s.starved) && sim.pool.available() > 0 {
            pair.on_buffers(&mut env!());
            submit!();
        }
        let Some(cqe) = sim.event() else {
            // Nothing can complete now: only time moves the pair on.
            sim.now += 500;
            pair.on_time(&mut env!());
            submit!();
            continue;
        };
        let open = pair.relay.phase() != Phase::Closed;
        let mut failed = |side: Side, res: i32| {
            if open && res < 0 && res != -libc::ECANCELED && res != -libc::ENOBUFS {
                sim.seen.error_from.get_or_insert(side);
            }
        };
        match cqe {
            Cqe::Recv {
                side,
                res,
                more,
                bid,
            } => {
                failed(side, res);
                if !more {
                    sim.peer(side).recv_out = false;
                }
                pair.on_recv(side, res, more, bid, &mut env!(), &ups);
            }
            Cqe::Send(side, res) => {
                failed(side, res);
                sim.peer(side).send_out = false;
                pair.on_send(side, res, &mut env!(), &ups);
            }
            Cqe::Fin(side, res) => {
                failed(side, res);
                sim.peer(side).fin_out = false;
                pair.on_fin(side, res, &mut env!());
            }
            Cqe::Connect(res) => {
                sim.connect_out = false;
                pair.on_connect(res, &mut env!(), &mut up);
            }
            Cqe::Cancel => pair.on_cancel(&mut env!()),
            Cqe::Close(_) => {
                closes_done += 1;
                let done = pair.on_close();
                let expected = 1 + usize::from(pair.upstream_socket);
                assert_eq!(
                    done,
                    closes_done == expected,
                    "seed {seed}: done after {closes_done} of {expected} closes"
                );
            }
        }
        submit!();
        // Each direction holds no more than its bound, give or take the last buffer a recv
        // filled, and the PROXY header on the client's.
        for (side, extra) in [(Side::Client, sim.header.len()), (Side::Upstream, 0)] {
            let bound = sim.limits.max_pending + sim.pool.size + extra;
            sim.seen.paused[side.index()] |= pair.relay.queued(side) > sim.limits.max_pending;
            assert!(
                pair.relay.queued(side) <= bound,
                "seed {seed}: {side:?} holds {} bytes, over {bound}",
                pair.relay.queued(side)
            );
        }
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
