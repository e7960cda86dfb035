//! What each event-loop thread records: latency histograms (nanoseconds) and counters. Each
//! thread owns its own; they are merged once at the end, and interval histograms are handed
//! to the main thread once a second, so nothing is shared on the per-request path. A
//! [`Recorder`] is where a thread's outcomes go as they happen.

use hdrhistogram::Histogram;

/// Highest latency a histogram records exactly (1 hour in ns); larger values saturate.
pub const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// A latency histogram: 1 ns to 1 h, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // Bounds are constants that satisfy the constructor's preconditions.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// How many kinds of error there are.
pub const ERROR_KINDS: usize = 9;

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
    /// The response could not be parsed, or came when no request was waiting for it.
    UnexpectedResponse,
    /// An HTTP status outside `--expect-status` (with `--verify`: outside 2xx).
    UnexpectedStatus,
    /// Echoed bytes, body length or greeting differed.
    VerifyMismatch,
    /// A TLS handshake failed (a certificate refused, an alert, bytes that are not TLS,
    /// the server gone before it was done), or a record was broken.
    Tls,
}

impl ErrorKind {
    /// All kinds, in report order.
    pub const ALL: [ErrorKind; ERROR_KINDS] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectFailed,
        ErrorKind::Reset,
        ErrorKind::Timeout,
        ErrorKind::ShortResponse,
        ErrorKind::UnexpectedResponse,
        ErrorKind::UnexpectedStatus,
        ErrorKind::VerifyMismatch,
        ErrorKind::Tls,
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
            ErrorKind::UnexpectedStatus => "unexpected_status",
            ErrorKind::VerifyMismatch => "verify_mismatch",
            ErrorKind::Tls => "tls",
        }
    }
}

