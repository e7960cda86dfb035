//! The shipped Grafana dashboard and Prometheus alert rules against the real `ringd` binary:
//! every `ringd_*` series they name must be in a scrape of `--metrics`, on every engine and
//! protocol (proxy in front of an echo backend), so renaming a metric fails here instead of
//! leaving an empty panel or an alert that never fires.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::RingdProcess;

/// The files whose series names are checked, relative to the repository root.
const OBSERVABILITY_FILES: [&str; 2] = [
    "packaging/grafana/ringd.json",
    "packaging/prometheus/ringd-alerts.yml",
];

/// Series that only a proxy has (one per upstream).
const UPSTREAM_PREFIX: &str = "ringd_upstream_";

/// Every `ringd_[a-z0-9_]+` in the dashboard and the alert rules.
fn names_in_files() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in OBSERVABILITY_FILES {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let mut rest = text.as_str();
        while let Some(at) = rest.find("ringd_") {
            let tail = &rest[at + "ringd_".len()..];
            let len = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            if len > 0 {
                names.insert(format!("ringd_{}", &tail[..len]));
            }
            rest = &tail[len..];
        }
    }
    names
}

/// The series names in an exposition text (sample lines, not `# HELP`/`# TYPE`).
fn names_in_scrape(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// `GET /metrics`: the body.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out.split_once("\r\n\r\n")
        .expect("a header block")
        .1
        .to_string()
}

/// One exchange in `protocol` on a new connection; what came back.
fn exchange(addr: SocketAddr, protocol: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request: &[u8] = match protocol {
        "http" => b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        _ => b"ping",
    };
    s.write_all(request).unwrap();
    let mut back = Vec::new();
    if matches!(protocol, "echo" | "proxy") {
        back.resize(request.len(), 0);
        s.read_exact(&mut back).unwrap();
    } else {
        s.read_to_end(&mut back).unwrap();
    }
    back
}

/// Starts ringd with `engine` and `protocol` (proxy: in front of an echo ringd), sends a
/// little traffic, scrapes, and checks every series the dashboard and the rules name.
fn every_named_series_is_served(engine: &str, protocol: &str) {
    let wanted = names_in_files();
    assert!(
        wanted.contains("ringd_connections_active") && wanted.contains("ringd_upstream_up"),
        "names read from the files: {wanted:?}"
    );
    let backend = (protocol == "proxy")
        .then(|| RingdProcess::start(&["--engine", "epoll", "--threads", "1"], None));
    let upstream = backend.as_ref().map(|b| b.addr.to_string());
    let mut args = vec![
        "--engine",
        engine,
        "--protocol",
        protocol,
        "--threads",
        "2",
        "--metrics",
        "127.0.0.1:0",
    ];
    if let Some(u) = &upstream {
        args.extend(["--upstream", u.as_str()]);
    }
    let p = RingdProcess::start(&args, None);
    for _ in 0..3 {
        let back = exchange(p.addr, protocol);
        match protocol {
            "echo" | "proxy" => assert_eq!(back, b"ping"),
            "http" => assert!(back.starts_with(b"HTTP/1.1 200"), "{back:?}"),
            _ => assert!(!back.is_empty(), "hello replies"),
        }
    }
    let text = scrape(p.metrics_addr());
    let served = names_in_scrape(&text);
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|n| protocol == "proxy" || !n.starts_with(UPSTREAM_PREFIX))
        .filter(|n| !served.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "{engine}/{protocol}: named in {OBSERVABILITY_FILES:?} but not served: {missing:?}\n{text}"
    );
    assert!(
        ringd::metrics::sum_metric(&text, "ringd_connections_accepted_total", "") >= 3,
        "{text}"
    );
    assert_eq!(p.stop(), 0);
    if let Some(b) = backend {
        assert_eq!(b.stop(), 0);
    }
}

macro_rules! every_engine_and_protocol {
    ($($engine:ident => $name:literal),*) => {$(
        mod $engine {
            #[test]
            fn echo() {
                super::every_named_series_is_served($name, "echo");
            }

            #[test]
            fn hello() {
                super::every_named_series_is_served($name, "hello");
            }

            #[test]
            fn http() {
                super::every_named_series_is_served($name, "http");
            }

            #[test]
            fn proxy() {
                super::every_named_series_is_served($name, "proxy");
            }
        }
    )*};
}

every_engine_and_protocol!(uring => "uring", tokio_uring => "tokio-uring", epoll => "epoll");

/// `--engine auto` on this host (io_uring enabled, Linux 6.1+) runs `uring`, with no warning,
/// and both the engine info and the build info name the engine that runs, not `auto`.
#[test]
fn engine_auto_runs_uring_here() {
    let p = RingdProcess::start(
        &[
            "--engine",
            "auto",
            "--protocol",
            "http",
            "--threads",
            "1",
            "--metrics",
            "127.0.0.1:0",
        ],
        None,
    );
    assert!(
        !p.start_log.iter().any(|l| l.contains("WARN")),
        "{:?}",
        p.start_log
    );
    let text = scrape(p.metrics_addr());
    assert!(
        text.contains("\nringd_engine_info{engine=\"uring\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains(",engine=\"uring\",protocol=\"http\"} 1\n"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&exchange(p.addr, "http")).starts_with("HTTP/1.1 200"));
    assert_eq!(p.stop(), 0);
}
