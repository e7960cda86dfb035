//! The `ringd` binary as a user runs it: help, bad input, port in use, signals.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// Runs ringd (on 127.0.0.1:0 unless `args` say where) where it must refuse to start: exit
/// code 2 without a panic. Its stderr. A ringd that starts anyway is stopped after 5 s and
/// fails the test.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = ringd();
    if !args.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    let mut child = cmd
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} {env:?} was accepted");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?} {env:?}: {err}");
    assert!(err.contains("error"), "{args:?} {env:?}: {err}");
    err
}

#[test]
fn bad_arguments_fail_without_panic() {
    for args in [
        &["--listen", "not-an-address"][..],
        &["--buffer-size", "lots"],
        &["--engine", "kqueue"],
        &["--shutdown-timeout", "soon"],
        &["--upgrade-timeout", "500000000000y"],
        &["--idle-timeout", "100000y"],
    ] {
        refused(args, &[]);
    }
}

#[test]
fn bad_values_are_one_line_and_exit_2() {
    for (args, names) in [
        (&["--threads", "0"][..], "--threads"),
        (&["--threads", "100000"], "--threads"),
        (&["--buffer-size", "0"], "--buffer-size"),
        (&["--backlog", "0"], "--backlog"),
        (&["--max-pending-output", "0"], "--max-pending-output"),
        (&["--buffers", "3"], "--buffers"),
        (&["--send-buffer", "0"], "--send-buffer"),
        (&["--upgrade-timeout", "0"], "--upgrade-timeout"),
        (&["--upstream", "127.0.0.1:1"], "--upstream"),
        (
            &[
                "--protocol",
                "proxy",
                "--upstream",
                "127.0.0.1:1",
                "--connect-timeout",
                "0",
            ],
            "--connect-timeout",
        ),
    ] {
        let err = refused(args, &[]);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(names), "{args:?}: {err}");
    }
}

#[test]
fn an_invalid_log_filter_is_refused() {
    let err = refused(&["--log-level", "bogus"], &[]);
    assert!(err.contains("--log-level"), "{err}");
    let err = refused(&[], &[("RUST_LOG", "ringd=bogus")]);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("RUST_LOG"), "{err}");
}

#[test]
fn upstreams_are_distinct_and_connectable() {
    for (list, says) in [
        ("127.0.0.1:9001,127.0.0.1:9001", "once"),
        ("localhost:9001,127.0.0.1:9001", "once"),
        ("127.0.0.1:0", "port"),
        ("0.0.0.0:9001", "0.0.0.0"),
        ("[::]:9001", "[::]"),
    ] {
        let err = refused(&["--protocol", "proxy", "--upstream", list], &[]);
        assert_eq!(err.lines().count(), 1, "{list}: {err}");
        assert!(
            err.contains("--upstream") && err.contains(says),
            "{list}: {err}"
        );
    }
}

/// One echo round trip on a new connection to `addr`.
fn echo_once(addr: std::net::SocketAddr) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
}

#[test]
fn listen_and_metrics_take_host_names() {
    let args = [
        "--listen",
        "localhost:0",
        "--metrics",
        "localhost:0",
        "--threads",
        "1",
    ];
    let p = RingdProcess::start(&args, None);
    assert_eq!(p.addr.ip(), Ipv4Addr::LOCALHOST, "the first IPv4 address");
    echo_once(p.addr);
    let metrics: std::net::SocketAddr = p.metrics_addr();
    assert_eq!(metrics.ip(), Ipv4Addr::LOCALHOST);
    let mut s = TcpStream::connect(metrics).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(p.stop(), 0);
}

#[test]
fn the_ipv6_wildcard_accepts_ipv4_too() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        println!("skipped: this host has no IPv6 on loopback");
        return;
    }
    let p = RingdProcess::start(&["--listen", "[::]:0", "--threads", "1"], None);
    let line = p.start_log.last().unwrap();
    assert!(line.contains("IPv4 too"), "{line}");
    echo_once((Ipv4Addr::LOCALHOST, p.addr.port()).into());
    echo_once((std::net::Ipv6Addr::LOCALHOST, p.addr.port()).into());
    assert_eq!(p.stop(), 0);
}

#[test]
fn the_start_up_line_describes_a_proxy_as_a_proxy() {
    let upstreams = "127.0.0.1:9001,127.0.0.1:9002";
    let args = [
        "--protocol",
        "proxy",
        "--upstream",
        upstreams,
        "--threads",
        "1",
    ];
    let p = RingdProcess::start(&args, None);
    let line = p.start_log.last().unwrap();
    for says in [
        "protocol=proxy",
        &format!("upstreams={upstreams}"),
        "connect_timeout=2s",
    ] {
        assert!(line.contains(says), "lacks {says}: {line}");
    }
    for not in ["protocol=echo", "header_timeout"] {
        assert!(!line.contains(not), "says {not}: {line}");
    }
    assert_eq!(p.stop(), 0);
    for (protocol, header_timeout) in [("http", true), ("echo", false)] {
        let p = RingdProcess::start(&["--protocol", protocol, "--threads", "1"], None);
        let line = p.start_log.last().unwrap();
        assert!(!line.contains("upstreams"), "{line}");
        assert_eq!(
            line.contains("header_timeout=10s"),
            header_timeout,
            "{line}"
        );
        assert_eq!(p.stop(), 0);
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
fn an_access_log_that_cannot_be_written_is_one_clear_line() {
    let out = ringd()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--access-log",
            "/nonexistent/dir/access.log",
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--access-log /nonexistent/dir/access.log: No such file"),
        "{err}"
    );
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

/// The packaged `/etc/default/ringd` is valid and lets ringd pick the engine, while the
/// command line's default engine stays `uring`.
#[test]
fn the_packaged_arguments_choose_the_engine_automatically() {
    use clap::Parser;
    use ringd::config::cli::Args;
    use ringd::config::EngineChoice;
    let file = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/default/ringd"),
    )
    .unwrap();
    let line = file
        .lines()
        .find_map(|l| l.strip_prefix("RINGD_ARGS="))
        .expect("a RINGD_ARGS line");
    let words = line.trim_matches('"').split_whitespace();
    let args = Args::try_parse_from(std::iter::once("ringd").chain(words)).unwrap();
    assert_eq!(args.engine, EngineChoice::Auto);
    assert_eq!(Args::parse_from(["ringd"]).engine, EngineChoice::Uring);
}
