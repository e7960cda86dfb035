//! The simulated kernel and peers of the pair test: what each operation completes with,
//! and what the client and the upstream send, read and see.

use std::collections::VecDeque;
use std::net::SocketAddr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::super::*;
use crate::connection::{Limits, Millis};
use crate::engine::uring::fake_pool::FakePool;
use crate::engine::uring::sendq::Out;
use crate::proxy::SendProxy;

/// A completion the simulated kernel will post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cqe {
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
pub(super) enum Reads {
    /// Sends to it complete as often as anything else.
    Normal,
    /// Sends to it complete rarely (the window is mostly closed).
    Slow,
    /// Sends to it never complete (only a cancel or its reset ends them).
    Never,
}

/// How a connect attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Accepted,
    Refused,
    /// No answer: only the connect timeout's cancel ends it.
    Hangs,
}

/// One peer and what the pair has in flight on its socket.
#[derive(Debug)]
pub(super) struct Peer {
    /// What the peer sends, and how much of it the pair has received.
    pub(super) input: Vec<u8>,
    pub(super) delivered: usize,
    /// The peer sends its FIN after its input; the pair has seen it.
    pub(super) fin: bool,
    pub(super) eof_delivered: bool,
    /// The peer resets once the pair has received this much of its input.
    pub(super) reset_after: Option<usize>,
    pub(super) reset: bool,
    pub(super) reads: Reads,
    /// Operations the kernel can still complete.
    pub(super) recv_live: bool,
    /// Bytes the live recv may still deliver before it ends by itself.
    pub(super) recv_room: usize,
    /// The send in flight: its bytes as submitted, and whether a FIN is linked to it.
    pub(super) send_live: Option<(Out, Vec<u8>, bool)>,
    /// The bytes of the send whose completion is posted, handed back with it.
    pub(super) returned: Option<Out>,
    pub(super) fin_live: bool,
    /// Operations whose last completion the pair has not been handed yet.
    pub(super) recv_out: bool,
    pub(super) send_out: bool,
    pub(super) fin_out: bool,
    /// Closes submitted, and whether the last was a reset.
    pub(super) closes: u32,
    pub(super) closed_reset: Option<bool>,
    /// What the pair sent to this peer, and how much of it when the FIN arrived.
    pub(super) got: Vec<u8>,
    pub(super) fin_at: Option<usize>,
}

impl Peer {
    pub(super) fn new(rng: &mut StdRng) -> Self {
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
            returned: None,
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
    pub(super) fn has_input(&self) -> bool {
        self.reset || self.delivered < self.input.len() || (self.fin && !self.eof_delivered)
    }
}

/// What a scenario went through, for the counts that show the test explores.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// `paused[side]`: the direction from `side` went over its bound, so `side` was not
    /// read until it drained.
    pub(super) paused: [bool; 2],
    pub(super) starved: bool,
    pub(super) refused: bool,
    pub(super) connect_timeout: bool,
    pub(super) local_failure: bool,
    /// The side whose peer failed (reset) while the pair was not yet closed.
    pub(super) error_from: Option<Side>,
    /// The first FIN passed on went to this side.
    pub(super) first_fin: Option<Side>,
    /// Bytes went one way after the FIN had gone the other way.
    pub(super) half_open_traffic: bool,
    /// A cancelled operation completed after the cancel.
    pub(super) late_cancel: bool,
}

/// The simulated kernel and both peers of one pair.
pub(super) struct Sim {
    pub(super) seed: u64,
    pub(super) rng: StdRng,
    pub(super) pool: FakePool,
    pub(super) limits: Limits,
    pub(super) stats: WorkerStats,
    pub(super) now: Millis,
    /// `peers[side]`.
    pub(super) peers: [Peer; 2],
    pub(super) header: Vec<u8>,
    /// What `header` says.
    pub(super) announce: Option<Announce>,
    /// Each connect attempt's end, in the order of the attempts.
    pub(super) outcomes: Vec<Outcome>,
    /// Upstream sockets made (connects submitted to the kernel).
    pub(super) attempts: usize,
    pub(super) connect_live: Option<Outcome>,
    pub(super) connect_out: bool,
    /// The upstream peer accepted a connection.
    pub(super) accepted: bool,
    pub(super) cancels: VecDeque<Submit>,
    /// Completions posted, in order (those of cancelled operations before the cancel's).
    pub(super) posted: VecDeque<Cqe>,
    /// Completions of cancelled operations that come in any order after the cancel's.
    pub(super) late: Vec<Cqe>,
    pub(super) seen: Seen,
}