/// Counters of one thread (or, merged, of the run). Every request sent ends exactly once:
/// `sent = warmup_completed + completed + failed + unfinished`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests written (whole), warm-up included; a retried request counts once.
    pub sent: u64,
    /// Requests sent whose intended send time is in the measured window.
    pub sent_measured: u64,
    /// Responses to requests meant to be sent in the warm-up.
    pub warmup_completed: u64,
    /// Responses to requests meant to be sent in the measured window (the measured
    /// requests; non-2xx responses included unless a status is expected).
    pub completed: u64,
    /// Requests lost to an error of their connection or a failed check.
    pub failed: u64,
    /// Requests sent but not answered when the run ended.
    pub unfinished: u64,
    /// Open loop: requests that fell due but were never sent before the run ended.
    pub unsent: u64,
    /// Bytes written over the measured window.
    pub bytes_sent: u64,
    /// Bytes read over the measured window.
    pub bytes_received: u64,
    /// Connections opened (crr: transactions started).
    pub connects: u64,
    /// Connections the server closed (`Connection: close`, HTTP/1.0, an idle or a reused
    /// connection closed) and loadgen opened again: not errors.
    pub reconnects: u64,
    /// Requests sent again on a new connection because the server closed the one they were
    /// on before answering (pipelined past a closing response, or a reused connection
    /// closed under them).
    pub retried: u64,
    /// Error events by kind, in [`ErrorKind::ALL`] order.
    pub errors: [u64; ERROR_KINDS],
    /// Bytes that differed from what was sent (echo with --verify).
    pub mismatched_bytes: u64,
    /// TLS handshakes completed, warm-up included.
    pub tls_handshakes: u64,
    /// Of those, the ones that resumed a session (`--tls-resume`).
    pub tls_resumed: u64,
    /// Measured HTTP responses by status class: index 1 to 5 for 1xx to 5xx, 0 for others.
    pub status_classes: [u64; 6],
    /// Measured HTTP responses by status code (index = code; empty until the first).
    pub status_codes: Vec<u64>,
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

    /// Error events of every kind.
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Counts one measured HTTP response.
    pub fn status(&mut self, code: u16) {
        let class = usize::from(code / 100);
        self.status_classes[if (1..=5).contains(&class) { class } else { 0 }] += 1;
        let code = usize::from(code).min(999);
        if self.status_codes.len() <= code {
            self.status_codes.resize(1000, 0);
        }
        self.status_codes[code] += 1;
    }

    /// Adds another thread's counters.
    pub fn merge(&mut self, o: &Counters) {
        self.sent += o.sent;
        self.sent_measured += o.sent_measured;
        self.warmup_completed += o.warmup_completed;
        self.completed += o.completed;
        self.failed += o.failed;
        self.unfinished += o.unfinished;
        self.unsent += o.unsent;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.connects += o.connects;
        self.reconnects += o.reconnects;
        self.retried += o.retried;
        self.mismatched_bytes += o.mismatched_bytes;
        self.tls_handshakes += o.tls_handshakes;
        self.tls_resumed += o.tls_resumed;
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
        for (a, b) in self.status_classes.iter_mut().zip(o.status_classes) {
            *a += b;
        }
        if self.status_codes.len() < o.status_codes.len() {
            self.status_codes.resize(o.status_codes.len(), 0);
        }
        for (a, b) in self.status_codes.iter_mut().zip(&o.status_codes) {
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
    /// crr: from starting a connect to the socket being connected (measured window only).
    pub connect: Histogram<u64>,
    /// TLS: from the socket being connected to the handshake done (measured window only).
    pub handshake: Histogram<u64>,
    pub counters: Counters,
    /// When this thread stopped sending new requests (ns; 0: never started).
    pub stopped_ns: u64,
    /// When its last measured request completed (ns; 0: none did).
    pub last_completion_ns: u64,
    /// Age of the oldest request unanswered at the end (ns).
    pub oldest_unfinished_ns: u64,
    /// Age of the oldest request due but unsent at the end (ns).
    pub oldest_unsent_ns: u64,
    /// How late measured requests were first written against their intended send time
    /// (ns; 0 in closed loop, where the two are the same).
    pub slip: Histogram<u64>,
    /// Per thread, in thread order: the fraction of the measured window it was busy
    /// (see [`crate::headroom`]).
    pub busy: Vec<f64>,
}

impl ThreadStats {
    /// Nothing recorded yet: histograms of [`histogram`]'s bounds.
    pub fn new() -> Self {
        ThreadStats {
            latency: histogram(),
            service: histogram(),
            connect: histogram(),
            handshake: histogram(),
            counters: Counters::default(),
            stopped_ns: 0,
            last_completion_ns: 0,
            oldest_unfinished_ns: 0,
            oldest_unsent_ns: 0,
            slip: histogram(),
            busy: Vec::new(),
        }
    }

    /// Adds another thread's stats.
    pub fn merge(&mut self, o: &ThreadStats) {
        // Same bounds everywhere, so adding cannot fail.
        let _ = self.latency.add(&o.latency);
        let _ = self.service.add(&o.service);
        let _ = self.connect.add(&o.connect);
        let _ = self.handshake.add(&o.handshake);
        self.counters.merge(&o.counters);
        self.stopped_ns = self.stopped_ns.max(o.stopped_ns);
        self.last_completion_ns = self.last_completion_ns.max(o.last_completion_ns);
        self.oldest_unfinished_ns = self.oldest_unfinished_ns.max(o.oldest_unfinished_ns);
        self.oldest_unsent_ns = self.oldest_unsent_ns.max(o.oldest_unsent_ns);
        let _ = self.slip.add(&o.slip);
        self.busy.extend(&o.busy);
    }
}

impl Default for ThreadStats {
    fn default() -> Self {
        Self::new()
    }
}

/// Where outcomes are recorded: the thread's stats and the current interval.
#[derive(Debug)]
pub struct Recorder {
    /// Everything this thread measured.
    pub stats: ThreadStats,
    /// Corrected latency of the current interval.
    pub interval: Histogram<u64>,
    /// Measured completions in the current interval.
    pub interval_completed: u64,
    /// Error events in the current interval.
    pub interval_errors: u64,
    /// When the warm-up ends.
    pub warmup_end: u64,
    /// When a request last completed (dead-run detection).
    pub last_success: u64,
}

impl Recorder {
    /// Nothing recorded yet; the warm-up ends at `warmup_end`.
    pub fn new(warmup_end: u64, now: u64) -> Self {
        Recorder {
            stats: ThreadStats::new(),
            interval: histogram(),
            interval_completed: 0,
            interval_errors: 0,
            warmup_end,
            last_success: now,
        }
    }

    /// Records one completed request, meant to be sent at `intended` and first sent at
    /// `sent`: warm-up or measured by its intended time, its latency counted from it.
    pub fn complete(&mut self, intended: u64, sent: u64, now: u64) {
        self.last_success = now;
        if intended < self.warmup_end {
            self.stats.counters.warmup_completed += 1;
            return;
        }
        self.stats.counters.completed += 1;
        self.stats.last_completion_ns = now;
        self.interval_completed += 1;
        let latency = now.saturating_sub(intended).max(1);
        self.stats.latency.saturating_record(latency);
        self.stats
            .service
            .saturating_record(now.saturating_sub(sent).max(1));
        self.stats
            .slip
            .saturating_record(sent.saturating_sub(intended));
        self.interval.saturating_record(latency);
    }

    /// Bytes written; counted in the measured window only.
    pub fn bytes_sent(&mut self, n: u64, now: u64) {
        if now >= self.warmup_end {
            self.stats.counters.bytes_sent += n;
        }
    }

    /// Bytes read; counted in the measured window only.
    pub fn bytes_received(&mut self, n: u64, now: u64) {
        if now >= self.warmup_end {
            self.stats.counters.bytes_received += n;
        }
    }

    /// A TLS handshake done at `now` after `took` ns; `resumed` a session.
    pub fn handshake(&mut self, took: u64, resumed: bool, now: u64) {
        let c = &mut self.stats.counters;
        c.tls_handshakes += 1;
        c.tls_resumed += u64::from(resumed);
        if now >= self.warmup_end {
            self.stats.handshake.saturating_record(took);
        }
    }

    /// Counts one error event.
    pub fn error(&mut self, kind: ErrorKind, now: u64) {
        self.stats.counters.error(kind);
        if now >= self.warmup_end {
            self.interval_errors += 1;
        }
    }

    /// A request answered, but the answer failed a check: failed, and an error event.
    pub fn failed_check(&mut self, kind: ErrorKind, now: u64) {
        self.last_success = now;
        self.stats.counters.failed += 1;
        self.error(kind, now);
    }

    /// Records a lower bound of the latency of a measured request that was never
    /// answered (`count` of them, all at least `age` old).
    pub fn unanswered(&mut self, age: u64, count: u64) {
        if count == 0 {
            return;
        }
        let age = age.max(1);
        self.stats.latency.saturating_record_n(age, count);
        self.interval.saturating_record_n(age, count);
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
        a.counters.status(200);
        b.counters.status(404);
        b.counters.status(200);
        b.counters.status(42);
        b.oldest_unsent_ns = 7;
        a.merge(&b);
        assert_eq!(a.latency.len(), 2);
        assert_eq!(a.counters.sent, 5);
        assert_eq!(a.counters.errors_of(ErrorKind::Reset), 1);
        assert_eq!(a.counters.status_classes, [1, 0, 2, 0, 1, 0]);
        assert_eq!(
            (a.counters.status_codes[200], a.counters.status_codes[404]),
            (2, 1)
        );
        assert_eq!(a.oldest_unsent_ns, 7);
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
