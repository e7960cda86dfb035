//! The driver: one ring, the memory its operations use, and the rule that holds it together:
//! whatever an operation in flight reads or writes (a send's bytes, a connect's address, a
//! timeout's duration, the provided buffers) belongs to the driver until the operation's
//! last completion, and the driver's `Drop` cancels everything in flight and reaps it before
//! any of that memory is freed, on every way out, a panic included.

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use io_uring::{cqueue, squeue, types, IoUring};
use slab::Slab;

use crate::bufring::BufRing;
use crate::op::{Operation, DRIVER_BIT};
use crate::setup::{self, Features, Setup, SetupError};
use crate::sqe::{Held, SendBuf, Sqe, Target};
use crate::table::{Descriptor, FileTable};

/// `user_data` of the driver's cancel of everything in flight.
const TEARDOWN: u64 = u64::MAX;

/// How long `Drop` waits for cancelled operations to complete before it gives up and leaks
/// their memory rather than free what the kernel may still write.
const REAP_DEADLINE: Duration = Duration::from_secs(2);

/// Failed submits in a row after which [`Driver::push_chain`] gives up making room.
const ROOM_TRIES: u32 = 1000;

/// The next driver's id (see [`Driver::send`]).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A completion, decoded.
#[derive(Debug)]
pub enum Event<O> {
    /// A completion of one of the user's operations.
    Done(Completion<O>),
    /// A completion whose `user_data` decodes to no operation: a bug to report, not to drop.
    Unknown {
        /// The `user_data`.
        user_data: u64,
        /// The result.
        result: i32,
    },
}

/// One completion of an operation.
#[derive(Debug)]
pub struct Completion<O> {
    /// The operation.
    pub op: O,
    /// The result: non-negative on success, `-errno` on failure.
    pub result: i32,
    /// `IORING_CQE_F_*`.
    pub flags: u32,
    /// A send's bytes, back at its completion.
    pub buf: Option<SendBuf>,
}