impl Sim {
    pub(super) fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let pool = FakePool::new(rng.gen_range(1..=6), rng.gen_range(8..=64));
        let max_pending = rng.gen_range(64..=512);
        let idle = rng.gen_range(1500..=4000);
        let announce = rng.gen_bool(0.3).then(|| Announce {
            version: if rng.gen() {
                SendProxy::V1
            } else {
                SendProxy::V2
            },
            client: SocketAddr::from((rng.gen::<[u8; 4]>(), rng.gen::<u16>())),
            local: SocketAddr::from((rng.gen::<[u8; 4]>(), rng.gen::<u16>())),
        });
        let header = announce.map(|a| a.encode(None)).unwrap_or_default();
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
            announce,
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

    pub(super) fn peer(&mut self, side: Side) -> &mut Peer {
        &mut self.peers[side.index()]
    }

    /// What `side`'s peer should receive in all: the other peer's input, after the PROXY
    /// header for the upstream.
    pub(super) fn expected(&self, side: Side) -> Vec<u8> {
        let mut v = match side {
            Side::Upstream => self.header.clone(),
            Side::Client => Vec::new(),
        };
        v.extend_from_slice(&self.peers[side.other().index()].input);
        v
    }

    /// Takes what the pair submitted, checking it never asks for two of a kind at once on
    /// a socket, or for anything on a socket after its close.
    pub(super) fn take(&mut self, subs: &mut Vec<Submit>) {
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
                Submit::Send { buf, fin, .. } => {
                    assert!(
                        !p.send_out && !p.fin_out,
                        "seed {seed}: a send beside another or a FIN on {side:?}"
                    );
                    assert!(p.fin_at.is_none(), "seed {seed}: send after the FIN");
                    let bytes = self.pool.lend(&buf);
                    assert!(!bytes.is_empty(), "seed {seed}: empty send");
                    let p = &mut self.peers[side.index()];
                    p.send_live = Some((buf, bytes, fin));
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

    fn complete_fin(&mut self, side: Side) -> Cqe {
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

    fn complete_connect(&mut self) -> Cqe {
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

    /// One random thing the kernel or a peer does; `None` when only time can help.
    pub(super) fn event(&mut self) -> Option<Cqe> {
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
                Ev::Fin(side) => self.complete_fin(side),
                Ev::Connect => self.complete_connect(),
                Ev::Cancel => self.cancel(),
                Ev::Late(i) => self.late.swap_remove(i),
                Ev::Reset(side) => {
                    self.peer(side).reset = true;
                    continue;
                }
            });
        }
    }

    pub(super) fn recv(&mut self, side: Side) -> Cqe {
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

    pub(super) fn complete_send(&mut self, side: Side) -> Cqe {
        let expected = self.expected(side);
        let other_fin = self.peers[side.other().index()].fin_at.is_some();
        let p = &mut self.peers[side.index()];
        let (buf, bytes, fin) = p.send_live.take().expect("a send in flight");
        let len = bytes.len() as u32;
        self.give_back(side, buf);
        let p = &mut self.peers[side.index()];
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
        p.got.extend_from_slice(&bytes[..n as usize]);
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

    /// The send of `buf` on `side` is over: its bytes go back with its completion.
    fn give_back(&mut self, side: Side, buf: Out) {
        self.pool.unlend(&buf);
        let p = &mut self.peers[side.index()];
        assert!(p.returned.replace(buf).is_none(), "two sends completed");
    }

    /// The completion of an operation a cancel ends: before the cancel's own, or, now and
    /// then, after it (the operation was running and stops later).
    pub(super) fn cancelled(&mut self, cqe: Cqe) {
        match self.rng.gen_bool(0.25) {
            true => {
                self.seen.late_cancel = true;
                self.late.push(cqe);
            }
            false => self.posted.push_back(cqe),
        }
    }

    pub(super) fn cancel(&mut self) -> Cqe {
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
            if let Some((buf, _, _)) = all.then(|| p.send_live.take()).flatten() {
                self.give_back(side, buf);
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
