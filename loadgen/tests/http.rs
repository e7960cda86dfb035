//! loadgen speaks HTTP as clients do, against small servers that behave like real ones:
//! `Connection: close` after N requests, silent closes, HTTP/1.0, 404 and 500, chunked and
//! close-delimited bodies, resets with and without a FIN before them, idle keep-alive
//! closes, and the request's Host, method and body. Counts are asserted exactly where the
//! scenario makes them exact (one connection, a request count).

mod common;

use common::*;
use loadgen::report::Report;
use loadgen::stats::ErrorKind;

const OK: &[u8] = b"Hello, World!";

fn connection_close_after_n_requests_is_a_reconnect_not_an_error() {
    // Like nginx's keepalive_requests: the 10th response on a connection says close.
    let addr = http_server(|_, on_conn, _| {
        if on_conn == 10 {
            Act::ReplyThenClose(response("1.1", 200, &["Connection: close"], OK))
        } else {
            Act::Reply(response("1.1", 200, &[], OK))
        }
    });
    let r = load(
        &url(addr, "/"),
        &["-c", "1", "-n", "1000", "--warmup", "0s", "--verify"],
    );
    assert_counts_add_up(&r);
    let c = &r.stats.counters;
    assert_eq!(c.completed, 1000);
    assert_eq!((c.failed, c.errors_total(), c.unfinished), (0, 0, 0));
    // 100 connections answered 10 each; the last close ends the run, not reopened.
    assert_eq!((c.connects, c.reconnects), (100, 99));
    // Nothing was ever sent past a response that closes.
    assert_eq!(c.retried, 0);
    assert_eq!(c.status_classes[2], 1000);

    // Pipelined: requests sent past the closing response are sent again, never failed.
    let r = load(
        &url(addr, "/"),
        &["-c", "1", "-n", "1000", "--warmup", "0s", "--pipeline", "4"],
    );
    assert_counts_add_up(&r);
    let c = &r.stats.counters;
    assert_eq!((c.completed, c.failed, c.errors_total()), (1000, 0, 0));
    assert_eq!(c.reconnects, 99);
    assert!(c.retried <= 99 * 3, "{c:?}");

    // Many connections, by time: no errors, and reconnects as the server closes.
    let r = load(
        &url(addr, "/"),
        &["-c", "8", "-t", "2", "-d", "1s", "--warmup", "100ms"],
    );
    assert_counts_add_up(&r);
    let c = &r.stats.counters;
    assert_eq!((c.failed, c.errors_total()), (0, 0), "{c:?}");
    assert!(c.reconnects >= c.completed / 10 - 8, "{c:?}");
}

fn a_reused_connection_closed_silently_retries_its_request() {
    // No Connection: close: after 10 responses the server just closes (a FIN). The
    // request loadgen sent meanwhile, on a connection that already answered, is retried.
    let addr = http_server(|_, on_conn, _| {
        if on_conn == 10 {
            Act::ReplyThenClose(response("1.1", 200, &[], OK))
        } else {
            Act::Reply(response("1.1", 200, &[], OK))
        }
    });
    let r = load(
        &url(addr, "/"),
        &["-c", "1", "-n", "1000", "--warmup", "0s"],
    );
    assert_counts_add_up(&r);
    let c = &r.stats.counters;
    assert_eq!(
        (c.completed, c.failed, c.errors_total()),
        (1000, 0, 0),
        "{c:?}"
    );
    assert_eq!(c.reconnects, 99);
    assert!(c.retried <= 99);
}

fn a_reset_after_a_fin_is_a_reconnect_and_a_reset_alone_an_error() {
    // After 5 responses: a FIN, then a reset when the next request arrives.
    let addr = http_server(|_, on_conn, _| {
        if on_conn == 5 {
            Act::ReplyThenFinThenReset(response("1.1", 200, &[], OK))
        } else {
            Act::Reply(response("1.1", 200, &[], OK))
        }
    });
    let r = load(&url(addr, "/"), &["-c", "1", "-n", "60", "--warmup", "0s"]);
    assert_counts_add_up(&r);
    let c = &r.stats.counters;
    assert_eq!(
        (c.completed, c.failed, c.errors_total()),
        (60, 0, 0),
        "{c:?}"
    );
    assert_eq!(c.reconnects, 11);

    // The 6th request on every connection is answered with a reset and no FIN: that
    // request fails (an error), and the connection is reopened at once.
    let addr = http_server(|_, on_conn, _| {
        if on_conn == 6 {
            Act::Reset
        } else {
            Act::Reply(response("1.1", 200, &[], OK))
        }
    });
    let r = load(&url(addr, "/"), &["-c", "1", "-n", "60", "--warmup", "0s"]);
    assert_counts_add_up(&r);
    let c = &r.stats.counters;
    assert_eq!((c.completed, c.failed), (50, 10), "{c:?}");
    assert_eq!(c.errors_of(ErrorKind::Reset), 10);
    assert_eq!(c.errors_total(), 10);
    assert_eq!((c.connects, c.reconnects), (10, 0));
    let report = Report::new(&r);
    assert_eq!(report.exit_code, 3, "{:?}", report.exit_reason);
}

