//! The `uring` worker's lifecycle beyond the data path: the timeout sweeper, the drain on
//! shutdown, and the leak accounting when the worker stops.

use std::sync::atomic::Ordering;

use tracing::{debug, warn};

use io_uring::opcode;

use super::{user_data, Worker, OP_ACCEPT, OP_CANCEL};
use crate::connection::CloseReason;
use crate::engine::shut;
use crate::protocol::{error_response, ErrorStatus};

impl Worker {
    pub(super) fn begin_drain(&mut self, keep_listener: bool) {
        self.draining = true;
        if keep_listener {
            // A successor accepts on the same socket: cancel our accept, leave the queue be.
            if self.accept_armed {
                let sqe = opcode::AsyncCancel::new(user_data(0, OP_ACCEPT))
                    .build()
                    .user_data(user_data(0, OP_CANCEL));
                self.push(sqe);
            }
        } else {
            // Shutting the listener fails the multishot accept (and resets queued connections).
            // SAFETY: shutdown(2) on the listener fd, which `self.ctx.listener` keeps open.
            unsafe { libc::shutdown(self.listen_fd, libc::SHUT_RD) };
        }
        // Idle connections see EOF; busy ones finish the request they are in first.
        for (_, c) in self.conns.iter_mut() {
            c.reason.get_or_insert(CloseReason::Drain);
            // SAFETY: shutdown(2) on a connection fd that is open until its close completes.
            unsafe { libc::shutdown(c.fd, libc::SHUT_RD) };
        }
    }

    /// Ends connections past the idle or header timeout.
    pub(super) fn sweep(&mut self, now: u64) {
        let expired: Vec<(usize, CloseReason)> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.closing)
            .filter_map(|(k, c)| c.times.expired(now, &self.timeouts).map(|r| (k, r)))
            .collect();
        for (key, reason) in expired {
            let c = &mut self.conns[key];
            c.reason = Some(reason);
            c.times.reason.set(Some(reason));
            if reason == CloseReason::HeaderTimeout {
                // The 408 goes out through the send queue; the FIN follows it.
                c.conn
                    .out
                    .extend_from_slice(&error_response(ErrorStatus::RequestTimeout));
                c.closing = true;
                self.queue_output(key);
                self.kick_send(key);
                self.after_io(key);
            } else {
                // The recv completes with EOF; the connection then closes as usual.
                shut(c.fd);
            }
        }
    }

    pub(super) fn finish(&mut self) {
        let leaked_buffers = self.bufs.entries().saturating_sub(self.bufs.available());
        let leaked_fds = self.conns.len();
        let stats = &self.ctx.stats;
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
        if let Err(e) = self.bufs.unregister(&self.ring) {
            debug!("unregistering the buffer ring failed: {e}");
        }
    }
}
