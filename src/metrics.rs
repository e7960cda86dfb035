//! `--metrics ADDR`: the workers' counters in the Prometheus text exposition format over
//! HTTP (`GET /metrics`). Served by a thread of its own, off the data path, on a tokio
//! current-thread runtime with one task per connection: a connection that sends nothing (a
//! TCP health check, a port scan) waits out its own timeout without delaying anyone else's
//! scrape. It reads the counters the workers keep, so every figure is exact at the moment of
//! the scrape.
//!
//! Two series describe the process rather than the workers: `ringd_start_time_seconds`
//! (when this process started) and `ringd_upgrades_total` (live upgrades in this process's
//! lineage: a fresh start counts 0, a successor starts from its predecessor's count plus
//! one, and a process that hands over counts that handover too).
//!
//! Every `_total` series continues across live upgrades: a successor reports its own counts
//! plus its predecessor's at the handover (`carried` says how they travel).

mod carried;
pub mod config;

use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, Semaphore};
use tracing::{debug, info};

use crate::config::Config;
use crate::connection::{CloseReason, WorkerStats};
use crate::error::Error;
use crate::tls::Handshake;
pub use carried::{
    expect_carried, pending as counters_pending, set_carried, totals, Counters, UpstreamCounts,
    WorkerCounts,
};

/// Connections served at once. One accepted beyond them takes the place of the oldest that
/// has not sent a whole request yet (so silent connections, however many, cannot lock a
/// scrape out), or is closed at once if every one is being answered.
const MAX_CONNECTIONS: usize = 64;
/// How long a client has to send its whole request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client has to take the whole response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request read, headers included; a request not complete by then gets a `400`.
const MAX_REQUEST: usize = 4096;

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

/// A running metrics endpoint; stops when dropped, and once the drop returns no scrape is
/// rendered any more (so a snapshot taken after it is at least what any scrape showed).
#[derive(Debug)]
pub struct MetricsServer {
    /// The address it serves.
    addr: SocketAddr,
    /// Dropped first on drop: its receiver, on the metrics thread, then stops serving.
    stop: Option<oneshot::Sender<()>>,
    /// The metrics thread, joined on drop.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            // The thread ends with its runtime, every connection's task dropped unpolled.
            let _ = t.join();
        }
    }
}

impl MetricsServer {
    /// Binds `addr` and serves the counters of `stats` until dropped.
    pub fn start(
        addr: SocketAddr,
        stats: Vec<Arc<WorkerStats>>,
        config: Arc<Config>,
    ) -> Result<Self, Error> {
        let listener = bind(addr)?;
        Self::start_on(listener, stats, config, Vec::new())
    }

    /// Serves the counters of `stats`, then those of `more`, on an already listening socket
    /// until dropped.
    pub fn start_on(
        listener: TcpListener,
        stats: Vec<Arc<WorkerStats>>,
        config: Arc<Config>,
        more: Vec<Arc<dyn Series>>,
    ) -> Result<Self, Error> {
        let addr = listener
            .local_addr()
            .map_err(|err| Error::Config(format!("cannot read the metrics address: {err}")))?;
        let bind_err = |err| Error::Bind { addr, err };
        listener.set_nonblocking(true).map_err(bind_err)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(bind_err)?;
        let listener = {
            let _context = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(bind_err)?
        };
        let (stop, stopped) = oneshot::channel();
        let page = Arc::new(Page {
            stats,
            config,
            more,
        });
        let thread = std::thread::Builder::new()
            .name("ringd-metrics".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        _ = stopped => {}
                        () = serve(listener, page) => {}
                    }
                });
            })
            .map_err(Error::Spawn)?;
        info!("metrics on http://{addr}/metrics");
        Ok(MetricsServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
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

/// What every connection's task renders.
struct Page {
    /// The workers' counters.
    stats: Vec<Arc<WorkerStats>>,
    /// The configuration the build info names.
    config: Arc<Config>,
    /// What the process adds beside the workers' counters.
    more: Vec<Arc<dyn Series>>,
}

/// Counters of a part of the process other than the workers (the access log, ...),
/// rendered after theirs on every scrape and carried across live upgrades like them.
pub trait Series: Send + Sync + std::fmt::Debug {
    /// The counter families now, each sample with its own count alone.
    fn counters(&self) -> Vec<Family>;
}

/// One counter family of a [`Series`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// The series name (`…_total`).
    pub name: &'static str,
    /// Its `# HELP` text.
    pub help: &'static str,
    /// Label sets (such as `result="ok"`) and counts.
    pub samples: Vec<(String, u64)>,
}

