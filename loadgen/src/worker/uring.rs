//! The io_uring engine: one ring per thread ([`ringd_ring::Driver`]), a connect per
//! socket, one multishot recv per socket into the thread's provided buffers, one send of
//! owned bytes in flight per socket, and one submit-and-wait per turn of the event loop
//! whose timeout is the next deadline (the open-loop schedule's included). A socket's
//! operations carry its generation: a completion for a socket since closed is recognised,
//! and only its buffer is given back.
//!
//! With a batch window the loop handles a response up to a window after it came, so its
//! time is not when the loop sees it but the kernel's: sockets have `SO_TIMESTAMPNS` and the
//! multishot recv is a recvmsg whose completions carry the receive time of the last segment
//! they read (CLOCK_REALTIME, moved onto CLOCK_MONOTONIC with an offset read once per turn,
//! and kept between the oldest request's send and the moment the loop sees it).

use std::io;
use std::time::Duration;

use io_uring::types::Timespec;
use ringd_ring::{
    msg, Completion, Descriptor, Driver, Event, Operation, Packed, SendBuf, Setup, SetupError, Sqe,
    Target, Wait,
};
use socket2::SockAddr;

use super::conn::{Conn, State};
use super::send::connect_error_kind;
use super::{Io, Mode, Worker};
use crate::client::{Next, Spec};
use crate::clock::{now_ns, realtime_ns};
use crate::source;
use crate::stats::ErrorKind;

/// The provided buffer group.
const BGID: u16 = 0;
/// Size of one provided buffer: one recv completion carries at most this much.
const BUF_SIZE: usize = 16 * 1024;
/// Most provided buffers per thread (a power of two): 16 MiB. They go back to the ring as
/// soon as their completion is handled, so a burst, not the connection count, uses them.
const MAX_BUFS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Socket,
    Nodelay,
    /// `SO_TIMESTAMPNS` set by the ring.
    Stamps,
    Connect,
    /// The multishot recv (a recvmsg when stamped).
    Recv,
    /// crr: the one plain recv linked after the transaction's send.
    RecvFirst,
    /// The kernel's wait before a send pushed ahead of its due time.
    SendAt,
    Send,
    /// A send behind a [`Kind::SendAt`] wait.
    SendHeld,
    Cancel,
    Close,
}

const KINDS: [Kind; 11] = [
    Kind::Socket,
    Kind::Nodelay,
    Kind::Stamps,
    Kind::Connect,
    Kind::Recv,
    Kind::RecvFirst,
    Kind::SendAt,
    Kind::Send,
    Kind::SendHeld,
    Kind::Cancel,
    Kind::Close,
];

/// An operation of connection `key`'s socket of generation `gen`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Op {
    kind: Kind,
    key: usize,
    gen: u32,
}

impl Operation for Op {
    fn encode(self) -> u64 {
        Packed {
            kind: self.kind as u8,
            slot: self.key as u32,
            gen: self.gen,
            sub: false,
        }
        .encode()
    }

    fn decode(user_data: u64) -> Option<Self> {
        let p = Packed::decode(user_data);
        Some(Op {
            kind: *KINDS.get(usize::from(p.kind))?,
            key: p.slot as usize,
            gen: p.gen,
        })
    }
}

fn op(kind: Kind, key: usize, c: &Conn) -> Op {
    Op {
        kind,
        key,
        gen: c.gen,
    }
}

/// A thread's ring and what its turns reuse.
pub(super) struct Ring {
    driver: Driver<Op>,
    events: Vec<Event<Op>>,
    /// Send buffers back from their completions.
    spare: Vec<Vec<u8>>,
    /// Completion queue entries.
    cq: u32,
    /// Sockets are created straight into the ring's file table, connection `key` in slot
    /// `key` (Linux 6.7: the ring also sets their options); else they are descriptors.
    direct: bool,
    /// Responses are timed by the kernel's receive stamps (a batch window is on).
    stamped: bool,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC (ns), read after each wait: turns a receive
    /// stamp into loadgen's clock.
    real_offset: i128,
    /// Receive stamps outside [oldest request's send, moment seen], clamped into it (a
    /// clock step, or a socket without stamps).
    clamped: u64,
    /// Per connection: sends held back by the kernel and not completed, of any generation.
    /// Until they are none, the connection's slot or descriptor number is not used again: a
    /// held send whose wait already fired cannot be cancelled, and would go out on whatever
    /// socket its slot or number names when it runs.
    held: Vec<u32>,
}

