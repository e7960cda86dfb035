//! `--metrics ADDR`: the workers' counters in the Prometheus text exposition format over
//! HTTP (`GET /metrics`). Served by a thread of its own, off the data path; it reads the
//! counters the workers keep, so every figure is exact at the moment of the scrape.
//!
//! Two series describe the process rather than the workers: `ringd_start_time_seconds`
//! (when this process started) and `ringd_upgrades_total` (live upgrades in this process's
//! lineage: a fresh start counts 0, a successor starts from its predecessor's count plus
//! one, and a process that hands over counts that handover too).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use tracing::{debug, info};

use crate::config::Config;
use crate::connection::{CloseReason, WorkerStats};
use crate::error::Error;

/// When this process started, as Unix time in seconds: taken at the first call, which the
/// binary makes first thing in `main`.
pub fn process_start_time() -> f64 {
    static START: OnceLock<f64> = OnceLock::new();
    *START.get_or_init(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    })
}

/// Live upgrades in this process's lineage.
static UPGRADES: AtomicU64 = AtomicU64::new(0);

/// The lineage's upgrade count so far.
pub fn upgrades() -> u64 {
    UPGRADES.load(Ordering::Relaxed)
}

/// Sets the count a successor inherits from its predecessor.
pub fn set_upgrades(n: u64) {
    UPGRADES.store(n, Ordering::Relaxed);
}

/// Counts a handover made by this process; returns the new count.
pub fn count_upgrade() -> u64 {
    UPGRADES.fetch_add(1, Ordering::Relaxed) + 1
}

/// A running metrics endpoint; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    /// The address it serves.
    addr: SocketAddr,
    /// Set to stop the thread.
    stop: Arc<AtomicBool>,
}

impl MetricsServer {
    /// Binds `addr` and serves the counters of `stats` until dropped.
    pub fn start(
        addr: SocketAddr,
        stats: Vec<Arc<WorkerStats>>,
        config: Arc<Config>,
    ) -> Result<Self, Error> {
        let listener = bind(addr)?;
        Self::start_on(listener, stats, config)
    }

    /// Serves the counters of `stats` on an already listening socket until dropped.
    pub fn start_on(
        listener: TcpListener,
        stats: Vec<Arc<WorkerStats>>,
        config: Arc<Config>,
    ) -> Result<Self, Error> {
        let addr = listener
            .local_addr()
            .map_err(|err| Error::Config(format!("cannot read the metrics address: {err}")))?;
        let addr = listener
            .local_addr()
            .map_err(|err| Error::Bind { addr, err })?;
        listener
            .set_nonblocking(true)
            .map_err(|err| Error::Bind { addr, err })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("ringd-metrics".into())
            .spawn(move || serve(listener, &stats, &config, &flag))
            .map_err(Error::Spawn)?;
        info!("metrics on http://{addr}/metrics");
        Ok(MetricsServer { addr, stop })
    }

    /// The address it serves.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Binds the metrics listener.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).map_err(|err| match err.kind() {
        std::io::ErrorKind::AddrInUse => Error::Config(format!(
            "metrics address {addr} is already in use: choose another with --metrics"
        )),
        _ => Error::Bind { addr, err },
    })
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(listener: TcpListener, stats: &[Arc<WorkerStats>], config: &Config, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                if let Err(e) = answer(s, stats, config) {
                    debug!("metrics request failed: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                debug!("metrics accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn answer(mut s: TcpStream, stats: &[Arc<WorkerStats>], config: &Config) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 4096];
    let mut len = 0;
    let complete = loop {
        let n = s.read(&mut buf[len..])?;
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                break Some((
                    req.method == Some("GET"),
                    req.path.unwrap_or("").to_string(),
                ))
            }
            Ok(httparse::Status::Partial) if n > 0 && len < buf.len() => continue,
            _ => break None,
        }
    };
    let (status, body) = match complete {
        Some((true, path)) if path == "/metrics" || path.starts_with("/metrics?") => {
            ("200 OK", render(stats, config))
        }
        Some(_) => ("404 Not Found", "not found: try GET /metrics\n".to_string()),
        None => ("400 Bad Request", String::new()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())
}

