//! `--config FILE` and `ringd check-config FILE` with the real binary: exit codes and one
//! line per problem, flags over the file, the example file in packaging/ holding every key,
//! and a live upgrade (SIGUSR2) reading the file again.

mod support;

use std::io::{Read, Write};
use std::process::Command;

use clap::CommandFactory;
use support::{Dir, Ringd};

fn ringd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ringd"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn hello(addr: std::net::SocketAddr) -> String {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(b"hi").unwrap();
    let mut got = String::new();
    c.read_to_string(&mut got).unwrap();
    got
}

#[test]
fn check_config_says_ok_or_one_line_per_problem() {
    let dir = Dir::new("check-config");
    let good = dir.write("good.toml", "protocol = \"http\"\nidle_timeout = \"5s\"\n");
    let out = ringd(&["check-config", &good]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{good}: OK\n")
    );
    let bad = dir.write(
        "bad.toml",
        "idle-timout = \"5s\"\nthreads = \"x\"\nbalance = \"random\"\n",
    );
    let out = ringd(&["check-config", &bad]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines.contains(&&*format!(
        "{bad}: idle-timout: unknown key (did you mean idle-timeout?)"
    )));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{bad}: threads: "))),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{bad}: balance: "))),
        "{err}"
    );
    let semantic = dir.write("proxy.toml", "upstream = [\"127.0.0.1:1\"]\n");
    let out = ringd(&["check-config", &semantic]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--upstream is for --protocol proxy"), "{err}");
    let out = ringd(&["check-config", "/nonexistent/ringd.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ringd(&["--config", &bad]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a file that does not check starts nothing"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean idle-timeout?"));
}

#[test]
fn the_example_file_holds_every_key_and_checks() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/ringd.toml");
    let out = ringd(&["check-config", path]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(path).unwrap();
    let keys: Vec<String> = text
        .lines()
        .map(|l| l.trim_start_matches("# ").replace('_', "-"))
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.trim().to_string()))
        .collect();
    for arg in ringd::config::cli::Args::command().get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if ["config", "help", "version"].contains(&long) {
            continue;
        }
        let in_file =
            keys.iter().any(|k| k == long) || (long == "upstream" && text.contains("[[upstream]]"));
        assert!(in_file, "packaging/ringd.toml lacks {long}");
    }
}

#[test]
fn flags_override_the_file() {
    let dir = Dir::new("precedence");
    let file = dir.write(
        "ringd.toml",
        "protocol = \"hello\"\ngreeting = \"from the file\"\nthreads = 1\nidle-timeout = \"7s\"\n\
         listen = \"127.0.0.1:0\"\n",
    );
    let r = Ringd::start(&["--config", &file, "--greeting", "from the flag"]);
    assert_eq!(hello(r.addr), "from the flag");
    let start = r.wait_log("listening on");
    assert!(
        start.contains("threads=1") && start.contains("idle_timeout=7s"),
        "{start}"
    );
    assert_eq!(r.stop(), 0);
}

#[test]
fn a_live_upgrade_reads_the_file_again() {
    let dir = Dir::new("upgrade-file");
    let text = |greeting: &str, buffer: &str| {
        format!(
            "protocol = \"hello\"\nlisten = \"127.0.0.1:0\"\nthreads = 1\nengine = \"epoll\"\n\
             greeting = \"{greeting}\"\nbuffer-size = \"{buffer}\"\n"
        )
    };
    let file = dir.write("ringd.toml", &text("one", "4KiB"));
    let pid_file = dir.0.join("ringd.pid");
    let mut r = Ringd::start(&["--config", &file, "--pid-file", pid_file.to_str().unwrap()]);
    assert_eq!(hello(r.addr), "one");
    dir.write("ringd.toml", &text("two", "8KiB"));
    let line = r.reload();
    assert!(
        line.contains("buffer-size") && line.contains("SIGUSR2"),
        "{line}"
    );
    assert_eq!(hello(r.addr), "one", "a refused reload changes nothing");
    r.signal(libc::SIGUSR2);
    r.wait_log("handed over to pid");
    assert_eq!(hello(r.addr), "two", "the successor read the file again");
    let successor: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(successor as u32, r.child.id());
    assert_eq!(r.child.wait().unwrap().code(), Some(0));
    // SAFETY: kill(2) on the successor this test's ringd started (it names itself in the
    // pid file once it serves).
    assert_eq!(unsafe { libc::kill(successor, libc::SIGTERM) }, 0);
    support::wait_until("the successor to exit", || !pid_file.exists());
}