impl Ring {
    /// A ring sized for `conns` connections, with its provided buffers; `stamped`: its
    /// sockets' reads carry the kernel's receive time.
    pub fn new(conns: usize, stamped: bool) -> io::Result<Self> {
        let sq = (conns * 2).clamp(64, 4096).next_power_of_two() as u32;
        let mut driver = Driver::new(Setup {
            sq,
            cq: sq * 4,
            sqpoll: None,
        })
        .map_err(|e| match e {
            SetupError::Os(e) => e,
            SetupError::Missing(what) => io::Error::other(format!("io_uring lacks {what}")),
        })?;
        let bufs = (conns * 4).clamp(64, MAX_BUFS).next_power_of_two();
        driver.register_buffers(BGID, bufs as u16, BUF_SIZE)?;
        let direct = ringd_ring::setup::kernel_version() >= (6, 7)
            && u32::try_from(conns).is_ok_and(|n| driver.register_files(n.max(1), 0).is_ok());
        Ok(Ring {
            driver,
            events: Vec::new(),
            spare: Vec::new(),
            cq: sq * 4,
            direct,
            stamped,
            real_offset: 0,
            clamped: 0,
            held: vec![0; conns],
        })
    }

    /// Opens a socket for `c` (connection `key`) and starts its connect; `linked` (crr):
    /// the connect waits for [`Ring::link_transaction`]. Without a source address to bind,
    /// the socket is created by the ring into table slot `key` (free: the close of the
    /// socket before it was pushed first), linked to its connect.
    pub fn connect(&mut self, c: &mut Conn, key: usize, linked: bool) -> io::Result<()> {
        match self.direct && c.source.is_none() {
            true => c.fd = Some(Descriptor::Fixed(key as u32)),
            false => {
                let sock = source::socket(c.source, c.addr)?;
                sock.set_tcp_nodelay(true)?;
                if self.stamped {
                    source::set_option_on(&sock, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS)?;
                }
                c.fd = Some(Descriptor::Os(sock.into()));
            }
        }
        c.linked = linked;
        if !linked {
            self.push_connect(c, key, None);
        }
        Ok(())
    }

    /// Pushes `c`'s connect, after the creation of its socket in the table (if it is
    /// there) and before `then` (crr: the transaction's send and recv), all one chain.
    fn push_connect(&mut self, c: &Conn, key: usize, then: Option<[Sqe<Op>; 2]>) {
        let Some(fd) = &c.fd else { return };
        let target = fd.target();
        let connect = Sqe::connect_to(target, SockAddr::from(c.addr), op(Kind::Connect, key, c));
        let open = match target {
            Target::Fixed(slot) => {
                let domain = match c.addr {
                    std::net::SocketAddr::V4(_) => libc::AF_INET,
                    std::net::SocketAddr::V6(_) => libc::AF_INET6,
                };
                let socket = Sqe::socket_direct(domain, slot, op(Kind::Socket, key, c));
                // The connect runs whether or not the options could be set.
                let nodelay = Sqe::nodelay(target, op(Kind::Nodelay, key, c));
                Some([socket.link(), nodelay.hardlink()])
            }
            Target::Fd(_) => None,
        };
        match (open, then) {
            (None, None) => self.driver.push(connect),
            (None, Some([send, recv])) => self.driver.push_chain([connect.link(), send, recv]),
            (Some([socket, nodelay]), None) if self.stamped => {
                let stamps = Sqe::rx_timestamps(target, op(Kind::Stamps, key, c)).hardlink();
                (self.driver).push_chain([socket, nodelay, stamps, connect])
            }
            (Some([socket, nodelay]), None) => self.driver.push_chain([socket, nodelay, connect]),
            // crr, which has no batch window and so no stamps.
            (Some([socket, nodelay]), Some([send, recv])) => {
                (self.driver).push_chain([socket, nodelay, connect.link(), send, recv])
            }
        }
    }

