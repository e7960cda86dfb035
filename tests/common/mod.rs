//! Helpers shared by the integration tests: start the real server on 127.0.0.1:0 and talk to
//! it over real sockets.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use ringd::{Config, EngineKind, ProtocolKind, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The `Date` line of every expected response here (RFC 9110's example): [`undate`] puts it
/// in place of the real one.
pub const DATE: &str = "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n";

/// The default `200` response to `GET`, dated [`DATE`].
pub const OK: &[u8] = b"HTTP/1.1 200 OK\r\nServer: ringd\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

/// `got` with each `Date` header line that holds an IMF-fixdate of the last few minutes
/// replaced by [`DATE`], so that responses compare whole. Any other `Date` line is left as it
/// is, for the comparison to show.
pub fn undate(got: &[u8]) -> Vec<u8> {
    let mut out = got.to_vec();
    let mut from = 0;
    while let Some(i) = out[from..].windows(8).position(|w| w == b"\r\nDate: ") {
        let at = from + i + 2;
        let end = at + DATE.len();
        from = at;
        let Some(line) = out.get(at..end) else { break };
        let recent = line.ends_with(b"\r\n")
            && std::str::from_utf8(&line[6..DATE.len() - 2])
                .ok()
                .and_then(|v| httpdate::parse_http_date(v).ok())
                .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age < Duration::from_secs(300));
        if recent {
            out[at..end].copy_from_slice(DATE.as_bytes());
        }
    }
    out
}

/// Starts an in-process server with `threads` workers, unpinned.
pub fn server(engine: EngineKind, protocol: ProtocolKind, threads: usize) -> ServerHandle {
    server_with(engine, protocol, threads, |_| {})
}

/// Starts an in-process server with `threads` workers, unpinned, configured by `setup`.
pub fn server_with(
    engine: EngineKind,
    protocol: ProtocolKind,
    threads: usize,
    setup: impl FnOnce(&mut Config),
) -> ServerHandle {
    let mut config = Config::new("127.0.0.1:0".parse().unwrap(), protocol, engine);
    config.threads = threads;
    setup(&mut config);
    ringd::start(config).expect("server starts")
}

/// Connects with a timeout so a broken server fails the test instead of hanging it.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    let s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    s.set_nodelay(true).unwrap();
    s
}

/// Writes `request`, then reads until EOF (with a timeout).
pub async fn request_to_eof(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = connect(addr).await;
    s.write_all(request).await.unwrap();
    read_to_eof(&mut s).await
}

/// Reads until EOF, failing after 10 s.
pub async fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("read to EOF timed out")
        .expect("read to EOF");
    out
}

/// Reads exactly `n` bytes, failing after 10 s.
pub async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut out))
        .await
        .expect("read timed out")
        .expect("read");
    out
}

/// Sends `payload` and reads the echo concurrently (a large payload would otherwise fill
/// both socket buffers and deadlock); returns what came back.
pub async fn echo_round_trip(s: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = s.split();
    let mut back = vec![0u8; payload.len()];
    let (wr, rd) = tokio::join!(w.write_all(payload), async {
        tokio::time::timeout(Duration::from_secs(30), r.read_exact(&mut back)).await
    });
    wr.unwrap();
    rd.expect("echo timed out").expect("echo read");
    back
}

/// Drains the server and checks it released everything: no connection cut, and (for the
/// `uring` engine, which counts them) no receive buffer or socket left behind.
pub fn shutdown_clean(server: ServerHandle) -> ringd::ShutdownReport {
    server.drain_trigger().fire();
    wait_clean(server)
}

/// Waits for a drain begun elsewhere and checks what [`shutdown_clean`] checks.
pub fn wait_clean(server: ServerHandle) -> ringd::ShutdownReport {
    let stats: Vec<_> = server.stats().to_vec();
    let report = server.wait().expect("clean shutdown");
    assert_eq!(report.cut, 0, "connections cut at shutdown");
    for (i, s) in stats.iter().enumerate() {
        let bufs = s.leaked_buffers.load(std::sync::atomic::Ordering::Relaxed);
        let fds = s.leaked_fds.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!((bufs, fds), (0, 0), "worker {i} leaked buffers/fds");
        assert_eq!(s.active(), 0, "worker {i} still counts open connections");
    }
    report
}

