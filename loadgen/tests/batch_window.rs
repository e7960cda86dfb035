//! The io_uring open loop's batch window (`--batch-window`): a send waits for the end of
//! the window it falls due in, so the schedule's slip (send lateness) is most of a window
//! at p99, while every request due is still sent, answered and counted once — also when
//! the window asked for is longer than a connection's interval between requests — and a
//! response is timed by the kernel's receive stamp, not by when the loop got round to it.

mod common;

use common::{loadgen_bin, ringd};
use ringd::ProtocolKind;

/// An open-loop run on io_uring against an echo server: its JSON report.
fn run(conns: &str, rate: &str, window: &str) -> serde_json::Value {
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
        "1s",
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
fn sends_wait_for_the_end_of_their_window() {
    // 2 connections at 200/s: 10 ms between requests of one connection, window 2 ms.
    let json = run("2", "200", "2ms");
    assert_eq!(json["config"]["batch_window"].as_f64(), Some(0.002));
    assert_schedule_kept(&json, 190);
    // Due times are spread evenly, so the lateness up to a window's end is uniform over
    // the window: its p99 is nearly the whole window. Without it, the loop's own wake-up
    // delay: microseconds.
    let slip = json["client_bound"]["schedule_slip_p99_ns"]
        .as_u64()
        .unwrap();
    assert!(slip >= 1_000_000, "send lateness p99 {slip} ns: {json}");
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
