//! loadgen through ringd's proxy mode, every engine: rr and stream against an echo upstream,
//! crr against a hello upstream, all verified, no error.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use ringd::proxy::{Balance, ProxyConfig};
use ringd::{Config, EngineKind, ProtocolKind, ServerHandle, Service};

fn backend(protocol: ProtocolKind) -> ServerHandle {
    ringd::start(Config::new(
        "127.0.0.1:0".parse().unwrap(),
        protocol,
        EngineKind::Epoll,
    ))
    .unwrap()
}

fn proxy(engine: EngineKind, upstream: SocketAddr) -> ServerHandle {
    let mut c = Config::new("127.0.0.1:0".parse().unwrap(), ProtocolKind::Echo, engine);
    c.service = Service::Proxy(ProxyConfig::new(
        vec![upstream],
        Balance::RoundRobin,
        std::time::Duration::from_secs(2),
        std::time::Duration::from_secs(5),
        None,
    ));
    ringd::start(c).unwrap()
}

/// Runs the loadgen binary and returns its JSON report.
fn loadgen(target: SocketAddr, args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(common::engine_args())
        .arg(target.to_string())
        .args([
            "-q", "-t", "1", "-d", "1s", "--warmup", "200ms", "--verify", "--json",
        ])
        .arg(&json)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap()
}

fn assert_clean(r: &serde_json::Value, what: &str) {
    assert!(
        r["requests"].as_u64().unwrap() > 0,
        "{what}: nothing measured: {r}"
    );
    assert_eq!(r["failed"].as_u64(), Some(0), "{what}: {r}");
    let errors = r["errors"].as_object().unwrap();
    assert!(
        errors.values().all(|v| v.as_u64() == Some(0)),
        "{what}: {errors:?}"
    );
    assert_eq!(r["mismatched_bytes"].as_u64(), Some(0), "{what}");
}

fn through(engine: EngineKind) {
    let echo = backend(ProtocolKind::Echo);
    let p = proxy(engine, echo.local_addr());
    let rr = loadgen(p.local_addr(), &["-c", "20", "--pipeline", "4"]);
    assert_clean(&rr, "rr");
    let stream = loadgen(
        p.local_addr(),
        &["-c", "4", "--mode", "stream", "--size", "16KiB"],
    );
    assert_clean(&stream, "stream");
    p.shutdown().unwrap();
    echo.shutdown().unwrap();
    let hello = backend(ProtocolKind::Hello);
    let p = proxy(engine, hello.local_addr());
    let crr = loadgen(
        p.local_addr(),
        &["-c", "8", "--protocol", "hello", "--mode", "crr"],
    );
    assert_clean(&crr, "crr");
    p.shutdown().unwrap();
    hello.shutdown().unwrap();
}

fn uring() {
    through(EngineKind::Uring);
}

fn tokio_uring() {
    through(EngineKind::TokioUring);
}

fn epoll() {
    through(EngineKind::Epoll);
}

on_both_engines!(uring, tokio_uring, epoll,);
