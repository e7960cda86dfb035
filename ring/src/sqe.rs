//! Submission entries a [`crate::Driver`] can push safely: each is built here from what its
//! operation reads or writes, and carries that memory with it ([`Sqe`]), so nothing the
//! kernel touches can be freed before the completion. Also the SQE field the `io-uring`
//! crate has no builder for.

use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::{opcode, squeue, types};
use socket2::SockAddr;

use crate::op::Operation;

/// What an SQE names: a descriptor or a slot of the ring's file table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A descriptor.
    Fd(RawFd),
    /// A slot in the ring's file table.
    Fixed(u32),
}

/// Builds an SQE for `$target` with `$f` bound to `types::Fd` or `types::Fixed`.
macro_rules! on {
    ($target:expr, |$f:ident| $build:expr) => {
        match $target {
            Target::Fd(fd) => {
                let $f = types::Fd(fd);
                $build
            }
            Target::Fixed(i) => {
                let $f = types::Fixed(i);
                $build
            }
        }
    };
}
pub(crate) use on;

/// Bytes a send reads: owned by the operation from its submission to its completion, which
/// hands them back.
#[derive(Debug, PartialEq, Eq)]
pub enum SendBuf {
    /// Bytes the user made.
    Bytes {
        /// The bytes.
        data: Vec<u8>,
        /// Bytes already sent.
        off: usize,
    },
    /// Bytes a recv left in a provided buffer: the buffer cannot be given back to the ring
    /// while a send reads it.
    Provided {
        /// Buffer id in the driver's buffer ring.
        bid: u16,
        /// Bytes already sent.
        off: usize,
        /// Bytes received into it.
        len: usize,
    },
}

impl SendBuf {
    /// Bytes still to send.
    pub fn remaining(&self) -> usize {
        match self {
            SendBuf::Bytes { data, off } => data.len() - off,
            SendBuf::Provided { off, len, .. } => len - off,
        }
    }

    /// Marks `n` more bytes as sent.
    pub fn advance(&mut self, n: usize) {
        match self {
            SendBuf::Bytes { off, .. } | SendBuf::Provided { off, .. } => *off += n,
        }
    }
}

