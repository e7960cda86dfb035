//! Direct descriptors: connections accepted straight into the ring's own file table
//! (`IORING_FILE_INDEX_ALLOC`), never installed in the process's descriptor table, and every
//! later operation on them (recv, send, shutdown, cancel, close) names the table slot. That
//! saves the kernel the descriptor install and removal of each connection and the reference
//! taken on every operation.
//!
//! The table is sized from `--max-connections` (or 65536), capped by `RLIMIT_NOFILE`, which
//! the kernel applies to it. When it is full, accepting falls back to ordinary descriptors
//! (counted) and returns to direct ones once half the table is free again. Proxy mode keeps
//! ordinary descriptors (its PROXY header needs the addresses, which a slot cannot tell).

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use io_uring::{opcode, squeue, types};
use tracing::{debug, info, warn};

use super::op::{Op, Token};
use super::sock::Submit;
use super::{AcceptState, Worker, BGID};

/// `SO_LINGER` on, 0 seconds: a close resets the connection. Static: the kernel reads it
/// while the operation runs.
static LINGER_RESET: libc::linger = libc::linger {
    l_onoff: 1,
    l_linger: 0,
};

/// A connection's socket.
#[derive(Debug)]
pub(super) enum SockFd {
    /// An ordinary descriptor.
    Os(OwnedFd),
    /// A slot in the ring's file table.
    Fixed(u32),
}

impl SockFd {
    /// What SQEs name.
    pub(super) fn target(&self) -> Target {
        match self {
            SockFd::Os(fd) => Target::Raw(fd.as_raw_fd()),
            SockFd::Fixed(i) => Target::Fixed(*i),
        }
    }
}

/// What an SQE names: a descriptor or a table slot.
#[derive(Debug, Clone, Copy)]
pub(super) enum Target {
    /// A descriptor.
    Raw(RawFd),
    /// A slot in the ring's file table.
    Fixed(u32),
}

