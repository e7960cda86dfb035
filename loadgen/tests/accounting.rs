//! Every request accounted for and no result thrown away: open-loop requests left unsent or
//! unanswered at the end, warm-up told from measured by intended send time, the exact
//! measured window, threads that give up, runs where everything fails, signals, output
//! files checked first, exit codes, and every mode × protocol combination loadgen accepts.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use loadgen::report::Report;
use loadgen::stats::ErrorKind;
use ringd::ProtocolKind;

fn a_stall_at_the_end_of_an_open_loop_run_cannot_hide() {
    // 10 connections at 1000 req/s for 2 s: 2000 requests fall due. The server answers the
    // first 1000 and then nothing: each connection is left with one request in flight, the
    // other 990 never go out.
    let addr = echo_server_answering(1000, 64);
    let r = load(
        &addr.to_string(),
        &[
            "-c",
            "10",
            "-t",
            "1",
            "--rate",
            "1000",
            "-d",
            "2s",
            "--warmup",
            "0s",
            "--timeout",
            "1500ms",
        ],
    );
    assert_counts_add_up(&r);
    let c = &r.stats.counters;
    assert_eq!(c.completed, 1000, "{c:?}");
    assert_eq!((c.unfinished, c.sent), (10, 1010), "{c:?}");
    assert_eq!(c.unsent, 990);
    assert_eq!((c.failed, c.errors_total()), (0, 0));
    // Every one of them is in the corrected latency, aged at least to the end of the run:
    // half the samples are over a second old.
    assert_eq!(r.stats.latency.len(), 2000);
    assert!(r.stats.latency.value_at_quantile(0.75) > 1_000_000_000);
    assert_eq!(r.stats.service.len(), 1000);
    assert!(r.stats.oldest_unsent_ns > 1_000_000_000);
    let report = Report::new(&r);
    let rate = report.rate.as_ref().unwrap();
    assert_eq!(rate.due, 2000);
    assert!(!rate.kept);
    assert_eq!(
        (report.end_of_run.unfinished, report.end_of_run.unsent),
        (10, 990)
    );
    assert!(
        report.table().contains("990 due and never sent"),
        "{}",
        report.table()
    );
    // The interval log holds what the latency holds.
    let in_intervals: u64 = r.intervals.iter().map(|h| h.len()).sum();
    assert_eq!(in_intervals, 2000);
}

fn a_rate_the_server_cannot_reach_says_how_much_was_never_sent() {
    // One connection, one request at a time, 200 of them due in 100 ms; the server answers
    // 50 and stalls: the rest is unsent, not silently dropped.
    let addr = echo_server_answering(50, 64);
    let r = load(
        &addr.to_string(),
        &[
            "-c",
            "1",
            "--rate",
            "2000",
            "-d",
            "100ms",
            "--warmup",
            "0s",
            "--timeout",
            "200ms",
        ],
    );
    let c = &r.stats.counters;
    assert_eq!(c.sent + c.unsent, 200, "{c:?}");
    assert_eq!((c.completed, c.unfinished, c.sent), (50, 1, 51));
    assert_eq!(r.stats.latency.len(), 200);
}

fn warm_up_is_decided_by_intended_send_time_and_n_counts_measured_requests() {
    let server = ringd(ProtocolKind::Echo);
    let target = server.local_addr().to_string();
    let r = load(
        &target,
        &["-c", "10", "-t", "2", "-n", "1000", "--warmup", "300ms"],
    );
    assert_counts_add_up(&r);
    let c = &r.stats.counters;
    assert!(c.warmup_completed > 0);
    assert_eq!((c.completed, c.sent_measured), (1000, 1000), "{c:?}");
    assert_eq!(r.stats.latency.len(), 1000);
    // Open loop too: 100 measured requests after the warm-up, however long it takes.
    let r = load(
        &target,
        &["-c", "4", "--rate", "400", "-n", "100", "--warmup", "200ms"],
    );
    let c = &r.stats.counters;
    assert_eq!(
        (c.completed, c.sent_measured, c.unsent),
        (100, 100, 0),
        "{c:?}"
    );
    server.shutdown().unwrap();
}

fn the_measured_window_is_the_duration_asked_for() {
    let server = ringd(ProtocolKind::Echo);
    let target = server.local_addr().to_string();
    for args in [
        &["-c", "4", "-d", "700ms", "--warmup", "200ms"][..],
        &[
            "-c", "4", "--rate", "500", "-d", "700ms", "--warmup", "200ms",
        ],
    ] {
        let r = load(&target, args);
        assert_eq!(r.measured, Duration::from_millis(700), "{args:?}");
        // Requests meant for the window are the measured ones; the drain after it adds none.
        assert_eq!(r.stats.counters.completed, r.stats.counters.sent_measured);
    }
    // Open loop at 500/s for 700 ms: exactly 350 measured requests fell due.
    let r = load(
        &target,
        &["-c", "5", "--rate", "500", "-d", "700ms", "--warmup", "0s"],
    );
    assert_eq!(r.stats.counters.completed + r.stats.counters.unsent, 350);
    server.shutdown().unwrap();
}

