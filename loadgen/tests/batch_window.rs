//! The io_uring open loop's batch window (`--batch-window`): the loop wakes once a window,
//! yet a send leaves when it is due (the kernel holds it until then) and a response is
//! timed by the kernel's receive stamp, not by when the loop got round to it; every
//! request due is sent, answered and counted once — also when the window asked for is
//! longer than a connection's interval between requests.

mod common;

use common::{loadgen_bin, ringd};
use ringd::ProtocolKind;

/// A 1 s open-loop run on io_uring against an echo server: its JSON report.
fn run(conns: &str, rate: &str, window: &str) -> serde_json::Value {
    run_for(conns, rate, window, "1s")
}

/// An open-loop run on io_uring against an echo server: its JSON report.
fn run_for(conns: &str, rate: &str, window: &str, duration: &str) -> serde_json::Value {
    let server = ringd(ProtocolKind::Echo);
    let addr = server.local_addr().to_string();
    let out = loadgen_bin(&[
        &addr,
        "--engine",
        "uring",
        "-c",
        conns,
        "-t",
        "1",
        "--rate",
        rate,
        "-d",
        duration,
        "--warmup",
        "0",
        "--batch-window",
        window,
        "--json",
        "-",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{json}");
    assert_eq!(json["config"]["engine"], "uring");
    json
}

/// Nothing failed, nothing due was left unsent, every request sent ended once.
fn assert_schedule_kept(json: &serde_json::Value, at_least: u64) {
    let n = |k: &str| json[k].as_u64().unwrap_or_else(|| panic!("{k}: {json}"));
    assert_eq!(n("failed"), 0, "{json}");
    assert_eq!(n("unsent"), 0, "{json}");
    assert_eq!(
        n("sent"),
        n("warmup_requests") + n("requests") + n("unfinished"),
        "{json}"
    );
    assert!(n("requests") >= at_least, "{json}");
}

#[test]
fn sends_leave_when_due_while_the_loop_sleeps() {
    // 2 connections at 20/s: 100 ms between requests of one connection, due at 0 and
    // 50 ms into each interval; window 20 ms. The loop wakes on a grid of 20 ms, so the
    // second connection's sends fall due mid-window: sent when the loop wakes, they
    // would leave 10 ms late, and half the requests would read 10 ms high from their
    // intended time. Handed to the kernel a window ahead, they leave on time, and with
    // responses timed by their receive stamp the p90 is the round trip: a quarter of the
    // window leaves a wide margin for a slow, busy host.
    let json = run_for("2", "20", "20ms", "2s");
    assert_eq!(json["config"]["batch_window"].as_f64(), Some(0.02));
    assert_schedule_kept(&json, 36);
    let p90 = json["latency_ns"]["p90"].as_u64().unwrap();
    assert!(p90 < 5_000_000, "corrected p90 {p90} ns: {json}");
}

#[test]
fn a_window_longer_than_a_connections_interval_keeps_the_schedule() {
    // 10 connections at 2,000/s: 5 ms between requests of one connection, one in flight
    // each, and a 10 ms window asked for.
    let json = run("10", "2000", "10ms");
    assert_schedule_kept(&json, 1900);
}

#[test]
fn responses_are_timed_when_they_arrive_not_when_the_window_ends() {
    // 2 connections at 50/s: 40 ms between requests of one connection, window 10 ms. The
    // server answers at once, and the loop sees the answer only when the window's minimum
    // wait ends, up to 10 ms after the send: timed at that wake-up, the median from the
    // actual send would be most of the window; timed by the kernel's receive stamp, it is
    // the round trip. Half the window leaves a wide margin for a slow, busy host.
    let json = run("2", "50", "10ms");
    assert_schedule_kept(&json, 45);
    let p50 = json["latency_uncorrected_ns"]["p50"].as_u64().unwrap();
    assert!(p50 < 5_000_000, "median from the send {p50} ns: {json}");
}
