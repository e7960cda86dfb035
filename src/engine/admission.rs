//! Admission: between the listener and the connection. The process-wide connection limit,
//! and what an accept error means (skip the one connection, or pause accepting for a while
//! when the process is out of descriptors or memory).

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::connection::WorkerStats;

/// `--max-connections`, shared by all workers: one counter for the whole process, so the
/// limit holds however the kernel spreads connections over the workers.
#[derive(Debug, Default)]
pub struct Limit {
    /// The limit (0: none); a reload may change it.
    max: AtomicUsize,
    /// Connections admitted and not yet closed.
    live: AtomicUsize,
}

impl Limit {
    /// A limit of `max` connections (0: none).
    pub fn new(max: usize) -> Self {
        Limit {
            max: AtomicUsize::new(max),
            live: AtomicUsize::new(0),
        }
    }

    /// Changes the limit (0: none) for the connections admitted from now on.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// Takes a place for a new connection; false when the limit is reached.
    pub fn try_admit(&self) -> bool {
        // Counted with no limit too, so that a limit set by a reload counts every
        // connection open.
        let max = self.max.load(Ordering::Relaxed);
        if self.live.fetch_add(1, Ordering::AcqRel) >= max && max != 0 {
            self.live.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Gives back the place of a closed connection.
    pub fn release(&self) {
        let before = self.live.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "a place given back that was never taken");
    }
}

/// Accept errors: resource exhaustion pauses accepting with a growing backoff; the log says
/// so at most once every five seconds, with a count.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    /// Resource errors in a row.
    in_a_row: u32,
    /// When the last line was logged.
    last_log: Option<Instant>,
    /// Errors since then.
    unlogged: u64,
}

impl AcceptBackoff {
    /// How long to pause after `err`, if at all; counts it.
    pub fn on_error(&mut self, err: &io::Error, stats: &WorkerStats) -> Option<Duration> {
        WorkerStats::inc(&stats.accept_errors);
        let Some(pause) = accept_pause(err, self.in_a_row) else {
            debug!("accept failed: {err}");
            return None;
        };
        self.in_a_row += 1;
        self.unlogged += 1;
        WorkerStats::inc(&stats.accept_backoffs);
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
        {
            warn!(
                "accept failed: {err} ({} time(s) since the last report); pausing accepts, now for {pause:?}",
                self.unlogged
            );
            self.last_log = Some(Instant::now());
            self.unlogged = 0;
        }
        Some(pause)
    }

    /// An accept succeeded: the next error starts from the shortest pause.
    pub fn on_success(&mut self) {
        self.in_a_row = 0;
    }
}

/// How long to stop accepting after an accept error; `None` for errors that concern only
/// the one connection being accepted (it is skipped). EINVAL means the socket no longer
/// listens (another process shut it down): retrying at once would only spin.
fn accept_pause(err: &io::Error, consecutive: u32) -> Option<Duration> {
    match err.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EINVAL) => {
            let ms = 10u64.saturating_mul(1 << consecutive.min(6)).min(500);
            Some(Duration::from_millis(ms))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_pause_grows_and_caps() {
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(accept_pause(&emfile, 0), Some(Duration::from_millis(10)));
        assert_eq!(accept_pause(&emfile, 2), Some(Duration::from_millis(40)));
        assert_eq!(accept_pause(&emfile, 30), Some(Duration::from_millis(500)));
        let aborted = io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert_eq!(accept_pause(&aborted, 5), None);
    }

    #[test]
    fn limit_admits_up_to_max() {
        let l = Limit::new(2);
        assert!(l.try_admit() && l.try_admit());
        assert!(!l.try_admit());
        l.release();
        assert!(l.try_admit());
        let none = Limit::new(0);
        assert!((0..1000).all(|_| none.try_admit()));
    }
}
