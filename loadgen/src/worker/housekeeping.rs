//! A thread's housekeeping, every tick rather than every request: timeouts, dead-run
//! detection, progress, interval histograms — and the end of the run, where every
//! request sent but unanswered, and every request that fell due but was never sent, is
//! counted and enters the corrected latency with its age as a lower bound.

use std::io;
use std::sync::atomic::Ordering;

use super::{Interval, State, Worker, INTERVAL_NS};
use crate::clock::now_ns;
use crate::stats::{histogram, ErrorKind};

/// Most histogram entries one connection's unsent schedule is recorded as: beyond it, runs
/// of consecutive due times share one entry (the youngest age of the run, so the figure
/// stays a lower bound).
const MAX_UNSENT_ENTRIES: u64 = 10_000;

impl Worker<'_> {
    /// Timeouts, dead-run detection, progress and intervals.
    pub(super) fn tick(&mut self, now: u64) -> Result<(), String> {
        let timeout = self.plan.timeout.as_nanos() as u64;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        let mut failing = 0;
        for &k in &keys {
            let c = &self.conns[k];
            let stalled = match c.state {
                State::Connecting => now.saturating_sub(c.connect_started) > timeout,
                // At the end of the run a request waits for the rest of the drain and, if
                // still unanswered, is reported as such with its age.
                State::Open => {
                    !self.stopping
                        && (c.session.oldest_sent())
                            .is_some_and(|sent| now.saturating_sub(sent) > timeout)
                }
                State::Closed => false,
            };
            if stalled {
                let e = io::Error::from(io::ErrorKind::TimedOut);
                self.fail(k, ErrorKind::Timeout, &e, now);
            }
            if self.conns[k].session.failing() {
                failing += 1;
            }
        }
        // Every connection failing for longer than a request may take: give up.
        if failing == keys.len() && now.saturating_sub(self.rec.last_success) > timeout {
            let last = self.last_error.clone().unwrap_or_default();
            return Err(format!("every connection is failing ({last})"));
        }
        self.publish_progress();
        self.advance_interval(now);
        Ok(())
    }

    fn publish_progress(&self) {
        let c = &self.rec.stats.counters;
        self.shared.progress[self.index].store(c.warmup_completed + c.completed, Ordering::Relaxed);
    }

    /// Hands the current interval over once time has moved past it.
    fn advance_interval(&mut self, now: u64) {
        if now >= self.shared.warmup_end {
            let index = (now - self.shared.warmup_end) / INTERVAL_NS;
            if index > self.interval_index {
                self.emit_interval();
                self.interval_index = index;
            }
        }
    }

    fn emit_interval(&mut self) {
        let hist = std::mem::replace(&mut self.rec.interval, histogram());
        let _ = self.intervals.send(Interval {
            index: self.interval_index,
            hist,
            completed: std::mem::take(&mut self.rec.interval_completed),
            errors: std::mem::take(&mut self.rec.interval_errors),
        });
    }

    /// The end of the run: accounts for every request not answered, closes everything.
    pub(super) fn finish(&mut self) {
        let now = now_ns();
        self.advance_interval(now);
        let warmup_end = self.shared.warmup_end;
        // Count mode: due times past the quota were never part of the run.
        let mut unsent_allowed = self
            .quota
            .map_or(u64::MAX, |q| q.saturating_sub(self.measured_sent));
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            let c = &self.conns[k];
            let unanswered: Vec<u64> = c.session.unanswered().collect();
            let unsent = self.interval_ns.map(|iv| {
                let (first, len) = (c.backlog.first, c.backlog.len);
                let later = if c.next_due < self.schedule_end {
                    (self.schedule_end - 1 - c.next_due) / iv + 1
                } else {
                    0
                };
                let start = if len > 0 { first } else { c.next_due };
                (start, iv, len + later)
            });
            self.close_notify(k);
            self.close(k);
            for intended in unanswered {
                let stats = &mut self.rec.stats;
                stats.counters.unfinished += 1;
                let age = now.saturating_sub(intended);
                stats.oldest_unfinished_ns = stats.oldest_unfinished_ns.max(age);
                if intended >= warmup_end {
                    self.rec.unanswered(age, 1);
                }
            }
            if let Some((start, iv, count)) = unsent {
                let count = count.min(unsent_allowed);
                unsent_allowed -= count;
                self.record_unsent(start, iv, count, now);
            }
        }
        self.emit_interval();
        if self.rec.stats.stopped_ns == 0 {
            self.rec.stats.stopped_ns = now;
        }
        self.publish_progress();
    }

    /// Open loop: `count` due times `start`, `start + iv`, … that were never sent; each
    /// enters the corrected latency aged until `now` (measured ones only).
    fn record_unsent(&mut self, start: u64, iv: u64, count: u64, now: u64) {
        if count == 0 {
            return;
        }
        let stats = &mut self.rec.stats;
        stats.counters.unsent += count;
        stats.oldest_unsent_ns = stats.oldest_unsent_ns.max(now.saturating_sub(start));
        // The first measured one: due times before the warm-up's end are not measured.
        let warmup_end = self.shared.warmup_end;
        let first_measured = if start >= warmup_end {
            0
        } else {
            (warmup_end - start).div_ceil(iv)
        };
        let run = count.div_ceil(MAX_UNSENT_ENTRIES).max(1);
        let mut k = first_measured;
        while k < count {
            let n = run.min(count - k);
            // The youngest of the run: its age is a lower bound for all of them.
            let youngest = start + (k + n - 1) * iv;
            self.rec.unanswered(now.saturating_sub(youngest), n);
            k += n;
        }
    }
}
