//! Harness for tests of the ringd process itself: a lineage of ringd processes (the one the
//! test started, then each successor of a live upgrade), their shared log, pid file and
//! exit codes; HTTP clients that keep connecting while processes come and go; descriptor
//! inspection.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The ringd binary under test.
pub fn ringd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ringd"))
}

/// A fresh directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ringd-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Successors outlive their parents: make this test process their new parent (a subreaper)
/// so that it can collect their exit codes.
pub fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only sets a flag on this process.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(r, 0);
}

/// The log lines of every process in a lineage (successors inherit stderr).
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn follow(&self, stderr: impl Read + Send + 'static) {
        let lines = self.0.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Waits for a line containing `needle` (after skipping `from` lines); returns it.
    pub fn wait_for(&self, needle: &str, from: usize, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self
                .0
                .lock()
                .unwrap()
                .iter()
                .skip(from)
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within {limit:?}; log:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many lines so far.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Lines containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// A ringd started by the test, then its successors.
pub struct Lineage {
    /// The process the test started.
    pub first: Child,
    /// Every pid of the lineage, in order.
    pub pids: Vec<u32>,
    /// Where they listen.
    pub addr: SocketAddr,
    /// Where metrics are served, if asked.
    pub metrics: Option<SocketAddr>,
    /// The shared log.
    pub log: Log,
    /// `--pid-file`.
    pub pid_file: PathBuf,
    /// Exit codes collected so far, by pid.
    exits: BTreeMap<u32, i32>,
}

/// How to start the first process.
pub struct Start<'a> {
    /// The executable (a copy or a wrapper in some tests).
    pub exe: PathBuf,
    /// Arguments besides `--pid-file`.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(&'a str, String)>,
    /// A listening socket to pass as descriptor 3 with LISTEN_FDS=1 (socket activation).
    pub activate: Option<RawFd>,
    /// Where the pid file goes.
    pub dir: PathBuf,
}

impl<'a> Start<'a> {
    /// The test binary on 127.0.0.1:0, unpinned, with `args`.
    pub fn new(dir: &Path, args: &[&str]) -> Self {
        let mut all = vec!["--no-pin".to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        Start {
            exe: ringd_bin(),
            args: all,
            env: Vec::new(),
            activate: None,
            dir: dir.to_path_buf(),
        }
    }
}

impl Lineage {
    /// Starts the first process and waits until it listens.
    // Reaped by `exit_code`, or by `drop` when a test fails first.
    #[allow(clippy::zombie_processes)]
    pub fn start(s: Start<'_>) -> Lineage {
        become_subreaper();
        let pid_file = s.dir.join("ringd.pid");
        let mut cmd = match s.activate {
            None => {
                let mut c = Command::new(&s.exe);
                c.args(&s.args);
                c
            }
            Some(fd) => {
                // As systemd-socket-activate does: LISTEN_PID must be the pid of ringd
                // itself, which the shell has and keeps through `exec`.
                let mut c = Command::new("/bin/sh");
                c.arg("-c")
                    .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
                    .arg(&s.exe)
                    .args(&s.args);
                // SAFETY: dup2 and fcntl are async-signal-safe; nothing else runs between
                // fork and exec.
                unsafe {
                    use std::os::unix::process::CommandExt;
                    c.pre_exec(move || {
                        if fd == 3 {
                            libc::fcntl(3, libc::F_SETFD, 0);
                        } else if libc::dup2(fd, 3) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                c
            }
        };
        cmd.arg("--pid-file")
            .arg(&pid_file)
            .env_remove("RUST_LOG")
            .envs(s.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ringd");
        let log = Log::default();
        log.follow(child.stderr.take().unwrap());
        let pid = child.id();
        let mut lineage = Lineage {
            first: child,
            pids: vec![pid],
            addr: "0.0.0.0:0".parse().unwrap(),
            metrics: None,
            log,
            pid_file,
            exits: BTreeMap::new(),
        };
        let line = lineage
            .log
            .wait_for("listening on ", 0, Duration::from_secs(20));
        lineage.addr = after(&line, "listening on ").parse().unwrap();
        if let Some(m) = lineage
            .log
            .lines()
            .iter()
            .find(|l| l.contains("metrics on http://"))
        {
            lineage.metrics = Some(
                after(m, "metrics on http://")
                    .trim_end_matches("/metrics")
                    .parse()
                    .unwrap(),
            );
        }
        lineage
    }

    /// The process that serves now, by the pid file.
    pub fn current(&self) -> u32 {
        *self.pids.last().unwrap()
    }

    /// The pid in the pid file.
    pub fn pid_file_pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Sends `sig` to `pid` (a process of this lineage, not yet reaped).
    pub fn signal(&self, pid: u32, sig: i32) {
        // SAFETY: kill(2) on a process of this lineage: our child or, once its parent has
        // exited, reparented to us (a subreaper); unreaped, so its pid is not reused.
        assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "kill {pid}");
    }

    /// SIGUSR2 to the current process; waits until it has handed over. Returns the new pid.
    pub fn upgrade(&mut self) -> u32 {
        let old = self.current();
        let from = self.log.len();
        self.signal(old, libc::SIGUSR2);
        let line = self
            .log
            .wait_for("handed over to pid ", from, Duration::from_secs(30));
        let new: u32 = after(&line, "handed over to pid ")
            .trim_end_matches(',')
            .parse()
            .unwrap();
        assert_eq!(
            self.pid_file_pid(),
            Some(new),
            "the pid file names the new process"
        );
        self.pids.push(new);
        new
    }

    /// Waits for `pid` to exit; its exit code.
    pub fn exit_code(&mut self, pid: u32, limit: Duration) -> i32 {
        if let Some(code) = self.exits.get(&pid) {
            return *code;
        }
        let deadline = Instant::now() + limit;
        let code = loop {
            if pid == self.first.id() {
                if let Some(status) = self.first.try_wait().unwrap() {
                    break status.code().unwrap_or(-1);
                }
            } else {
                let mut status = 0;
                // SAFETY: waitpid(2) on one pid; ECHILD until it is reparented to us.
                let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
                if r == pid as i32 {
                    break if libc::WIFEXITED(status) {
                        libc::WEXITSTATUS(status)
                    } else {
                        -libc::WTERMSIG(status)
                    };
                }
            }
            assert!(
                Instant::now() < deadline,
                "pid {pid} did not exit within {limit:?}; log:\n{}",
                self.log.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        self.exits.insert(pid, code);
        code
    }

    /// True while `pid` runs (not exited, or exited and not reaped: a zombie).
    pub fn running(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
    }

    /// SIGTERM to the current process; its exit code.
    pub fn stop(&mut self) -> i32 {
        let pid = self.current();
        self.signal(pid, libc::SIGTERM);
        self.exit_code(pid, Duration::from_secs(30))
    }
}

/// A failing test must not leave processes behind.
impl Drop for Lineage {
    fn drop(&mut self) {
        for &pid in &self.pids {
            if !self.exits.contains_key(&pid) && Self::running(pid) {
                // SAFETY: kill(2) on a process of this lineage that has not been reaped.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        let _ = self.first.kill();
        let _ = self.first.wait();
        for &pid in &self.pids[1..] {
            let mut status = 0;
            // SAFETY: waitpid(2) on one pid; harmless if it is not our child.
            unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
        }
    }
}

/// One `GET` with `Connection: close`: the whole response.
pub fn get(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The word after `marker` in `line`.
pub fn after<'l>(line: &'l str, marker: &str) -> &'l str {
    line.split(marker)
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
}

/// `GET /metrics` from `addr`, asked again while the answer is a `503` (a successor that
/// waits for its predecessor's counters), as a scraper does at its next interval.
pub fn scrape(addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        if !out.starts_with("HTTP/1.1 503") || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every `_total` series of an exposition text: series (name and labels) → value.
pub fn counters(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            series
                .split('{')
                .next()
                .is_some_and(|n| n.ends_with("_total"))
        })
        .filter_map(|(series, v)| Some((series.to_string(), v.parse().ok()?)))
        .collect()
}

/// One series' values by worker, from an exposition text.
pub fn per_worker(text: &str, name: &str) -> Vec<u64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{worker=")))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// Descriptors of `pid` (0, 1 and 2 left out): number → target.
pub fn fds(pid: u32) -> BTreeMap<u32, String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: u32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            (fd > 2).then(|| (fd, target.display().to_string()))
        })
        .collect()
}

/// Inodes of listening TCP sockets on this host.
pub fn listening_inodes() -> HashSet<String> {
    let mut out = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for l in text.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" {
                out.insert(f[9].to_string());
            }
        }
    }
    out
}

/// `socket:[123]` → `123`.
pub fn socket_inode(target: &str) -> Option<&str> {
    target.strip_prefix("socket:[")?.strip_suffix(']')
}

/// What the clients saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Complete 200 responses.
    pub ok: u64,
    /// Connections refused.
    pub refused: u64,
    /// Connections reset while a request was outstanding on a fresh connection, or in the
    /// middle of a response.
    pub reset: u64,
    /// Requests with no (or an incomplete) response: EOF or timeout.
    pub missing: u64,
    /// Requests retried because a reused keep-alive connection was closed by the server
    /// before any byte of the response (what an HTTP client does for idempotent requests).
    pub retries: u64,
    /// New connections after a response with `Connection: close`.
    pub reconnects: u64,
}

impl Counts {
    /// Refused, reset and missing together.
    pub fn failed(&self) -> u64 {
        self.refused + self.reset + self.missing
    }
}

#[derive(Default)]
struct Shared {
    ok: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    missing: AtomicU64,
    retries: AtomicU64,
    reconnects: AtomicU64,
    /// Descriptions of the first failures.
    failures: Mutex<Vec<String>>,
}

/// HTTP clients that keep going until stopped: connect-request-close clients and
/// keep-alive clients.
pub struct Load {
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// How one request on a connection ended.
enum Outcome {
    /// A whole 200; whether the server said `Connection: close`.
    Ok { close: bool },
    /// Nothing of a response arrived: EOF or reset before the first byte.
    NoByte(std::io::Error),
    /// Part of a response, or a wrong one.
    Broken(String),
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: ringd\r\n\r\n";
const REQUEST_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: ringd\r\nConnection: close\r\n\r\n";

fn request(s: &mut TcpStream, req: &[u8]) -> Outcome {
    if let Err(e) = s.write_all(req) {
        return Outcome::NoByte(e);
    }
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) if buf.is_empty() => {
                return Outcome::NoByte(std::io::ErrorKind::UnexpectedEof.into())
            }
            Ok(0) => return Outcome::Broken(format!("EOF after {} bytes", buf.len())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if buf.is_empty() => return Outcome::NoByte(e),
            Err(e) => return Outcome::Broken(format!("{e} after {} bytes", buf.len())),
        }
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Outcome::Broken(format!("status: {}", head.lines().next().unwrap_or("")));
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let close = head
                    .lines()
                    .any(|l| l.starts_with("connection:") && l.contains("close"));
                return Outcome::Ok { close };
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

impl Shared {
    fn fail(&self, counter: &AtomicU64, what: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut f = self.failures.lock().unwrap();
        if f.len() < 20 {
            f.push(what);
        }
    }

    fn connect_error(&self, e: std::io::Error) {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            self.fail(&self.refused, format!("connect: {e}"));
        } else {
            self.fail(&self.missing, format!("connect: {e}"));
        }
    }

    fn no_byte(&self, e: std::io::Error, what: &str) {
        if e.kind() == std::io::ErrorKind::ConnectionReset {
            self.fail(&self.reset, format!("{what}: {e}"));
        } else {
            self.fail(&self.missing, format!("{what}: {e}"));
        }
    }
}

impl Load {
    /// `crr` threads that each connect, send a `Connection: close` GET, read the response
    /// and EOF, and start over (after `pause`); `keepalive` connections that each send a
    /// GET, read the response and go on on the same connection (after `pause`).
    pub fn start(addr: SocketAddr, crr: usize, keepalive: usize, pause: Duration) -> Load {
        Self::start_with(addr, crr, keepalive, pause, Duration::ZERO)
    }

    /// As [`Load::start`], with the crr clients sending their request `late` after the
    /// connection is established, as over a network: the server accepts a connection half
    /// a round trip before its first request arrives.
    pub fn start_with(
        addr: SocketAddr,
        crr: usize,
        keepalive: usize,
        pause: Duration,
        late: Duration,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::new();
        for _ in 0..crr {
            let (stop, shared) = (stop.clone(), shared.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    crr_once(addr, &shared, late);
                    std::thread::sleep(pause);
                }
            }));
        }
        for _ in 0..keepalive {
            let (stop, shared) = (stop.clone(), shared.clone());
            threads.push(std::thread::spawn(move || {
                keepalive_loop(addr, &shared, &stop, pause)
            }));
        }
        Load {
            stop,
            shared,
            threads,
        }
    }

    /// Complete responses so far.
    pub fn ok(&self) -> u64 {
        self.shared.ok.load(Ordering::Relaxed)
    }

    /// Waits until `n` more responses have completed (the load is flowing).
    pub fn wait_progress(&self, n: u64, limit: Duration) {
        let target = self.ok() + n;
        let deadline = Instant::now() + limit;
        while self.ok() < target {
            assert!(
                Instant::now() < deadline,
                "load made no progress: {:?}",
                self.counts()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        let s = &self.shared;
        Counts {
            ok: s.ok.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            reset: s.reset.load(Ordering::Relaxed),
            missing: s.missing.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            reconnects: s.reconnects.load(Ordering::Relaxed),
        }
    }

    /// Stops the clients; the final counts and the first failures described.
    pub fn stop(self) -> (Counts, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let failures = self.shared.failures.lock().unwrap().clone();
        let s = &self.shared;
        let counts = Counts {
            ok: s.ok.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            reset: s.reset.load(Ordering::Relaxed),
            missing: s.missing.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            reconnects: s.reconnects.load(Ordering::Relaxed),
        };
        (counts, failures)
    }
}

fn crr_once(addr: SocketAddr, shared: &Shared, late: Duration) {
    let mut s = match connect(addr) {
        Ok(s) => s,
        Err(e) => return shared.connect_error(e),
    };
    if !late.is_zero() {
        std::thread::sleep(late);
    }
    match request(&mut s, REQUEST_CLOSE) {
        Outcome::Ok { .. } => {
            shared.ok.fetch_add(1, Ordering::Relaxed);
        }
        Outcome::NoByte(e) => shared.no_byte(e, "crr request"),
        Outcome::Broken(what) => shared.fail(&shared.missing, format!("crr: {what}")),
    }
}

/// EOF or a reset: the server closed the connection (not a timeout).
fn closed_by_peer(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

fn keepalive_loop(addr: SocketAddr, shared: &Shared, stop: &AtomicBool, pause: Duration) {
    let mut conn: Option<(TcpStream, u64)> = None;
    while !stop.load(Ordering::Relaxed) {
        let (mut s, served) = match conn.take() {
            Some(c) => c,
            None => match connect(addr) {
                Ok(s) => (s, 0),
                Err(e) => {
                    shared.connect_error(e);
                    std::thread::sleep(pause);
                    continue;
                }
            },
        };
        match request(&mut s, REQUEST) {
            Outcome::Ok { close } => {
                shared.ok.fetch_add(1, Ordering::Relaxed);
                if close {
                    shared.reconnects.fetch_add(1, Ordering::Relaxed);
                } else {
                    conn = Some((s, served + 1));
                }
            }
            // The server closed a reused connection before answering: retry on a new one,
            // as an HTTP client does for an idempotent request.
            Outcome::NoByte(e) if served > 0 && closed_by_peer(&e) => {
                shared.retries.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Outcome::NoByte(e) => shared.no_byte(e, "keep-alive request on a new connection"),
            Outcome::Broken(what) => shared.fail(&shared.missing, format!("keep-alive: {what}")),
        }
        std::thread::sleep(pause);
    }
}
