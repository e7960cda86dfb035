//! The worker's accept: one multishot accept on its listener (a single accept re-armed after
//! each completion when the listener is shared), into the ring's file table while direct
//! descriptors are on.
//!
//! The table is sized from `--max-connections` (or 65536), capped by `RLIMIT_NOFILE`, which
//! the kernel applies to it. When it is nearly full, accepting falls back to ordinary
//! descriptors (counted) and returns to direct ones once half the table is free again.
//! Proxy mode keeps ordinary descriptors (its PROXY header needs the addresses, which a slot
//! cannot tell).

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use std::io;

use ringd_ring::{Descriptor, Sqe};
use tracing::{debug, info};

use super::conn::UConn;
use super::op::Op;
use super::session::{ConnSession, Origin, SessionEvent};
use super::{AcceptState, Worker};
use crate::config::Service;
use crate::connection::{Connection, WorkerStats};

/// How many connections a listener with `backlog` can queue: the kernel caps it at
/// `net.core.somaxconn`.
fn listen_queue(backlog: usize) -> usize {
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(4096);
    backlog.min(somaxconn) + 1
}

/// The process's `RLIMIT_NOFILE` soft limit, which the kernel applies to a ring's file table.
fn nofile() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes into a valid rlimit.
    match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } {
        0 => lim.rlim_cur as usize,
        _ => 1024,
    }
}

impl Worker {
    /// Registers a sparse file table of `wanted` slots (capped by `RLIMIT_NOFILE`).
    pub(super) fn register_table(&mut self, wanted: usize) {
        // A multishot accept can take a listener's whole accept queue into the table in one
        // pass, before the worker sees any of it: the table keeps that much free (plus some)
        // beyond the connections wanted, and accepting leaves it before less is left. The
        // slots beyond also hold connections turned away with a 503 and closes under way.
        let queue = listen_queue(self.env.config.listen_options.backlog as usize);
        let headroom = queue + 64;
        let size = (wanted + headroom).min(nofile()).min(u32::MAX as usize / 2) as u32;
        if size as usize <= headroom {
            debug!(
                size,
                headroom, "no direct descriptors: the table would be too small"
            );
            return;
        }
        if let Err(e) = self.driver.register_files(size, headroom as u32) {
            debug!("no direct descriptors: registering {size} slots failed: {e}");
        }
    }

    /// Arms the accept, into the table while direct descriptors are on.
    pub(super) fn arm_accept(&mut self) {
        // A multishot accept stays first in the socket's wait queue and the kernel wakes only
        // the first waiter: on a socket that several workers share it would take every
        // connection. A single accept re-armed after each completion queues up behind the
        // other workers' instead, so connections go round.
        let direct = self.driver.files().direct();
        let multishot = !self.env.shared_listener;
        let fd = self.acceptor.listener.as_raw_fd();
        self.driver
            .push(Sqe::accept(fd, direct, multishot, Op::Accept));
        self.acceptor.state = AcceptState::Armed;
        self.acceptor.direct = direct;
    }

    /// An accept completed with `res` (a descriptor, or a slot for a direct accept).
    pub(super) fn accepted(&mut self, res: i32) -> Descriptor {
        // SAFETY: called by `on_accept` alone, once per accept completion, with its result.
        let (sock, leave) = unsafe { self.driver.accepted(res, self.acceptor.direct) };
        if leave {
            // The table is nearly full: the accept in flight is cancelled and re-armed for
            // ordinary descriptors, until half the table is free again.
            self.table_full();
            if self.acceptor.state == AcceptState::Armed {
                self.cancel_accept();
            }
        }
        sock
    }

    pub(super) fn on_accept(&mut self, res: i32, more: bool) {
        if !more {
            self.acceptor.state = AcceptState::Off;
        }
        if res >= 0 {
            self.acceptor.backoff.on_success();
            let sock = self.accepted(res);
            self.admit(sock);
        } else if res == -libc::ENFILE && self.acceptor.direct {
            self.table_full();
        } else if self.stopping.is_none() && res != -libc::ECANCELED {
            let err = io::Error::from_raw_os_error(-res);
            if let Some(pause) = self.acceptor.backoff.on_error(&err, &self.env.stats) {
                if self.acceptor.state == AcceptState::Armed {
                    return;
                }
                self.driver
                    .push(Sqe::timeout(pause, false, Op::AcceptRetry));
                self.acceptor.state = AcceptState::Retrying;
                return;
            }
        }
        if self.acceptor.state == AcceptState::Off && self.stopping.is_none() {
            self.arm_accept();
        }
    }

    /// Starts serving an accepted connection (or, over `--max-connections`, telling it so):
    /// the service decides which kind of session it becomes. A connection that raced the
    /// drain is served too, draining from the start.
    fn admit(&mut self, sock: Descriptor) {
        // The loop's clock may be a turn old: a deadline counted from it would come early.
        let now = self.time.clock.advance();
        let (sock, spec) = match (sock, &self.serving.service) {
            (Descriptor::Os(fd), Service::Proxy(_)) => return self.admit_pair(fd, now),
            (Descriptor::Fixed(_), Service::Proxy(_)) => {
                unreachable!("proxy mode never registers the descriptor table (see `run`)")
            }
            (sock, Service::Protocol(spec)) => (sock, spec),
        };
        let conn = if self.env.limit.try_admit() {
            WorkerStats::inc(&self.env.stats.accepted);
            Connection::new(spec, now)
        } else {
            WorkerStats::inc(&self.env.stats.rejected);
            Connection::rejected(spec, now)
        };
        // The access log is written with ordinary descriptors only (see `run`): a direct
        // one has no address to read.
        let origin = match (&self.env.access_log, &sock) {
            (Some(_), Descriptor::Os(fd)) => Some(Origin::of(fd, &self.acceptor.listener, now)),
            _ => None,
        };
        let t = self.sessions.insert_conn(ConnSession {
            fd: Some(sock),
            uc: UConn::new(conn),
            origin,
        });
        match self.stopping {
            Some(_) => self.dispatch(t, SessionEvent::Drain),
            None => self.dispatch(t, SessionEvent::Start),
        }
    }

    /// Cancels the accept in flight (its completion re-arms it, as the table says).
    pub(super) fn cancel_accept(&mut self) {
        self.driver.push(Sqe::cancel(Op::Accept, Op::AcceptCancel));
    }

    /// A direct accept failed with ENFILE (the table is full), or the table is nearly full.
    /// Ordinary descriptors until the usable part of it is half free again.
    pub(super) fn table_full(&mut self) {
        self.driver.files().leave();
        self.env
            .stats
            .fixed_fallbacks
            .fetch_add(1, Ordering::Relaxed);
        info!(
            slots = self.driver.files().size(),
            "the direct descriptor table is full: accepting ordinary descriptors for now"
        );
    }

    /// Back to direct accepts once the table's usable part (what the headroom leaves) is
    /// half free (the accept is cancelled and re-armed).
    pub(super) fn maybe_back_to_direct(&mut self) {
        if self.driver.files().may_return()
            && self.acceptor.state == AcceptState::Armed
            && self.stopping.is_none()
            && self.driver.files().enter()
        {
            self.cancel_accept();
        }
    }
}
