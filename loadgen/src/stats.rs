//! What each event-loop thread records: latency histograms (nanoseconds) and counters. Each
//! thread owns its own; they are merged once at the end, and interval histograms are handed
//! to the main thread once a second, so nothing is shared on the per-request path.

use hdrhistogram::Histogram;

/// Highest latency a histogram records exactly (1 hour in ns); larger values saturate.
pub const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// A latency histogram: 1 ns to 1 h, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // Bounds are constants that satisfy the constructor's preconditions.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// Kinds of errors, counted per event; none of them stops the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connection refused.
    ConnectRefused,
    /// Any other connect failure.
    ConnectFailed,
    /// Connection reset or other socket error while established.
    Reset,
    /// No response within the timeout.
    Timeout,
    /// The connection closed before a complete response.
    ShortResponse,
    /// The response could not be parsed or was not the expected one (bad status).
    UnexpectedResponse,
    /// Echoed bytes, body length or greeting differed.
    VerifyMismatch,
}

impl ErrorKind {
    /// All kinds, in report order.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectFailed,
        ErrorKind::Reset,
        ErrorKind::Timeout,
        ErrorKind::ShortResponse,
        ErrorKind::UnexpectedResponse,
        ErrorKind::VerifyMismatch,
    ];

    /// Name in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectFailed => "connect_failed",
            ErrorKind::Reset => "reset",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ShortResponse => "short_response",
            ErrorKind::UnexpectedResponse => "unexpected_response",
            ErrorKind::VerifyMismatch => "verify_mismatch",
        }
    }
}

/// Counters of one thread (or, merged, of the run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests written (whole), warm-up included.
    pub sent: u64,
    /// Responses completed within the warm-up.
    pub warmup_completed: u64,
    /// Responses completed after the warm-up (the measured requests).
    pub completed: u64,
    /// Requests lost to an error of their connection or a failed verification.
    pub failed: u64,
    /// Requests still in flight when the run ended.
    pub unfinished: u64,
    /// Bytes written / read over the measured window.
    pub bytes_sent: u64,
    /// Bytes read over the measured window.
    pub bytes_received: u64,
    /// Connections opened (crr: transactions started).
    pub connects: u64,
    /// Error events by kind, in [`ErrorKind::ALL`] order.
    pub errors: [u64; 7],
    /// Bytes that differed from what was sent (echo with --verify).
    pub mismatched_bytes: u64,
}

impl Counters {
    /// Counts one error event.
    pub fn error(&mut self, kind: ErrorKind) {
        self.errors[kind as usize] += 1;
    }

    /// Errors of one kind.
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors[kind as usize]
    }

    /// Adds another thread's counters.
    pub fn merge(&mut self, o: &Counters) {
        self.sent += o.sent;
        self.warmup_completed += o.warmup_completed;
        self.completed += o.completed;
        self.failed += o.failed;
        self.unfinished += o.unfinished;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.connects += o.connects;
        self.mismatched_bytes += o.mismatched_bytes;
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
    }
}

/// Everything one thread recorded.
#[derive(Debug, Clone)]
pub struct ThreadStats {
    /// Latency from the intended send time (open loop) or the send time (closed loop).
    pub latency: Histogram<u64>,
    /// Latency from the actual send time (differs from `latency` only in open loop).
    pub service: Histogram<u64>,
    /// Connect latency (crr).
    pub connect: Histogram<u64>,
    /// Counters.
    pub counters: Counters,
    /// When this thread's measured window ended (ns), for the run's duration.
    pub end_ns: u64,
}

impl ThreadStats {
    /// Empty stats.
    pub fn new() -> Self {
        ThreadStats {
            latency: histogram(),
            service: histogram(),
            connect: histogram(),
            counters: Counters::default(),
            end_ns: 0,
        }
    }

    /// Adds another thread's stats.
    pub fn merge(&mut self, o: &ThreadStats) {
        // Same bounds everywhere, so adding cannot fail.
        let _ = self.latency.add(&o.latency);
        let _ = self.service.add(&o.service);
        let _ = self.connect.add(&o.connect);
        self.counters.merge(&o.counters);
        self.end_ns = self.end_ns.max(o.end_ns);
    }
}

impl Default for ThreadStats {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_everything() {
        let mut a = ThreadStats::new();
        let mut b = ThreadStats::new();
        a.latency.record(1000).unwrap();
        b.latency.record(3000).unwrap();
        a.counters.sent = 2;
        b.counters.sent = 3;
        b.counters.error(ErrorKind::Reset);
        a.merge(&b);
        assert_eq!(a.latency.len(), 2);
        assert_eq!(a.counters.sent, 5);
        assert_eq!(a.counters.errors_of(ErrorKind::Reset), 1);
    }

    #[test]
    fn histogram_covers_a_minute_with_three_digits() {
        let mut h = histogram();
        h.record(60_000_000_000).unwrap();
        h.record(25_000).unwrap();
        assert!(h.max() >= 59_990_000_000);
        assert!((h.min() as i64 - 25_000).abs() <= 25);
    }
}
