//! The `uring` worker's lifecycle beyond the data path: deadlines, the drain, and the leak
//! accounting when the worker stops. (Cancelling and reaping what is still in flight is the
//! ring driver's, on every way out.)

use std::sync::atomic::Ordering;

use tracing::warn;

use super::conn::UConn;
use super::op::Token;
use super::{AcceptState, Worker};
use crate::config::Service;
use crate::engine::control::Lifecycle;

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
            self.cancel_accept();
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

    /// Records what the worker still held when it stopped (0 and 0 after a clean drain),
    /// then cancels and reaps what is still in flight.
    pub(super) fn finish(&mut self) {
        let bufs = self.driver.buffers();
        let leaked_buffers = bufs.entries().saturating_sub(bufs.available());
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
        if !self.driver.shutdown() {
            warn!(
                outstanding = self.driver.outstanding(),
                "io_uring operations did not complete after cancelling: leaking their memory"
            );
        }
    }
}
