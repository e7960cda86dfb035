//! loadgen against real servers on 127.0.0.1:0: in-process ringd, and small misbehaving test
//! servers (one that corrupts, one that stalls).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use loadgen::args::Args;
use loadgen::report::Report;
use loadgen::run::{run, RunOptions, RunResult};
use loadgen::stats::ErrorKind;
use ringd::{EngineKind, ProtocolKind, ServerHandle};

fn ringd(protocol: ProtocolKind) -> ServerHandle {
    let config = ringd::Config::new("127.0.0.1:0".parse().unwrap(), protocol, EngineKind::Epoll);
    ringd::start(config).unwrap()
}

fn load(addr: SocketAddr, args: &[&str]) -> RunResult {
    let addr = addr.to_string();
    let argv = ["loadgen", addr.as_str(), "--quiet"]
        .into_iter()
        .chain(common::engine_args())
        .chain(args.iter().copied());
    let plan = Args::try_parse_from(argv).unwrap().into_plan().unwrap();
    run(plan, &RunOptions::default()).unwrap()
}

fn assert_counts_add_up(r: &RunResult) {
    let c = &r.stats.counters;
    assert_eq!(
        c.sent,
        c.warmup_completed + c.completed + c.failed + c.unfinished,
        "{c:?}"
    );
}

fn rr_counts_add_up_and_verify_passes() {
    let server = ringd(ProtocolKind::Echo);
    let r = load(
        server.local_addr(),
        &[
            "-c",
            "20",
            "-t",
            "2",
            "-d",
            "1s",
            "--warmup",
            "200ms",
            "--pipeline",
            "4",
            "--verify",
        ],
    );
    assert_counts_add_up(&r);
    assert!(r.stats.counters.completed > 100);
    assert_eq!(r.stats.counters.errors_total(), 0);
    assert_eq!(r.stats.counters.mismatched_bytes, 0);
    assert_eq!(r.stats.latency.len(), r.stats.counters.completed);
    server.shutdown().unwrap();
}

fn request_count_mode_stops_at_the_count() {
    let server = ringd(ProtocolKind::Http);
    let r = load(
        server.local_addr(),
        &[
            "--protocol",
            "http",
            "-c",
            "4",
            "-t",
            "1",
            "-n",
            "500",
            "--warmup",
            "0s",
            "--verify",
        ],
    );
    assert_counts_add_up(&r);
    assert_eq!(r.stats.counters.completed, 500);
    server.shutdown().unwrap();
}

/// An echo server that flips one byte in every 1000th chunk it returns.
fn corrupting_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut chunks = 0u64;
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    chunks += 1;
                    if chunks.is_multiple_of(1000) {
                        buf[0] ^= 0x55;
                    }
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn verify_catches_a_corrupting_server() {
    let addr = corrupting_server();
    let r = load(
        addr,
        &[
            "-c", "4", "-t", "1", "-d", "1s", "--warmup", "0s", "--verify",
        ],
    );
    assert_counts_add_up(&r);
    assert!(r.stats.counters.errors_of(ErrorKind::VerifyMismatch) > 0);
    assert!(r.stats.counters.mismatched_bytes > 0);
    // Without --verify nothing is checked, and nothing is reported.
    let r = load(
        addr,
        &["-c", "4", "-t", "1", "-d", "500ms", "--warmup", "0s"],
    );
    assert_eq!(r.stats.counters.errors_of(ErrorKind::VerifyMismatch), 0);
}

