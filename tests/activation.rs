//! Socket activation (systemd's `LISTEN_FDS`) with the real `ringd` binary, every engine: a
//! harness creates the listening socket and starts ringd on it as `systemd-socket-activate`
//! would; every worker serves it; a stop leaves the socket listening for the service
//! manager. And the one-line errors for sockets ringd cannot use.

#[macro_use]
mod matrix;
mod lineage;

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use lineage::{get, per_worker, scrape, temp_dir, Lineage, Start};

const LONG: Duration = Duration::from_secs(30);

/// One inherited socket, two workers: both accept (the kernel spreads connections over
/// them); SIGTERM drains and exits 0 without shutting the socket down, so the service
/// manager's socket keeps listening (and queueing) for the next start.
fn served_by_every_worker(engine: &str) {
    let dir = temp_dir("activation");
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let mut start = Start::new(
        &dir,
        &[
            "--engine",
            engine,
            "--protocol",
            "http",
            "--threads",
            "2",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    start.activate = Some(socket.as_raw_fd());
    let mut l = Lineage::start(start);
    assert_eq!(l.addr, addr, "ringd serves the inherited socket");
    assert!(l.log.lines().iter().any(|l| l.contains("inherited=true")));
    let n = 200;
    for _ in 0..n {
        assert!(get(addr).starts_with("HTTP/1.1 200 OK"));
    }
    let metrics = scrape(l.metrics.unwrap());
    let accepted = per_worker(&metrics, "ringd_connections_accepted_total");
    eprintln!("{engine}: {n} sequential connections accepted per worker: {accepted:?}");
    assert_eq!(accepted.iter().sum::<u64>(), n);
    assert!(
        accepted.iter().all(|&a| a > 0),
        "{engine}: every worker accepts: {accepted:?}"
    );
    assert_eq!(l.stop(), 0);
    // Still listening: a connection is queued and the harness accepts it.
    let _client = TcpStream::connect(addr).expect("the inherited socket still listens");
    socket.set_nonblocking(false).unwrap();
    let (_, _) = socket.accept().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// An activated ringd hands the inherited socket on at a live upgrade like its own.
#[test]
fn an_activated_ringd_upgrades() {
    let dir = temp_dir("activation-upgrade");
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let mut start = Start::new(&dir, &["--engine", "epoll", "--protocol", "http"]);
    start.activate = Some(socket.as_raw_fd());
    let mut l = Lineage::start(start);
    assert!(get(addr).starts_with("HTTP/1.1 200 OK"));
    let old = l.current();
    let new = l.upgrade();
    assert_eq!(l.exit_code(old, LONG), 0);
    assert!(
        l.log
            .count(&format!("took over 1 listening sockets from pid {old}"))
            == 1
    );
    assert!(get(addr).starts_with("HTTP/1.1 200 OK"));
    assert_eq!(l.pid_file_pid(), Some(new));
    assert_eq!(l.stop(), 0);
    let _client = TcpStream::connect(addr).expect("the inherited socket still listens");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts ringd with `fd` as descriptor 3 and LISTEN_FDS=1; its exit code and stderr.
fn activate_with(fd: i32, extra: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
        .arg(lineage::ringd_bin())
        .args(["--no-pin", "--threads", "1"])
        .args(extra)
        .env_remove("RUST_LOG")
        .env("LISTEN_FDS", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: dup2 and fcntl are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        c.pre_exec(move || {
            if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0);
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = c.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A descriptor, extra arguments, extra environment, and the error expected.
type Case<'a> = (i32, &'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn sockets_ringd_cannot_use_are_one_clear_line() {
    let listening = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let file = std::fs::File::open("/proc/self/stat").unwrap();
    let unix =
        std::os::unix::net::UnixListener::bind(temp_dir("activation-unix").join("s")).unwrap();
    let cases: [Case; 6] = [
        (listening.as_raw_fd(), &["--listen", "127.0.0.1:0"], &[], "--listen 127.0.0.1:0 cannot be used with the 1 listening socket(s) passed by the service manager"),
        (udp.as_raw_fd(), &[], &[], "inherited descriptor 3 (LISTEN_FDS=1) is not a TCP socket (IPv4 datagram)"),
        (file.as_raw_fd(), &[], &[], "inherited descriptor 3 (LISTEN_FDS=1) is not a socket"),
        (unix.as_raw_fd(), &[], &[], "is not a TCP socket (Unix stream)"),
        (listening.as_raw_fd(), &[], &[("LISTEN_FDS", "many")], "LISTEN_FDS=many is not a descriptor count"),
        (listening.as_raw_fd(), &[], &[("LISTEN_FDNAMES", "metrics")], "passes no listening socket for the workers"),
    ];
    for (fd, extra, env, expect) in cases {
        let (code, err) = activate_with(fd, extra, env);
        assert_eq!(code, Some(1), "{expect}: {err}");
        let last = err.lines().last().unwrap_or("");
        assert!(
            last.starts_with("ringd: error: ") && last.contains(expect),
            "{expect}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `LISTEN_FDS` meant for another process (`LISTEN_PID` not ours) is ignored: ringd binds.
#[test]
fn variables_for_another_process_are_ignored() {
    let dir = temp_dir("activation-other");
    let mut start = Start::new(
        &dir,
        &[
            "--listen",
            "127.0.0.1:0",
            "--protocol",
            "http",
            "--engine",
            "epoll",
        ],
    );
    start.env.push(("LISTEN_FDS", "1".into()));
    start.env.push(("LISTEN_PID", "1".into()));
    let mut l = Lineage::start(start);
    assert!(l.log.lines().iter().any(|l| l.contains("inherited=false")));
    assert!(get(l.addr).starts_with("HTTP/1.1 200 OK"));
    assert_eq!(l.stop(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The accept queue limit of a listening socket (TCP_INFO reports it in `tcpi_sacked`).
fn backlog(fd: i32) -> u32 {
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into `info`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0);
    info.tcpi_sacked
}

/// `--send-buffer` and TCP_NODELAY apply to an inherited socket; its backlog (say, a socket
/// unit's `Backlog=`) is left alone unless `--backlog` is given.
#[test]
fn options_apply_to_the_inherited_socket() {
    let dir = temp_dir("activation-options");
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(77).unwrap();
    let fd = socket.as_raw_fd();
    assert_eq!(backlog(fd), 77);
    let mut start = Start::new(&dir, &["--engine", "epoll", "--send-buffer", "4KiB"]);
    start.activate = Some(fd);
    let mut l = Lineage::start(start);
    assert_eq!(
        socket.send_buffer_size().unwrap(),
        8192,
        "4KiB, doubled by the kernel"
    );
    assert!(socket.tcp_nodelay().unwrap());
    assert_eq!(backlog(fd), 77, "the socket's own backlog is kept");
    assert_eq!(l.stop(), 0);
    let mut start = Start::new(&dir, &["--engine", "epoll", "--backlog", "33"]);
    start.activate = Some(fd);
    let mut l = Lineage::start(start);
    assert_eq!(backlog(fd), 33, "--backlog given");
    assert_eq!(l.stop(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

every_engine! {
    #[test]
    fn an_inherited_socket_is_served_by_every_worker() {
        served_by_every_worker(ENGINE.name());
    }
}
