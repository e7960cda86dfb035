//! The `uring` worker's lifecycle beyond the data path: deadlines, the drain, the leak
//! accounting when the worker stops, and the teardown that makes every `SAFETY` comment of
//! the engine hold on every way out, a panic included.

use std::mem::ManuallyDrop;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types};
use tracing::{debug, warn};

use super::conn::UConn;
use super::op::{Op, Token};
use super::{AcceptState, Worker};
use crate::config::Service;
use crate::engine::control::Lifecycle;

/// How long the teardown waits for cancelled operations to complete before it gives up and
/// leaks the buffers rather than free memory the kernel may still write.
const REAP_DEADLINE: Duration = Duration::from_secs(2);

impl Worker {
    /// Stops accepting as `how` says and tells every connection the server drains.
    pub(super) fn begin_drain(&mut self, how: Lifecycle) {
        self.stopping = Some(how);
        self.env.drain.acknowledge();
        if !how.keeps_listeners() {
            // Fails the multishot accept and stops the kernel queueing connections here, also
            // while accepting pauses after an error (a retry timeout then arms nothing).
            crate::engine::socket::shutdown_both(&self.listener);
        } else if self.accept == AcceptState::Armed {
            // A successor accepts on the same socket: cancel our accept (a connection it
            // already took is still served), leave the socket and its queue be.
            let sqe = opcode::AsyncCancel::new(Op::Accept.encode()).build();
            self.push(sqe, Op::AcceptCancel);
        }
        // Proxied connections are served on until their peers close them.
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let t = Token::new(key, self.gens[key]);
            self.with_conn(t, UConn::on_drain);
        }
    }

    /// Lets connections whose deadline passed act on it.
    pub(super) fn sweep(&mut self, now: u64) {
        let limits = self.limits;
        let due = |d: Option<u64>| d.is_some_and(|d| d <= now);
        self.due.clear();
        match self.service {
            Service::Protocol(_) => self.due.extend(
                self.conns
                    .iter()
                    .filter(|(_, s)| due(s.uc.conn.poll_timeout(&limits)))
                    .map(|(k, _)| k),
            ),
            Service::Proxy(_) => self.due.extend(
                self.pairs
                    .iter()
                    .filter(|(_, s)| due(s.up.relay.poll_timeout(&limits)))
                    .map(|(k, _)| k),
            ),
        }
        for i in 0..self.due.len() {
            let t = Token::new(self.due[i], self.gens[self.due[i]]);
            match self.service {
                Service::Protocol(_) => self.with_conn(t, UConn::on_time),
                Service::Proxy(_) => self.with_pair(t, |p, env, _| p.on_time(env)),
            }
        }
    }

    /// Records what the worker still held when it stopped (0 and 0 after a clean drain).
    pub(super) fn finish(&mut self) {
        let leaked_buffers = self.bufs.entries().saturating_sub(self.bufs.available());
        let leaked_fds = self.conns.len() + self.pairs.len();
        let stats = &self.env.stats;
        stats
            .leaked_buffers
            .store(leaked_buffers as u64, Ordering::Relaxed);
        stats.leaked_fds.store(leaked_fds as u64, Ordering::Relaxed);
        if leaked_buffers > 0 || leaked_fds > 0 {
            warn!(
                leaked_buffers,
                leaked_fds, "worker stopped with resources still held"
            );
        }
    }

    /// Cancels everything in flight and waits for it to complete; true when nothing is left
    /// that could still use the worker's memory.
    fn reap_all(&mut self) -> bool {
        if self.outstanding == 0 {
            return true;
        }
        let sqe = opcode::AsyncCancel2::new(types::CancelBuilder::any().all()).build();
        self.push(sqe, Op::Teardown);
        let deadline = Instant::now() + REAP_DEADLINE;
        let wait = types::Timespec::new().nsec(50_000_000);
        while self.outstanding > 0 && Instant::now() < deadline {
            let args = types::SubmitArgs::new().timespec(&wait);
            if let Err(e) = self.ring.submitter().submit_with_args(1, &args) {
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) {
                    warn!("io_uring wait failed while stopping: {e}");
                    return false;
                }
            }
            for cqe in self.ring.completion() {
                if !cqueue::more(cqe.flags()) {
                    self.outstanding -= 1;
                }
            }
        }
        self.outstanding == 0
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.reap_all() {
            if let Err(e) = self.bufs.unregister(&self.ring) {
                debug!("unregistering the buffer ring failed: {e}");
            }
            // SAFETY: nothing is in flight any more and the buffer group is unregistered, so
            // the kernel holds no reference to the buffers; they are dropped once, here.
            unsafe { ManuallyDrop::drop(&mut self.bufs) };
        } else {
            warn!(
                outstanding = self.outstanding,
                "io_uring operations did not complete after cancelling: leaking the receive and send buffers"
            );
            // Queued output may still be read by a send the kernel did not give up.
            std::mem::forget(std::mem::take(&mut self.conns));
            std::mem::forget(std::mem::take(&mut self.pairs));
        }
    }
}
