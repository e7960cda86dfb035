//! A thread's housekeeping, every tick rather than every request: timeouts, reconnects,
//! dead-run detection, progress, interval histograms, and the end of the run.

use std::io;
use std::sync::atomic::Ordering;

use super::{Interval, Mode, State, Worker, DEAD_AFTER_NS, INTERVAL_NS};
use crate::clock::now_ns;
use crate::stats::{histogram, ErrorKind};

impl Worker<'_> {
    /// Timeouts, reconnects, progress and intervals.
    pub(super) fn tick(&mut self, now: u64) -> Result<(), String> {
        let timeout = self.plan.timeout.as_nanos() as u64;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        let mut failing = 0;
        for &k in &keys {
            let c = &self.conns[k];
            let stalled = match c.state {
                State::Connecting => now.saturating_sub(c.connect_started) > timeout,
                State::Open => c
                    .inflight
                    .front()
                    .is_some_and(|p| now.saturating_sub(p.sent) > timeout),
                State::Closed => false,
            };
            if stalled {
                let e = io::Error::from(io::ErrorKind::TimedOut);
                self.fail(k, ErrorKind::Timeout, &e, now);
            }
            let c = &self.conns[k];
            if c.failures > 0 {
                failing += 1;
            }
            if c.state == State::Closed && c.retry_at <= now && !self.stopping {
                if self.plan.mode == Mode::Crr {
                    if self.interval_ns.is_none() {
                        self.start_transaction(k, now, None);
                    } else if let Some(t) = self.conns[k].backlog.pop_front() {
                        self.start_transaction(k, now, Some(t));
                    }
                } else {
                    self.connect(k, now);
                }
            }
        }
        if failing == keys.len() && now.saturating_sub(self.rec.last_success) > DEAD_AFTER_NS {
            let last = self.last_error.clone().unwrap_or_default();
            return Err(format!("every connection is failing ({last})"));
        }
        self.shared.progress[self.index]
            .store(self.rec.stats.counters.completed, Ordering::Relaxed);
        if now >= self.shared.warmup_end {
            let index = (now - self.shared.warmup_end) / INTERVAL_NS;
            if index > self.interval_index {
                self.emit_interval();
                self.interval_index = index;
            }
        }
        Ok(())
    }

    pub(super) fn emit_interval(&mut self) {
        let hist = std::mem::replace(&mut self.rec.interval, histogram());
        let _ = self.intervals.send(Interval {
            index: self.interval_index,
            hist,
        });
    }

    pub(super) fn finish(&mut self) {
        let now = now_ns();
        let unfinished = self.inflight() as u64;
        self.rec.stats.counters.unfinished = unfinished;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.close(k);
        }
        self.emit_interval();
        self.rec.stats.end_ns = now;
        self.shared.progress[self.index]
            .store(self.rec.stats.counters.completed, Ordering::Relaxed);
    }
}
