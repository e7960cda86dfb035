//! A randomized test of [`UConn`] against a simulated kernel: a peer that sends in random
//! pieces, closes or resets; a buffer ring that runs dry (ENOBUFS); sends that complete short
//! or fail, with the linked FIN cancelled when they do; cancels that race with data; time
//! that passes (idle, header and linger deadlines) and drains. Whatever the order, the output
//! must arrive in order and whole before any FIN, nothing may be submitted after the close or
//! twice at once, and every buffer must be back when the connection is gone.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::connection::CloseReason;
use crate::engine::uring::fake_pool::FakePool;
use crate::engine::uring::sendq::Out;
use crate::engine::uring::sock::Pool;
use crate::protocol::{error_response, ErrorStatus, ProtocolKind, ProtocolSpec};

/// A completion the simulated kernel will post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cqe {
    Recv {
        res: i32,
        more: bool,
        bid: Option<u16>,
    },
    Send(i32),
    Fin(i32),
    Cancel,
    Close,
}

/// The simulated kernel and peer for one connection.
struct Sim {
    rng: StdRng,
    pool: FakePool,
    limits: Limits,
    stats: WorkerStats,
    now: Millis,
    /// What the peer sends, and how much of it the server has received.
    input: Vec<u8>,
    delivered: usize,
    /// The peer sends its FIN after its input / resets at some point.
    peer_fin: bool,
    peer_reset: bool,
    /// Operations in flight.
    recv_armed: bool,
    /// Bytes the armed recv may still deliver before it ends by itself.
    recv_room: usize,
    recv_cancel: bool,
    /// The send in flight: its bytes as submitted, and whether a FIN is linked to it.
    send: Option<(Out, Vec<u8>, bool)>,
    /// The bytes of the send whose completion is posted, handed back with it.
    returned: Option<Out>,
    fin_alone: bool,
    cancels: Vec<Submit>,
    close_submitted: bool,
    /// Completions posted, in order (linked completions follow their head).
    posted: VecDeque<Cqe>,
    /// What the server sent.
    sent: Vec<u8>,
    fin_done: bool,
    closed: bool,
    /// A close without a FIN before it and without a reset: the close's FIN ends the output.
    clean_close_at: Option<usize>,
    /// Why the connection ended, once it has.
    reason: Option<CloseReason>,
}