fn http_1_0_servers_close_after_every_response() {
    // Content-Length, no keep-alive: a reconnect after every response.
    let addr = http_server(|_, _, _| Act::ReplyThenClose(response("1.0", 200, &[], OK)));
    let r = load(
        &url(addr, "/"),
        &["-c", "1", "-n", "200", "--warmup", "0s", "--verify"],
    );
    assert_counts_add_up(&r);
    let c = &r.stats.counters;
    assert_eq!(
        (c.completed, c.failed, c.errors_total()),
        (200, 0, 0),
        "{c:?}"
    );
    assert_eq!((c.connects, c.reconnects, c.retried), (200, 199, 0));

    // The body runs until the close.
    let addr = http_server(|_, _, _| {
        Act::ReplyThenClose(b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nuntil the end".to_vec())
    });
    let r = load(
        &url(addr, "/"),
        &["-c", "1", "-n", "50", "--warmup", "0s", "--verify"],
    );
    assert_counts_add_up(&r);
    let c = &r.stats.counters;
    assert_eq!(
        (c.completed, c.failed, c.errors_total()),
        (50, 0, 0),
        "{c:?}"
    );
    assert_eq!(c.reconnects, 49);

    // HTTP/1.0 with keep-alive asked for keeps the connection.
    let addr =
        http_server(|_, _, _| Act::Reply(response("1.0", 200, &["Connection: keep-alive"], OK)));
    let r = load(&url(addr, "/"), &["-c", "1", "-n", "50", "--warmup", "0s"]);
    let c = &r.stats.counters;
    assert_eq!((c.completed, c.connects, c.reconnects), (50, 1, 0));
}

/// Every third request answered 200, 404 and 500, keep-alive.
fn mixed_status_server() -> std::net::SocketAddr {
    http_server(|_, _, n| {
        let status = [200, 404, 500][(n % 3) as usize];
        Act::Reply(response("1.1", status, &[], b"body"))
    })
}

fn statuses_are_counted_by_class_and_fail_only_when_checked() {
    let addr = mixed_status_server();
    let target = url(addr, "/");
    // Without --verify: every response is a response.
    let r = load(&target, &["-c", "1", "-n", "300", "--warmup", "0s"]);
    assert_counts_add_up(&r);
    let c = &r.stats.counters;
    assert_eq!((c.completed, c.failed, c.errors_total()), (300, 0, 0));
    assert_eq!(c.status_classes, [0, 0, 100, 0, 100, 100]);
    assert_eq!(
        (
            c.status_codes[200],
            c.status_codes[404],
            c.status_codes[500]
        ),
        (100, 100, 100)
    );
    assert_eq!(c.connects, 1, "a 404 or a 500 does not end the connection");
    let report = Report::new(&r);
    assert_eq!(report.exit_code, 0);
    let status = serde_json::to_value(&report).unwrap()["status"].clone();
    assert_eq!(status["4xx"], 100);
    assert_eq!(status["5xx"], 100);
    assert!(
        report.table().contains("2xx 100, 4xx 100, 5xx 100"),
        "{}",
        report.table()
    );

    // --verify wants a 2xx: the others fail, on the same connection.
    let r = load(
        &target,
        &["-c", "1", "-n", "300", "--warmup", "0s", "--verify"],
    );
    assert_counts_add_up(&r);
    let c = &r.stats.counters;
    assert_eq!((c.completed, c.failed), (100, 200));
    assert_eq!(c.errors_of(ErrorKind::UnexpectedStatus), 200);
    assert_eq!(c.status_classes, [0, 0, 100, 0, 100, 100]);
    assert_eq!(c.connects, 1);
    assert_eq!(Report::new(&r).exit_code, 3);

    // An explicit expectation.
    let r = load(
        &target,
        &[
            "-c",
            "1",
            "-n",
            "300",
            "--warmup",
            "0s",
            "--expect-status",
            "2xx,404",
        ],
    );
    let c = &r.stats.counters;
    assert_eq!((c.completed, c.failed), (200, 100));
}

fn chunked_responses_are_read_and_verified() {
    let addr = http_server(|_, on_conn, _| {
        // Chunks of different sizes, an extension and a trailer; the same 12-byte body.
        let body = if on_conn % 2 == 0 {
            "5\r\nHello\r\n7;x=y\r\n, World\r\n0\r\n\r\n"
        } else {
            "c\r\nHello, World\r\n0\r\nX-Trailer: 1\r\n\r\n"
        };
        Act::Reply(
            format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{body}").into_bytes(),
        )
    });
    let r = load(
        &url(addr, "/"),
        &[
            "-c",
            "2",
            "-t",
            "1",
            "-n",
            "500",
            "--warmup",
            "0s",
            "--verify",
            "--pipeline",
            "3",
        ],
    );
    assert_counts_add_up(&r);
    let c = &r.stats.counters;
    assert_eq!(
        (c.completed, c.failed, c.errors_total()),
        (500, 0, 0),
        "{c:?}"
    );
    assert_eq!(c.connects, 2);
}

fn an_idle_connection_closed_by_the_server_is_reopened() {
    // The server closes a keep-alive connection idle for 30 ms after a response (as
    // nginx's keepalive_timeout does); requests come every 100 ms.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&response("1.1", 200, &[], OK)).is_err() {
                            return;
                        }
                        s.set_read_timeout(Some(std::time::Duration::from_millis(30)))
                            .unwrap();
                    }
                    // Idle too long: close (no request is half-read, so a FIN).
                });
            }
        });
        addr
    };
    let r = load(
        &url(addr, "/"),
        &[
            "-c", "2", "-t", "1", "--rate", "20", "-d", "1s", "--warmup", "0s",
        ],
    );
    assert_counts_add_up(&r);
    let c = &r.stats.counters;
    assert_eq!(
        (c.completed, c.failed, c.errors_total()),
        (20, 0, 0),
        "{c:?}"
    );
    assert_eq!((c.sent, c.unsent), (20, 0));
    assert!(c.reconnects >= 10, "{c:?}");
}