impl Family {
    /// The sample's name with its labels, as the exposition writes it.
    pub fn key(name: &str, labels: &str) -> String {
        match labels {
            "" => name.to_string(),
            l => format!("{name}{{{l}}}"),
        }
    }
}

impl Series for crate::access_log::AccessLog {
    fn counters(&self) -> Vec<Family> {
        let c = self.counters();
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![Family {
            name: "ringd_access_log_lines_total",
            help: "Access log lines by result: written, dropped (the queue was full), failed (a write error).",
            samples: vec![
                ("result=\"written\"".into(), l(&c.written)),
                ("result=\"dropped\"".into(), l(&c.dropped)),
                ("result=\"failed\"".into(), l(&c.failed)),
            ],
        }]
    }
}

/// Appends the families of `more`.
fn render_more(out: &mut String, more: &[Arc<dyn Series>]) {
    render_families(out, more.iter().flat_map(|m| m.counters()));
}

/// Appends counter families, each count plus what a predecessor carried.
fn render_families(out: &mut String, families: impl IntoIterator<Item = Family>) {
    let carried = carried::carried();
    for f in families {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} counter", f.name);
        for (labels, v) in &f.samples {
            let key = Family::key(f.name, labels);
            let _ = writeln!(out, "{key} {}", v + carried.named(&key));
        }
    }
}

/// Connections still waiting for their request, oldest first, each with the sender that
/// ends its wait.
#[derive(Debug, Default)]
struct Waiting {
    /// The next connection's number.
    next: u64,
    /// Numbers and evictions, oldest first.
    queue: std::collections::VecDeque<(u64, oneshot::Sender<()>)>,
}

type SharedWaiting = Arc<std::sync::Mutex<Waiting>>;

fn waiting(w: &SharedWaiting) -> std::sync::MutexGuard<'_, Waiting> {
    w.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Accepts connections and answers each in a task of its own, at most [`MAX_CONNECTIONS`]
/// at once. Never returns: the thread drops it when the server stops.
async fn serve(listener: tokio::net::TcpListener, page: Arc<Page>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let waits = SharedWaiting::default();
    loop {
        let (s, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, most likely: pause rather than spin.
                debug!("metrics accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // The oldest connection still waiting for its request gives its slot back as
                // soon as its task runs.
                let evicted = loop {
                    let oldest = waiting(&waits).queue.pop_front();
                    match oldest {
                        // Its task is over (the receiver is gone): the next one.
                        Some((_, evict)) => {
                            if evict.send(()).is_ok() {
                                break true;
                            }
                        }
                        None => break false,
                    }
                };
                if !evicted {
                    debug!(%peer, "metrics: {MAX_CONNECTIONS} connections being answered, closing");
                    continue;
                }
                match slots.clone().acquire_owned().await {
                    Ok(slot) => slot,
                    Err(_) => continue,
                }
            }
        };
        let (evict, evicted) = oneshot::channel();
        let id = {
            let mut w = waiting(&waits);
            w.next += 1;
            let id = w.next;
            w.queue.push_back((id, evict));
            id
        };
        let (page, waits) = (page.clone(), waits.clone());
        tokio::spawn(async move {
            let forget = || waiting(&waits).queue.retain(|(i, _)| *i != id);
            if let Err(e) = answer(s, &page, evicted, forget).await {
                debug!(%peer, "metrics request failed: {e}");
            }
            forget();
            drop(slot);
        });
    }
}

