//! The driver on a real ring, against socket pairs.

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use super::*;
use crate::op::Packed;

thread_local! {
    /// What was still in flight when this thread's last driver was dropped, past its
    /// teardown.
    pub(super) static DROPPED: Cell<Option<usize>> = const { Cell::new(None) };
}

/// A test operation: a kind and a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TestOp {
    kind: u8,
    n: u32,
}

/// A kind no `TestOp` decodes (as if a new operation were never taught to the decoder).
const UNDECODABLE: u8 = 0xee;

impl Operation for TestOp {
    fn encode(self) -> u64 {
        Packed {
            kind: self.kind,
            slot: self.n,
            gen: 0,
            sub: false,
        }
        .encode()
    }
    fn decode(user_data: u64) -> Option<Self> {
        let p = Packed::decode(user_data);
        (p.kind != UNDECODABLE).then_some(TestOp {
            kind: p.kind,
            n: p.slot,
        })
    }
}

fn op(n: u32) -> TestOp {
    TestOp { kind: 1, n }
}

fn driver(sq: u32) -> Driver<TestOp> {
    Driver::new(Setup {
        sq,
        cq: 64,
        sqpoll: None,
    })
    .expect("io_uring must be usable on the test hosts")
}

/// Waits until `n` events have come.
fn events(d: &mut Driver<TestOp>, n: usize) -> Vec<Event<TestOp>> {
    let mut out = Vec::new();
    let tick = types::Timespec::new().nsec(100_000_000);
    for _ in 0..50 {
        if out.len() >= n {
            break;
        }
        d.submit_and_wait(Wait::Timed(&tick)).expect("wait");
        d.complete(&mut out);
    }
    assert_eq!(out.len(), n, "{out:?}");
    out
}

fn done(e: Event<TestOp>) -> Completion<TestOp> {
    match e {
        Event::Done(c) => c,
        Event::Unknown { user_data, .. } => panic!("unknown completion {user_data:#x}"),
    }
}

#[test]
fn a_chain_is_pushed_whole_or_after_a_submit() {
    let mut d = driver(4);
    for n in 0..3 {
        d.push(Sqe::nop(op(n)));
    }
    assert_eq!(d.pending(), 3);
    d.push_chain([Sqe::nop(op(3)).link(), Sqe::nop(op(4))]);
    // Only one slot was free: the three were submitted first, and the chain waits whole.
    assert_eq!(d.pending(), 2);
    let ops: Vec<u32> = events(&mut d, 5)
        .into_iter()
        .map(|e| done(e).op.n)
        .collect();
    assert_eq!(ops, [0, 1, 2, 3, 4]);
    assert_eq!(d.outstanding(), 0);
}

#[test]
fn user_data_round_trips_and_unknown_completions_are_reported() {
    let mut d = driver(8);
    let mine = TestOp {
        kind: 9,
        n: Packed::SLOT_MASK,
    };
    d.push(Sqe::nop(mine));
    d.push(Sqe::nop(TestOp {
        kind: UNDECODABLE,
        n: 7,
    }));
    let mut got = events(&mut d, 2).into_iter();
    assert_eq!(done(got.next().unwrap()).op, mine);
    match got.next().unwrap() {
        Event::Unknown { user_data, .. } => assert_eq!(Packed::decode(user_data).slot, 7),
        e => panic!("{e:?}"),
    }
}

#[test]
fn a_send_owns_its_bytes_until_its_completion_returns_them() {
    let mut d = driver(8);
    let (a, mut b) = UnixStream::pair().unwrap();
    let data = b"hello, ring".to_vec();
    let sqe = d.send(
        Target::Fd(a.as_raw_fd()),
        SendBuf::Bytes { data, off: 6 },
        libc::MSG_NOSIGNAL,
        op(1),
    );
    d.push(sqe);
    let c = done(events(&mut d, 1).pop().unwrap());
    assert_eq!((c.op, c.result), (op(1), 5));
    assert_eq!(
        c.buf,
        Some(SendBuf::Bytes {
            data: b"hello, ring".to_vec(),
            off: 6
        })
    );
    let mut got = [0; 5];
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b" ring");
}

