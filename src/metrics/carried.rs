//! Counters carried across a live upgrade, so that no `_total` series goes down when the
//! successor takes over the scrapes (Prometheus reads a decrease as a reset).
//!
//! The rule: a process reports its own counts plus what its predecessor reported at the
//! moment of the handover. At the handover the old process stops its metrics endpoint, takes
//! a snapshot of every counter it reports (its own plus what it carried itself) and writes
//! it to a pipe the successor was started with; the successor answers `503` until the
//! snapshot is in, then adds it to its own counts. What the old process counts while it
//! drains after the snapshot (the bytes, requests and closes of the connections it finishes)
//! is in its last log line, not in the series.
//!
//! Per worker: the same number of workers take the snapshot worker by worker; otherwise
//! worker 0 carries the sum of them all. Per upstream: matched by address.
//!
//! The snapshot is text, one line per worker and per upstream:
//! `ringd-counters 1`, `w` and the [`WorkerCounts`] fields in order, `u ADDR` and the
//! [`UpstreamCounts`] fields in order, then `end` (a snapshot without it is refused).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::Config;
use crate::connection::WorkerStats;
use crate::proxy::UpstreamStats;

/// What this process carries from its predecessor.
#[derive(Debug)]
enum Carry {
    /// Nothing: a fresh start, or a snapshot that did not come whole.
    Nothing,
    /// A predecessor's snapshot is on its way: scrapes get a `503` meanwhile, so that none
    /// sees a counter below what the predecessor last reported.
    Pending,
    /// The predecessor's counts at the handover, shaped for this process's workers.
    Counts(Counters),
}

static CARRIED: Mutex<Carry> = Mutex::new(Carry::Nothing);

fn carry() -> std::sync::MutexGuard<'static, Carry> {
    CARRIED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A predecessor will send its counters: hold scrapes until [`set_carried`].
pub fn expect_carried() {
    *carry() = Carry::Pending;
}

/// The predecessor's counters, added to every scrape from now on (`None`: they did not
/// come, and this process reports its own counts alone).
pub fn set_carried(counters: Option<Counters>) {
    *carry() = counters.map_or(Carry::Nothing, Carry::Counts);
}

/// Every `_total` series as a scrape reports it now: the workers' and upstreams' own counts
/// plus what was carried from a predecessor. What a successor is handed.
pub fn totals(
    stats: &[Arc<WorkerStats>],
    config: &Config,
    more: &[Arc<dyn super::Series>],
) -> Counters {
    let carried = carried();
    let workers = stats
        .iter()
        .enumerate()
        .map(|(i, s)| WorkerCounts::of(s).plus(carried.worker(i)))
        .collect();
    let upstreams = config.service.proxy().map_or(Vec::new(), |p| {
        p.upstreams
            .list()
            .iter()
            .map(|u| {
                (
                    u.addr,
                    UpstreamCounts::of(&u.stats).plus(carried.upstream(u.addr)),
                )
            })
            .collect()
    });
    let mut named = Vec::new();
    let own = super::config::counters(config);
    for f in own
        .into_iter()
        .chain(more.iter().flat_map(|m| m.counters()))
    {
        for (labels, v) in f.samples {
            let key = super::Family::key(f.name, &labels);
            let v = v + carried.named(&key);
            named.push((key, v));
        }
    }
    Counters {
        workers,
        upstreams,
        named,
    }
}

/// What was carried from a predecessor (nothing until its snapshot is in).
pub fn carried() -> Counters {
    match &*carry() {
        Carry::Counts(c) => c.clone(),
        Carry::Nothing | Carry::Pending => Counters::default(),
    }
}

/// True while a predecessor's snapshot is on its way.
pub fn pending() -> bool {
    matches!(*carry(), Carry::Pending)
}

