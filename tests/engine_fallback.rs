//! `--engine auto` on a host where io_uring is switched off (`kernel.io_uring_disabled=2`):
//! ringd serves on `epoll` and says in one warning line what was refused and why, while
//! `--engine uring` still refuses to start with its one-line error. The sysctl is
//! machine-wide, so these tests live in a file of their own (no other test of this crate
//! runs meanwhile) and need root; without root they say so and pass. Runs on one host
//! take turns through a lock file, so that a second run never reads the first one's `2` as
//! the value to restore; a run killed by a signal cannot restore it (its `Drop` does not
//! run): `echo 0 > /proc/sys/kernel/io_uring_disabled` then.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::Duration;

use common::RingdProcess;

const SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

/// The two tests of this file both change the sysctl: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Sets `kernel.io_uring_disabled` and puts the previous value back when dropped, on every
/// path out of a test, a panic included.
struct Disabled {
    /// The value before.
    previous: String,
    /// The host-wide turn, held (`flock`) until the value is back.
    _turn: std::fs::File,
}

impl Disabled {
    /// `None` (after one line saying the test is skipped) when not root.
    fn set(value: &str, test: &str) -> Option<Disabled> {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            println!("{test}: skipped: setting kernel.io_uring_disabled needs root");
            return None;
        }
        let turn = std::fs::File::create(std::env::temp_dir().join("ringd-io-uring-sysctl.lock"))
            .expect("the lock file");
        // SAFETY: flock(2) on a descriptor this test owns; blocks until no other run holds it.
        assert_eq!(unsafe { libc::flock(turn.as_raw_fd(), libc::LOCK_EX) }, 0);
        let previous = std::fs::read_to_string(SYSCTL).expect("read the sysctl");
        std::fs::write(SYSCTL, value).expect("write the sysctl");
        Some(Disabled {
            previous,
            _turn: turn,
        })
    }
}

impl Drop for Disabled {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(SYSCTL, self.previous.trim()) {
            eprintln!("cannot restore {SYSCTL} to {}: {e}", self.previous.trim());
        }
    }
}

/// `GET /metrics`: the whole response.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn auto_falls_back_to_epoll_when_io_uring_is_disabled() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(_disabled) = Disabled::set("2", "auto_falls_back_to_epoll") else {
        return;
    };
    let p = RingdProcess::start(
        &[
            "--engine",
            "auto",
            "--protocol",
            "hello",
            "--threads",
            "1",
            "--metrics",
            "127.0.0.1:0",
        ],
        None,
    );
    let warnings: Vec<&String> = p.start_log.iter().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{:?}", p.start_log);
    let w = warnings[0];
    assert!(
        w.contains("--engine auto")
            && w.contains("kernel.io_uring_disabled is 2")
            && w.ends_with("running epoll"),
        "{w}"
    );
    let metrics: SocketAddr = p.metrics_addr();
    let text = scrape(metrics);
    assert!(
        text.contains("\nringd_engine_info{engine=\"epoll\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains(",engine=\"epoll\",protocol=\"hello\"} 1\n"),
        "{text}"
    );
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"hi").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "Hello, world!");
    assert_eq!(p.stop(), 0);
}

#[test]
fn uring_still_refuses_to_start_when_io_uring_is_disabled() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(_disabled) = Disabled::set("2", "uring_still_refuses_to_start") else {
        return;
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ringd"))
        .args(["--listen", "127.0.0.1:0", "--no-pin", "--engine", "uring"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ringd");
    // Should it start after all (the sysctl changed under it), it must not hang the test.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringd --engine uring started although io_uring is disabled");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0]
            .starts_with("ringd: error: io_uring is unavailable: kernel.io_uring_disabled is 2"),
        "{stderr}"
    );
}