/// Reads one request and answers it, then closes. `evicted` ends the wait for the request
/// (a newer connection needs the slot); `got_request` is called once it has come.
async fn answer(
    mut s: tokio::net::TcpStream,
    page: &Page,
    evicted: oneshot::Receiver<()>,
    got_request: impl FnOnce(),
) -> io::Result<()> {
    let request = tokio::select! {
        r = tokio::time::timeout(READ_TIMEOUT, read_request(&mut s)) => r
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no whole request in time"))??,
        _ = evicted => {
            return Err(io::Error::other("closed for a newer connection before its request came"))
        }
    };
    got_request();
    let pending = carried::pending();
    let (status, body) = match request {
        Some((true, path)) if pending && (path == "/metrics" || path.starts_with("/metrics?")) => (
            "503 Service Unavailable",
            "the previous process's counters are not in yet\n".to_string(),
        ),
        Some((true, path)) if path == "/metrics" || path.starts_with("/metrics?") => {
            let mut text = render(&page.stats, &page.config);
            render_more(&mut text, &page.more);
            ("200 OK", text)
        }
        Some(_) => ("404 Not Found", "not found: try GET /metrics\n".to_string()),
        None => ("400 Bad Request", String::new()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::time::timeout(WRITE_TIMEOUT, s.write_all(response.as_bytes()))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "response not taken in time"))?
}

/// Reads until a whole request head: `Some((is GET, path))`, or `None` when the bytes are
/// not HTTP, the head is over [`MAX_REQUEST`], or the peer ends it early.
async fn read_request(s: &mut tokio::net::TcpStream) -> io::Result<Option<(bool, String)>> {
    let mut buf = [0u8; MAX_REQUEST];
    let mut len = 0;
    loop {
        let n = s.read(&mut buf[len..]).await?;
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                return Ok(Some((
                    req.method == Some("GET"),
                    req.path.unwrap_or("").to_string(),
                )))
            }
            Ok(httparse::Status::Partial) if n > 0 && len < buf.len() => continue,
            _ => return Ok(None),
        }
    }
}

/// The exposition text for `stats` (one series per worker), counters carried from a
/// predecessor included.
pub fn render(stats: &[Arc<WorkerStats>], config: &Config) -> String {
    let totals = totals(stats, config, &[]);
    let mut out = String::new();
    render_process(&mut out, config);
    render_workers(&mut out, stats, &totals.workers);
    if let Some(proxy) = config.service.proxy() {
        render_upstreams(&mut out, &proxy.upstreams, &totals);
    }
    render_families(&mut out, config::counters(config));
    config::render_info(&mut out);
    out
}

/// What describes the process rather than its workers: build, start time, upgrades.
fn render_process(out: &mut String, config: &Config) {
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
        config.service.name()
    );
    let _ = writeln!(
        out,
        "# HELP ringd_engine_info The engine that runs (what --engine auto chose)."
    );
    let _ = writeln!(out, "# TYPE ringd_engine_info gauge");
    let _ = writeln!(out, "ringd_engine_info{{engine=\"{}\"}} 1", config.engine);
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
}

/// Where a per-worker series takes its value from.
#[derive(Clone, Copy)]
enum WorkerValue {
    /// A counter carried across upgrades, from the totals.
    Total(fn(&WorkerCounts) -> u64),
    /// Connections open in this process now (a predecessor's are not carried).
    Active,
}

/// The per-worker series in exposition order: name, type, help, value.
const WORKER_SERIES: [(&str, &str, &str, WorkerValue); 10] = [
    (
        "ringd_connections_accepted_total",
        "counter",
        "Connections admitted.",
        WorkerValue::Total(|c| c.accepted),
    ),
    (
        "ringd_connections_active",
        "gauge",
        "Connections open now.",
        WorkerValue::Active,
    ),
    (
        "ringd_connections_rejected_total",
        "counter",
        "Connections turned away by --max-connections.",
        WorkerValue::Total(|c| c.rejected),
    ),
    (
        "ringd_received_bytes_total",
        "counter",
        "Bytes received.",
        WorkerValue::Total(|c| c.bytes_in),
    ),
    (
        "ringd_sent_bytes_total",
        "counter",
        "Bytes sent.",
        WorkerValue::Total(|c| c.bytes_out),
    ),
    (
        "ringd_requests_total",
        "counter",
        "Requests answered (http; hello replies).",
        WorkerValue::Total(|c| c.requests),
    ),
    (
        "ringd_accept_errors_total",
        "counter",
        "Failed accepts.",
        WorkerValue::Total(|c| c.accept_errors),
    ),
    (
        "ringd_accept_backoffs_total",
        "counter",
        "Accept pauses after EMFILE/ENFILE/ENOBUFS/ENOMEM.",
        WorkerValue::Total(|c| c.accept_backoffs),
    ),
    (
        "ringd_direct_descriptor_fallbacks_total",
        "counter",
        "Times the uring direct descriptor table was full and accepting fell back to ordinary descriptors.",
        WorkerValue::Total(|c| c.fixed_fallbacks),
    ),
    (
        "ringd_recv_enobufs_total",
        "counter",
        "Receives that found the buffer ring empty (uring).",
        WorkerValue::Total(|c| c.recv_enobufs),
    ),
];