#[test]
fn a_provided_buffer_cannot_be_recycled_while_a_send_reads_it() {
    let mut d = driver(8);
    d.register_buffers(3, 4, 64).unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    d.push(Sqe::recv_multi(Target::Fd(a.as_raw_fd()), 3, None, op(1)));
    b.write_all(b"ping").unwrap();
    let recv = done(events(&mut d, 1).pop().unwrap());
    let bid = recv.buffer_id().expect("a provided buffer");
    assert_eq!(
        d.buffers().available(),
        3,
        "the completion handed the buffer over"
    );
    let buf = SendBuf::Provided {
        bid,
        off: 0,
        len: recv.result as usize,
    };
    let sqe = d.send(Target::Fd(a.as_raw_fd()), buf, libc::MSG_NOSIGNAL, op(2));
    d.push(sqe);
    let early = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.buffers().give(bid)));
    assert!(early.is_err(), "a lent buffer went back to the ring");
    let sent = done(events(&mut d, 1).pop().unwrap());
    assert_eq!(sent.result, 4);
    assert!(matches!(sent.buf, Some(SendBuf::Provided { bid: b2, .. }) if b2 == bid));
    d.buffers().give(bid);
    let late = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        d.buffers().bytes(bid, 4).to_vec()
    }));
    assert!(late.is_err(), "a buffer back in the ring was read");
    let mut got = [0; 4];
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
}

#[test]
fn shutdown_cancels_and_reaps_what_is_in_flight() {
    let (mut d, _sockets) = stuck_driver();
    assert_eq!(
        d.held.len(),
        2,
        "the send's bytes and the timeout's duration"
    );
    assert!(
        d.shutdown(),
        "everything in flight was cancelled and reaped"
    );
    assert_eq!(d.outstanding(), 0);
    assert!(
        d.held.is_empty(),
        "the held memory was released by its completions"
    );
}

/// A driver with three operations in flight that would never end by themselves: a recv
/// that waits for bytes that never come, a send that waits for room the peer never makes
/// (its buffer is full), and a timeout an hour long.
fn stuck_driver() -> (Driver<TestOp>, [UnixStream; 2]) {
    let mut d = driver(8);
    d.register_buffers(0, 4, 64).unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    d.push(Sqe::recv_multi(Target::Fd(a.as_raw_fd()), 0, None, op(1)));
    let big = vec![7u8; 4 << 20];
    let sqe = d.send(
        Target::Fd(a.as_raw_fd()),
        SendBuf::Bytes { data: big, off: 0 },
        libc::MSG_NOSIGNAL | libc::MSG_WAITALL,
        op(2),
    );
    d.push(sqe);
    d.push(Sqe::timeout(Duration::from_secs(3600), false, op(3)));
    d.submit_and_wait(Wait::Timed(&types::Timespec::new().nsec(10_000_000)))
        .unwrap();
    let mut early = Vec::new();
    d.complete(&mut early);
    assert!(early.is_empty(), "{early:?}");
    assert_eq!(d.outstanding(), 3);
    (d, [a, b])
}

#[test]
fn drop_cancels_and_reaps_what_is_in_flight() {
    DROPPED.with(|d| d.set(None));
    drop(stuck_driver());
    assert_eq!(
        DROPPED.with(Cell::get),
        Some(0),
        "the drop left operations in flight"
    );
}

#[test]
fn a_send_cannot_be_pushed_into_another_driver() {
    let (a, mut b) = (driver(8), driver(8));
    let (x, _y) = UnixStream::pair().unwrap();
    let bytes = SendBuf::Bytes {
        data: b"x".to_vec(),
        off: 0,
    };
    let sqe = a.send(Target::Fd(x.as_raw_fd()), bytes, libc::MSG_NOSIGNAL, op(1));
    let pushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.push(sqe)));
    assert!(
        pushed.is_err(),
        "a send built by one driver was pushed into another"
    );
    assert_eq!((b.pending(), b.held.len()), (0, 0));
}