    /// crr: one chain for the whole transaction, connect → send → recv, so that it costs
    /// one submission. The session is told the connect completed when the chain is built:
    /// that is what queues the request's bytes, which the send must have now. A connect
    /// that fails cancels the rest of the chain, whose completions are then a closed
    /// socket's (the failure closed it). The recv runs whatever the send did (hard link),
    /// so a send that finds the connection reset or closed is judged by what the recv
    /// sees, as on a connection of its own. A response longer than one recv gets the usual
    /// multishot recv once the first completes.
    pub fn link_transaction(&mut self, c: &mut Conn, key: usize, spec: &Spec, now: u64) {
        let Some(target) = c.fd.as_ref().map(Descriptor::target) else {
            return;
        };
        c.session.connected(spec, now);
        let Some(bytes) = c.session.transmit() else {
            // Nothing to send (so telling the session again at the connect adds nothing):
            // the connect alone, the recv armed once it completes.
            c.linked = false;
            return self.push_connect(c, key, None);
        };
        let mut data = self.spare.pop().unwrap_or_default();
        data.clear();
        data.extend_from_slice(bytes);
        let buf = SendBuf::Bytes { data, off: 0 };
        let send = (self.driver)
            .send(target, buf, libc::MSG_NOSIGNAL, op(Kind::Send, key, c))
            .hardlink();
        let recv = Sqe::recv_one(target, BGID, op(Kind::RecvFirst, key, c));
        self.push_connect(c, key, Some([send, recv]));
        c.sending = true;
    }

    fn arm_recv(&mut self, c: &Conn, key: usize) {
        if let Some(fd) = &c.fd {
            let target = fd.target();
            let recv = op(Kind::Recv, key, c);
            let sqe = match self.stamped {
                true => Sqe::recvmsg_multi(target, BGID, msg::STAMP_CONTROL, recv),
                false => Sqe::recv_multi(target, BGID, None, recv),
            };
            self.driver.push(sqe);
        }
    }

    /// Sends what `c`'s session has to send, unless a send is in flight already.
    pub fn send(&mut self, c: &mut Conn, key: usize) {
        let Some(fd) = &c.fd else { return };
        if c.sending || c.state != State::Open {
            return;
        }
        let Some(bytes) = c.session.transmit() else {
            return;
        };
        let mut data = self.spare.pop().unwrap_or_default();
        data.clear();
        data.extend_from_slice(bytes);
        let buf = SendBuf::Bytes { data, off: 0 };
        let target = fd.target();
        let flags = libc::MSG_NOSIGNAL;
        // Only a batch window releases a request before it is due: without one, no clock
        // read per send.
        match self.stamped && c.send_at > now_ns() {
            true => {
                let sqe = (self.driver).send(target, buf, flags, op(Kind::SendHeld, key, c));
                let wait = Sqe::wait_until(c.send_at, op(Kind::SendAt, key, c));
                self.driver.push_chain([wait.link(), sqe]);
                self.held[key] += 1;
            }
            false => {
                let sqe = (self.driver).send(target, buf, flags, op(Kind::Send, key, c));
                self.driver.push(sqe)
            }
        }
        c.sending = true;
    }

    /// Connection `key` has a send held back by the kernel and not completed: its slot or
    /// descriptor number must wait (see `held`).
    pub fn holds(&self, key: usize) -> bool {
        self.held[key] > 0
    }

    /// Cancels what is in flight on `c`'s socket and closes it; its late completions are
    /// told apart by the generation, bumped here.
    pub fn close(&mut self, c: &mut Conn, key: usize) {
        if let Some(fd) = c.fd.take() {
            if self.stamped && c.sending {
                // A send perhaps still held back: its socket's descriptor or slot may name
                // another socket by the time it would leave.
                let gen = c.gen;
                let held = |o: &Op| o.kind == Kind::SendAt && o.key == key && o.gen == gen;
                self.driver.cancel_held(held, op(Kind::Cancel, key, c));
            }
            self.driver
                .push(Sqe::cancel_fd(fd.target(), op(Kind::Cancel, key, c)));
            let close = op(Kind::Close, key, c);
            self.driver.close(fd, false, close, close);
        }
        c.gen = c.gen.wrapping_add(1) & Packed::GEN_MASK;
        c.sending = false;
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.clamped > 0 {
            eprintln!(
                "loadgen: {} receive times outside [send, seen] were clamped",
                self.clamped
            );
        }
    }
}

/// When a read's bytes arrived on loadgen's clock: the kernel's stamp (`stamp_ns`,
/// CLOCK_REALTIME; `offset` is CLOCK_REALTIME − CLOCK_MONOTONIC) kept within [`from`, `now`]
/// (the oldest request's send, or 0 with none in flight; the moment the loop sees the
/// bytes), or `now` without a stamp;
/// and whether it had to be clamped. A read that holds several responses carries the time of
/// its last segment: the earlier responses read late, by less than the time between them.
fn received_at(stamp_ns: Option<u64>, offset: i128, from: u64, now: u64) -> (u64, bool) {
    let Some(stamp) = stamp_ns else {
        return (now, true);
    };
    let mono = i128::from(stamp) - offset;
    let kept = mono.clamp(i128::from(from.min(now)), i128::from(now));
    (kept as u64, kept != mono)
}

