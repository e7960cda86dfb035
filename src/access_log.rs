//! The access log: one line per connection at its close (client, listener, upstream, bytes
//! each way, duration, how it ended), as HAProxy's `option tcplog` and nginx's stream
//! `access_log` give. Workers never wait for it: a record goes into a bounded queue, and a
//! writer thread formats and writes it; when the queue is full the record is dropped and
//! counted. [`AccessLog::reopen`] makes the writer open the file again (after logrotate
//! moved it).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use crate::connection::CloseReason;

/// Records waiting for the writer, at most, by default (about 2 MB of records).
pub const QUEUE: usize = 16384;

/// How a line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// One JSON object per line.
    #[default]
    Json,
    /// `key=value` pairs separated by spaces.
    Logfmt,
}

/// Where lines go: a file (appended to, created `0640`) or standard output (`-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Standard output.
    Stdout,
    /// A file.
    File(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Stdout => f.write_str("-"),
            Target::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl Target {
    /// `-` is standard output, anything else a file.
    pub fn parse(s: &str) -> Target {
        match s {
            "-" => Target::Stdout,
            path => Target::File(PathBuf::from(path)),
        }
    }
}

/// `--access-log` and `--access-log-format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSpec {
    /// Where lines go.
    pub target: Target,
    /// How they are written.
    pub format: Format,
    /// Records waiting for the writer, at most; more are dropped and counted.
    pub queue: usize,
}

/// The upstream side of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamRecord {
    /// Where it went.
    pub addr: SocketAddr,
    /// Bytes sent to it.
    pub bytes_sent: u64,
    /// Bytes received from it.
    pub bytes_received: u64,
}

/// What an engine knows of a connection when it ends, beside its addresses and times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// How it ended.
    pub reason: CloseReason,
    /// Bytes received from the client.
    pub bytes_in: u64,
    /// Bytes sent to the client.
    pub bytes_out: u64,
    /// Proxy mode: the upstream, if one was reached.
    pub upstream: Option<UpstreamRecord>,
}

impl Ended {
    /// A connection that moved no bytes.
    pub fn empty(reason: CloseReason) -> Ended {
        Ended {
            reason,
            bytes_in: 0,
            bytes_out: 0,
            upstream: None,
        }
    }
}

/// One connection, at its close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// When it closed.
    pub end: SystemTime,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The address it connected to.
    pub listener: SocketAddr,
    /// The worker that served it.
    pub worker: usize,
    /// From accept to close, by the worker's clock.
    pub duration_ms: u64,
    /// Bytes received from the client.
    pub bytes_in: u64,
    /// Bytes sent to the client.
    pub bytes_out: u64,
    /// Proxy mode: the upstream it was relayed to, if one was reached.
    pub upstream: Option<UpstreamRecord>,
    /// How it ended.
    pub reason: CloseReason,
}

impl Record {
    /// The record of `ended`, closing now.
    pub fn of(
        ended: Ended,
        client: SocketAddr,
        listener: SocketAddr,
        worker: usize,
        duration_ms: u64,
    ) -> Record {
        Record {
            end: SystemTime::now(),
            client,
            listener,
            worker,
            duration_ms,
            bytes_in: ended.bytes_in,
            bytes_out: ended.bytes_out,
            upstream: ended.upstream,
            reason: ended.reason,
        }
    }

    /// The line for `format`, with its newline.
    pub fn line(&self, format: Format) -> String {
        let time = humantime::format_rfc3339_millis(self.end).to_string();
        let mut s = String::with_capacity(256);
        let fields = self.fields();
        match format {
            Format::Json => {
                let _ = write!(s, "{{\"time\":\"{time}\"");
                for (k, v) in fields {
                    let _ = write!(s, ",\"{k}\":{}", v.json());
                }
                s.push('}');
            }
            Format::Logfmt => {
                let _ = write!(s, "time={time}");
                for (k, v) in fields {
                    let _ = write!(s, " {k}={}", v.text());
                }
            }
        }
        s.push('\n');
        s
    }

    fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut f = vec![
            ("client", Value::Text(self.client.to_string())),
            ("listener", Value::Text(self.listener.to_string())),
            ("worker", Value::Number(self.worker as u64)),
            ("duration_ms", Value::Number(self.duration_ms)),
            ("bytes_in", Value::Number(self.bytes_in)),
            ("bytes_out", Value::Number(self.bytes_out)),
        ];
        if let Some(u) = self.upstream {
            f.push(("upstream", Value::Text(u.addr.to_string())));
            f.push(("upstream_bytes_sent", Value::Number(u.bytes_sent)));
            f.push(("upstream_bytes_received", Value::Number(u.bytes_received)));
        }
        f.push(("reason", Value::Text(self.reason.label().to_string())));
        f
    }
}

/// A field's value: addresses, labels and counts need no quoting in logfmt; JSON strings
/// are escaped all the same.
enum Value {
    Text(String),
    Number(u64),
}

impl Value {
    fn json(&self) -> String {
        match self {
            Value::Text(s) => serde_json::Value::from(s.as_str()).to_string(),
            Value::Number(n) => n.to_string(),
        }
    }

    fn text(&self) -> String {
        match self {
            Value::Text(s) => s.clone(),
            Value::Number(n) => n.to_string(),
        }
    }
}

/// The log's counters (`ringd_access_log_lines_total{result}`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Lines written.
    pub written: AtomicU64,
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Lines lost to a write error (a full disk), or a reopen that failed.
    pub failed: AtomicU64,
}

/// What the writer is sent.
enum Msg {
    Line(Record),
    /// Taken as a wake-up: the reopen itself is the flag.
    Wake,
}