#[test]
fn a_slot_is_free_once_its_close_succeeds() {
    let mut d = driver(8);
    d.register_files(8, 0).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    d.push(Sqe::accept(listener.as_raw_fd(), true, false, op(1)));
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let accept = done(events(&mut d, 1).pop().unwrap());
    assert!(accept.result >= 0, "{accept:?}");
    // SAFETY: the result of the accept just completed.
    let (slot, _) = unsafe { d.accepted(accept.result, true) };
    assert_eq!(d.files().used, 1);
    d.close(slot, true, op(2), op(3));
    assert_eq!(
        d.files().used,
        1,
        "the slot is taken until the close completes"
    );
    let ends: Vec<i32> = events(&mut d, 2)
        .into_iter()
        .map(|e| done(e).result)
        .collect();
    assert_eq!(ends, [0, 0]);
    assert_eq!(d.files().used, 0);
    // A slot that holds nothing: its close fails and frees nothing.
    d.close(Descriptor::Fixed(5), false, op(4), op(5));
    assert!(done(events(&mut d, 1).pop().unwrap()).result < 0);
    assert_eq!(d.files().used, 0);
}

#[test]
fn transient_enter_errors_cut_a_wait_short() {
    for errno in [
        libc::ETIME,
        libc::EINTR,
        libc::EBUSY,
        libc::EAGAIN,
        libc::ENOMEM,
    ] {
        assert!(cut_short(&io::Error::from_raw_os_error(errno)), "{errno}");
    }
    assert!(!cut_short(&io::Error::from_raw_os_error(libc::EBADF)));
}

#[test]
fn a_chain_that_cannot_be_queued_fails_the_next_wait() {
    // A ring the kernel refuses submissions on until it is enabled (EBADFD).
    let ring = IoUring::builder().setup_r_disabled().build(2).unwrap();
    let mut d: Driver<TestOp> = Driver::new_on(ring);
    d.push(Sqe::nop(op(0)));
    d.push(Sqe::nop(op(1)));
    d.push(Sqe::timeout(Duration::from_secs(1), false, op(2)));
    assert!(
        d.failed.is_some(),
        "the queue was full and could not be submitted"
    );
    assert!(
        d.held.is_empty(),
        "the timeout's duration went with its SQE"
    );
    let e = d.submit_and_wait(Wait::One).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EBADFD));
}

/// CLOCK_MONOTONIC in ns, the clock of [`Sqe::wait_until`].
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[test]
fn what_is_linked_after_a_wait_runs_once_it_is_over_and_not_before() {
    let mut d = driver(8);
    let at = monotonic_ns() + 20_000_000;
    d.push_chain([Sqe::wait_until(at, op(1)).link(), Sqe::nop(op(2))]);
    let got = events(&mut d, 2);
    let seen = monotonic_ns();
    let got: Vec<_> = got
        .into_iter()
        .map(done)
        .map(|c| (c.op.n, c.result))
        .collect();
    // The timer's expiry counts as a success: the nop ran (0), not cancelled.
    assert_eq!(got, [(1, -libc::ETIME), (2, 0)]);
    assert!(seen >= at, "seen at {seen}, due at {at}");
}

#[test]
fn a_held_operation_is_cancelled_by_its_op_and_takes_its_chain_with_it() {
    let mut d = driver(8);
    let at = monotonic_ns() + 3_600_000_000_000;
    d.push_chain([Sqe::wait_until(at, op(1)).link(), Sqe::nop(op(2))]);
    d.push(Sqe::timeout(Duration::from_secs(3600), false, op(3)));
    d.cancel_held(|o| o.n == 1, op(4));
    let mut got: Vec<_> = events(&mut d, 3)
        .into_iter()
        .map(done)
        .map(|c| (c.op.n, c.result))
        .collect();
    got.sort();
    assert_eq!(got, [(1, -libc::ECANCELED), (2, -libc::ECANCELED), (4, 0)]);
    assert_eq!(d.outstanding(), 1, "the other timeout is still there");
}
