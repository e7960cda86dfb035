//! The `ringd` binary as a user runs it: help, bad input, port in use, signals.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::RingdProcess;

fn ringd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ringd"));
    c.env_remove("RUST_LOG");
    c
}

#[test]
fn help_lists_every_option_with_defaults() {
    let out = ringd().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for opt in [
        "--listen",
        "--protocol",
        "--engine",
        "--threads",
        "--pin",
        "--no-pin",
        "--backlog",
        "--buffer-size",
        "--greeting",
        "--http-body",
        "--shutdown-timeout",
        "--log-level",
        "127.0.0.1:8080",
        "Examples:",
    ] {
        assert!(help.contains(opt), "--help lacks {opt}");
    }
}

#[test]
fn bad_arguments_fail_without_panic() {
    for args in [
        &["--listen", "not-an-address"][..],
        &["--buffer-size", "lots"],
        &["--engine", "kqueue"],
        &["--threads", "0"],
        &["--shutdown-timeout", "soon"],
    ] {
        let out = ringd().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains("error"), "{args:?}: {err}");
    }
}

#[test]
fn port_in_use_is_one_clear_line() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let out = ringd().args(["--listen", &addr]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap();
    assert!(
        last.contains("already in use") && last.contains("--listen"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

#[test]
fn hello_from_the_binary() {
    let mut p = RingdProcess::start(&["--protocol", "hello", "--threads", "2"], None);
    let addr = p.addr;
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"hello?").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(out, "Hello, world!");
    p.signal(libc::SIGINT);
    assert_eq!(p.wait_exit(Duration::from_secs(10)), 0);
}

#[test]
fn sigterm_under_load_exits_zero() {
    let mut p = RingdProcess::start(&["--protocol", "echo", "--threads", "2"], None);
    let addr = p.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut done = 0;
                let mut buf = [0u8; 512];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if s.write_all(&[1u8; 512]).is_err() {
                        break;
                    }
                    // An echo is either whole or the connection ended between requests.
                    match s.read_exact(&mut buf) {
                        Ok(()) => {
                            assert_eq!(buf, [1u8; 512]);
                            done += 1;
                        }
                        Err(_) => break,
                    }
                }
                done
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(Duration::from_secs(10)), 0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total: u32 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(total > 0);
}

#[test]
fn every_engine_listens_once_per_worker() {
    for engine in ["uring", "tokio-uring", "epoll"] {
        let mut p = RingdProcess::start(&["--engine", engine, "--threads", "2"], None);
        let addr = p.addr;
        // Each worker's socket is its own listener on the same port (SO_REUSEPORT).
        let listeners = std::fs::read_to_string("/proc/net/tcp")
            .unwrap()
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[3] == "0A" && f[1].ends_with(&format!(":{:04X}", addr.port()))
            })
            .count();
        assert_eq!(listeners, 2, "{engine}");
        p.signal(libc::SIGTERM);
        assert_eq!(p.wait_exit(Duration::from_secs(10)), 0);
    }
}

#[test]
fn sigterm_drains_even_when_stderr_is_gone() {
    use std::io::BufRead;
    let mut child = ringd()
        .args(["--listen", "127.0.0.1:0", "--no-pin", "--threads", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    while !lines.next().unwrap().unwrap().contains("listening on") {}
    // Close the read end: every later log write fails with EPIPE.
    drop(lines);
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("ringd did not exit after SIGTERM with its stderr closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}
