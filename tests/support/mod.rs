//! What the tests of the configuration file, reloads, balancing and health checks share: a
//! ringd started from a file with its whole log kept, upstreams that say who they are, and a
//! metrics scrape.

#![allow(dead_code)]

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A directory of its own for one test's files, removed at the end.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("ringd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    /// Writes `text` to `name` in it (replaced whole, as an editor saves); its path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path.to_str().unwrap().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An upstream that writes its tag on every connection, then echoes what it reads.
pub struct Tagged {
    pub addr: SocketAddr,
    pub tag: u8,
    /// Connections accepted.
    pub accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Tagged {
    pub fn start(tag: u8) -> Tagged {
        Self::on("127.0.0.1:0".parse().unwrap(), tag)
    }

    /// On `addr` (a port taken again after [`Tagged::stop`]).
    pub fn on(addr: SocketAddr, tag: u8) -> Tagged {
        let l = TcpListener::bind(addr).unwrap();
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, st) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        a.fetch_add(1, Ordering::Relaxed);
                        std::thread::spawn(move || echo(s, tag));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Tagged {
            addr,
            tag,
            accepted,
            stop,
        }
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Closes its listening socket (new connects are refused); open connections go on.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        // The accept loop notices within its sleep; wait until the port refuses.
        wait_until("the upstream to stop listening", || {
            TcpStream::connect(self.addr).is_err()
        });
    }
}

impl Drop for Tagged {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn echo(mut s: TcpStream, tag: u8) {
    s.set_nodelay(true).unwrap();
    if s.write_all(&[tag]).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// A connection through the proxy, with the tag of the upstream it reached.
pub struct Through {
    pub stream: TcpStream,
    pub tag: u8,
}

impl Through {
    /// Connects to `proxy`; `None` when the proxy closed it without an upstream.
    pub fn open(proxy: SocketAddr) -> Option<Through> {
        let mut stream = TcpStream::connect(proxy).expect("connect to the proxy");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut tag = [0u8];
        match stream.read(&mut tag) {
            Ok(1) => Some(Through {
                stream,
                tag: tag[0],
            }),
            _ => None,
        }
    }

    /// Sends `data` and reads it back; true if it came back whole.
    pub fn round_trip(&mut self, data: &[u8]) -> bool {
        if self.stream.write_all(data).is_err() {
            return false;
        }
        let mut back = vec![0u8; data.len()];
        self.stream.read_exact(&mut back).is_ok() && back == data
    }
}

/// A ringd process with its whole log kept.
pub struct Ringd {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Ringd {
    /// Starts `ringd ARGS` and waits for its `listening on` line.
    pub fn start(args: &[&str]) -> Ringd {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ringd"))
            .arg("--no-pin")
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn ringd");
        let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                keep.lock().unwrap().push(l);
            }
        });
        let mut r = Ringd {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            metrics: None,
            log,
        };
        let line = r.wait_log("listening on ");
        r.addr = after(&line, "listening on ").parse().unwrap();
        r.metrics = r.log().iter().find_map(|l| {
            l.split("metrics on http://")
                .nth(1)?
                .split('/')
                .next()?
                .parse()
                .ok()
        });
        r
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Lines containing `text`.
    pub fn lines_with(&self, text: &str) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| l.contains(text))
            .collect()
    }

    /// Waits for a line containing `text`; the line.
    pub fn wait_log(&self, text: &str) -> String {
        let mut found = None;
        wait_until(&format!("a log line with {text:?}"), || {
            found = self.lines_with(text).pop();
            found.is_some()
        });
        found.unwrap()
    }

    /// Sends `sig`.
    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// SIGHUP, then waits for the reload's log line (`reloaded` or `refused`); that line.
    pub fn reload(&self) -> String {
        let before = self.lines_with("SIGHUP").len();
        self.signal(libc::SIGHUP);
        let mut got = None;
        wait_until("the reload's log line", || {
            got = self.lines_with("SIGHUP").get(before).cloned();
            got.is_some()
        });
        got.unwrap()
    }

    /// The value of series `series` (name and labels, as exposed) in a scrape now.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = scrape(self.metrics.expect("started with --metrics"));
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// SIGTERM and its exit code.
    pub fn stop(mut self) -> i32 {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "ringd did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Ringd {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn after<'a>(line: &'a str, marker: &str) -> &'a str {
    line.split(marker)
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
}

/// `GET /metrics`.
pub fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// Polls `cond` until it holds; fails the test after 20 s (a hang, not a measurement).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A proxy configuration file's text: `extra` lines, then the upstreams.
pub fn proxy_config(engine: &str, extra: &str, upstreams: &[String]) -> String {
    let list: Vec<String> = upstreams.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "protocol = \"proxy\"\nlisten = \"127.0.0.1:0\"\nmetrics = \"127.0.0.1:0\"\n\
         engine = \"{engine}\"\nthreads = 2\n{extra}\nupstream = [{}]\n",
        list.join(", ")
    )
}
