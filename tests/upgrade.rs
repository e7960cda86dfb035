//! Live upgrades of the real `ringd` binary (SIGUSR2), every engine: under continuous HTTP
//! load (connect-request-close and keep-alive clients) three upgrades in a row lose nothing;
//! each old process exits 0; the pid file names the live process; a successor that fails
//! leaves the old process serving; descriptors do not pile up across upgrades.

#[macro_use]
mod matrix;
mod lineage;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use lineage::{
    counters, fds, get, listening_inodes, per_worker, scrape, socket_inode, temp_dir, Lineage,
    Load, Start,
};

const LONG: Duration = Duration::from_secs(30);

fn args<'a>(engine: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "--listen",
        "127.0.0.1:0",
        "--engine",
        engine,
        "--protocol",
        "http",
        "--threads",
        "2",
        "--metrics",
        "127.0.0.1:0",
        "--shutdown-timeout",
        "10s",
    ];
    a.extend_from_slice(extra);
    a
}

/// Three upgrades in a row under connect-request-close and keep-alive load: no request
/// refused, reset or left without a response; every old process exits 0.
fn upgrades_under_load(engine: &str) {
    let dir = temp_dir("upgrade-load");
    let mut l = Lineage::start(Start::new(&dir, &args(engine, &[])));
    let load = Load::start(l.addr, 2, 4, Duration::from_millis(2));
    load.wait_progress(200, LONG);
    let mut old = Vec::new();
    for _ in 0..3 {
        old.push(l.current());
        let new = l.upgrade();
        assert!(Lineage::running(new));
        load.wait_progress(100, LONG);
    }
    for pid in old {
        assert_eq!(l.exit_code(pid, LONG), 0, "old process {pid} exit code");
    }
    load.wait_progress(100, LONG);
    let (counts, failures) = load.stop();
    eprintln!("{engine}: {counts:?}");
    assert_eq!(
        counts.failed(),
        0,
        "{engine}: {counts:?}; first failures: {failures:#?}"
    );
    let metrics = scrape(l.metrics.unwrap());
    assert!(metrics.contains("\nringd_upgrades_total 3\n"), "{metrics}");
    assert_eq!(l.log.count("handed over to pid "), 3);
    assert_eq!(l.log.count("took over 3 listening sockets from pid "), 3);
    assert_eq!(l.pid_file_pid(), Some(l.current()));
    assert_eq!(l.stop(), 0);
    assert!(
        !l.pid_file.exists(),
        "the last process removes the pid file"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A connection the old process accepted just before it hands over, whose
/// request arrives a little later (half a round trip on a real network), still gets its
/// response: the drain gives such connections a short grace instead of closing them at once.
fn upgrades_with_late_requests(engine: &str) {
    let dir = temp_dir("upgrade-late");
    let mut l = Lineage::start(Start::new(&dir, &args(engine, &[])));
    let load = Load::start_with(l.addr, 16, 0, Duration::ZERO, Duration::from_millis(20));
    load.wait_progress(200, LONG);
    for _ in 0..3 {
        let old = l.current();
        l.upgrade();
        load.wait_progress(100, LONG);
        assert_eq!(l.exit_code(old, LONG), 0);
    }
    let (counts, failures) = load.stop();
    eprintln!("{engine}: {counts:?}");
    assert_eq!(
        counts.failed(),
        0,
        "{engine}: {counts:?}; first failures: {failures:#?}"
    );
    assert_eq!(l.stop(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Replaces `path` atomically (as a build or a deployment does) with a shell script.
fn install_script(path: &Path, body: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("#!/bin/bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Points `path` back at the real binary.
fn install_ringd(path: &Path) {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(lineage::ringd_bin(), &tmp).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Upgrades to a binary that exits, one that cannot use the sockets, one whose worker fails
/// while starting on the shared sockets, and one that never reports ready: each time the old
/// process serves on (no request lost), logs why, and the pid file keeps naming it. Then a
/// working binary at the same path is picked up.
fn failed_upgrades(engine: &str) {
    let dir = temp_dir("upgrade-fail");
    let exe = dir.join("ringd");
    install_ringd(&exe);
    let real = lineage::ringd_bin();
    let mut start = Start::new(&dir, &args(engine, &["--upgrade-timeout", "2s"]));
    start.exe = exe.clone();
    let mut l = Lineage::start(start);
    let first = l.current();
    let load = Load::start(l.addr, 2, 4, Duration::from_millis(2));
    load.wait_progress(100, LONG);
    let cases = [
        (
            "exit 3".to_string(),
            "exited with status 3 before it was ready",
        ),
        (
            format!("exec 3<&-; exec {} \"$@\"", real.display()),
            "exited with status 1 before it was ready",
        ),
        (
            format!(
                "RINGD_TEST_FAULT=fail-worker=1 exec {} \"$@\"",
                real.display()
            ),
            "exited with status 1 before it was ready",
        ),
        ("exec sleep 60".to_string(), "was not ready within 2s"),
    ];
    for (script, why) in cases {
        install_script(&exe, &script);
        let from = l.log.len();
        l.signal(first, libc::SIGUSR2);
        let line = l.log.wait_for("upgrade failed: ", from, LONG);
        assert!(
            line.contains(why) && line.ends_with("; still serving"),
            "{script}: {line}"
        );
        assert_eq!(l.pid_file_pid(), Some(first));
        // Still serving, on the same sockets.
        load.wait_progress(100, LONG);
        eprintln!("{engine}: after `{script}`: {:?}", load.counts());
    }
    let lines = l.log.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("inherited descriptor 3 (LISTEN_FDS=3) is not open")),
        "the successor says why it cannot use the sockets"
    );
    install_ringd(&exe);
    let new = l.upgrade();
    assert_ne!(new, first);
    assert_eq!(l.exit_code(first, LONG), 0);
    load.wait_progress(100, LONG);
    let (counts, failures) = load.stop();
    eprintln!("{engine}: {counts:?}");
    assert_eq!(
        counts.failed(),
        0,
        "{engine}: {counts:?}; first failures: {failures:#?}"
    );
    assert_eq!(l.stop(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Upgrades to a wrapper script that starts a child and then never reports ready, or exits
/// leaving the child behind: once the upgrade has failed the child is gone too (the old
/// process stops the successor's whole process group), and the old process serves on.
#[test]
fn a_failed_upgrade_leaves_no_child_of_the_successor() {
    let dir = temp_dir("upgrade-orphan");
    let exe = dir.join("ringd");
    install_ringd(&exe);
    let mut start = Start::new(&dir, &args("epoll", &["--upgrade-timeout", "2s"]));
    start.exe = exe.clone();
    let mut l = Lineage::start(start);
    let first = l.current();
    let child_pid = dir.join("child.pid");
    let cases = [
        // Waits for its child, never ready: stopped after --upgrade-timeout.
        (
            "sleep 3171 & echo $! >\"$PIDFILE\"; wait",
            "was not ready within 2s",
        ),
        // Exits at once, its child not holding the readiness pipe.
        (
            "ready=$RINGD_READY_FD; sleep 3172 {ready}>&- & echo $! >\"$PIDFILE\"; exit 3",
            "exited with status 3 before it was ready",
        ),
    ];
    for (script, why) in cases {
        let _ = std::fs::remove_file(&child_pid);
        install_script(&exe, &format!("PIDFILE={}\n{script}", child_pid.display()));
        let from = l.log.len();
        l.signal(first, libc::SIGUSR2);
        let line = l.log.wait_for("upgrade failed: ", from, LONG);
        assert!(line.contains(why), "{script}: {line}");
        let pid: u32 = std::fs::read_to_string(&child_pid)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed before the failure is logged; a few seconds of margin for the signal.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while Lineage::running(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let survived = Lineage::running(pid);
        if survived {
            // SAFETY: kill(2) on the script's child, reparented to this test (a subreaper).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let mut status = 0;
        // SAFETY: waitpid(2) on one pid; reaps the child if it was reparented to us.
        unsafe { libc::waitpid(pid as i32, &mut status, 0) };
        assert!(
            !survived,
            "{script}: the successor's child (pid {pid}) outlived the failed upgrade"
        );
        assert_eq!(l.pid_file_pid(), Some(first));
        assert!(
            get(l.addr).starts_with("HTTP/1.1 200 "),
            "{script}: the old process still serves"
        );
    }
    assert_eq!(l.stop(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Descriptor kinds: listening sockets by inode, other sockets, anonymous inodes by kind,
/// and anything else by target.
fn kinds(pid: u32) -> (Vec<String>, BTreeMap<String, usize>) {
    let listening = listening_inodes();
    let mut listeners = Vec::new();
    let mut others = BTreeMap::new();
    for target in fds(pid).into_values() {
        let kind = match socket_inode(&target) {
            Some(ino) if listening.contains(ino) => {
                listeners.push(ino.to_string());
                "listening socket".to_string()
            }
            Some(_) => "other socket".to_string(),
            None if target.starts_with("anon_inode:") => target,
            None if target.starts_with("pipe:") => "pipe".to_string(),
            None => format!("file {target}"),
        };
        *others.entry(kind).or_insert(0) += 1;
    }
    listeners.sort();
    listeners.dedup();
    (listeners, others)
}

/// After each upgrade the new process holds the very same listening sockets and otherwise
/// only its own descriptors: the same kinds and counts as the first process, no connection
/// of the old one, no pipe.
fn no_descriptor_leak(engine: &str) {
    let dir = temp_dir("upgrade-fds");
    let mut l = Lineage::start(Start::new(&dir, &args(engine, &[])));
    let (listeners, first) = kinds(l.current());
    assert_eq!(
        listeners.len(),
        3,
        "two worker sockets and metrics: {first:?}"
    );
    for round in 0..3 {
        // Connections open on the old process while it hands over must not follow.
        let load = Load::start(l.addr, 0, 4, Duration::from_millis(5));
        load.wait_progress(20, LONG);
        let old = l.current();
        let new = l.upgrade();
        assert_eq!(l.exit_code(old, LONG), 0);
        // What the clients saw is the business of the tests under load.
        drop(load.stop());
        // Wait for the connections the new process accepted to close.
        let deadline = std::time::Instant::now() + LONG;
        let (got_listeners, got) = loop {
            let k = kinds(new);
            if !k.1.contains_key("other socket")
                || k.1["other socket"] <= first.get("other socket").copied().unwrap_or(0)
            {
                break k;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "connections stay open: {:?}",
                k.1
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            got_listeners, listeners,
            "round {round}: the same listening sockets"
        );
        let pipes = got.get("pipe").copied().unwrap_or(0);
        assert_eq!(
            pipes,
            0,
            "round {round}: no pipe beyond stdio: {:?}",
            fds(new)
        );
        let mut without_pipes = first.clone();
        // The first process may have inherited pipes from the test runner (a jobserver).
        without_pipes.remove("pipe");
        without_pipes.retain(|k, _| !k.starts_with("file "));
        let mut got_cmp = got.clone();
        got_cmp.retain(|k, _| !k.starts_with("file "));
        assert_eq!(got_cmp, without_pipes, "round {round}: {:?}", fds(new));
        assert!(
            !got.keys().any(|k| k.starts_with("file ")),
            "round {round}: files: {:?}",
            fds(new)
        );
    }
    assert_eq!(l.stop(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A second SIGUSR2 while a successor is starting is ignored with a log line; the upgrade in
/// progress completes. SIGTERM during an upgrade stops the successor too.
#[test]
fn sigusr2_during_an_upgrade_is_ignored_and_sigterm_stops_both() {
    let dir = temp_dir("upgrade-twice");
    let exe = dir.join("ringd");
    let real = lineage::ringd_bin();
    // bash's `exec -a` keeps the wrapper as argv[0], so every successor (which ringd starts
    // from its argv[0]) goes through the same one-second sleep: the signals below always land
    // while a successor is starting, however fast the machine.
    install_script(
        &exe,
        &format!("sleep 1\nexec -a \"$0\" {} \"$@\"", real.display()),
    );
    let mut start = Start::new(&dir, &args("uring", &[]));
    start.exe = exe.clone();
    let mut l = Lineage::start(start);
    let first = l.current();
    let from = l.log.len();
    l.signal(first, libc::SIGUSR2);
    l.log.wait_for("SIGUSR2: starting", from, LONG);
    l.signal(first, libc::SIGUSR2);
    l.log.wait_for(
        "SIGUSR2 ignored: an upgrade is already in progress",
        from,
        LONG,
    );
    let line = l.log.wait_for("handed over to pid ", from, LONG);
    let second: u32 = lineage::after(&line, "handed over to pid ")
        .trim_end_matches(',')
        .parse()
        .unwrap();
    l.pids.push(second);
    assert_eq!(l.exit_code(first, LONG), 0);
    assert_eq!(l.log.count("handed over to pid "), 1);
    // SIGTERM while the next successor sleeps in its wrapper: both stop, 0.
    let from = l.log.len();
    l.signal(second, libc::SIGUSR2);
    l.log.wait_for("SIGUSR2: starting", from, LONG);
    l.signal(second, libc::SIGTERM);
    l.log
        .wait_for("stopping the new process and draining", from, LONG);
    l.log.wait_for("stopped the new process (pid ", from, LONG);
    assert_eq!(l.exit_code(second, LONG), 0);
    assert!(!l.pid_file.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The process group of `pid` (field 5 of /proc/PID/stat).
fn pgrp(pid: u32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[2].parse().unwrap()
}

/// A successor starts in a group of its own (so that a failed start is stopped with its
/// children) and rejoins its predecessor's group once it serves, so that whatever stops
/// ringd by its group (Ctrl-C in a terminal, `timeout`, a supervisor) reaches it after an
/// upgrade too.
#[test]
fn the_successor_rejoins_the_process_group() {
    let dir = temp_dir("upgrade-pgrp");
    let mut l = Lineage::start(Start::new(&dir, &args("epoll", &[])));
    let group = pgrp(l.current());
    let new = l.upgrade();
    assert_eq!(
        pgrp(new),
        group,
        "the successor left the group it was started in"
    );
    assert_eq!(l.stop(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With `NOTIFY_SOCKET` (systemd `Type=notify`), ringd says `READY=1` when it serves, the
/// old process names the new main pid when it hands over, and `STOPPING=1` on a drain.
#[test]
fn service_manager_notifications() {
    let dir = temp_dir("upgrade-notify");
    let socket = dir.join("notify");
    let rx = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    rx.set_read_timeout(Some(LONG)).unwrap();
    let recv = || {
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut start = Start::new(&dir, &args("epoll", &[]));
    start
        .env
        .push(("NOTIFY_SOCKET", socket.display().to_string()));
    let mut l = Lineage::start(start);
    assert_eq!(recv(), "READY=1");
    let new = l.upgrade();
    assert_eq!(recv(), format!("MAINPID={new}"));
    assert_eq!(l.stop(), 0);
    assert_eq!(recv(), "STOPPING=1");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every `_total` series of the successor starts from what its predecessor reported at the
/// handover (a scrape across an upgrade never sees a counter go down, which Prometheus
/// would take for a reset), and keeps counting.
fn counters_continue(engine: &str) {
    let dir = temp_dir("upgrade-counters");
    let log = dir.join("access.log");
    let log = log.to_str().unwrap();
    let mut l = Lineage::start(Start::new(&dir, &args(engine, &["--access-log", log])));
    let metrics = l.metrics.unwrap();
    for _ in 0..20 {
        assert!(get(l.addr).starts_with("HTTP/1.1 200"));
    }
    // The process's own series continue too (the access log's writer counts its lines a
    // moment after the connections close).
    let written = "ringd_access_log_lines_total{result=\"written\"}";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while counters(&scrape(metrics)).get(written) < Some(&20) {
        assert!(std::time::Instant::now() < deadline, "{written} below 20");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let before = counters(&scrape(metrics));
    let accepted = |c: &BTreeMap<String, u64>| {
        c.iter()
            .filter(|(k, _)| k.starts_with("ringd_connections_accepted_total{"))
            .map(|(_, v)| v)
            .sum::<u64>()
    };
    assert!(accepted(&before) >= 20, "{before:#?}");
    l.upgrade();
    let after = counters(&scrape(metrics));
    for (series, was) in &before {
        let now = after.get(series);
        assert!(
            now.is_some_and(|n| n >= was),
            "{engine}: {series} was {was} before the upgrade, {now:?} after"
        );
    }
    for _ in 0..20 {
        assert!(get(l.addr).starts_with("HTTP/1.1 200"));
    }
    let later = counters(&scrape(metrics));
    for name in [
        "ringd_connections_accepted_total{",
        "ringd_requests_total{",
        "ringd_received_bytes_total{",
        "ringd_sent_bytes_total{",
    ] {
        let sum = |c: &BTreeMap<String, u64>| {
            c.iter()
                .filter(|(k, _)| k.starts_with(name))
                .map(|(_, v)| v)
                .sum::<u64>()
        };
        assert!(
            sum(&later) > sum(&after),
            "{engine}: {name} did not grow: {} then {}",
            sum(&after),
            sum(&later)
        );
    }
    for (series, was) in &after {
        assert!(later.get(series).is_some_and(|n| n >= was), "{series}");
    }
    assert_eq!(l.stop(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An echo server on 127.0.0.1:0 for a proxy to forward to, on a thread of its own (one
/// connection at a time, enough for sequential clients).
fn echo_backend() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    addr
}

/// A round trip through the proxy, then the client closes.
fn echo_once(addr: std::net::SocketAddr) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
}

/// Proxy mode: the per-upstream counters continue across an upgrade too.
fn upstream_counters_continue(engine: &str) {
    let dir = temp_dir("upgrade-upstream-counters");
    let backend = echo_backend().to_string();
    let mut l = Lineage::start(Start::new(
        &dir,
        &[
            "--listen",
            "127.0.0.1:0",
            "--engine",
            engine,
            "--protocol",
            "proxy",
            "--upstream",
            &backend,
            "--threads",
            "1",
            "--metrics",
            "127.0.0.1:0",
        ],
    ));
    let metrics = l.metrics.unwrap();
    for _ in 0..5 {
        echo_once(l.addr);
    }
    let upstream = |c: &BTreeMap<String, u64>, name: &str| {
        c.get(&format!("{name}{{upstream=\"{backend}\"}}"))
            .copied()
            .unwrap_or_else(|| panic!("no {name} in {c:#?}"))
    };
    let names = [
        "ringd_upstream_connections_total",
        "ringd_upstream_sent_bytes_total",
        "ringd_upstream_received_bytes_total",
    ];
    let before = counters(&scrape(metrics));
    l.upgrade();
    let after = counters(&scrape(metrics));
    for name in names {
        assert!(upstream(&before, name) >= 5, "{name}: {before:#?}");
        assert!(
            upstream(&after, name) >= upstream(&before, name),
            "{engine}: {name} was {} before the upgrade, {} after",
            upstream(&before, name),
            upstream(&after, name)
        );
    }
    echo_once(l.addr);
    let later = counters(&scrape(metrics));
    for name in names {
        assert!(upstream(&later, name) > upstream(&after, name), "{name}");
    }
    assert_eq!(l.stop(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

every_engine! {
    #[test]
    fn counters_continue_across_an_upgrade() {
        counters_continue(ENGINE.name());
    }
    #[test]
    fn upstream_counters_continue_across_an_upgrade() {
        upstream_counters_continue(ENGINE.name());
    }
    #[test]
    fn three_upgrades_under_load_lose_nothing() {
        upgrades_under_load(ENGINE.name());
    }
    #[test]
    fn a_failing_successor_leaves_the_old_process_serving() {
        failed_upgrades(ENGINE.name());
    }
    #[test]
    fn no_descriptor_leak_across_upgrades() {
        no_descriptor_leak(ENGINE.name());
    }
    #[test]
    fn requests_that_follow_their_connect_late_are_answered() {
        upgrades_with_late_requests(ENGINE.name());
    }
}

/// At a handover, a keep-alive connection idle at that moment may still
/// send one more request (within a short grace) and gets its response with
/// `Connection: close`, then EOF; an echo connection is served until the peer closes it.
#[test]
fn a_handover_saves_keep_alive_and_echo_connections() {
    use std::io::{Read, Write};
    for engine in ["uring", "tokio-uring", "epoll"] {
        for protocol in ["http", "echo"] {
            let dir = temp_dir("upgrade-drain");
            let mut l = Lineage::start(Start::new(
                &dir,
                &[
                    "--listen",
                    "127.0.0.1:0",
                    "--engine",
                    engine,
                    "--protocol",
                    protocol,
                    "--threads",
                    "1",
                ],
            ));
            let mut s = std::net::TcpStream::connect(l.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let req: &[u8] = if protocol == "http" {
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            } else {
                b"ping"
            };
            let mut buf = [0u8; 1024];
            s.write_all(req).unwrap();
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            let old = l.current();
            l.upgrade();
            s.write_all(req).unwrap();
            let mut got = Vec::new();
            if protocol == "http" {
                s.read_to_end(&mut got).unwrap();
                let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
                assert!(
                    text.starts_with("http/1.1 200") && text.contains("connection: close"),
                    "{engine}: {text:?}"
                );
            } else {
                got.resize(req.len(), 0);
                s.read_exact(&mut got).unwrap();
                assert_eq!(got, req, "{engine}: echo goes on after the handover");
                drop(s);
            }
            assert_eq!(l.exit_code(old, LONG), 0);
            assert_eq!(l.stop(), 0);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// A SIGHUP that reaches the old process after it handed over (a deploy script that still
/// holds the old pid) is forwarded to the process that serves, which reads the file again.
#[test]
fn a_sighup_after_the_handover_reaches_the_successor() {
    let dir = temp_dir("upgrade-sighup");
    let config = dir.join("ringd.toml");
    let write = |body: &str| {
        let text =
            format!("protocol = \"http\"\nhttp-body = \"{body}\"\nshutdown-timeout = \"10s\"\n");
        std::fs::write(&config, text).unwrap();
    };
    write("AAA");
    let config_arg = config.to_str().unwrap().to_string();
    let start = [
        "--listen",
        "127.0.0.1:0",
        "--engine",
        "epoll",
        "--config",
        &config_arg,
    ];
    let mut l = Lineage::start(Start::new(&dir, &start));
    assert!(get(l.addr).ends_with("AAA"));
    // An unfinished request keeps the old process draining for a while after the handover.
    let mut held = std::net::TcpStream::connect(l.addr).unwrap();
    std::io::Write::write_all(&mut held, b"GET / HTTP/1.1\r\n").unwrap();
    let old = l.current();
    l.upgrade();
    write("BBB");
    l.signal(old, libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !get(l.addr).ends_with("BBB") {
        assert!(
            std::time::Instant::now() < deadline,
            "the successor never reloaded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(held);
    assert_eq!(l.stop(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metrics_name_the_process() {
    let dir = temp_dir("upgrade-metrics");
    let mut l = Lineage::start(Start::new(&dir, &args("epoll", &[])));
    let text = scrape(l.metrics.unwrap());
    assert!(text.contains("\nringd_upgrades_total 0\n"), "{text}");
    let started: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("ringd_start_time_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started <= now && started > now - 600.0,
        "{started} vs {now}"
    );
    l.upgrade();
    let after = scrape(l.metrics.unwrap());
    assert!(after.contains("\nringd_upgrades_total 1\n"), "{after}");
    let started2: f64 = after
        .lines()
        .find_map(|l| l.strip_prefix("ringd_start_time_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(started2 >= started, "the new process started later");
    assert_eq!(
        per_worker(&after, "ringd_connections_accepted_total").len(),
        2
    );
    assert_eq!(l.stop(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_names_the_signals_and_the_upgrade_options() {
    let out = std::process::Command::new(lineage::ringd_bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "SIGTERM, SIGINT",
        "SIGUSR2",
        "live upgrade",
        "LISTEN_FDS",
        "--pid-file",
        "--upgrade-timeout",
        "127.0.0.1:8080",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}