/// A ringd binary started by a test on 127.0.0.1:0 (unpinned), for tests that watch or
/// signal the process itself.
pub struct RingdProcess {
    /// The process.
    pub child: std::process::Child,
    /// Where it listens (read from its log).
    pub addr: SocketAddr,
    /// Its log up to and including the `listening on` line.
    pub start_log: Vec<String>,
}

/// A test that fails before stopping its ringd must not leave it running.
impl Drop for RingdProcess {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl RingdProcess {
    /// Starts `ringd ARGS` (on `--listen 127.0.0.1:0` unless ARGS say where), under
    /// `prlimit --nofile=N` if asked, and waits for its address.
    // The child is reaped by `stop`, `wait_exit` or, when a test fails first, `drop`.
    #[allow(clippy::zombie_processes)]
    pub fn start(args: &[&str], nofile: Option<u32>) -> Self {
        use std::io::BufRead;
        let bin = env!("CARGO_BIN_EXE_ringd");
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = std::process::Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(bin);
                c
            }
            None => std::process::Command::new(bin),
        };
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        let mut child = cmd
            .arg("--no-pin")
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn ringd");
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(stderr).lines();
        let mut start_log = Vec::new();
        let addr = loop {
            let line = lines
                .next()
                .expect("ringd exited before listening")
                .unwrap();
            let addr = line
                .split("listening on ")
                .nth(1)
                .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap());
            start_log.push(line);
            if let Some(addr) = addr {
                break addr;
            }
        };
        // Keep draining stderr so ringd never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        RingdProcess {
            child,
            addr,
            start_log,
        }
    }

    /// Where it serves `--metrics`, from its start-up log.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.start_log
            .iter()
            .find_map(|l| l.split("metrics on http://").nth(1)?.split('/').next())
            .expect("a metrics line")
            .parse()
            .unwrap()
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig`.
    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// Waits for it to exit; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> i32 {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().expect("exited by a signal");
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ringd did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then its exit code.
    pub fn stop(mut self) -> i32 {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(10))
    }

    /// Still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Open descriptors now: number → what it points at (`socket:[…]`, a path, …).
    pub fn fds(&self) -> std::collections::BTreeMap<u32, String> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .filter_map(|e| {
                let e = e.ok()?;
                let fd = e.file_name().to_str()?.parse().ok()?;
                // A descriptor closed between listing and reading is simply gone.
                let target = std::fs::read_link(e.path()).ok()?;
                Some((fd, target.display().to_string()))
            })
            .collect()
    }

    /// CPU seconds used so far (user + system).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    /// Its CPU time so far (user + system), in seconds.
    pub fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / hz
    }
}

/// Echoes `bytes` through one connection to `addr` (written from another thread while
/// reading), so that a uring worker has handed out every buffer of its pool once: the pool
/// is a fixed cost of the worker, and a memory baseline taken after this leaves it out.
pub fn warm_through(addr: SocketAddr, bytes: usize) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).expect("connect");
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&vec![7u8; bytes]).unwrap());
    let mut back = vec![0u8; bytes];
    c.read_exact(&mut back).expect("echoed back");
    writer.join().unwrap();
}

/// `n` peers that send 64 KiB writes to `addr` for `secs` and never read (4 KiB receive
/// and 64 KiB send buffers, so the kernel holds little of it): what the server takes in it
/// cannot send back. Returned open, to be dropped after the server's memory is read.
pub fn flood_without_reading(addr: SocketAddr, n: usize, secs: f64) -> Vec<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let peers: Vec<Socket> = (0..n)
        .map(|_| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.set_recv_buffer_size(4096).unwrap();
            s.set_send_buffer_size(64 * 1024).unwrap();
            s.connect_timeout(&addr.into(), Duration::from_secs(5))
                .expect("connect");
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let chunk = vec![1u8; 64 * 1024];
    let end = std::time::Instant::now() + Duration::from_secs_f64(secs);
    while std::time::Instant::now() < end {
        let mut moved = false;
        for s in &peers {
            moved |= s.send(&chunk).is_ok_and(|k| k > 0);
        }
        if !moved {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    peers
}

/// A blocking client socket connected to `addr` with a 4 KiB receive buffer (the kernel
/// rounds it up a little), so that a server's sends to it come up short.
pub fn small_blocking_client(addr: SocketAddr) -> std::net::TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect_timeout(&addr.into(), Duration::from_secs(5))
        .unwrap();
    let s: std::net::TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}