/// The exposition text for `stats` (one series per worker).
pub fn render(stats: &[Arc<WorkerStats>], config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP ringd_build_info Version, engine and protocol of this ringd."
    );
    let _ = writeln!(out, "# TYPE ringd_build_info gauge");
    let _ = writeln!(
        out,
        "ringd_build_info{{version=\"{}\",engine=\"{}\",protocol=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        config.engine,
        match config.proxy {
            Some(_) => "proxy",
            None => config.protocol.kind.name(),
        }
    );
    let _ = writeln!(
        out,
        "# HELP ringd_start_time_seconds When this process started, as Unix time."
    );
    let _ = writeln!(out, "# TYPE ringd_start_time_seconds gauge");
    let _ = writeln!(out, "ringd_start_time_seconds {:.3}", process_start_time());
    let _ = writeln!(
        out,
        "# HELP ringd_upgrades_total Live upgrades (SIGUSR2 handovers) in this process lineage."
    );
    let _ = writeln!(out, "# TYPE ringd_upgrades_total counter");
    let _ = writeln!(out, "ringd_upgrades_total {}", upgrades());
    fn load(a: &std::sync::atomic::AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }
    type Get = fn(&WorkerStats) -> u64;
    let series: [(&str, &str, &str, Get); 11] = [
        (
            "ringd_connections_accepted_total",
            "counter",
            "Connections admitted.",
            |s| load(&s.accepted),
        ),
        (
            "ringd_connections_active",
            "gauge",
            "Connections open now.",
            |s| s.active(),
        ),
        (
            "ringd_connections_rejected_total",
            "counter",
            "Connections turned away by --max-connections.",
            |s| load(&s.rejected),
        ),
        (
            "ringd_received_bytes_total",
            "counter",
            "Bytes received.",
            |s| load(&s.bytes_in),
        ),
        ("ringd_sent_bytes_total", "counter", "Bytes sent.", |s| {
            load(&s.bytes_out)
        }),
        (
            "ringd_requests_total",
            "counter",
            "Requests answered (http; hello replies).",
            |s| load(&s.requests),
        ),
        (
            "ringd_accept_errors_total",
            "counter",
            "Failed accepts.",
            |s| load(&s.accept_errors),
        ),
        (
            "ringd_accept_backoffs_total",
            "counter",
            "Accept pauses after EMFILE/ENFILE/ENOBUFS/ENOMEM.",
            |s| load(&s.accept_backoffs),
        ),
        (
            "ringd_direct_descriptor_fallbacks_total",
            "counter",
            "Times the uring direct descriptor table was full and accepting fell back to ordinary descriptors.",
            |s| load(&s.fixed_fallbacks),
        ),
        (
            "ringd_recv_enobufs_total",
            "counter",
            "Receives that found the buffer ring empty (uring).",
            |s| load(&s.recv_enobufs),
        ),
        ("ringd_workers", "gauge", "Worker threads.", |_| 1),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        if name == "ringd_workers" {
            let _ = writeln!(out, "{name} {}", stats.len());
            continue;
        }
        for (i, s) in stats.iter().enumerate() {
            let _ = writeln!(out, "{name}{{worker=\"{i}\"}} {}", get(s));
        }
    }
    let name = "ringd_connections_closed_total";
    let _ = writeln!(out, "# HELP {name} Connections closed, by reason.");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (i, s) in stats.iter().enumerate() {
        for r in CloseReason::ALL {
            let _ = writeln!(
                out,
                "{name}{{worker=\"{i}\",reason=\"{}\"}} {}",
                r.label(),
                s.closed_for(r)
            );
        }
    }
    if let Some(proxy) = &config.proxy {
        render_upstreams(&mut out, &proxy.upstreams);
    }
    out
}

/// Proxy mode: one series per upstream (`upstream="HOST:PORT"`).
fn render_upstreams(out: &mut String, ups: &crate::proxy::Upstreams) {
    use crate::proxy::UpstreamStats;
    type Get = fn(&UpstreamStats) -> u64;
    let series: [(&str, &str, &str, Get); 6] = [
        (
            "ringd_upstream_connections_total",
            "counter",
            "Connections established to the upstream.",
            |s| s.connections.load(Ordering::Relaxed),
        ),
        (
            "ringd_upstream_connections_active",
            "gauge",
            "Connections to the upstream open now.",
            |s| s.active.load(Ordering::Relaxed),
        ),
        (
            "ringd_upstream_connect_failures_total",
            "counter",
            "Connects to the upstream that were refused or timed out.",
            |s| s.failed_connects.load(Ordering::Relaxed),
        ),
        (
            "ringd_upstream_sent_bytes_total",
            "counter",
            "Bytes sent to the upstream (from clients).",
            |s| s.bytes_sent.load(Ordering::Relaxed),
        ),
        (
            "ringd_upstream_received_bytes_total",
            "counter",
            "Bytes received from the upstream (for clients).",
            |s| s.bytes_received.load(Ordering::Relaxed),
        ),
        (
            "ringd_upstream_marked_down_total",
            "counter",
            "Times the upstream was marked down after a failed connect.",
            |s| s.marked_down.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for u in ups.list() {
            let _ = writeln!(out, "{name}{{upstream=\"{}\"}} {}", u.addr, get(&u.stats));
        }
    }
    let name = "ringd_upstream_up";
    let _ = writeln!(
        out,
        "# HELP {name} 1 unless the upstream is marked down now."
    );
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (i, u) in ups.list().iter().enumerate() {
        let _ = writeln!(
            out,
            "{name}{{upstream=\"{}\"}} {}",
            u.addr,
            u8::from(ups.is_up(i))
        );
    }
}

/// Sums one metric over its series in an exposition text (for tests and scripts).
pub fn sum_metric(text: &str, name: &str, label_filter: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| l.contains(label_filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EngineKind, ProtocolKind};

    #[test]
    fn exposition_has_every_series_per_worker() {
        let config = Config::new(
            "127.0.0.1:0".parse().unwrap(),
            ProtocolKind::Http,
            EngineKind::Uring,
        );
        let stats = vec![
            Arc::new(WorkerStats::default()),
            Arc::new(WorkerStats::default()),
        ];
        WorkerStats::add(&stats[1].accepted, 3);
        stats[1].close(CloseReason::Idle);
        WorkerStats::add(&stats[0].rejected, 2);
        let text = render(&stats, &config);
        assert!(text.contains("ringd_build_info{version=\""), "{text}");
        assert!(text.contains("engine=\"uring\",protocol=\"http\"} 1"));
        assert_eq!(sum_metric(&text, "ringd_connections_accepted_total", ""), 3);
        assert_eq!(sum_metric(&text, "ringd_connections_active", ""), 2);
        assert_eq!(sum_metric(&text, "ringd_connections_rejected_total", ""), 2);
        assert_eq!(
            sum_metric(&text, "ringd_connections_closed_total", "reason=\"idle\""),
            1
        );
        assert!(text
            .contains("ringd_connections_closed_total{worker=\"0\",reason=\"header_timeout\"} 0"));
        assert_eq!(sum_metric(&text, "ringd_workers", ""), 2);
        assert_eq!(sum_metric(&text, "ringd_upgrades_total", ""), upgrades());
        let start: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("ringd_start_time_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(start > 1.6e9, "{start}");
    }
}