/// Answers like an HTTP server for `good` requests in all, then garbage.
fn turning_bad_server(good: u64) -> SocketAddr {
    http_server(move |_, _, n| {
        if n <= good {
            Act::Reply(response("1.1", 200, &[], b"ok"))
        } else {
            Act::Reply(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec())
        }
    })
}

fn a_thread_that_gives_up_keeps_what_it_measured() {
    // Thread 0 loads a good server; thread 1 a server that answers 300 requests and then
    // only garbage, so that every connection of thread 1 fails until it gives up (after
    // --timeout without a response).
    let good = ringd(ProtocolKind::Http);
    let bad = turning_bad_server(300);
    let (good_url, bad_url) = (url(good.local_addr(), "/"), url(bad, "/"));
    let argv = [
        "loadgen",
        &good_url,
        &bad_url,
        "--quiet",
        "-c",
        "2",
        "-t",
        "2",
        "-d",
        "3s",
        "--warmup",
        "0s",
        "--timeout",
        "1s",
    ];
    let plan = <loadgen::args::Args as clap::Parser>::try_parse_from(argv)
        .unwrap()
        .into_plan()
        .unwrap();
    let r = loadgen::run::run(plan, &Default::default()).unwrap();
    assert_eq!(r.thread_errors.len(), 1, "{:?}", r.thread_errors);
    assert!(r.thread_errors[0].contains("every connection is failing"));
    assert_counts_add_up(&r);
    let c = &r.stats.counters;
    // Thread 1's 300 answered requests are counted with thread 0's.
    assert!(c.completed > 300, "{c:?}");
    assert!(c.errors_of(ErrorKind::UnexpectedResponse) > 0);
    let in_intervals: u64 = r.intervals.iter().map(|h| h.len()).sum();
    assert_eq!(in_intervals, r.stats.latency.len());
    let report = Report::new(&r);
    assert_eq!(report.exit_code, 1);
    assert!(report
        .exit_reason
        .unwrap()
        .contains("1 of 2 thread(s) gave up"));
    good.shutdown().unwrap();
}