/// An echo server that stops answering for `stall` once, `after` into its life.
fn stalling_server(after: Duration, stall: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let born = Instant::now();
    let stalled = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let stalled = stalled.clone();
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    if born.elapsed() > after && !stalled.swap(true, Ordering::SeqCst) {
                        std::thread::sleep(stall);
                    }
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn open_loop_shows_a_stall_that_service_time_hides() {
    let addr = stalling_server(Duration::from_millis(1500), Duration::from_millis(300));
    let r = load(
        addr,
        &[
            "-c", "1", "-t", "1", "--rate", "1000", "-d", "2s", "--warmup", "500ms",
        ],
    );
    assert_counts_add_up(&r);
    let corrected_p99 = r.stats.latency.value_at_quantile(0.99);
    let uncorrected_p99 = r.stats.service.value_at_quantile(0.99);
    // ~300 requests were due during the stall: well over 1% of ~2000 waited ≥ 100 ms.
    assert!(
        corrected_p99 > 100_000_000,
        "corrected p99 {corrected_p99} ns"
    );
    // Only the one request in flight saw the stall as service time.
    assert!(
        uncorrected_p99 < 50_000_000,
        "uncorrected p99 {uncorrected_p99} ns"
    );
    assert!(r.stats.service.max() > 250_000_000);
    let report = Report::new(&r);
    assert!(report.rate.as_ref().unwrap().achieved > 900.0);
}

fn crr_against_hello() {
    let server = ringd(ProtocolKind::Hello);
    let r = load(
        server.local_addr(),
        &[
            "--protocol",
            "hello",
            "-c",
            "4",
            "-t",
            "1",
            "-d",
            "1s",
            "--warmup",
            "100ms",
            "--verify",
        ],
    );
    assert_counts_add_up(&r);
    assert!(r.stats.counters.completed > 50);
    assert_eq!(r.stats.counters.errors_total(), 0);
    // Transactions that connected in the warm-up and finished after it have no connect sample.
    assert!(r.stats.connect.len().abs_diff(r.stats.counters.completed) <= 4);
    let report = Report::new(&r);
    assert!(report.connections_per_s.unwrap() > 50.0);
    // A wrong expected greeting is caught.
    let r = load(
        server.local_addr(),
        &[
            "--protocol",
            "hello",
            "-c",
            "1",
            "-n",
            "5",
            "--warmup",
            "0s",
            "--verify",
            "--greeting",
            "Bye",
        ],
    );
    assert!(r.stats.counters.errors_of(ErrorKind::VerifyMismatch) > 0);
    server.shutdown().unwrap();
}

/// Both connections keep moving: a connection whose replies arrive as fast as they are read
/// must not keep the thread (loadgen's, or the server worker's) to itself. Without a read
/// budget on both sides, one of the two connections stalled for seconds and timed out.
fn stream_is_verified_and_moves_bytes() {
    let server = ringd(ProtocolKind::Echo);
    let r = load(
        server.local_addr(),
        &[
            "--mode",
            "stream",
            "--size",
            "64KiB",
            "-c",
            "2",
            "-t",
            "1",
            "-d",
            "2s",
            "--warmup",
            "100ms",
            "--verify",
            "--timeout",
            "1s",
        ],
    );
    assert_counts_add_up(&r);
    assert_eq!(r.stats.counters.mismatched_bytes, 0);
    assert_eq!(r.stats.counters.errors_total(), 0);
    let report = Report::new(&r);
    assert!(
        report.throughput_in_mib_s > 1.0,
        "{}",
        report.throughput_in_mib_s
    );
    server.shutdown().unwrap();
}

fn files_round_trip_through_hdrhistogram_readers() {
    let server = ringd(ProtocolKind::Echo);
    let dir = tempfile::tempdir().unwrap();
    let (json, hgrm, hlog, svg) = (
        dir.path().join("r.json"),
        dir.path().join("r.hgrm"),
        dir.path().join("r.hlog"),
        dir.path().join("r.svg"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(common::engine_args())
        .arg(server.local_addr().to_string())
        .args(["-c", "8", "-t", "1", "-d", "2s", "--warmup", "200ms"])
        .arg("--json")
        .arg(&json)
        .arg("--hgrm")
        .arg(&hgrm)
        .arg("--hlog")
        .arg(&hlog)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["schema"], "loadgen/1");
    let requests = report["requests"].as_u64().unwrap();
    assert!(requests > 0);

    assert_table_matches_json(&table, &report);
    assert_hgrm_matches_json(&hgrm, &report);
    let text = std::fs::read(&hlog).unwrap();
    assert_hlog_holds_every_request(&text, requests);
    assert_json_carries_the_histograms(&report, &text);

    // The SVG is a real SVG with both charts.
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg")
            && svg.contains("Latency by percentile")
            && svg.contains("over time")
    );
    server.shutdown().unwrap();
}

/// The JSON matches the printed table: requests, their rate and the p99.
fn assert_table_matches_json(table: &str, report: &serde_json::Value) {
    let requests = report["requests"].as_u64().unwrap();
    let line = table
        .lines()
        .find(|l| l.trim_start().starts_with("Requests"))
        .unwrap();
    let printed: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(printed, requests);
    let rps = format!("{:.1} req/s", report["throughput_rps"].as_f64().unwrap());
    assert!(line.contains(&rps), "{line} vs {rps}");
    let p99 = loadgen::human::fmt_ns(report["latency_ns"]["p99"].as_u64().unwrap());
    let lat = table
        .lines()
        .find(|l| l.trim_start().starts_with("request "))
        .unwrap();
    assert!(
        lat.split_whitespace().any(|f| f == p99),
        "{lat} lacks p99 {p99}"
    );
}

/// `.hgrm`: total count and median agree with the JSON.
fn assert_hgrm_matches_json(hgrm: &std::path::Path, report: &serde_json::Value) {
    let requests = report["requests"].as_u64().unwrap();
    let (rows, total) = loadgen::hdr::parse_hgrm(&std::fs::read_to_string(hgrm).unwrap()).unwrap();
    assert_eq!(total, requests);
    let median = rows.iter().find(|r| r.quantile >= 0.5).unwrap().value * 1e3;
    let p50 = report["latency_ns"]["p50"].as_u64().unwrap() as f64;
    assert!(
        (median - p50).abs() <= p50 * 0.01 + 1.0,
        "{median} vs {p50}"
    );
}

/// `.hlog`: every interval decodes; together they hold every measured request.
fn assert_hlog_holds_every_request(text: &[u8], requests: u64) {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;

    let mut deserializer = Deserializer::new();
    let mut counted = 0;
    let mut intervals = 0;
    for entry in IntervalLogIterator::new(text) {
        if let LogEntry::Interval(h) = entry.unwrap() {
            let bytes = base64_decode(h.encoded_histogram());
            let hist: hdrhistogram::Histogram<u64> =
                deserializer.deserialize(&mut bytes.as_slice()).unwrap();
            counted += hist.len();
            intervals += 1;
        }
    }
    assert!(intervals >= 2, "{intervals} intervals");
    assert_eq!(counted, requests);
}

/// The JSON carries the whole histograms, encoded as `.hlog` lines are, and when its
/// window started.
fn assert_json_carries_the_histograms(report: &serde_json::Value, hlog: &[u8]) {
    use hdrhistogram::serialization::Deserializer;

    let requests = report["requests"].as_u64().unwrap();
    let mut deserializer = Deserializer::new();
    let h = &report["histograms"];
    assert_eq!(h["encoding"], "hdrhistogram-v2-deflate-base64");
    let bytes = base64_decode(h["latency_ns"].as_str().unwrap());
    let latency: hdrhistogram::Histogram<u64> =
        deserializer.deserialize(&mut bytes.as_slice()).unwrap();
    assert_eq!(latency.len(), requests);
    assert_eq!(
        latency.highest_equivalent(latency.value_at_quantile(0.99)),
        report["latency_ns"]["p99"].as_u64().unwrap()
    );
    assert!(h["latency_uncorrected_ns"].is_string());
    assert!(h["connect_latency_ns"].is_null());
    assert!(report["started_unix_s"].as_f64().unwrap() > 1e9);
    let log = loadgen::hdr::read_hlog(hlog).unwrap();
    assert_eq!(log.measured, report["duration_s"].as_f64());
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn bad_input_is_one_line_and_nonzero() {
    let free = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    for (args, needle, code) in [
        (vec!["--rate", "0"], "--rate", 2),
        (vec!["--connections", "0"], "--connections", 2),
        (vec![free.as_str(), "-d", "1s"], "cannot connect", 1),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(common::engine_args())
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains(needle) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    // More connections than the descriptor limit allows.
    let out = Command::new("prlimit")
        .args([
            "--nofile=256:256",
            env!("CARGO_BIN_EXE_loadgen"),
            "-c",
            "1000",
            "127.0.0.1:1",
        ])
        .args(common::engine_args())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("file descriptors") && err.contains("--connections"),
        "{err}"
    );
}

/// The engine asked for is the one that runs, and both reports say which it was.
fn the_report_and_the_table_name_the_engine() {
    let server = ringd(ProtocolKind::Echo);
    let target = server.local_addr().to_string();
    let out = common::loadgen_bin(&[
        &target, "-c", "2", "-n", "50", "--warmup", "0s", "--json", "-",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let engine = common::engine_args()[1];
    assert_eq!(json["config"]["engine"], engine);
    let table = String::from_utf8_lossy(&out.stderr);
    assert!(
        table.starts_with(&format!(
            "loadgen {} ({engine}) |",
            env!("CARGO_PKG_VERSION")
        )),
        "{table}"
    );
}

on_both_engines!(
    the_report_and_the_table_name_the_engine,
    rr_counts_add_up_and_verify_passes,
    request_count_mode_stops_at_the_count,
    verify_catches_a_corrupting_server,
    open_loop_shows_a_stall_that_service_time_hides,
    crr_against_hello,
    stream_is_verified_and_moves_bytes,
    files_round_trip_through_hdrhistogram_readers,
    bad_input_is_one_line_and_nonzero,
);
