//! loadgen's own headroom, end to end through the binary: a run that loadgen limits is
//! reported `client_bound` (and fails with `--require-headroom`), a run the server limits
//! is not; and `--start-at` starts the run at the instant asked for, or refuses it.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::ringd;
use ringd::ProtocolKind;

/// Exit status of a client-bound run under `--require-headroom`.
const EXIT_CLIENT_BOUND: i32 = 4;

/// Runs the loadgen binary, optionally under `nice -n 19`, with the JSON on stdout.
fn loadgen(niced: bool, target: SocketAddr, args: &[&str]) -> (Output, serde_json::Value) {
    let bin = env!("CARGO_BIN_EXE_loadgen");
    let mut cmd = if niced {
        let mut c = Command::new("nice");
        c.args(["-n", "19", bin]);
        c
    } else {
        Command::new(bin)
    };
    let out = cmd
        .args(common::engine_args())
        .arg(target.to_string())
        .args(["-q", "-t", "1", "--json", "-"])
        .args(args)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, json)
}

/// Spins on `cpu` at normal priority until dropped.
struct Spinner {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spinner {
    fn on(cpu: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = stop.clone();
        let thread = std::thread::spawn(move || {
            assert!(core_affinity::set_for_current(core_affinity::CoreId {
                id: cpu
            }));
            while !seen.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        Spinner {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An echo server that holds each `size`-byte request for `delay` before echoing it.
fn slow_echo_server(size: usize, delay: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut req = vec![0u8; size];
                while s.read_exact(&mut req).is_ok() {
                    std::thread::sleep(delay);
                    if s.write_all(&req).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn busy_of(r: &serde_json::Value) -> Vec<f64> {
    r["client_bound"]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["busy"].as_f64().unwrap())
        .collect()
}

/// loadgen made the limit on purpose: its one event-loop thread is pinned to a CPU where
/// a thread of this test spins at normal priority, and loadgen runs at nice 19, so the
/// scheduler gives it about 1.5% of that CPU. The server (ringd, in this process) answers
/// at once, and with 64 connections of 4 pipelined requests loadgen always has responses
/// to read: it is either running or waiting for the CPU the whole window, whatever the
/// machine's speed. Busy counts that wait (schedstat), so the thread is near 100% busy.
fn a_starved_loadgen_is_client_bound_and_fails_the_headroom_check() {
    let server = ringd(ProtocolKind::Echo);
    let cpus = core_affinity::get_core_ids().unwrap();
    let cpu = cpus.last().unwrap().id.to_string();
    let _spinner = Spinner::on(cpus.last().unwrap().id);
    let args = [
        "-c",
        "64",
        "--pipeline",
        "4",
        "--pin",
        &cpu,
        "--warmup",
        "300ms",
        "-d",
        "1500ms",
    ];
    let (out, r) = loadgen(true, server.local_addr(), &args);
    assert_eq!(out.status.code(), Some(0), "{r}");
    assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
    let cb = &r["client_bound"];
    assert_eq!(cb["bound"], true, "{cb}");
    assert!(busy_of(&r)[0] >= 0.9, "{cb}");
    assert!(cb["schedule_slip_p99_ns"].is_null(), "{cb}");
    assert!(cb["reason"].as_str().unwrap().contains("thread 0 busy"));
    let table = String::from_utf8_lossy(&out.stderr);
    assert!(
        table.contains("client-bound: thread 0 busy")
            && table.contains("the server's figures are a lower bound"),
        "{table}"
    );

    let mut strict = args.to_vec();
    strict.push("--require-headroom");
    let (out, r) = loadgen(true, server.local_addr(), &strict);
    assert_eq!(out.status.code(), Some(EXIT_CLIENT_BOUND), "{r}");
    assert_eq!(r["exit_code"], EXIT_CLIENT_BOUND);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("loadgen: client-bound: ") && last.ends_with("(--require-headroom)"),
        "{stderr}"
    );
}

/// The server holds every request 5 ms and there are 4 connections: about 800 requests a
/// second, a few microseconds of loadgen's time each, so its thread sleeps in epoll nearly
/// all the window, in closed and in open loop.
fn a_slow_server_leaves_loadgen_idle_and_not_client_bound() {
    let server = slow_echo_server(64, Duration::from_millis(5));
    for extra in [&[][..], &["--rate", "400"][..]] {
        let mut args = vec![
            "-c",
            "4",
            "--warmup",
            "200ms",
            "-d",
            "1s",
            "--require-headroom",
        ];
        args.extend_from_slice(extra);
        let (out, r) = loadgen(false, server, &args);
        assert_eq!(out.status.code(), Some(0), "{r}");
        assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
        let cb = &r["client_bound"];
        assert_eq!(cb["bound"], false, "{cb}");
        assert!(cb["reason"].is_null(), "{cb}");
        assert!(busy_of(&r)[0] < 0.5, "{cb}");
        assert_eq!(
            cb["schedule_slip_p99_ns"].is_null(),
            extra.is_empty(),
            "{cb}"
        );
        assert!(!String::from_utf8_lossy(&out.stderr).contains("client-bound"));
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn start_at_delays_the_whole_run_and_refuses_times_out_of_range() {
    let server = ringd(ProtocolKind::Echo);
    let launch = unix_now();
    let (out, r) = loadgen(
        false,
        server.local_addr(),
        &[
            "-c",
            "2",
            "--start-at",
            "+2s",
            "--warmup",
            "200ms",
            "-d",
            "300ms",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{r}");
    let started = r["started_unix_s"].as_f64().unwrap();
    assert!(
        started >= launch + 2.2,
        "launched {launch}, measured from {started}"
    );
    let at = r["config"]["start_at_unix_s"].as_f64().unwrap();
    assert!(at >= launch + 2.0 && started >= at + 0.2, "{at} {started}");

    let past = format!("{}", unix_now() as u64 - 60);
    let ahead = format!("{}", unix_now() as u64 + 2 * 86_400);
    for (when, why) in [
        (past.as_str(), "in the past"),
        ("+25h", "more than a day"),
        (ahead.as_str(), "more than a day"),
    ] {
        let out = common::loadgen_bin(&[&server.local_addr().to_string(), "--start-at", when]);
        assert_eq!(out.status.code(), Some(2), "{when}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(why), "{when}: {stderr}");
    }
}

on_both_engines!(
    a_starved_loadgen_is_client_bound_and_fails_the_headroom_check,
    a_slow_server_leaves_loadgen_idle_and_not_client_bound,
    start_at_delays_the_whole_run_and_refuses_times_out_of_range,
);