impl Sim {
    fn new(seed: u64, input: Vec<u8>) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let pool = FakePool::new(rng.gen_range(1..=4), rng.gen_range(8..=64));
        let max_pending = rng.gen_range(64..=512);
        Sim {
            pool,
            limits: Limits::for_tests(1000, 300, max_pending),
            stats: WorkerStats::default(),
            now: 1,
            input,
            delivered: 0,
            peer_fin: rng.gen_bool(0.8),
            peer_reset: rng.gen_bool(0.1),
            recv_armed: false,
            recv_room: 0,
            recv_cancel: false,
            send: None,
            returned: None,
            fin_alone: false,
            cancels: Vec::new(),
            close_submitted: false,
            posted: VecDeque::new(),
            sent: Vec::new(),
            fin_done: false,
            closed: false,
            clean_close_at: None,
            reason: None,
            rng,
        }
    }

    /// Takes what the connection submitted, checking it never asks for two of a kind at once
    /// or for anything after its close.
    fn take(&mut self, subs: &mut Vec<Submit>) {
        for s in subs.drain(..) {
            assert!(!self.close_submitted, "{s:?} submitted after the close");
            match s {
                Submit::Recv { room, .. } => {
                    assert!(!self.recv_armed, "two recvs armed");
                    self.recv_armed = true;
                    self.recv_room = room.max(1);
                    self.recv_cancel = false;
                }
                Submit::Send { buf, fin, .. } => {
                    assert!(self.send.is_none(), "two sends in flight");
                    assert!(!self.fin_done, "send after the FIN");
                    let bytes = self.pool.lend(&buf);
                    assert!(!bytes.is_empty(), "empty send");
                    self.send = Some((buf, bytes, fin));
                }
                Submit::Fin(_) => {
                    assert!(self.send.is_none() && !self.fin_alone, "FIN beside a send");
                    self.fin_alone = true;
                }
                Submit::CancelRecv(_) | Submit::CancelAll(_) => self.cancels.push(s),
                Submit::Connect | Submit::CancelConnect => panic!("{s:?} on a protocol connection"),
                Submit::Close { reset, .. } => {
                    assert!(
                        !self.recv_armed && self.send.is_none() && !self.fin_alone,
                        "close with operations in flight"
                    );
                    if !reset && !self.fin_done {
                        // A clean close sends the FIN itself.
                        self.clean_close_at = Some(self.sent.len());
                    }
                    self.close_submitted = true;
                    self.posted.push_back(Cqe::Close);
                }
            }
        }
    }

    /// One random thing the kernel or the peer does; false when nothing can happen.
    fn event(&mut self) -> Option<Cqe> {
        if let Some(c) = self.posted.pop_front() {
            return Some(c);
        }
        let mut options: Vec<u8> = Vec::new();
        if self.recv_armed {
            options.extend([0, 0, 0]);
        }
        if self.send.is_some() {
            options.extend([1, 1]);
        }
        if self.fin_alone {
            options.push(2);
        }
        if !self.cancels.is_empty() {
            options.push(3);
        }
        if options.is_empty() {
            return None;
        }
        match options[self.rng.gen_range(0..options.len())] {
            0 => Some(self.recv()),
            1 => Some(self.complete_send()),
            2 => {
                self.fin_alone = false;
                self.fin_done = true;
                Some(Cqe::Fin(0))
            }
            _ => Some(self.cancel()),
        }
    }

    fn recv(&mut self) -> Cqe {
        let left = self.input.len() - self.delivered;
        if self.peer_reset && self.rng.gen_bool(0.05) {
            self.recv_armed = false;
            return Cqe::Recv {
                res: -libc::ECONNRESET,
                more: false,
                bid: None,
            };
        }
        if left == 0 {
            if self.peer_fin {
                self.recv_armed = false;
                return Cqe::Recv {
                    res: 0,
                    more: false,
                    bid: None,
                };
            }
            // The peer is silent: time passes instead.
            self.now += self.rng.gen_range(1..400);
            return Cqe::Recv {
                res: -libc::EAGAIN,
                more: true,
                bid: None,
            };
        }
        // The kernel may fill several buffers before the worker looks: a burst.
        for _ in 0..self.rng.gen_range(1..=4) {
            let left = self.input.len() - self.delivered;
            if left == 0 || !self.recv_armed {
                break;
            }
            let n = self.rng.gen_range(1..=left.min(self.pool.size));
            let chunk = self.input[self.delivered..self.delivered + n].to_vec();
            let cqe = match self.pool.fill(&chunk) {
                Some(bid) => {
                    self.delivered += n;
                    // The recv ends once it has delivered its room (the last buffer may
                    // go past it), and now and then the kernel ends one that has data.
                    self.recv_room = self.recv_room.saturating_sub(n);
                    let more = self.recv_room > 0 && self.rng.gen_bool(0.95);
                    self.recv_armed = more;
                    Cqe::Recv {
                        res: n as i32,
                        more,
                        bid: Some(bid),
                    }
                }
                None => {
                    self.recv_armed = false;
                    Cqe::Recv {
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

    fn complete_send(&mut self) -> Cqe {
        let (buf, bytes, fin) = self.send.take().expect("a send in flight");
        self.give_back(buf);
        let len = bytes.len() as u32;
        if self.rng.gen_bool(0.02) {
            if fin {
                self.posted.push_back(Cqe::Fin(-libc::ECANCELED));
            }
            return Cqe::Send(-libc::EPIPE);
        }
        let n = if self.rng.gen_bool(0.3) {
            self.rng.gen_range(1..=len)
        } else {
            len
        };
        self.sent.extend_from_slice(&bytes[..n as usize]);
        if fin {
            // A send that is not whole fails its link: the FIN must not run.
            if n == len {
                self.fin_done = true;
                self.posted.push_back(Cqe::Fin(0));
            } else {
                self.posted.push_back(Cqe::Fin(-libc::ECANCELED));
            }
        }
        Cqe::Send(n as i32)
    }

    /// The send of `buf` is over: its bytes go back with the completion about to be posted.
    fn give_back(&mut self, buf: Out) {
        self.pool.unlend(&buf);
        assert!(self.returned.replace(buf).is_none(), "two sends completed");
    }

    fn cancel(&mut self) -> Cqe {
        let which = self.cancels.remove(0);
        if self.recv_armed {
            self.recv_armed = false;
            self.posted.push_back(Cqe::Recv {
                res: -libc::ECANCELED,
                more: false,
                bid: None,
            });
        }
        if matches!(which, Submit::CancelAll(_)) {
            if let Some((buf, _, fin)) = self.send.take() {
                self.give_back(buf);
                self.posted.push_back(Cqe::Send(-libc::ECANCELED));
                if fin {
                    self.posted.push_back(Cqe::Fin(-libc::ECANCELED));
                }
            }
            if self.fin_alone {
                self.fin_alone = false;
                self.posted.push_back(Cqe::Fin(-libc::ECANCELED));
            }
        }
        self.posted.push_back(Cqe::Cancel);
        // The cancel's own completion comes after those of what it cancelled.
        self.posted.pop_front().expect("posted above")
    }
}

/// The longest response the HTTP scenarios get (a `408` with its headers), which the
/// protocol may write past the output bound.
const RESPONSE_SLACK: usize = 160;

/// What a connection's events need from the simulation.
fn env<'a>(sim: &'a mut Sim, subs: &'a mut Vec<Submit>) -> Env<'a, FakePool> {
    Env {
        now: sim.now,
        limits: &sim.limits,
        pool: &mut sim.pool,
        stats: &sim.stats,
        submit: subs,
    }
}

/// Hands the completion `cqe` to the connection; returns what was sent when the FIN went out,
/// if this was the FIN's completion.
fn deliver(sim: &mut Sim, uc: &mut UConn, subs: &mut Vec<Submit>, cqe: Cqe) -> Option<usize> {
    match cqe {
        Cqe::Recv { res, more, bid } if res == -libc::EAGAIN => {
            let _ = (more, bid);
            uc.on_time(&mut env(sim, subs));
        }
        Cqe::Recv { res, more, bid } => uc.on_recv(res, more, bid, &mut env(sim, subs)),
        Cqe::Send(res) => {
            let buf = sim.returned.take().expect("the send's bytes");
            uc.on_send(res, buf, &mut env(sim, subs))
        }
        Cqe::Fin(res) => {
            let at = (res == 0).then_some(sim.sent.len());
            uc.on_fin(res, &mut env(sim, subs));
            return at;
        }
        Cqe::Cancel => uc.on_cancel(&mut env(sim, subs)),
        Cqe::Close => sim.closed = true,
    }
    None
}

/// What the connection holds stays within its bound, give or take the last buffer a recv
/// filled (echo's output is its input) or the last response the protocol wrote.
fn check_bounds(seed: u64, kind: ProtocolKind, sim: &Sim, uc: &UConn) {
    let bound = sim.limits.max_pending + sim.pool.size;
    let out_bound = match kind {
        ProtocolKind::Echo => bound,
        _ => sim.limits.max_pending + RESPONSE_SLACK,
    };
    assert!(
        uc.conn.queued() <= out_bound && uc.conn.pending_len() <= bound,
        "seed {seed}: holds {} bytes of output and {} of input over a bound of {}",
        uc.conn.queued(),
        uc.conn.pending_len(),
        sim.limits.max_pending
    );
}

/// Runs one scenario; returns the bytes the server sent, whether its FIN went out, and the
/// sent length when it did.
fn run(seed: u64, kind: ProtocolKind, input: Vec<u8>) -> (Vec<u8>, bool, usize, Sim) {
    let mut sim = Sim::new(seed, input);
    let spec = ProtocolSpec::with_defaults(kind);
    let mut uc = UConn::new(Connection::new(&spec, sim.now));
    let mut subs = Vec::new();
    let drain_at = sim.rng.gen_bool(0.2).then(|| sim.rng.gen_range(0..200));
    let mut sent_at_fin = None;
    macro_rules! conn_env {
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
    uc.step(&mut conn_env!());
    sim.take(&mut subs);
    for turn in 0..100_000 {
        if sim.closed {
            break;
        }
        if Some(turn) == drain_at {
            uc.on_drain(&mut conn_env!());
            sim.take(&mut subs);
        }
        if sim.rng.gen_bool(0.05) {
            sim.now += sim.rng.gen_range(1..200);
            uc.on_time(&mut conn_env!());
            sim.take(&mut subs);
        }
        if uc.sock.starved && sim.pool.available() > 0 {
            uc.on_buffers(&mut conn_env!());
            sim.take(&mut subs);
        }
        let Some(cqe) = sim.event() else {
            // Nothing in flight: only time can move the connection on.
            sim.now += 500;
            uc.on_time(&mut conn_env!());
            sim.take(&mut subs);
            continue;
        };
        if let Some(at) = deliver(&mut sim, &mut uc, &mut subs, cqe) {
            sent_at_fin = Some(at);
        }
        sim.take(&mut subs);
        check_bounds(seed, kind, &sim, &uc);
    }
    assert!(
        sim.closed,
        "seed {seed}: the connection never closed ({uc:?})"
    );
    assert_eq!(
        sim.pool.available(),
        sim.pool.entries(),
        "seed {seed}: buffers not returned"
    );
    assert!(
        !uc.busy(),
        "seed {seed}: operations in flight after the close"
    );
    sim.reason = Some(uc.conn.close_reason());
    let sent = std::mem::take(&mut sim.sent);
    let end = sent_at_fin.or(sim.clean_close_at);
    (sent, end.is_some(), end.unwrap_or(0), sim)
}

#[test]
fn echo_output_in_order_and_whole_before_the_fin() {
    let mut fins = 0;
    let mut short_or_starved = 0;
    for seed in 0..3000 {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xec40);
        let input: Vec<u8> = (0..rng.gen_range(0..600)).map(|_| rng.gen()).collect();
        let (sent, fin, at_fin, sim) = run(seed, ProtocolKind::Echo, input.clone());
        assert_eq!(
            sent[..],
            input[..sent.len()],
            "seed {seed}: echo out of order"
        );
        if fin {
            fins += 1;
            // A FIN follows everything that was received while open: here, all of it.
            assert_eq!(
                at_fin, sim.delivered,
                "seed {seed}: FIN before the echo was whole"
            );
            assert_eq!(sent.len(), at_fin, "seed {seed}: bytes after the FIN");
        }
        if sim
            .stats
            .recv_enobufs
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
        {
            short_or_starved += 1;
        }
    }
    // The scenarios explored what they should.
    assert!(fins > 1000, "only {fins} graceful closes");
    assert!(
        short_or_starved > 100,
        "only {short_or_starved} runs ran out of buffers"
    );
}

#[test]
fn http_responses_whole_and_in_order_before_the_fin() {
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nServer: ringd\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
    // The simulation runs on this thread: its responses carry this date.
    crate::protocol::pin_date(Some(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(784_111_777),
    ));
    let mut fins = 0;
    let mut half_closed = 0;
    for seed in 0..2000 {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x4770);
        let n = rng.gen_range(0..8);
        let mut input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(n);
        if rng.gen_bool(0.3) {
            input.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        }
        if rng.gen_bool(0.2) {
            input.extend_from_slice(b"GET /never-ends HTTP/1.1\r\nX: ");
        }
        let (sent, fin, at_fin, sim) = run(seed, ProtocolKind::Http, input);
        // Responses in order: 200s, then at most one closing response.
        let mut rest = &sent[..];
        let mut oks = 0u64;
        while rest.starts_with(OK) {
            rest = &rest[OK.len()..];
            oks += 1;
        }
        let close_ok = b"HTTP/1.1 200 OK\r\nServer: ringd\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nHello, World!";
        let timeout = b"HTTP/1.1 408 Request Timeout\r\n";
        if fin {
            fins += 1;
            assert_eq!(sent.len(), at_fin, "seed {seed}: bytes after the FIN");
            assert!(
                rest.is_empty() || rest == &close_ok[..] || rest.starts_with(timeout),
                "seed {seed}: output before the FIN is not whole responses: {:?}",
                String::from_utf8_lossy(rest)
            );
            // Every request the connection answered went out before its FIN.
            let answered = sim
                .stats
                .requests
                .load(std::sync::atomic::Ordering::Relaxed);
            let closing = u64::from(rest == &close_ok[..]);
            assert_eq!(
                oks + closing,
                answered,
                "seed {seed}: responses lost before the FIN"
            );
            if sim.reason == Some(CloseReason::Peer) {
                // Ended by the peer's FIN: a half-closed peer is owed an answer to every
                // whole request it sent, those held back at the output bound included.
                assert_eq!(oks, n as u64, "seed {seed}: requests left unanswered");
                half_closed += 1;
            }
        } else {
            // Cut short: a prefix of the same sequence.
            let full_408 = error_response(ErrorStatus::RequestTimeout);
            assert!(
                OK.starts_with(rest) || close_ok.starts_with(rest) || full_408.starts_with(rest),
                "seed {seed}: {:?}",
                String::from_utf8_lossy(rest)
            );
        }
    }
    assert!(fins > 500, "only {fins} graceful closes");
    assert!(half_closed > 300, "only {half_closed} closes by the peer");
}
