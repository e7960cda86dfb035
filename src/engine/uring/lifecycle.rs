//! The `uring` worker's lifecycle beyond the data path: deadlines, the drain, and the leak
//! accounting when the worker stops. (Cancelling and reaping what is still in flight is the
//! ring driver's, on every way out.)

use std::sync::atomic::Ordering;

use tracing::warn;

use super::session::{Session, SessionEvent};
use super::{AcceptState, Worker};
use crate::engine::control::Lifecycle;

impl Worker {
    /// Stops accepting as `how` says and tells every session the server drains.
    pub(super) fn begin_drain(&mut self, how: Lifecycle) {
        self.stopping = Some(how);
        self.env.drain.acknowledge();
        if !how.keeps_listeners() {
            // Fails the multishot accept and stops the kernel queueing connections here, also
            // while accepting pauses after an error (a retry timeout then arms nothing).
            crate::engine::socket::shutdown_both(&self.acceptor.listener);
        } else if self.acceptor.state == AcceptState::Armed {
            // A successor accepts on the same socket: cancel our accept (a connection it
            // already took is still served), leave the socket and its queue be.
            self.cancel_accept();
        }
        self.each(|_| true, || SessionEvent::Drain);
    }

    /// Lets sessions whose deadline passed act on it.
    pub(super) fn sweep(&mut self, now: u64) {
        let limits = self.time.limits;
        let due = |s: &Session| s.poll_timeout(&limits).is_some_and(|d| d <= now);
        self.each(due, || SessionEvent::Time);
    }

    /// Hands `ev` to every session `pick` selects.
    fn each(&mut self, pick: impl FnMut(&Session) -> bool, ev: impl Fn() -> SessionEvent) {
        let mut due = std::mem::take(&mut self.scratch.due);
        self.sessions.tokens(pick, &mut due);
        for t in due.drain(..) {
            self.dispatch(t, ev());
        }
        self.scratch.due = due;
    }

    /// Records what the worker still held when it stopped (0 and 0 after a clean drain),
    /// then cancels and reaps what is still in flight.
    pub(super) fn finish(&mut self) {
        let bufs = self.driver.buffers();
        let leaked_buffers = bufs.entries().saturating_sub(bufs.available());
        let leaked_fds = self.sessions.len();
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
        if !self.driver.shutdown() {
            warn!(
                outstanding = self.driver.outstanding(),
                "io_uring operations did not complete after cancelling: leaking their memory"
            );
        }
    }
}