/// Builds an SQE for `$target` with `$f` bound to `types::Fd` or `types::Fixed`.
macro_rules! on {
    ($target:expr, |$f:ident| $build:expr) => {
        match $target {
            Target::Raw(fd) => {
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

/// The ring's file table, when in use.
#[derive(Debug, Default)]
pub(super) struct Table {
    /// Slots registered (0: direct descriptors are off).
    pub size: u32,
    /// Slots holding a connection (or whose close is in flight).
    pub used: u32,
    /// Accept into the table (false once it is nearly full, until its usable part is half free).
    pub direct: bool,
    /// Slots kept free: accepting leaves the table when no more than this many are left,
    /// because a direct accept that finds the table full loses its connection (the kernel
    /// closes it) and accepts already under way still take slots.
    pub headroom: u32,
}

/// How many connections a listener with `backlog` can queue: the kernel caps it at
/// `net.core.somaxconn`.
fn listen_queue(backlog: usize) -> usize {
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(4096);
    backlog.min(somaxconn) + 1
}

impl Worker {
    /// Registers a sparse file table of `wanted` slots (capped by `RLIMIT_NOFILE`).
    pub(super) fn register_table(&mut self, wanted: usize) {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit(2) writes into a valid rlimit.
        let nofile = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } {
            0 => lim.rlim_cur as usize,
            _ => 1024,
        };
        // A multishot accept can take a listener's whole accept queue into the table in one
        // pass, before the worker sees any of it: the table keeps that much free (plus some)
        // beyond the connections wanted, and accepting leaves it before less is left. The
        // slots beyond also hold connections turned away with a 503 and closes under way.
        let queue = listen_queue(self.env.config.listen_options.backlog as usize);
        let headroom = queue + 64;
        let size = (wanted + headroom).min(nofile).min(u32::MAX as usize / 2) as u32;
        if size as usize <= headroom {
            debug!(
                size,
                headroom, "no direct descriptors: the table would be too small"
            );
            return;
        }
        match self.ring.submitter().register_files_sparse(size) {
            Ok(()) => {
                self.table = Table {
                    size,
                    used: 0,
                    direct: true,
                    headroom: headroom as u32,
                };
            }
            Err(e) => debug!("no direct descriptors: registering {size} slots failed: {e}"),
        }
    }

    /// Arms the accept, into the table while direct descriptors are on.
    pub(super) fn arm_accept(&mut self) {
        // A multishot accept stays first in the socket's wait queue and the kernel wakes only
        // the first waiter: on a socket that several workers share it would take every
        // connection. A single accept re-armed after each completion queues up behind the
        // other workers' instead, so connections go round.
        let fd = types::Fd(self.listener.as_raw_fd());
        let direct = self.table.direct;
        // Close-on-exec concerns descriptors; the kernel refuses it for a table slot.
        let flags = if direct { 0 } else { libc::SOCK_CLOEXEC };
        let sqe = match self.env.shared_listener {
            true => opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                .file_index(direct.then(types::DestinationSlot::auto_target))
                .flags(flags)
                .build(),
            false => opcode::AcceptMulti::new(fd)
                .allocate_file_index(direct)
                .flags(flags)
                .build(),
        };
        self.push(sqe, Op::Accept);
        self.accept = AcceptState::Armed;
        self.accept_direct = direct;
    }

    /// An accept completed with `res` (a descriptor, or a slot for a direct accept).
    pub(super) fn accepted(&mut self, res: i32) -> SockFd {
        if self.accept_direct {
            self.table.used += 1;
            let t = &self.table;
            if t.direct && t.used + t.headroom >= t.size {
                self.leave_direct();
            }
            SockFd::Fixed(res as u32)
        } else {
            // SAFETY: a fresh descriptor from accept that nothing else owns.
            SockFd::Os(unsafe { std::os::fd::FromRawFd::from_raw_fd(res) })
        }
    }

    /// The table is nearly full: the accept in flight is cancelled and re-armed for ordinary
    /// descriptors, until half the table is free again.
    fn leave_direct(&mut self) {
        self.table_full();
        if self.accept == AcceptState::Armed {
            let sqe = opcode::AsyncCancel::new(Op::Accept.encode()).build();
            self.push(sqe, Op::AcceptCancel);
        }
    }

    /// A direct accept failed with ENFILE (the table is full), or the table is nearly full.
    /// Ordinary descriptors until the usable part of it is half free again.
    pub(super) fn table_full(&mut self) {
        self.table.direct = false;
        self.env
            .stats
            .fixed_fallbacks
            .fetch_add(1, Ordering::Relaxed);
        info!(
            slots = self.table.size,
            "the direct descriptor table is full: accepting ordinary descriptors for now"
        );
    }

    /// Back to direct accepts once the table's usable part (what the headroom leaves) is
    /// half free (the accept is cancelled and re-armed).
    pub(super) fn maybe_back_to_direct(&mut self) {
        let t = &self.table;
        if t.size > 0
            && !t.direct
            && t.used < (t.size - t.headroom) / 2
            && self.accept == AcceptState::Armed
            && self.stopping.is_none()
        {
            self.table.direct = true;
            let sqe = opcode::AsyncCancel::new(Op::Accept.encode()).build();
            self.push(sqe, Op::AcceptCancel);
        }
    }

    /// Submits the close of a connection's socket; its slot is freed when that completes.
    /// `reset`: `SO_LINGER` 0 first (hard-linked: the close runs whatever the setsockopt
    /// says), so the close sends a reset and drops what is unsent.
    pub(super) fn push_close(&mut self, sock: SockFd, token: Token, reset: bool) {
        match sock {
            SockFd::Os(fd) => {
                if reset {
                    // A rare path: set directly, which works on every kernel.
                    let _ = socket2::SockRef::from(&fd).set_linger(Some(Duration::ZERO));
                }
                let sqe = opcode::Close::new(types::Fd(fd.into_raw_fd())).build();
                self.push(sqe, Op::Close(token));
            }
            SockFd::Fixed(i) => {
                self.table.used -= 1;
                let close = opcode::Close::new(types::Fixed(i)).build();
                if !reset {
                    return self.push(close, Op::Close(token));
                }
                // A table slot has no descriptor for setsockopt(2): the ring sets it
                // (Linux 6.7, which direct descriptors require), and the two go to the
                // kernel together so that the close cannot run first.
                let linger: *const libc::linger = &LINGER_RESET;
                let set = opcode::SetSockOpt::new(
                    types::Fixed(i),
                    libc::SOL_SOCKET as u32,
                    libc::SO_LINGER as u32,
                    linger.cast(),
                    std::mem::size_of::<libc::linger>() as u32,
                )
                .build()
                .flags(squeue::Flags::IO_HARDLINK);
                self.push_chain([(set, Op::Linger(token)), (close, Op::Close(token))]);
            }
        }
    }

    /// Pushes the SQEs of a socket operation on `target` (`token` names the socket).
    pub(super) fn push_socket_op(&mut self, sub: Submit, token: Token, target: Target) {
        match sub {
            Submit::Recv { room, .. } => {
                let mut sqe = on!(target, |f| opcode::RecvMulti::new(f, BGID).build());
                if self.recv_cap {
                    // 0 would mean no cap: a connection with no room left reads one buffer.
                    let room = u32::try_from(room).unwrap_or(u32::MAX).max(1);
                    sqe = ringd_ring::sqe::with_total_len(sqe, room);
                }
                self.push(sqe, Op::Recv(token));
            }
            Submit::Send { ptr, len, fin, .. } => {
                // A short send is no error on a stream socket and would not break a link;
                // with MSG_WAITALL the kernel retries until all is sent, or fails the send
                // and with it the link. So the FIN linked behind a last send follows its
                // last byte, in the same submission, as the origin's reply-then-close did,
                // and never runs early.
                let flags = match fin {
                    true => libc::MSG_NOSIGNAL | libc::MSG_WAITALL,
                    false => libc::MSG_NOSIGNAL,
                };
                let mut sqe = on!(target, |f| opcode::Send::new(f, ptr, len)
                    .flags(flags)
                    .build());
                match fin {
                    true => {
                        sqe = sqe.flags(squeue::Flags::IO_LINK);
                        let shutdown =
                            on!(target, |f| opcode::Shutdown::new(f, libc::SHUT_WR).build());
                        self.push_chain([(sqe, Op::Send(token)), (shutdown, Op::Fin(token))]);
                    }
                    false => self.push(sqe, Op::Send(token)),
                }
            }
            Submit::Fin(_) => {
                let sqe = on!(target, |f| opcode::Shutdown::new(f, libc::SHUT_WR).build());
                self.push(sqe, Op::Fin(token));
            }
            Submit::CancelRecv(_) => {
                let sqe = opcode::AsyncCancel::new(Op::Recv(token).encode()).build();
                self.push(sqe, Op::Cancel(token));
            }
            Submit::CancelAll(_) => {
                let builder = on!(target, |f| types::CancelBuilder::fd(f).all());
                self.push(
                    opcode::AsyncCancel2::new(builder).build(),
                    Op::Cancel(token),
                );
            }
            Submit::CancelConnect => {
                let sqe = opcode::AsyncCancel::new(Op::Connect(token).encode()).build();
                self.push(sqe, Op::Cancel(token));
            }
            // The worker handles these itself (they change its table).
            Submit::Close { .. } | Submit::Connect => {
                warn!("{sub:?} is not a socket operation")
            }
        }
    }
}