/// Memory an operation in flight reads or writes, kept by the driver until the operation's
/// last completion.
#[derive(Debug)]
pub(crate) enum Held {
    /// A send's bytes, and the id of the driver that built it (the only one that may push
    /// it: a provided buffer is that driver's memory).
    Send {
        /// The bytes.
        buf: SendBuf,
        /// The driver's id.
        driver: u64,
    },
    /// A close of a file table slot: nothing to keep, but the slot is free only once it
    /// succeeds.
    Slot,
    /// A socket created into a file table slot: the slot is taken once it succeeds.
    NewSlot,
    /// A connect's address.
    Addr(#[allow(dead_code)] Box<SockAddr>),
    /// A timeout's duration.
    Time(#[allow(dead_code)] Box<types::Timespec>),
    /// A recvmsg's header.
    Msg(#[allow(dead_code)] Box<crate::msg::Header>),
}

/// `SO_LINGER` on, 0 seconds: a close resets the connection. Static: the kernel reads it
/// while the operation runs.
pub(crate) static LINGER_RESET: libc::linger = libc::linger {
    l_onoff: 1,
    l_linger: 0,
};

/// An int option's "on". Static: the kernel reads it while the operation runs.
static ONE: libc::c_int = 1;

/// A submission and what it needs to stay alive until it completes.
#[derive(Debug)]
pub struct Sqe<O> {
    /// The entry (its `user_data` is set when it is pushed).
    pub(crate) entry: squeue::Entry,
    /// What it is for.
    pub(crate) op: O,
    /// The memory it uses.
    pub(crate) held: Option<Held>,
}

impl<O: Operation> Sqe<O> {
    fn plain(entry: squeue::Entry, op: O) -> Self {
        Sqe {
            entry,
            op,
            held: None,
        }
    }

    /// Does nothing (completes with 0).
    pub fn nop(op: O) -> Self {
        Self::plain(opcode::Nop::new().build(), op)
    }

    /// A multishot recv into provided buffer group `bgid`; with `total`, it ends by itself
    /// once it has delivered that many bytes (where [`crate::Features`] says the kernel can).
    pub fn recv_multi(target: Target, bgid: u16, total: Option<u32>, op: O) -> Self {
        let mut sqe = on!(target, |f| opcode::RecvMulti::new(f, bgid).build());
        if let Some(total) = total {
            sqe = with_total_len(sqe, total);
        }
        Self::plain(sqe, op)
    }

    /// One recv into a buffer of provided buffer group `bgid` (the whole buffer).
    pub fn recv_one(target: Target, bgid: u16, op: O) -> Self {
        let sqe = on!(target, |f| opcode::Recv::new(f, std::ptr::null_mut(), 0)
            .buf_group(bgid)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT));
        Self::plain(sqe, op)
    }

    /// A TCP socket of `domain` (`libc::AF_INET*`) created straight into file table slot
    /// `slot` (Linux 5.19), which must be free; no descriptor is installed. The slot counts
    /// as taken once it succeeds, and is closed with [`crate::Driver::close`].
    pub fn socket_direct(domain: i32, slot: u32, op: O) -> Self {
        let slot = types::DestinationSlot::try_from_slot_target(slot).ok();
        let sqe = opcode::Socket::new(domain, libc::SOCK_STREAM, libc::IPPROTO_TCP)
            .file_index(slot)
            .build();
        Sqe {
            entry: sqe,
            op,
            held: Some(Held::NewSlot),
        }
    }

    /// `TCP_NODELAY` on `target`, set by the ring (Linux 6.7): a table slot has no
    /// descriptor for setsockopt(2).
    pub fn nodelay(target: Target, op: O) -> Self {
        Self::option_on(target, libc::IPPROTO_TCP, libc::TCP_NODELAY, op)
    }

    /// `SO_TIMESTAMPNS` on `target`, set by the ring (Linux 6.7): its reads carry the
    /// kernel's receive time ([`crate::msg`]).
    pub fn rx_timestamps(target: Target, op: O) -> Self {
        Self::option_on(target, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, op)
    }

    /// Turns int option `name` of `level` on.
    fn option_on(target: Target, level: i32, name: i32, op: O) -> Self {
        let one: *const libc::c_int = &ONE;
        let sqe = on!(target, |f| opcode::SetSockOpt::new(
            f,
            level as u32,
            name as u32,
            one.cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
        .build());
        Self::plain(sqe, op)
    }

    /// A multishot recvmsg into buffer group `bgid`, `control` bytes of each buffer set
    /// aside for control data: each completion's buffer is read with [`crate::msg::parse`].
    pub fn recvmsg_multi(target: Target, bgid: u16, control: u32, op: O) -> Self {
        let header = Box::new(crate::msg::Header::new(control));
        let sqe = on!(target, |f| opcode::RecvMsgMulti::new(f, &header.0, bgid)
            .build());
        Sqe {
            entry: sqe,
            op,
            held: Some(Held::Msg(header)),
        }
    }

    /// `shutdown(2)` of `target` (`how`: `libc::SHUT_*`).
    pub fn shutdown(target: Target, how: i32, op: O) -> Self {
        Self::plain(on!(target, |f| opcode::Shutdown::new(f, how).build()), op)
    }

    /// Cancels the operation `target` stands for. Only operations pushed without memory of
    /// their own are found by their `user_data`; cancel the others with
    /// [`Sqe::cancel_fd`].
    pub fn cancel(target: O, op: O) -> Self {
        Self::plain(opcode::AsyncCancel::new(target.encode()).build(), op)
    }

    /// Cancels every operation in flight on `target`.
    pub fn cancel_fd(target: Target, op: O) -> Self {
        let builder = on!(target, |f| types::CancelBuilder::fd(f).all());
        Self::plain(opcode::AsyncCancel2::new(builder).build(), op)
    }

    /// Connects socket `fd` to `addr`.
    pub fn connect(fd: RawFd, addr: SockAddr, op: O) -> Self {
        Self::connect_to(Target::Fd(fd), addr, op)
    }

    /// Connects `target` to `addr`.
    pub fn connect_to(target: Target, addr: SockAddr, op: O) -> Self {
        let addr = Box::new(addr);
        let sqe = on!(target, |f| opcode::Connect::new(
            f,
            addr.as_ptr().cast(),
            addr.len()
        )
        .build());
        Sqe {
            entry: sqe,
            op,
            held: Some(Held::Addr(addr)),
        }
    }

    /// A timeout after `after`; `multishot`: it fires every `after` until cancelled.
    pub fn timeout(after: Duration, multishot: bool, op: O) -> Self {
        let ts = Box::new(types::Timespec::from(after));
        let mut t = opcode::Timeout::new(&*ts);
        if multishot {
            t = t.flags(types::TimeoutFlags::MULTISHOT);
        }
        Sqe {
            entry: t.build(),
            op,
            held: Some(Held::Time(ts)),
        }
    }

    /// Completes at `at_ns` on CLOCK_MONOTONIC with `-ETIME` that counts as a success: an
    /// SQE linked after it ([`Sqe::link`]) runs then, while the loop that pushed it sleeps.
    pub fn wait_until(at_ns: u64, op: O) -> Self {
        let ts = Box::new(types::Timespec::from(Duration::from_nanos(at_ns)));
        let flags = types::TimeoutFlags::ABS | types::TimeoutFlags::ETIME_SUCCESS;
        let t = opcode::Timeout::new(&*ts).flags(flags);
        Sqe {
            entry: t.build(),
            op,
            held: Some(Held::Time(ts)),
        }
    }

    /// A multishot poll for `POLLIN` on `fd`.
    pub fn poll_in_multi(fd: RawFd, op: O) -> Self {
        let sqe = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build();
        Self::plain(sqe, op)
    }

    /// An accept on listener `fd` (no peer address asked for): `direct` into the ring's
    /// file table; `multishot` accepts until cancelled.
    pub fn accept(fd: RawFd, direct: bool, multishot: bool, op: O) -> Self {
        let fd = types::Fd(fd);
        // Close-on-exec concerns descriptors; the kernel refuses it for a table slot.
        let flags = if direct { 0 } else { libc::SOCK_CLOEXEC };
        let sqe = match multishot {
            false => opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                .file_index(direct.then(types::DestinationSlot::auto_target))
                .flags(flags)
                .build(),
            true => opcode::AcceptMulti::new(fd)
                .allocate_file_index(direct)
                .flags(flags)
                .build(),
        };
        Self::plain(sqe, op)
    }

    /// Sets `SO_LINGER` to 0 seconds on table slot `slot` (its close then resets).
    pub(crate) fn linger_reset(slot: u32, op: O) -> Self {
        let linger: *const libc::linger = &LINGER_RESET;
        let sqe = opcode::SetSockOpt::new(
            types::Fixed(slot),
            libc::SOL_SOCKET as u32,
            libc::SO_LINGER as u32,
            linger.cast(),
            std::mem::size_of::<libc::linger>() as u32,
        )
        .build();
        Self::plain(sqe, op)
    }

    /// Closes `target`.
    pub(crate) fn close(target: Target, op: O) -> Self {
        Self::plain(on!(target, |f| opcode::Close::new(f).build()), op)
    }

    /// The next SQE of the chain runs only if this one succeeds (a short send counts as a
    /// failure only with `MSG_WAITALL`).
    pub fn link(mut self) -> Self {
        self.entry = self.entry.flags(squeue::Flags::IO_LINK);
        self
    }

    /// The next SQE of the chain runs after this one, whatever its result.
    pub fn hardlink(mut self) -> Self {
        self.entry = self.entry.flags(squeue::Flags::IO_HARDLINK);
        self
    }
}

/// Offset of the 32-bit union `splice_fd_in` / `file_index` / `optlen` in the kernel's
/// `struct io_uring_sqe` (uapi, fixed since the SQE got its 64-byte layout).
const SQE_OPTLEN_OFFSET: usize = 44;

/// A multishot recv `sqe` that ends (a completion without `IORING_CQE_F_MORE`) once it
/// has delivered `len` bytes; the last buffer it fills may take it past `len`. The
/// `io-uring` crate has no builder method for this field.
pub fn with_total_len(mut sqe: squeue::Entry, len: u32) -> squeue::Entry {
    const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);
    let p: *mut squeue::Entry = &mut sqe;
    // SAFETY: `squeue::Entry` is `#[repr(C)]` around the kernel's 64-byte `io_uring_sqe`
    // (size checked above); bytes 44..48 are the `optlen` union member, inside it, and an
    // unaligned write of a `u32` there is valid for any bit pattern of the field.
    unsafe {
        p.cast::<u8>()
            .add(SQE_OPTLEN_OFFSET)
            .cast::<u32>()
            .write_unaligned(len)
    };
    sqe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_len_lands_in_the_optlen_field() {
        // The crate writes `file_index` (the same union) at the offset the kernel reads.
        let slot = types::DestinationSlot::try_from_slot_target(6).unwrap();
        let sqe = opcode::Socket::new(libc::AF_INET, libc::SOCK_STREAM, 0)
            .file_index(Some(slot))
            .build();
        let raw = |e: &squeue::Entry| {
            // SAFETY: a 64-byte `#[repr(C)]` plain-data struct read as bytes.
            unsafe { std::mem::transmute_copy::<_, [u8; 64]>(e) }
        };
        assert_eq!(raw(&sqe)[SQE_OPTLEN_OFFSET..][..4], 7u32.to_ne_bytes());
        let recv = opcode::RecvMulti::new(types::Fd(3), 0).build();
        let capped = with_total_len(recv.clone(), 4096);
        assert_eq!(
            raw(&capped)[SQE_OPTLEN_OFFSET..][..4],
            4096u32.to_ne_bytes()
        );
        let (a, b) = (raw(&recv), raw(&capped));
        let changed: Vec<usize> = (0..64).filter(|&i| a[i] != b[i]).collect();
        assert!(changed.iter().all(|i| (44..48).contains(i)), "{changed:?}");
    }
}