fn host_method_and_body_are_what_was_asked() {
    let body = b"{\"k\": 1}".to_vec();
    let expected = body.clone();
    let addr = http_server(move |req, _, _| {
        let ok = req.method == "POST" && req.path == "/api?x=1" && req.body == expected;
        Act::Reply(response("1.1", if ok { 201 } else { 418 }, &[], b""))
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, &body).unwrap();
    let r = load(
        &url(addr, "/api?x=1"),
        &[
            "-c",
            "1",
            "-n",
            "20",
            "--warmup",
            "0s",
            "-X",
            "POST",
            "--body-file",
            file.to_str().unwrap(),
            "-H",
            "Host: example.com",
            "-H",
            "Content-Type: application/json",
            "--expect-status",
            "201",
        ],
    );
    // A second Host header would have been a 400 (and a closed connection).
    let c = &r.stats.counters;
    assert_eq!(
        (c.completed, c.failed, c.status_codes[201]),
        (20, 0, 20),
        "{c:?}"
    );
    assert_eq!(c.connects, 1);
}

fn the_fragment_stays_home_and_host_and_content_length_go_once() {
    let addr = http_server(|req, _, _| {
        let ok = req.path == "/p?q=1" && req.content_lengths == 1 && req.body == b"hello";
        Act::Reply(response("1.1", if ok { 201 } else { 418 }, &[], b""))
    });
    let r = load(
        &url(addr, "/p?q=1#frag"),
        &[
            "-c",
            "1",
            "-n",
            "10",
            "--warmup",
            "0s",
            "-X",
            "POST",
            "--body",
            "hello",
            "-H",
            "host: example.com",
            "-H",
            "content-length: 5",
            "--expect-status",
            "201",
        ],
    );
    // Two Host headers would have been a 400 and a closed connection.
    let c = &r.stats.counters;
    assert_eq!(
        (c.completed, c.failed, c.status_codes[201]),
        (10, 0, 10),
        "{c:?}"
    );
    assert_eq!(c.connects, 1);
}

fn headers_that_contradict_the_request_are_one_line_and_exit_2() {
    let target = url(
        http_server(|_, _, _| Act::Reply(response("1.1", 200, &[], OK))),
        "/",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, b"hello").unwrap();
    let file = file.to_str().unwrap();
    for (args, needles) in [
        (
            &["-H", "Host: a", "-H", "host: b"][..],
            &["'Host: a' and 'host: b'"][..],
        ),
        (
            &["-X", "POST", "--body", "hello", "-H", "Content-Length: 3"],
            &["'Content-Length: 3'", "5 bytes"],
        ),
        (
            &["--body-file", file, "-H", "CONTENT-LENGTH: 50"],
            &["'CONTENT-LENGTH: 50'", "5 bytes"],
        ),
        (
            &[
                "-H",
                "Content-Length: 5",
                "--body",
                "hello",
                "-H",
                "content-length: 5",
            ],
            &["'Content-Length: 5' and 'content-length: 5'"],
        ),
        (
            &["--body", "hello", "-H", "Transfer-Encoding: chunked"],
            &["'Transfer-Encoding: chunked'", "--body"],
        ),
        (
            &["--body-file", file, "-H", "transfer-encoding: chunked"],
            &["'transfer-encoding: chunked'", "--body-file"],
        ),
    ] {
        let out = loadgen_bin(&[&[target.as_str(), "-c", "1", "-n", "5"][..], args].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        for needle in needles {
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}

on_both_engines!(
    connection_close_after_n_requests_is_a_reconnect_not_an_error,
    a_reused_connection_closed_silently_retries_its_request,
    a_reset_after_a_fin_is_a_reconnect_and_a_reset_alone_an_error,
    http_1_0_servers_close_after_every_response,
    statuses_are_counted_by_class_and_fail_only_when_checked,
    chunked_responses_are_read_and_verified,
    an_idle_connection_closed_by_the_server_is_reopened,
    host_method_and_body_are_what_was_asked,
    the_fragment_stays_home_and_host_and_content_length_go_once,
    headers_that_contradict_the_request_are_one_line_and_exit_2,
);