/// A worker's counters, as reported: the `_total` series of one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerCounts {
    /// `ringd_connections_accepted_total`.
    pub accepted: u64,
    /// `ringd_connections_rejected_total`.
    pub rejected: u64,
    /// `ringd_connections_closed_total`, in [`crate::connection::CloseReason::ALL`] order.
    pub closed: [u64; 7],
    /// `ringd_received_bytes_total`.
    pub bytes_in: u64,
    /// `ringd_sent_bytes_total`.
    pub bytes_out: u64,
    /// `ringd_requests_total`.
    pub requests: u64,
    /// `ringd_accept_errors_total`.
    pub accept_errors: u64,
    /// `ringd_accept_backoffs_total`.
    pub accept_backoffs: u64,
    /// `ringd_recv_enobufs_total`.
    pub recv_enobufs: u64,
    /// `ringd_direct_descriptor_fallbacks_total`.
    pub fixed_fallbacks: u64,
    /// `ringd_tls_handshakes_total`, in [`crate::tls::Handshake::COUNTED`] order.
    pub tls_handshakes: [u64; 3],
    /// `ringd_tls_truncations_total`.
    pub tls_truncations: u64,
}

/// Fields of a `w` line.
const WORKER_FIELDS: usize = 20;

/// Fields of a `w` line written by a ringd without TLS counters: the fields it lacks are
/// read as 0, so an upgrade from it keeps its counts.
const WORKER_FIELDS_BEFORE_TLS: usize = 16;

impl WorkerCounts {
    /// A worker's own counts now.
    pub fn of(s: &WorkerStats) -> Self {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerCounts {
            accepted: l(&s.accepted),
            rejected: l(&s.rejected),
            closed: std::array::from_fn(|i| l(&s.closed[i])),
            bytes_in: l(&s.bytes_in),
            bytes_out: l(&s.bytes_out),
            requests: l(&s.requests),
            accept_errors: l(&s.accept_errors),
            accept_backoffs: l(&s.accept_backoffs),
            recv_enobufs: l(&s.recv_enobufs),
            fixed_fallbacks: l(&s.fixed_fallbacks),
            tls_handshakes: std::array::from_fn(|i| l(&s.tls_handshakes[i])),
            tls_truncations: l(&s.tls_truncations),
        }
    }

    fn to_array(self) -> [u64; WORKER_FIELDS] {
        let c = self.closed;
        [
            self.accepted,
            self.rejected,
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            c[6],
            self.bytes_in,
            self.bytes_out,
            self.requests,
            self.accept_errors,
            self.accept_backoffs,
            self.recv_enobufs,
            self.fixed_fallbacks,
            self.tls_handshakes[0],
            self.tls_handshakes[1],
            self.tls_handshakes[2],
            self.tls_truncations,
        ]
    }

    fn from_array(a: [u64; WORKER_FIELDS]) -> Self {
        WorkerCounts {
            accepted: a[0],
            rejected: a[1],
            closed: [a[2], a[3], a[4], a[5], a[6], a[7], a[8]],
            bytes_in: a[9],
            bytes_out: a[10],
            requests: a[11],
            accept_errors: a[12],
            accept_backoffs: a[13],
            recv_enobufs: a[14],
            fixed_fallbacks: a[15],
            tls_handshakes: [a[16], a[17], a[18]],
            tls_truncations: a[19],
        }
    }

    /// Field by field sum (saturating: a counter never wraps to a smaller value).
    pub fn plus(self, o: Self) -> Self {
        let (a, b) = (self.to_array(), o.to_array());
        Self::from_array(std::array::from_fn(|i| a[i].saturating_add(b[i])))
    }
}

/// An upstream's counters, as reported (proxy mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamCounts {
    /// `ringd_upstream_connections_total`.
    pub connections: u64,
    /// `ringd_upstream_connect_failures_total`.
    pub failed_connects: u64,
    /// `ringd_upstream_sent_bytes_total`.
    pub bytes_sent: u64,
    /// `ringd_upstream_received_bytes_total`.
    pub bytes_received: u64,
    /// `ringd_upstream_marked_down_total`.
    pub marked_down: u64,
}