fn a_run_where_everything_fails_still_reports_and_writes_every_file() {
    let bad = turning_bad_server(0);
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<String> = ["r.json", "r.hgrm", "r.hlog", "r.svg"]
        .iter()
        .map(|f| dir.path().join(f).to_str().unwrap().to_string())
        .collect();
    let target = url(bad, "/");
    let out = loadgen_bin(&[
        &target, "-c", "2", "-d", "500ms", "--warmup", "0s", "--json", &files[0], "--hgrm",
        &files[1], "--hlog", &files[2], "--plot", &files[3],
    ]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("Requests    0"), "{table}");
    assert!(table.contains("unexpected_response"), "{table}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("nothing was measured"), "{stderr}");
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() > 0, "{f}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(json["exit_code"], 1);
    assert_eq!(json["requests"], 0);
    assert!(json["failed"].as_u64().unwrap() > 0);
}

fn exit_status_follows_the_error_budget() {
    // One request in three fails --verify (a 404 and a 500 in every three).
    let addr = http_server(|_, _, n| {
        let status = [200, 404, 200][(n % 3) as usize];
        Act::Reply(response("1.1", status, &[], b"x"))
    });
    let target = url(addr, "/");
    let base = [
        target.as_str(),
        "-c",
        "1",
        "-n",
        "300",
        "--warmup",
        "0s",
        "--verify",
        "-q",
    ];
    let out = loadgen_bin(&base);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("100 of 300 requests failed") && err.contains("--max-error-rate 1.0%"),
        "{err}"
    );
    let out = loadgen_bin(&[&base[..], &["--max-error-rate", "40%"]].concat());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without --verify a 404 is a response: nothing failed.
    let out = loadgen_bin(&base[..7]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sigint_stops_the_run_and_it_reports() {
    let server = ringd(ProtocolKind::Echo);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(common::engine_args())
        .arg(server.local_addr().to_string())
        .args([
            "-c", "4", "-t", "1", "-d", "60s", "--warmup", "100ms", "--json",
        ])
        .arg(&json)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling a child we started and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("stopped by a signal"), "{table}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["interrupted"], true);
    assert!(report["requests"].as_u64().unwrap() > 0);
    assert!(report["duration_s"].as_f64().unwrap() < 60.0);
    server.shutdown().unwrap();
}

fn output_paths_are_checked_before_the_run_and_json_can_go_to_stdout() {
    let server = ringd(ProtocolKind::Echo);
    let target = server.local_addr().to_string();
    // A 60 s run that never starts: the bad path is found first.
    let out = loadgen_bin(&[&target, "-d", "60s", "--hgrm", "/nonexistent-dir/r.hgrm"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--hgrm") && err.contains("does not exist"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let out = loadgen_bin(&[
        &target, "-c", "2", "-d", "300ms", "--warmup", "0s", "--json", "-",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["requests"].as_u64().unwrap() > 0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Requests"));
    // A per-second series that adds up to the total.
    let series = report["timeseries"].as_array().unwrap();
    let completed: u64 = series
        .iter()
        .map(|s| s["completed"].as_u64().unwrap())
        .sum();
    assert_eq!(completed, report["requests"].as_u64().unwrap());
    server.shutdown().unwrap();
}

fn input_that_cannot_work_is_refused_before_anything_starts() {
    for (args, needle) in [
        (&["-d", "0"][..], "--duration"),
        (&["--rate", "0.000001"], "--rate"),
        (&["--pin", "4000"], "CPU 4000"),
        (&["--protocol", "hello", "--mode", "rr"], "crr"),
        (&["--protocol", "http", "--mode", "stream"], "echo"),
        (&["https://127.0.0.1:1/"], "https"),
    ] {
        let out = loadgen_bin(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains(needle) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

fn large_stream_chunks_need_no_memory_of_their_own() {
    // 16 MiB chunks, 16 in flight on 2 connections: 512 MiB if loadgen buffered them. Under
    // a 400 MB address-space limit it must still run and verify.
    let server = ringd(ProtocolKind::Echo);
    let out = std::process::Command::new("prlimit")
        .arg("--as=400000000")
        .arg(env!("CARGO_BIN_EXE_loadgen"))
        .args(common::engine_args())
        .arg(server.local_addr().to_string())
        .args([
            "--mode", "stream", "--size", "16MiB", "-c", "2", "-t", "1", "-d", "1s", "--warmup",
            "0s", "--verify", "--json", "-",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["mismatched_bytes"], 0);
    assert!(report["throughput_in_mib_s"].as_f64().unwrap() > 0.0);
    server.shutdown().unwrap();
}

fn every_mode_and_protocol_loadgen_accepts_works() {
    let echo = ringd(ProtocolKind::Echo);
    let http = ringd(ProtocolKind::Http);
    let hello = ringd(ProtocolKind::Hello);
    let e = echo.local_addr().to_string();
    let h = http.local_addr().to_string();
    let g = hello.local_addr().to_string();
    for (target, args) in [
        (&e, &["--mode", "rr"][..]),
        (&e, &["--mode", "crr"]),
        (&e, &["--mode", "crr", "--rate", "200"]),
        (&e, &["--mode", "stream", "--size", "16KiB"]),
        (&h, &["--protocol", "http", "--mode", "rr"]),
        (&h, &["--protocol", "http", "--mode", "crr"]),
        (&g, &["--protocol", "hello", "--mode", "crr"]),
    ] {
        let args = [
            args,
            &[
                "-c", "4", "-t", "1", "-d", "500ms", "--warmup", "100ms", "--verify",
            ],
        ]
        .concat();
        let r = load(target, &args);
        assert_counts_add_up(&r);
        let c = &r.stats.counters;
        assert!(c.completed > 10, "{args:?}: {c:?}");
        assert_eq!((c.failed, c.errors_total()), (0, 0), "{args:?}: {c:?}");
        assert_eq!(Report::new(&r).exit_code, 0, "{args:?}");
    }
    echo.shutdown().unwrap();
    http.shutdown().unwrap();
    hello.shutdown().unwrap();
}

on_both_engines!(
    a_stall_at_the_end_of_an_open_loop_run_cannot_hide,
    a_rate_the_server_cannot_reach_says_how_much_was_never_sent,
    warm_up_is_decided_by_intended_send_time_and_n_counts_measured_requests,
    the_measured_window_is_the_duration_asked_for,
    a_thread_that_gives_up_keeps_what_it_measured,
    a_run_where_everything_fails_still_reports_and_writes_every_file,
    exit_status_follows_the_error_budget,
    sigint_stops_the_run_and_it_reports,
    output_paths_are_checked_before_the_run_and_json_can_go_to_stdout,
    input_that_cannot_work_is_refused_before_anything_starts,
    large_stream_chunks_need_no_memory_of_their_own,
    every_mode_and_protocol_loadgen_accepts_works,
);
