//! A worker's counters, exact and readable from any thread (the metrics endpoint reads
//! them), and the reasons a connection ends.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a connection ended (a label of `ringd_connections_closed_total`). Set once, by the
/// connection itself, when it leaves the open phase or is aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed (EOF).
    Peer,
    /// The protocol ended it (hello's reply, `Connection: close`, 400/431).
    Protocol,
    /// No bytes either way for `--idle-timeout`.
    Idle,
    /// An HTTP header block did not complete within `--header-timeout` (408).
    HeaderTimeout,
    /// A socket error (reset, broken pipe).
    Error,
    /// Ended by a drain (SIGTERM, an upgrade): closed while idle, or its last response said
    /// `Connection: close` because of the drain.
    Drain,
    /// Proxy mode: no upstream could be reached; the client was closed at once.
    NoUpstream,
    /// Turned away by `--max-connections` (counted as rejected, never as accepted).
    Rejected,
}

impl CloseReason {
    /// The reasons an admitted connection ends, in counter order.
    pub const ALL: [CloseReason; 7] = [
        CloseReason::Peer,
        CloseReason::Protocol,
        CloseReason::Idle,
        CloseReason::HeaderTimeout,
        CloseReason::Error,
        CloseReason::Drain,
        CloseReason::NoUpstream,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Peer => "peer",
            CloseReason::Protocol => "protocol",
            CloseReason::Idle => "idle",
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::Error => "error",
            CloseReason::Drain => "drain",
            CloseReason::NoUpstream => "no_upstream",
            CloseReason::Rejected => "rejected",
        }
    }

    /// True for a connection that was admitted (holds a place under `--max-connections`).
    pub fn admitted(self) -> bool {
        self != CloseReason::Rejected
    }
}

/// Counters of one worker, readable from any thread. Relaxed: each is written by its worker
/// only; the alignment keeps two workers' counters off the same cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerStats {
    /// Connections admitted.
    pub accepted: AtomicU64,
    /// Connections turned away by `--max-connections`.
    pub rejected: AtomicU64,
    /// Admitted connections closed, by [`CloseReason`] (in [`CloseReason::ALL`] order).
    pub closed: [AtomicU64; 7],
    /// Bytes received.
    pub bytes_in: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// Requests answered (http; hello counts its replies).
    pub requests: AtomicU64,
    /// Accept errors.
    pub accept_errors: AtomicU64,
    /// Times accepting was paused after a resource error (EMFILE, ENFILE, ENOBUFS, ENOMEM).
    pub accept_backoffs: AtomicU64,
    /// Receives that found the provided buffer ring empty (`uring`).
    pub recv_enobufs: AtomicU64,
    /// Times the `uring` direct descriptor table was full and accepting fell back to
    /// ordinary descriptors.
    pub fixed_fallbacks: AtomicU64,
    /// Receive buffers not back in the ring when the worker stopped (`uring`; 0 expected).
    pub leaked_buffers: AtomicU64,
    /// Connections still open when the worker stopped (`uring`; 0 expected).
    pub leaked_fds: AtomicU64,
    /// TLS handshakes by outcome (in [`crate::tls::Handshake::COUNTED`] order), counted
    /// when their connection ends.
    pub tls_handshakes: [AtomicU64; 3],
    /// TLS connections whose peer's input ended without its `close_notify`.
    pub tls_truncations: AtomicU64,
}

impl WorkerStats {
    /// Connections closed, all reasons.
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Connections closed for `reason`.
    pub fn closed_for(&self, reason: CloseReason) -> u64 {
        match CloseReason::ALL.iter().position(|&r| r == reason) {
            Some(i) => self.closed[i].load(Ordering::Relaxed),
            None => 0,
        }
    }

    /// Connections open now.
    pub fn active(&self) -> u64 {
        self.accepted
            .load(Ordering::Relaxed)
            .saturating_sub(self.closed_total())
    }

    /// Counts a connection that ended (a rejected one was counted when it was turned away).
    pub fn close(&self, reason: CloseReason) {
        if let Some(i) = CloseReason::ALL.iter().position(|&r| r == reason) {
            self.closed[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one to a counter.
    #[inline]
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_by_reason() {
        let s = WorkerStats::default();
        WorkerStats::inc(&s.accepted);
        WorkerStats::inc(&s.accepted);
        s.close(CloseReason::Idle);
        s.close(CloseReason::Rejected);
        assert_eq!(s.active(), 1);
        assert_eq!(s.closed_for(CloseReason::Idle), 1);
        assert_eq!(s.closed_for(CloseReason::Rejected), 0);
        assert_eq!(s.closed_total(), 1);
    }
}