impl UpstreamCounts {
    /// An upstream's own counts now.
    pub fn of(s: &UpstreamStats) -> Self {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        UpstreamCounts {
            connections: l(&s.connections),
            failed_connects: l(&s.failed_connects),
            bytes_sent: l(&s.bytes_sent),
            bytes_received: l(&s.bytes_received),
            marked_down: l(&s.marked_down),
        }
    }

    fn to_array(self) -> [u64; 5] {
        [
            self.connections,
            self.failed_connects,
            self.bytes_sent,
            self.bytes_received,
            self.marked_down,
        ]
    }

    /// Field by field sum (saturating).
    pub fn plus(self, o: Self) -> Self {
        let (a, b) = (self.to_array(), o.to_array());
        let s: [u64; 5] = std::array::from_fn(|i| a[i].saturating_add(b[i]));
        UpstreamCounts {
            connections: s[0],
            failed_connects: s[1],
            bytes_sent: s[2],
            bytes_received: s[3],
            marked_down: s[4],
        }
    }
}

/// Every `_total` series a process reports, per worker and per upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// In worker order.
    pub workers: Vec<WorkerCounts>,
    /// In the order given on the command line.
    pub upstreams: Vec<(SocketAddr, UpstreamCounts)>,
    /// The process's other counters ([`super::Series`]), by series name with its labels.
    pub named: Vec<(String, u64)>,
}

/// The first line of a snapshot.
const HEADER: &str = "ringd-counters 1";

impl Counters {
    /// The snapshot's text.
    pub fn encode(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!("{HEADER}\n");
        for w in &self.workers {
            out.push('w');
            for v in w.to_array() {
                let _ = write!(out, " {v}");
            }
            out.push('\n');
        }
        for (addr, u) in &self.upstreams {
            let _ = write!(out, "u {addr}");
            for v in u.to_array() {
                let _ = write!(out, " {v}");
            }
            out.push('\n');
        }
        for (key, v) in &self.named {
            let _ = writeln!(out, "n {key} {v}");
        }
        out.push_str("end\n");
        out
    }

    /// Reads a snapshot; `None` unless it is whole and well formed.
    pub fn decode(text: &str) -> Option<Counters> {
        let mut lines = text.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let mut c = Counters::default();
        for line in lines {
            let mut words = line.split(' ');
            match words.next()? {
                "w" => {
                    let mut a: Vec<u64> = words.map(|w| w.parse().ok()).collect::<Option<_>>()?;
                    if a.len() == WORKER_FIELDS_BEFORE_TLS {
                        a.resize(WORKER_FIELDS, 0);
                    }
                    c.workers.push(WorkerCounts::from_array(a.try_into().ok()?));
                }
                "u" => {
                    let addr = words.next()?.parse().ok()?;
                    let a: Vec<u64> = words.map(|w| w.parse().ok()).collect::<Option<_>>()?;
                    let a: [u64; 5] = a.try_into().ok()?;
                    let u = UpstreamCounts {
                        connections: a[0],
                        failed_connects: a[1],
                        bytes_sent: a[2],
                        bytes_received: a[3],
                        marked_down: a[4],
                    };
                    c.upstreams.push((addr, u));
                }
                "n" => {
                    let key = words.next()?;
                    let v = words.next()?.parse().ok()?;
                    c.named.push((key.to_string(), v));
                }
                "end" => return Some(c),
                _ => return None,
            }
        }
        None
    }

    /// Shaped for a process with `workers` workers: worker by worker as far as both have
    /// them (so no worker's series goes down), and the counts of workers it does not have
    /// on its worker 0.
    pub fn for_workers(mut self, workers: usize) -> Counters {
        if self.workers.len() > workers {
            let extra = self
                .workers
                .split_off(workers.max(1))
                .into_iter()
                .fold(WorkerCounts::default(), |a, b| a.plus(b));
            if let Some(first) = self.workers.first_mut() {
                *first = first.plus(extra);
            }
        }
        self.workers.resize(workers, WorkerCounts::default());
        self
    }