/// The log, shared by every worker.
#[derive(Debug)]
pub struct AccessLog {
    tx: Option<SyncSender<Msg>>,
    counters: Arc<Counters>,
    reopen: Arc<AtomicBool>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl AccessLog {
    /// Opens `target` (so that a path that cannot be written is an error at start) and
    /// starts the writer, with a queue of `capacity` records.
    pub fn open(target: Target, format: Format, capacity: usize) -> io::Result<AccessLog> {
        let out = Output::open(&target)?;
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let counters = Arc::new(Counters::default());
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            target,
            format,
            out,
            counters: counters.clone(),
            reopen: reopen.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("ringd-access-log".into())
            .spawn(move || writer.run(rx))?;
        Ok(AccessLog {
            tx: Some(tx),
            counters,
            reopen,
            writer: Some(writer),
        })
    }

    /// Queues `record`; drops and counts it if the queue is full. Never blocks.
    pub fn log(&self, record: Record) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(Msg::Line(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Makes the writer open the file again before its next line (standard output is left
    /// as it is).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        if let Some(tx) = &self.tx {
            // A full queue wakes the writer anyway.
            let _ = tx.try_send(Msg::Wake);
        }
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        // The writer writes what is queued, then ends.
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Where the writer writes.
enum Output {
    Stdout(io::Stdout),
    File(BufWriter<File>),
}

impl Output {
    fn open(target: &Target) -> io::Result<Output> {
        Ok(match target {
            Target::Stdout => Output::Stdout(io::stdout()),
            Target::File(path) => Output::File(BufWriter::with_capacity(64 * 1024, open(path)?)),
        })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Stdout(s) => s,
            Output::File(f) => f,
        }
    }
}

fn open(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// The writer thread's state.
struct Writer {
    target: Target,
    format: Format,
    out: Output,
    counters: Arc<Counters>,
    reopen: Arc<AtomicBool>,
}

impl Writer {
    /// Writes what comes, a batch at a time, flushing after each batch, until every sender
    /// is gone.
    fn run(mut self, rx: Receiver<Msg>) {
        while let Ok(first) = rx.recv() {
            self.reopen_if_asked();
            self.take(first);
            for msg in rx.try_iter() {
                self.take(msg);
            }
            if self.out.writer().flush().is_err() {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        let _ = self.out.writer().flush();
    }

    fn take(&mut self, msg: Msg) {
        let Msg::Line(record) = msg else { return };
        let line = record.line(self.format);
        match self.out.writer().write_all(line.as_bytes()) {
            Ok(()) => self.counters.written.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counters.failed.fetch_add(1, Ordering::Relaxed),
        };
    }

    fn reopen_if_asked(&mut self) {
        if !self.reopen.swap(false, Ordering::AcqRel) {
            return;
        }
        let Target::File(path) = &self.target else {
            return;
        };
        let _ = self.out.writer().flush();
        match open(path) {
            Ok(f) => self.out = Output::File(BufWriter::with_capacity(64 * 1024, f)),
            Err(e) => {
                // Lines go on to the file already open.
                tracing::warn!("access log: cannot reopen {}: {e}", path.display());
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> Record {
        Record {
            end: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_765_000_000_123),
            client: "127.0.0.1:40000".parse().unwrap(),
            listener: "127.0.0.1:8080".parse().unwrap(),
            worker: 1,
            duration_ms: 12,
            bytes_in: n,
            bytes_out: 2 * n,
            upstream: None,
            reason: CloseReason::Peer,
        }
    }

    #[test]
    fn json_and_logfmt_lines() {
        let mut r = record(5);
        r.upstream = Some(UpstreamRecord {
            addr: "127.0.0.1:9001".parse().unwrap(),
            bytes_sent: 5,
            bytes_received: 10,
        });
        let json: serde_json::Value = serde_json::from_str(&r.line(Format::Json)).unwrap();
        assert_eq!(json["time"], "2025-12-06T05:46:40.123Z");
        assert_eq!(json["client"], "127.0.0.1:40000");
        assert_eq!(json["bytes_in"], 5);
        assert_eq!(json["bytes_out"], 10);
        assert_eq!(json["upstream"], "127.0.0.1:9001");
        assert_eq!(json["upstream_bytes_received"], 10);
        assert_eq!(json["reason"], "peer");
        let text = r.line(Format::Logfmt);
        assert!(text.starts_with("time=2025-12-06T05:46:40.123Z client=127.0.0.1:40000 "));
        assert!(text.ends_with(" upstream_bytes_received=10 reason=peer\n"));
    }

    #[test]
    fn writes_every_line_then_reopens_after_a_move() {
        let dir = std::env::temp_dir().join(format!("ringd-al-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let log = AccessLog::open(Target::File(path.clone()), Format::Json, 1024).unwrap();
        for n in 0..100 {
            log.log(record(n));
        }
        // logrotate: move the file, then ask for a reopen.
        while log.counters().written.load(Ordering::Relaxed) < 100 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::fs::rename(&path, dir.join("access.log.1")).unwrap();
        log.reopen();
        log.log(record(1000));
        drop(log);
        let old = std::fs::read_to_string(dir.join("access.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(old.lines().count(), 100);
        assert_eq!(
            new.lines().count(),
            1,
            "the line after the reopen is in the new file"
        );
        assert!(new.contains("\"bytes_in\":1000"));
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let (tx, rx) = mpsc::sync_channel(2);
        let log = AccessLog {
            tx: Some(tx),
            counters: Arc::default(),
            reopen: Arc::default(),
            writer: None,
        };
        for n in 0..5 {
            log.log(record(n));
        }
        assert_eq!(log.counters().dropped.load(Ordering::Relaxed), 3);
        assert_eq!(rx.try_iter().count(), 2);
    }
}
