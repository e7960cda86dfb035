//! The engine loadgen picks when the kernel refuses io_uring: the binary runs under a
//! seccomp filter, installed in the child before exec, that fails `io_uring_setup` with
//! EPERM and allows everything else. With no `--engine` it says so in one line and runs on
//! epoll; `--engine uring` is one line and exit status 2. Nothing machine-wide changes.

mod common;

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use ringd::ProtocolKind;

/// `struct seccomp_data`: the syscall number, then the architecture.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// io_uring_setup fails with EPERM (as under a container's seccomp profile); every other
/// call, and every call of another architecture, is allowed.
fn no_io_uring() -> Vec<libc::sock_filter> {
    vec![
        insn(BPF_LD_W_ABS, 0, 0, ARCH_OFFSET),
        insn(BPF_JEQ_K, 0, 3, AUDIT_ARCH),
        insn(BPF_LD_W_ABS, 0, 0, NR_OFFSET),
        insn(BPF_JEQ_K, 0, 1, libc::SYS_io_uring_setup as u32),
        insn(
            BPF_RET_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        insn(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Runs the loadgen binary with `args`, io_uring refused by seccomp when `refused`.
fn loadgen(args: &[&str], refused: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    cmd.args(args);
    if refused {
        // Leaked: the child's copy must stay valid until it execs; a test leaks it once.
        let filter: &'static [libc::sock_filter] = no_io_uring().leak();
        // SAFETY: between fork and exec the closure only makes two prctl calls, which are
        // async-signal-safe, with a program that points into the leaked, never freed
        // `filter` (the kernel copies it).
        unsafe {
            cmd.pre_exec(move || {
                let prog = libc::sock_fprog {
                    len: filter.len() as u16,
                    filter: filter.as_ptr().cast_mut(),
                };
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || libc::prctl(
                        libc::PR_SET_SECCOMP,
                        libc::SECCOMP_MODE_FILTER,
                        &prog as *const libc::sock_fprog,
                    ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.output().expect("loadgen runs")
}

/// What loadgen printed on stderr before its report (whose first line names the engine).
fn notices(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .take_while(|l| !(l.starts_with("loadgen ") && l.contains(" | ")))
        .map(str::to_owned)
        .collect()
}

/// The engine a run reports in its JSON.
fn engine_of(out: &Output) -> String {
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    json["config"]["engine"].as_str().unwrap().to_owned()
}

fn short_run(addr: &str) -> Vec<&str> {
    vec![
        addr, "-q", "-c", "2", "-t", "1", "-n", "50", "--warmup", "0", "--json", "-",
    ]
}

#[test]
fn with_io_uring_allowed_no_engine_picks_uring() {
    let server = common::ringd(ProtocolKind::Echo);
    let addr = server.local_addr().to_string();
    let out = loadgen(&short_run(&addr), false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        engine_of(&out),
        "uring",
        "io_uring must work on this kernel"
    );
    assert!(notices(&out).is_empty(), "{:?}", notices(&out));
}

#[test]
fn io_uring_refused_and_no_engine_runs_on_epoll_with_one_line() {
    let server = common::ringd(ProtocolKind::Echo);
    let addr = server.local_addr().to_string();
    let out = loadgen(&short_run(&addr), true);
    let lines = notices(&out);
    assert!(out.status.success(), "{lines:?}");
    assert_eq!(engine_of(&out), "epoll");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("io_uring unavailable") && lines[0].contains("using epoll"),
        "{lines:?}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["requests"].as_u64(), Some(50), "{json}");
}

#[test]
fn io_uring_refused_and_asked_for_is_one_line_and_status_2() {
    let server = common::ringd(ProtocolKind::Echo);
    let addr = server.local_addr().to_string();
    let mut args = short_run(&addr);
    args.extend(["--engine", "uring"]);
    let out = loadgen(&args, true);
    let lines = notices(&out);
    assert_eq!(out.status.code(), Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("--engine uring"), "{lines:?}");
    assert!(out.stdout.is_empty());
}
