//! Whether loadgen, not the server, was the limit of a run: each event-loop thread's busy
//! fraction over the measured window (on a CPU or waiting for one, see
//! [`thread_busy_ns`](crate::clock::thread_busy_ns)) and, in open loop, how late requests
//! went out against their schedule. Pure: the figures come in, the verdict goes out.

use serde::{Deserialize, Serialize};

/// A thread busy for at least this fraction of the window had no time to spare: in closed
/// loop the server was waiting for it, not the other way round.
pub const BUSY_THRESHOLD: f64 = 0.90;
/// Open loop: a schedule whose send lateness p99 reaches this slipped.
pub const SLIP_THRESHOLD_NS: u64 = 1_000_000;

/// One event-loop thread over the measured window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ThreadBusy {
    /// Fraction of the window the thread was on a CPU or runnable waiting for one (0 to 1).
    pub busy: f64,
}

/// The verdict on loadgen's own headroom (`client_bound` in the JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClientBound {
    /// loadgen was the limit: the server's figures are a lower bound of what it can do.
    pub bound: bool,
    /// Each thread, in thread order.
    pub threads: Vec<ThreadBusy>,
    /// Open loop: 99th percentile of how late measured requests were written against their
    /// intended send time (ns); null in closed loop.
    pub schedule_slip_p99_ns: Option<u64>,
    /// Open loop: requests that fell due and were never sent.
    pub unsent: u64,
    /// Why it is bound (null when it is not).
    pub reason: Option<String>,
}

impl ClientBound {
    /// Judges a run. Closed loop (`slip_p99_ns` is `None`): bound when any thread was busy
    /// at least [`BUSY_THRESHOLD`] of the window. Open loop: bound when the schedule slipped
    /// (slip p99 ≥ [`SLIP_THRESHOLD_NS`], or requests left unsent) while a thread was that
    /// busy; a schedule that slips while every thread has time to spare is the server
    /// holding requests back (each connection sends only when its pipeline has room).
    pub fn judge(busy: &[f64], slip_p99_ns: Option<u64>, unsent: u64) -> Self {
        let busiest = busy
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, &b)| (i, b));
        let saturated = busiest.filter(|&(_, b)| b >= BUSY_THRESHOLD);
        let reason = saturated.and_then(|(i, b)| {
            let thread = format!("thread {i} busy {:.0}% of the window", b * 100.0);
            match slip_p99_ns {
                None => Some(thread),
                Some(slip) if slip >= SLIP_THRESHOLD_NS || unsent > 0 => Some(format!(
                    "{thread} and the schedule slipped (send lateness p99 {}, {unsent} unsent)",
                    crate::human::fmt_ns(slip)
                )),
                Some(_) => None,
            }
        });
        ClientBound {
            bound: reason.is_some(),
            threads: busy.iter().map(|&busy| ThreadBusy { busy }).collect(),
            schedule_slip_p99_ns: slip_p99_ns,
            unsent,
            reason,
        }
    }

    /// Several runs' verdicts as one (`loadgen merge`): bound if any run was.
    pub fn combine<'a>(runs: impl IntoIterator<Item = &'a ClientBound>) -> Option<Self> {
        let mut out: Option<ClientBound> = None;
        for r in runs {
            let o = out.get_or_insert_with(|| ClientBound::judge(&[], None, 0));
            o.threads.extend(r.threads.iter().cloned());
            o.schedule_slip_p99_ns = match (o.schedule_slip_p99_ns, r.schedule_slip_p99_ns) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            o.unsent += r.unsent;
            if r.bound && !o.bound {
                o.bound = true;
                o.reason = r.reason.clone();
            }
        }
        out
    }

    /// The line in the table, when bound.
    pub fn line(&self) -> Option<String> {
        self.reason
            .as_ref()
            .filter(|_| self.bound)
            .map(|why| format!("client-bound: {why}; the server's figures are a lower bound"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_loop_is_bound_by_its_busiest_thread() {
        let c = ClientBound::judge(&[0.4, 0.97], None, 0);
        assert!(c.bound);
        assert_eq!(
            c.line().unwrap(),
            "client-bound: thread 1 busy 97% of the window; the server's figures are a lower bound"
        );
        let c = ClientBound::judge(&[0.4, 0.89], None, 0);
        assert!(!c.bound && c.reason.is_none() && c.line().is_none());
        assert_eq!(c.threads.len(), 2);
    }

    #[test]
    fn open_loop_needs_a_slipping_schedule_and_a_busy_thread() {
        assert!(!ClientBound::judge(&[0.95], Some(200_000), 0).bound);
        assert!(ClientBound::judge(&[0.95], Some(2_000_000), 0).bound);
        assert!(ClientBound::judge(&[0.95], Some(0), 3).bound);
        assert!(!ClientBound::judge(&[0.30], Some(50_000_000), 1000).bound);
        let why = ClientBound::judge(&[0.95], Some(2_000_000), 7)
            .reason
            .unwrap();
        assert!(why.contains("2.00ms") && why.contains("7 unsent"), "{why}");
    }

    #[test]
    fn merged_runs_are_bound_if_any_was() {
        let a = ClientBound::judge(&[0.2], Some(10), 0);
        let b = ClientBound::judge(&[0.99], Some(5_000_000), 2);
        let m = ClientBound::combine([&a, &b]).unwrap();
        assert!(m.bound);
        assert_eq!(m.threads.len(), 2);
        assert_eq!((m.schedule_slip_p99_ns, m.unsent), (Some(5_000_000), 2));
        assert_eq!(m.reason, b.reason);
        assert!(ClientBound::combine([]).is_none());
    }
}