/// The `# HELP` and `# TYPE` lines that open a series.
fn write_header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One series per worker (`worker="N"`), the worker count, and the closes by reason: the
/// gauges from `stats`, the counters from `totals` (in the same worker order).
fn render_workers(out: &mut String, stats: &[Arc<WorkerStats>], totals: &[WorkerCounts]) {
    for (name, kind, help, value) in WORKER_SERIES {
        write_header(out, name, kind, help);
        match value {
            WorkerValue::Total(get) => {
                for (i, c) in totals.iter().enumerate() {
                    let _ = writeln!(out, "{name}{{worker=\"{i}\"}} {}", get(c));
                }
            }
            WorkerValue::Active => {
                for (i, s) in stats.iter().enumerate() {
                    let _ = writeln!(out, "{name}{{worker=\"{i}\"}} {}", s.active());
                }
            }
        }
    }
    write_header(out, "ringd_workers", "gauge", "Worker threads.");
    let _ = writeln!(out, "ringd_workers {}", stats.len());
    render_tls(out, totals);
    let name = "ringd_connections_closed_total";
    write_header(out, name, "counter", "Connections closed, by reason.");
    for (i, c) in totals.iter().enumerate() {
        for (r, n) in CloseReason::ALL.iter().zip(c.closed) {
            let _ = writeln!(out, "{name}{{worker=\"{i}\",reason=\"{}\"}} {n}", r.label());
        }
    }
}

