//! A connection that fails — reset, response cut short — is reopened at once, so a server
//! that fails some requests is measured at its own pace, not at loadgen's; only connects
//! that keep failing back off. The bounds below come from counting, not from the
//! machine's speed: a one-connection run that reopened only on the 100 ms housekeeping
//! tick could reopen, and so fail, at most 11 times a second.

mod common;

use common::*;
use loadgen::stats::ErrorKind;

const OK: &[u8] = b"Hello, World!";

fn a_server_that_resets_every_4th_request_is_loaded_at_its_own_pace() {
    let addr = http_server(|_, _, n| {
        if n % 4 == 0 {
            Act::Reset
        } else {
            Act::Reply(response("1.1", 200, &[], OK))
        }
    });
    let r = load(&url(addr, "/"), &["-c", "1", "-d", "1s", "--warmup", "0s"]);
    assert_counts_add_up(&r);
    let c = &r.stats.counters;
    // Reopening once per tick: at most 11 failures (and connections) in the second; three
    // times that leaves room for a loaded machine and still cannot be met on the tick.
    assert!(c.failed >= 33, "{c:?}");
    assert_eq!(c.errors_of(ErrorKind::Reset), c.failed, "{c:?}");
    assert_eq!(c.errors_total(), c.failed, "{c:?}");
    assert!(c.completed <= 3 * (c.failed + 1), "{c:?}");
}

fn a_server_that_cuts_every_10th_response_is_loaded_at_its_own_pace() {
    let cut = {
        let whole = response("1.1", 200, &[], OK);
        whole[..whole.len() - OK.len() / 2].to_vec()
    };
    let addr = http_server(move |_, _, n| {
        if n % 10 == 0 {
            Act::ReplyThenClose(cut.clone())
        } else {
            Act::Reply(response("1.1", 200, &[], OK))
        }
    });
    let r = load(&url(addr, "/"), &["-c", "1", "-d", "1s", "--warmup", "0s"]);
    assert_counts_add_up(&r);
    let c = &r.stats.counters;
    // Reopening once per tick: at most 11 failures (and connections) in the second.
    assert!(c.failed >= 33, "{c:?}");
    assert!(c.completed >= 5 * c.failed, "{c:?}");
    assert_eq!(c.errors_of(ErrorKind::ShortResponse), c.failed, "{c:?}");
    assert_eq!(c.errors_total(), c.failed, "{c:?}");
    assert_eq!(c.retried, 0, "{c:?}");
}

fn a_refused_connect_is_retried_with_a_growing_backoff() {
    // The port answers loadgen's reachability check, then closes: every connect after
    // that is refused.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || drop(l.accept()));
        addr
    };
    let target = addr.to_string();
    let out = loadgen_bin(&[
        &target,
        "-c",
        "1",
        "-d",
        "2s",
        "--warmup",
        "0s",
        "--timeout",
        "10s",
        "--json",
        "-",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let refused = json["errors"]["connect_refused"].as_u64().unwrap();
    // At once, then 10 ms, 20 ms, 40 ms, … up to 1 s: 9 connects in 2 s. Without a
    // backoff it would be thousands; with a fixed 100 ms one, 20.
    assert!((4..=15).contains(&refused), "{json}");
    assert!(json["connects"].as_u64().unwrap() <= refused + 2, "{json}");
}

on_both_engines!(
    a_server_that_resets_every_4th_request_is_loaded_at_its_own_pace,
    a_server_that_cuts_every_10th_response_is_loaded_at_its_own_pace,
    a_refused_connect_is_retried_with_a_growing_backoff,
);