impl Worker<'_> {
    /// Submits what the last turn pushed, waits up to `wait` ns for a completion, and
    /// handles every completion there is.
    pub(super) fn uring_turn(&mut self, wait: u64) -> Result<(), String> {
        let Io::Uring(ring) = &mut self.io else {
            unreachable!("a uring turn on another engine")
        };
        let ts = Timespec::from(Duration::from_nanos(wait));
        // A batch window: completions that come within it are handled together when it
        // ends (or once a whole queue of them is there), not each as it comes.
        let wait = match self.window_ns {
            w if w >= 1000 && ring.driver.features().min_timeout => Wait::Batch {
                want: ring.cq as usize,
                min_wait_us: (w / 1000).min(u64::from(u32::MAX)) as u32,
                timeout: &ts,
            },
            _ => Wait::Timed(&ts),
        };
        (ring.driver.submit_and_wait(wait)).map_err(|e| format!("io_uring: {e}"))?;
        if ring.stamped {
            ring.real_offset = i128::from(realtime_ns()) - i128::from(now_ns());
        }
        let mut events = std::mem::take(&mut ring.events);
        ring.driver.complete(&mut events);
        for event in events.drain(..) {
            match event {
                Event::Done(c) => self.on_completion(c),
                Event::Unknown { user_data, result } => {
                    return Err(format!(
                        "io_uring: a completion of no operation ({user_data:#x}, {result})"
                    ))
                }
            }
        }
        if let Io::Uring(ring) = &mut self.io {
            ring.events = events;
        }
        Ok(())
    }

    fn ring(&mut self) -> &mut Ring {
        match &mut self.io {
            Io::Uring(ring) => ring,
            Io::Epoll { .. } => unreachable!("a ring on the epoll engine"),
        }
    }

    fn on_completion(&mut self, c: Completion<Op>) {
        let now = now_ns();
        let Op { kind, key, gen } = c.op;
        let current = self
            .conns
            .get(key)
            .is_some_and(|conn| conn.gen == gen && conn.fd.is_some());
        match kind {
            Kind::Socket if current && c.result < 0 => {
                let e = io::Error::from_raw_os_error(-c.result);
                self.fail(key, ErrorKind::ConnectFailed, &e, now)
            }
            Kind::Connect if current => self.on_connect(key, c.result, now),
            Kind::Recv | Kind::RecvFirst => self.on_recv(key, current, &c, now),
            Kind::Send | Kind::SendHeld => {
                if kind == Kind::SendHeld {
                    self.ring().held[key] -= 1;
                }
                if let Some(SendBuf::Bytes { data, .. }) = c.buf {
                    self.ring().spare.push(data);
                }
                if current {
                    self.on_sent(key, c.result, now);
                }
            }
            Kind::Socket
            | Kind::Nodelay
            | Kind::Stamps
            | Kind::SendAt
            | Kind::Connect
            | Kind::Cancel
            | Kind::Close => {}
        }
    }

    fn on_connect(&mut self, key: usize, result: i32, now: u64) {
        if result < 0 {
            let e = io::Error::from_raw_os_error(-result);
            return self.fail(key, connect_error_kind(&e), &e, now);
        }
        let Io::Uring(ring) = &mut self.io else {
            unreachable!()
        };
        if !self.conns[key].linked {
            ring.arm_recv(&self.conns[key], key);
        }
        self.connected(key, now);
    }

    /// A recv completion: its bytes to the session (its buffer back to the ring whatever
    /// the socket), the end of the stream, an error, or the multishot recv ending (armed
    /// again while the socket is open).
    fn on_recv(&mut self, key: usize, current: bool, c: &Completion<Op>, now: u64) {
        // A recvmsg's end of stream is a buffer with no bytes in it.
        let mut result = c.result;
        let next = match c.buffer_id() {
            Some(bid) => {
                let Io::Uring(ring) = &mut self.io else {
                    unreachable!()
                };
                let stamped = ring.stamped && c.op.kind == Kind::Recv;
                let (offset, mut clamped) = (ring.real_offset, 0);
                // The driver marked the buffer taken when it handed over the completion.
                let bufs = ring.driver.buffers();
                let next = (current && c.result > 0).then(|| {
                    let buf = bufs.bytes(bid, c.result as usize);
                    let conn = &mut self.conns[key];
                    let (data, at) = match stamped {
                        false => (buf, now),
                        true => {
                            let Some(r) = msg::parse(buf, msg::STAMP_CONTROL) else {
                                result = -libc::EBADMSG;
                                return None;
                            };
                            let from = conn.session.oldest_sent().unwrap_or(0);
                            let (at, off) = received_at(r.stamp_ns, offset, from, now);
                            // An end of stream carries no stamp: not a clamp.
                            clamped += u64::from(off && !r.payload.is_empty());
                            result = r.payload.len() as i32;
                            (r.payload, at)
                        }
                    };
                    (!data.is_empty())
                        .then(|| conn.session.received(&self.spec, data, at, &mut self.rec))
                });
                bufs.give(bid);
                ring.clamped += clamped;
                next.flatten()
            }
            None => None,
        };
        if !current {
            return;
        }
        match (next, result) {
            (Some(Next::Continue), _) => {
                if self.plan.mode != Mode::Crr {
                    self.fill(key, now);
                } else {
                    // TLS: the handshake's next flight, or the request it held back.
                    self.flush(key, now);
                }
            }
            (Some(next), _) => return self.carry_out(key, next, now),
            (None, 0) => return self.on_eof(key, now),
            (None, r) if r == -libc::ENOBUFS => {}
            (None, r) if r == -libc::EPIPE => return self.on_eof(key, now),
            (None, r) => {
                let e = io::Error::from_raw_os_error(-r);
                return self.fail(key, ErrorKind::Reset, &e, now);
            }
        }
        let conn = &self.conns[key];
        if !c.more() && conn.gen == c.op.gen && conn.state == State::Open {
            let Io::Uring(ring) = &mut self.io else {
                unreachable!()
            };
            ring.arm_recv(conn, key);
        }
    }

    /// A send completed: the bytes it wrote go to the session and the rest follows. A
    /// reset or a closed peer ends no connection here: its recv reports the end, after
    /// the bytes that came before it, and no further send goes out on it.
    fn on_sent(&mut self, key: usize, result: i32, now: u64) {
        let c = &mut self.conns[key];
        if result < 0 {
            if result == -libc::ECONNRESET || result == -libc::EPIPE {
                c.write_reset = result == -libc::ECONNRESET;
                return;
            }
            let e = io::Error::from_raw_os_error(-result);
            return self.fail(key, ErrorKind::Reset, &e, now);
        }
        c.sending = false;
        if result == 0 {
            let e = io::Error::from(io::ErrorKind::WriteZero);
            return self.fail(key, ErrorKind::Reset, &e, now);
        }
        c.session.written(result as usize, now, &mut self.rec);
        self.flush(key, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_round_trip_through_user_data_and_strangers_are_refused() {
        for (i, &kind) in KINDS.iter().enumerate() {
            let op = Op {
                kind,
                key: 1000 + i,
                gen: Packed::GEN_MASK - i as u32,
            };
            let back = Op::decode(op.encode()).unwrap();
            assert_eq!((back.kind, back.key, back.gen), (op.kind, op.key, op.gen));
        }
        let stranger = Packed {
            kind: KINDS.len() as u8,
            slot: 1,
            gen: 0,
            sub: false,
        };
        assert!(Op::decode(stranger.encode()).is_none());
    }

    #[test]
    fn receive_stamps_move_onto_the_monotonic_clock_and_stay_between_send_and_seen() {
        // CLOCK_REALTIME runs 1,000 ns ahead of CLOCK_MONOTONIC; sent at 100, seen at 200.
        let at = |stamp| received_at(stamp, 1_000, 100, 200);
        assert_eq!(at(Some(1_150)), (150, false));
        assert_eq!(at(Some(1_100)), (100, false));
        assert_eq!(at(Some(1_050)), (100, true));
        assert_eq!(at(Some(5)), (100, true));
        assert_eq!(at(Some(1_250)), (200, true));
        assert_eq!(at(None), (200, true));
        // A read with no request in flight (a handshake's bytes) is bounded by `now` alone.
        assert_eq!(received_at(Some(1_150), 1_000, 0, 200), (150, false));
    }

    #[test]
    fn sockets_are_direct_descriptors_where_the_kernel_allows() {
        let ring = Ring::new(4, false).expect("io_uring must be usable on the test hosts");
        let version = ringd_ring::setup::kernel_version();
        assert_eq!(ring.direct, version >= (6, 7), "Linux {version:?}");
    }
}