/// The TLS counters, per worker: handshakes by outcome and truncations.
fn render_tls(out: &mut String, totals: &[WorkerCounts]) {
    let name = "ringd_tls_handshakes_total";
    let _ = writeln!(
        out,
        "# HELP {name} TLS handshakes by outcome, counted when their connection ends."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (i, c) in totals.iter().enumerate() {
        for (h, n) in Handshake::COUNTED.iter().zip(c.tls_handshakes) {
            let _ = writeln!(out, "{name}{{worker=\"{i}\",result=\"{}\"}} {n}", h.label());
        }
    }
    let name = "ringd_tls_truncations_total";
    let _ = writeln!(
        out,
        "# HELP {name} TLS connections whose peer ended its input without close_notify."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (i, c) in totals.iter().enumerate() {
        let _ = writeln!(out, "{name}{{worker=\"{i}\"}} {}", c.tls_truncations);
    }
}

/// Proxy mode: one series per upstream (`upstream="HOST:PORT"`): the gauges from `ups`, the
/// counters from `totals`.
fn render_upstreams(out: &mut String, ups: &crate::proxy::Upstreams, totals: &Counters) {
    type Get = fn(&crate::proxy::UpstreamStats, &UpstreamCounts) -> u64;
    let series: [(&str, &str, &str, Get); 6] = [
        (
            "ringd_upstream_connections_total",
            "counter",
            "Connections established to the upstream.",
            |_, c| c.connections,
        ),
        (
            "ringd_upstream_connections_active",
            "gauge",
            "Connections to the upstream open now, or being opened.",
            |s, _| s.active.load(Ordering::Relaxed),
        ),
        (
            "ringd_upstream_connect_failures_total",
            "counter",
            "Connects to the upstream that were refused or timed out.",
            |_, c| c.failed_connects,
        ),
        (
            "ringd_upstream_sent_bytes_total",
            "counter",
            "Bytes sent to the upstream (from clients).",
            |_, c| c.bytes_sent,
        ),
        (
            "ringd_upstream_received_bytes_total",
            "counter",
            "Bytes received from the upstream (for clients).",
            |_, c| c.bytes_received,
        ),
        (
            "ringd_upstream_marked_down_total",
            "counter",
            "Times the upstream was marked down after a failed connect.",
            |_, c| c.marked_down,
        ),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for u in ups.list() {
            let c = totals.upstream(u.addr);
            let _ = writeln!(
                out,
                "{name}{{upstream=\"{}\"}} {}",
                u.addr,
                get(&u.stats, &c)
            );
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
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    use super::*;
    use crate::{EngineKind, ProtocolKind};

    /// An endpoint on 127.0.0.1:0 over one worker's counters.
    fn endpoint() -> MetricsServer {
        let config = Config::new(
            "127.0.0.1:0".parse().unwrap(),
            ProtocolKind::Http,
            EngineKind::Epoll,
        );
        let stats = vec![Arc::new(WorkerStats::default())];
        MetricsServer::start("127.0.0.1:0".parse().unwrap(), stats, Arc::new(config)).unwrap()
    }

    /// Sends `request` on a new connection and reads until EOF (10 s at most).
    fn exchange(addr: SocketAddr, request: &[u8]) -> io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(request)?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(out)
    }

    const SCRAPE: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn idle_connections_do_not_delay_a_scrape() {
        let m = endpoint();
        let mut idle: Vec<TcpStream> = (0..10)
            .map(|_| TcpStream::connect(m.local_addr()).unwrap())
            .collect();
        // Time for the server to accept them all: the scrape comes after every idle one.
        std::thread::sleep(Duration::from_millis(200));
        let began = Instant::now();
        let scraped = exchange(m.local_addr(), SCRAPE);
        let took = began.elapsed();
        assert!(
            took < Duration::from_millis(1500),
            "a scrape behind 10 idle connections took {took:?}: {scraped:?}"
        );
        let text = String::from_utf8(scraped.unwrap()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\nringd_workers 1\n"), "{text}");
        // Each idle connection is closed by its own read timeout.
        for (i, s) in idle.iter_mut().enumerate() {
            s.set_read_timeout(Some(READ_TIMEOUT + Duration::from_secs(8)))
                .unwrap();
            let mut rest = Vec::new();
            let read = s.read_to_end(&mut rest);
            assert!(
                matches!(read, Ok(0)),
                "idle connection {i} not closed by the server: {read:?}"
            );
        }
    }

    #[test]
    fn more_silent_connections_than_slots_cannot_lock_a_scrape_out() {
        let m = endpoint();
        let silent: Vec<TcpStream> = (0..2 * MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(m.local_addr()).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        for round in 0..5 {
            let scraped = exchange(m.local_addr(), SCRAPE).expect("scraped");
            let text = String::from_utf8_lossy(&scraped);
            assert!(
                text.starts_with("HTTP/1.1 200 OK\r\n"),
                "round {round}: {text}"
            );
        }
        drop(silent);
    }

    #[test]
    fn bad_requests_get_a_400_or_a_close_and_the_endpoint_serves_on() {
        let m = endpoint();
        let oversized = [b"GET /metrics HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 5000]].concat();
        for request in [
            &b"\x00\xff\x16\x03\x01 not http\r\n\r\n"[..],
            b"GET /metrics HTTP/1.1\r\n",
            &oversized,
        ] {
            let mut s = TcpStream::connect(m.local_addr()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            // The server may answer and close before the whole of an oversized request is
            // written (then the write, or the shutdown, fails with a reset): that is fine.
            let _ = s.write_all(request);
            // An incomplete request is ended by its sender.
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut out = Vec::new();
            // A close with bytes unread may be a reset: a close all the same.
            if s.read_to_end(&mut out).is_ok() {
                assert!(
                    out.is_empty() || out.starts_with(b"HTTP/1.1 400 Bad Request\r\n"),
                    "{}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
        let other = exchange(m.local_addr(), b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert!(other.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
        let text = exchange(m.local_addr(), SCRAPE).unwrap();
        assert!(text.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }

    #[test]
    fn a_dropped_endpoint_has_stopped_when_the_drop_returns() {
        for _ in 0..20 {
            let m = endpoint();
            let addr = m.local_addr();
            drop(m);
            let refused = TcpStream::connect(addr);
            assert!(refused.is_err(), "{addr} still accepts after the drop");
        }
    }

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
        assert!(
            text.contains("\nringd_engine_info{engine=\"uring\"} 1\n"),
            "{text}"
        );
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