impl<O> Completion<O> {
    /// More completions of the same (multishot) operation will follow.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer a recv filled.
    pub fn buffer_id(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

/// How long a turn's wait may last.
#[derive(Debug, Clone, Copy)]
pub enum Wait<'a> {
    /// Until one completion.
    One,
    /// Until one completion or the timeout.
    Timed(&'a types::Timespec),
    /// Until `want` completions, but no longer than `min_wait_us` once one is there, and no
    /// longer than the timeout when none comes (Linux 6.12).
    Batch {
        /// Completions wanted.
        want: usize,
        /// Microseconds to wait for more once one is there.
        min_wait_us: u32,
        /// The longest wait.
        timeout: &'a types::Timespec,
    },
}

/// A ring and what its operations hold. `O` names the user's operations.
pub struct Driver<O: Operation> {
    /// The ring; closed only once nothing is in flight (or the held memory was leaked).
    ring: IoUring,
    /// The provided receive buffers, if registered.
    bufs: ManuallyDrop<Option<BufRing>>,
    /// Operations in flight that own memory: their `user_data` is [`DRIVER_BIT`] | index.
    held: ManuallyDrop<Slab<(O, Held)>>,
    /// Submissions whose last completion has not arrived.
    outstanding: usize,
    /// The file table.
    table: FileTable,
    /// What the kernel offers.
    features: Features,
    /// Everything in flight was reaped (or given up on) already.
    shut: bool,
    /// Names this driver in the sends it builds, which only it may push.
    id: u64,
    /// Why SQEs pushed could not be queued: the next [`Driver::submit_and_wait`] fails with it.
    failed: Option<io::Error>,
}

impl<O: Operation> Driver<O> {
    /// Sets up a ring and probes it.
    pub fn new(setup: Setup) -> Result<Self, SetupError> {
        Ok(Self::new_on(setup::build(setup)?))
    }

    fn new_on(mut ring: IoUring) -> Self {
        let features = Features::probe(&mut ring);
        Driver {
            ring,
            bufs: ManuallyDrop::new(None),
            held: ManuallyDrop::new(Slab::new()),
            outstanding: 0,
            table: FileTable::default(),
            features,
            shut: false,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            failed: None,
        }
    }

    /// What the kernel offers.
    pub fn features(&self) -> Features {
        self.features
    }

    /// The ring's parameters, as the kernel set them.
    pub fn params(&self) -> &io_uring::Parameters {
        self.ring.params()
    }

    /// Registers `entries` provided buffers of `size` bytes as group `bgid` (one group per
    /// driver).
    pub fn register_buffers(&mut self, bgid: u16, entries: u16, size: usize) -> io::Result<()> {
        assert!(self.bufs.is_none(), "one buffer group per driver");
        *self.bufs = Some(BufRing::new(&self.ring, bgid, entries, size)?);
        Ok(())
    }

    /// The provided buffers.
    ///
    /// # Panics
    /// If none were registered.
    pub fn buffers(&mut self) -> &mut BufRing {
        self.bufs.as_mut().expect("no provided buffers registered")
    }

    /// Registers a sparse file table of `size` slots, `headroom` of them kept free (see
    /// [`FileTable::headroom`]); accepts go into it from now on.
    pub fn register_files(&mut self, size: u32, headroom: u32) -> io::Result<()> {
        self.ring.submitter().register_files_sparse(size)?;
        self.table = FileTable {
            size,
            used: 0,
            direct: true,
            headroom,
        };
        Ok(())
    }

    /// The file table.
    pub fn files(&mut self) -> &mut FileTable {
        &mut self.table
    }

    /// The socket an accept completion with `result` ≥ 0 gave; `direct`: the accept was
    /// into the table. Returns it and whether accepting must leave the table now.
    ///
    /// # Safety
    /// `result` is the result of an accept this driver completed, not passed here before:
    /// an ordinary descriptor is closed when the returned [`Descriptor`] is, so it must be
    /// one that nothing else owns. A call without that promise does not compile:
    ///
    /// ```compile_fail
    /// # use ringd_ring::{Driver, Operation};
    /// fn adopt<O: Operation>(d: &mut Driver<O>, fd: i32) {
    ///     d.accepted(fd, false);
    /// }
    /// ```
    pub unsafe fn accepted(&mut self, result: i32, direct: bool) -> (Descriptor, bool) {
        debug_assert!(result >= 0);
        if direct {
            let leave = self.table.took();
            (Descriptor::Fixed(result as u32), leave)
        } else {
            // SAFETY: a fresh descriptor from accept(2) that nothing else owns (the caller's
            // promise).
            (
                Descriptor::Os(unsafe { FromRawFd::from_raw_fd(result) }),
                false,
            )
        }
    }

    /// Cancels every operation in flight that holds memory (which [`Sqe::cancel`] cannot
    /// name) and whose op `which` picks; `op` is the cancels' own.
    pub fn cancel_held(&mut self, mut which: impl FnMut(&O) -> bool, op: O) {
        let picked: Vec<u64> = (self.held.iter())
            .filter(|(_, (o, _))| which(o))
            .map(|(i, _)| DRIVER_BIT | i as u64)
            .collect();
        for user_data in picked {
            let entry = io_uring::opcode::AsyncCancel::new(user_data).build();
            self.push(Sqe {
                entry,
                op,
                held: None,
            });
        }
    }

    /// A send of `buf` on `target` (`flags`: `MSG_*`); its completion hands `buf` back.
    /// Only this driver may push it: a provided buffer is this driver's memory.
    pub fn send(&self, target: Target, buf: SendBuf, flags: i32, op: O) -> Sqe<O> {
        let bytes = match &buf {
            SendBuf::Bytes { data, off } => &data[*off..],
            SendBuf::Provided { bid, off, len } => {
                let bufs = self.bufs.as_ref().expect("no provided buffers registered");
                &bufs.bytes(*bid, *len)[*off..]
            }
        };
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let entry = crate::sqe::on!(target, |f| io_uring::opcode::Send::new(
            f,
            bytes.as_ptr(),
            len
        )
        .flags(flags)
        .build());
        Sqe {
            entry,
            op,
            held: Some(Held::Send {
                buf,
                driver: self.id,
            }),
        }
    }

    /// Closes `desc` (a slot is free once `close_op` completes successfully); `reset`: with
    /// `SO_LINGER` 0 first, so the close sends a reset and drops what is unsent. A table
    /// slot has no descriptor for setsockopt(2), so the ring sets it (Linux 6.7),
    /// hard-linked so the close runs whatever it says, and never first.
    pub fn close(&mut self, desc: Descriptor, reset: bool, linger_op: O, close_op: O) {
        match desc {
            Descriptor::Os(fd) => {
                if reset {
                    let _ = socket2::SockRef::from(&fd).set_linger(Some(Duration::ZERO));
                }
                self.push(Sqe::close(Target::Fd(fd.into_raw_fd()), close_op));
            }
            Descriptor::Fixed(i) => {
                let mut close = Sqe::close(Target::Fixed(i), close_op);
                close.held = Some(Held::Slot);
                match reset {
                    false => self.push(close),
                    true => self.push_chain([Sqe::linger_reset(i, linger_op).hardlink(), close]),
                }
            }
        }
    }

    /// Pushes one SQE (submitting first if the queue is full).
    pub fn push(&mut self, sqe: Sqe<O>) {
        self.push_chain([sqe]);
    }

    /// Pushes SQEs that must reach the kernel together (linked ones): room for all of them
    /// is made first (submitting what is queued), and the queue's tail is published once,
    /// after the last, so neither a submit nor an SQPOLL thread can see part of the chain.
    /// If no room can be made (the submits keep failing), the chain is dropped and the next
    /// [`Driver::submit_and_wait`] fails.
    ///
    /// # Panics
    /// If a send in the chain was built by another driver.
    pub fn push_chain<const N: usize>(&mut self, chain: [Sqe<O>; N]) {
        assert!(
            N <= self.ring.params().sq_entries() as usize,
            "chain too long"
        );
        for sqe in &chain {
            if let Some(Held::Send { driver, .. }) = &sqe.held {
                assert_eq!(
                    *driver, self.id,
                    "a send pushed into a driver that did not build it"
                );
            }
        }
        let Driver {
            ring, bufs, held, ..
        } = self;
        // Everything that can fail (a buffer lent that is not the user's) happens before the
        // first entry is queued.
        let entries = chain.map(|sqe| {
            debug_assert_eq!(sqe.op.encode() & DRIVER_BIT, 0, "{:?}", sqe.op);
            let user_data = match sqe.held {
                None => sqe.op.encode(),
                Some(h) => {
                    if let (
                        Held::Send {
                            buf: SendBuf::Provided { bid, .. },
                            ..
                        },
                        Some(b),
                    ) = (&h, &mut **bufs)
                    {
                        b.lend(*bid);
                    }
                    DRIVER_BIT | held.insert((sqe.op, h)) as u64
                }
            };
            sqe.entry.user_data(user_data)
        });
        let mut failures = 0;
        loop {
            let mut sq = ring.submission();
            if sq.capacity() - sq.len() < N {
                drop(sq);
                // A failed submit (EBUSY: completions to reap first) leaves the entries
                // queued; the next try may find room.
                if let Err(e) = ring.submit() {
                    failures += 1;
                    if !cut_short(&e) || failures >= ROOM_TRIES {
                        self.drop_chain(&entries, e);
                        return;
                    }
                    std::thread::yield_now();
                }
                continue;
            }
            for entry in &entries {
                // SAFETY: every `Sqe` is built in this crate from memory that outlives the
                // operation: memory it owns (now in `held` until the last completion: a
                // Vec's or a Box's heap block does not move when they do), provided buffers
                // of this driver (checked above; freed only in `Drop`, and a lent one cannot
                // be given back), or statics. `Drop` cancels and reaps whatever is in flight
                // before freeing any of it, or leaks it. There is room (checked above), so
                // the push cannot fail.
                let pushed = unsafe { sq.push(entry) };
                debug_assert!(pushed.is_ok());
            }
            // Dropping the queue publishes its tail: the whole chain at once.
            drop(sq);
            self.outstanding += N;
            return;
        }
    }

    /// Releases what the `entries` that never reached the queue held, and remembers why.
    fn drop_chain(&mut self, entries: &[squeue::Entry], error: io::Error) {
        for entry in entries {
            let u = entry.get_user_data();
            if u & DRIVER_BIT != 0 {
                let index = (u & !DRIVER_BIT) as usize;
                // Never queued: a close did not run, its slot stays taken.
                let never = -libc::ECANCELED;
                held_completion(
                    &mut self.held,
                    &mut self.bufs,
                    &mut self.table,
                    index,
                    never,
                    false,
                );
            }
        }
        self.failed = Some(error);
    }

    /// SQEs pushed and not yet submitted.
    pub fn pending(&mut self) -> usize {
        self.ring.submission().len()
    }

    /// Operations whose last completion has not arrived.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Publishes the buffers given back, submits what was pushed and waits as `wait` says.
    /// A wait cut short (timeout, signal, completions to reap first) is no error.
    pub fn submit_and_wait(&mut self, wait: Wait) -> io::Result<()> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if let Some(b) = self.bufs.as_ref() {
            b.publish();
        }
        let submitter = self.ring.submitter();
        let waited = match wait {
            Wait::One => submitter.submit_and_wait(1),
            Wait::Timed(ts) => {
                submitter.submit_with_args(1, &types::SubmitArgs::new().timespec(ts))
            }
            Wait::Batch {
                want,
                min_wait_us,
                timeout,
            } => {
                let args = types::SubmitArgs::new()
                    .min_wait_usec(min_wait_us)
                    .timespec(timeout);
                submitter.submit_with_args(want, &args)
            }
        };
        match waited {
            Err(e) if !cut_short(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Appends every ready completion to `out`. The memory of operations that ended is
    /// released (a send's bytes go back in its completion, a provided buffer filled becomes
    /// the user's) before any is handled, so the driver knows what the kernel holds even if
    /// handling one panics.
    pub fn complete(&mut self, out: &mut Vec<Event<O>>) {
        let Driver {
            ring,
            bufs,
            held,
            outstanding,
            table,
            ..
        } = self;
        for cqe in ring.completion() {
            let (user_data, result, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
            let more = cqueue::more(flags);
            if !more {
                *outstanding -= 1;
            }
            if let (Some(bid), Some(b)) = (cqueue::buffer_select(flags), &mut **bufs) {
                b.taken(bid);
            }
            let event = match user_data {
                TEARDOWN => continue,
                u if u & DRIVER_BIT == 0 => match O::decode(u) {
                    Some(op) => Event::Done(Completion {
                        op,
                        result,
                        flags,
                        buf: None,
                    }),
                    None => Event::Unknown { user_data, result },
                },
                u => match held_completion(
                    held,
                    bufs,
                    table,
                    (u & !DRIVER_BIT) as usize,
                    result,
                    more,
                ) {
                    Some((op, buf)) => Event::Done(Completion {
                        op,
                        result,
                        flags,
                        buf,
                    }),
                    None => Event::Unknown { user_data, result },
                },
            };
            out.push(event);
        }
    }

    /// Cancels everything in flight and reaps it; true when nothing is left that could
    /// still use the driver's memory (then the buffer ring is unregistered). Waits at most
    /// [`REAP_DEADLINE`]. Called by `Drop` if not before.
    pub fn shutdown(&mut self) -> bool {
        if self.shut {
            return self.outstanding == 0;
        }
        self.shut = true;
        if self.outstanding > 0 {
            self.cancel_and_reap();
        }
        if self.outstanding > 0 {
            return false;
        }
        if let Some(b) = self.bufs.as_ref() {
            let _ = b.unregister(&self.ring);
        }
        true
    }

    fn cancel_and_reap(&mut self) {
        let sqe = io_uring::opcode::AsyncCancel2::new(types::CancelBuilder::any().all())
            .build()
            .user_data(TEARDOWN);
        while self.ring.submission().is_full() {
            if self.ring.submit().is_err() {
                return;
            }
        }
        // SAFETY: a cancel names no memory.
        let _ = unsafe { self.ring.submission().push(&sqe) };
        self.outstanding += 1;
        let deadline = Instant::now() + REAP_DEADLINE;
        let tick = types::Timespec::new().nsec(50_000_000);
        let mut events = Vec::new();
        while self.outstanding > 0 && Instant::now() < deadline {
            if self.submit_and_wait(Wait::Timed(&tick)).is_err() {
                return;
            }
            events.clear();
            self.complete(&mut events);
        }
    }
}

impl<O: Operation> std::fmt::Debug for Driver<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("outstanding", &self.outstanding)
            .field("held", &self.held.len())
            .field("table", &self.table)
            .field("features", &self.features)
            .finish_non_exhaustive()
    }
}

/// The held operation at `index` completed with `result`: its op, and its bytes if it was
/// a send and this was its last completion (then its memory is released, and the slot a
/// close emptied is free).
fn held_completion<O: Operation>(
    held: &mut Slab<(O, Held)>,
    bufs: &mut Option<BufRing>,
    table: &mut FileTable,
    index: usize,
    result: i32,
    more: bool,
) -> Option<(O, Option<SendBuf>)> {
    let op = held.get(index)?.0;
    if more {
        return Some((op, None));
    }
    match held.remove(index).1 {
        Held::Send { buf, .. } => {
            if let (SendBuf::Provided { bid, .. }, Some(b)) = (&buf, bufs) {
                b.unlend(*bid);
            }
            Some((op, Some(buf)))
        }
        Held::Slot => {
            if result >= 0 {
                table.closed();
            }
            Some((op, None))
        }
        Held::NewSlot => {
            if result >= 0 {
                table.opened();
            }
            Some((op, None))
        }
        Held::Addr(_) | Held::Time(_) | Held::Msg(_) => Some((op, None)),
    }
}

/// An `io_uring_enter` error that only cuts a wait or a submit short (a timeout, a signal,
/// completions to reap first, a shortage of kernel memory): the next turn tries again.
fn cut_short(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN | libc::ENOMEM)
    )
}

impl<O: Operation> Drop for Driver<O> {
    fn drop(&mut self) {
        let reaped = self.shutdown();
        #[cfg(test)]
        tests::DROPPED.with(|d| d.set(Some(self.outstanding)));
        if reaped {
            // SAFETY: nothing is in flight and the buffer group is unregistered: the kernel
            // holds no reference to this memory; each is dropped once, here.
            unsafe {
                ManuallyDrop::drop(&mut self.held);
                ManuallyDrop::drop(&mut self.bufs);
            }
        }
        // Otherwise the kernel may still read or write them: they are leaked.
    }
}

#[cfg(test)]
mod tests;
