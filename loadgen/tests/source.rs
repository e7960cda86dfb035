//! `--source`: connections leave from every address of the pool, spread evenly within each
//! target, as servers on 127.0.0.1:0 see them; sources that cannot work are refused before
//! the run.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use common::{load, loadgen_bin};

/// Peers seen by an echo server, per source address: counted when a connection's first
/// bytes arrive, so loadgen's reachability checks (connect and close) are not counted.
type Peers = Arc<Mutex<BTreeMap<IpAddr, usize>>>;

fn echo_server_counting_peers(bind: &str) -> Option<(SocketAddr, Peers)> {
    let l = TcpListener::bind(bind).ok()?;
    let addr = l.local_addr().unwrap();
    let peers: Peers = Arc::default();
    let seen = peers.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let peer = s.peer_addr().unwrap().ip();
                let mut counted = false;
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    if !counted {
                        *seen.lock().unwrap().entry(peer).or_default() += 1;
                        counted = true;
                    }
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Some((addr, peers))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn connections_leave_from_every_source_evenly_for_every_target() {
    let (a, peers_a) = echo_server_counting_peers("127.0.0.1:0").unwrap();
    let (b, peers_b) = echo_server_counting_peers("127.0.0.1:0").unwrap();
    let r = load(
        &a.to_string(),
        &[
            &b.to_string(),
            "--source",
            "127.0.0.2-127.0.0.3,127.0.0.4",
            "-c",
            "12",
            "-t",
            "2",
            "-d",
            "300ms",
            "--warmup",
            "0s",
            "--verify",
        ],
    );
    assert_eq!(
        r.plan.sources,
        [ip("127.0.0.2"), ip("127.0.0.3"), ip("127.0.0.4")]
    );
    assert!(r.stats.counters.completed > 0);
    assert_eq!(r.stats.counters.errors_total(), 0);
    // 12 connections over 2 targets and 3 sources: each target sees 2 from each source.
    let want: BTreeMap<IpAddr, usize> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .map(|s| (ip(s), 2))
        .collect();
    assert_eq!(*peers_a.lock().unwrap(), want);
    assert_eq!(*peers_b.lock().unwrap(), want);
}

fn an_ipv6_source_reaches_an_ipv6_target() {
    let Some((addr, peers)) = echo_server_counting_peers("[::1]:0") else {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    };
    let r = load(
        &addr.to_string(),
        &[
            "--source", "::1", "-c", "2", "-t", "1", "-d", "200ms", "--warmup", "0s",
        ],
    );
    assert!(r.stats.counters.completed > 0);
    assert_eq!(*peers.lock().unwrap(), BTreeMap::from([(ip("::1"), 2)]));
}

fn sources_that_cannot_work_are_one_line_and_exit_2() {
    let (addr, peers) = echo_server_counting_peers("127.0.0.1:0").unwrap();
    let target = addr.to_string();
    for (source, needle) in [
        // TEST-NET-3: an address no host here has.
        ("203.0.113.7", "not an address of this host"),
        ("::1", "IPv6 but target"),
        ("127.0.0.9-127.0.0.2", "ends before it starts"),
        ("127.0.0.0/8", "at most 1024"),
        ("localhost", "--source"),
    ] {
        let out = loadgen_bin(&[&target, "--source", source, "-d", "1s"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{source}: {err}");
        assert!(err.contains(needle), "{source}: {err}");
        assert_eq!(err.lines().count(), 1, "{source}: {err}");
        assert!(out.stdout.is_empty());
    }
    assert!(peers.lock().unwrap().is_empty(), "no run started");
}

fn the_json_config_records_the_sources() {
    let (addr, _) = echo_server_counting_peers("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let out = loadgen_bin(&[
        &addr.to_string(),
        "--source",
        "127.0.0.0/30",
        "-c",
        "2",
        "-d",
        "200ms",
        "--warmup",
        "0s",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(
        report["config"]["sources"],
        serde_json::json!(["127.0.0.1", "127.0.0.2"])
    );
}

on_both_engines!(
    connections_leave_from_every_source_evenly_for_every_target,
    an_ipv6_source_reaches_an_ipv6_target,
    sources_that_cannot_work_are_one_line_and_exit_2,
    the_json_config_records_the_sources,
);