    /// Worker `i`'s carried counts (zero if none).
    pub fn worker(&self, i: usize) -> WorkerCounts {
        self.workers.get(i).copied().unwrap_or_default()
    }

    /// The carried count of the series `key` (name and labels; zero if none).
    pub fn named(&self, key: &str) -> u64 {
        self.named
            .iter()
            .find(|(k, _)| k == key)
            .map_or(0, |(_, v)| *v)
    }

    /// The carried counts of the upstream at `addr` (zero if none).
    pub fn upstream(&self, addr: SocketAddr) -> UpstreamCounts {
        self.upstreams
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, u)| *u)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Counters {
        let mut w = WorkerCounts {
            accepted: 5,
            bytes_out: u64::MAX,
            ..Default::default()
        };
        w.closed[6] = 2;
        w.tls_handshakes[2] = 4;
        w.tls_truncations = 1;
        Counters {
            workers: vec![w, WorkerCounts::default().plus(w)],
            upstreams: vec![(
                "[::1]:9001".parse().unwrap(),
                UpstreamCounts {
                    marked_down: 3,
                    ..Default::default()
                },
            )],
            named: vec![("ringd_x_total{result=\"ok\"}".into(), 7)],
        }
    }

    #[test]
    fn a_snapshot_reads_back_as_it_was_written() {
        let c = sample();
        assert_eq!(Counters::decode(&c.encode()), Some(c));
    }

    #[test]
    fn a_snapshot_without_tls_counters_reads_them_as_zero() {
        let c = sample();
        let short = c
            .encode()
            .lines()
            .map(|l| match l.strip_prefix("w ") {
                Some(w) => {
                    let f: Vec<&str> = w.split(' ').take(WORKER_FIELDS_BEFORE_TLS).collect();
                    format!("w {}\n", f.join(" "))
                }
                None => format!("{l}\n"),
            })
            .collect::<String>();
        let got = Counters::decode(&short).expect("read");
        assert_eq!(got.workers[0].accepted, 5);
        assert_eq!(got.workers[0].tls_handshakes, [0; 3]);
        assert_eq!(got.workers[0].tls_truncations, 0);
    }

    #[test]
    fn a_cut_or_foreign_snapshot_is_refused() {
        let text = sample().encode();
        assert_eq!(Counters::decode(text.trim_end_matches("end\n")), None);
        assert_eq!(Counters::decode(&text.replace("w 5", "w x")), None);
        assert_eq!(Counters::decode(&text.replace(" 2 0", " 2")), None);
        assert_eq!(Counters::decode("ringd-counters 2\nend\n"), None);
        assert_eq!(Counters::decode(""), None);
    }

    #[test]
    fn another_worker_count_lowers_no_worker_series() {
        let c = sample();
        let same = c.clone().for_workers(2);
        assert_eq!(same, c);
        // More workers: each keeps its own, the new one starts from zero.
        let three = c.clone().for_workers(3);
        assert_eq!(three.workers.len(), 3);
        assert_eq!(three.worker(0), c.worker(0));
        assert_eq!(
            three.worker(1),
            c.worker(1),
            "worker 1 must not restart from zero"
        );
        assert_eq!(three.worker(2), WorkerCounts::default());
        // Fewer: the counts of the workers gone land on worker 0.
        let one = c.clone().for_workers(1);
        assert_eq!(one.workers.len(), 1);
        assert_eq!(one.worker(0).accepted, 10);
        assert_eq!(one.worker(0).bytes_out, u64::MAX);
        assert_eq!(one.worker(0).closed[6], 4);
        assert_eq!(one.upstream("[::1]:9001".parse().unwrap()).marked_down, 3);
    }
}
