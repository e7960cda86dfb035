//! Live upgrade, the predecessor's side: start the successor — the executable at the path
//! this ringd was started from, with the same arguments — with every listening socket at
//! descriptors 3, 4, … (systemd's `LISTEN_FDS` protocol, read back by
//! [`crate::process::activation`]) and a pipe to report readiness on, then wait for that report.
//!
//! The path is the one ringd was started from (`argv[0]`, made absolute at start), not
//! `/proc/self/exe`: after a rebuild that link names the old, deleted file, while the path
//! names the new build.
//!
//! The successor is started with fork and exec from a process with many threads: between
//! the two the child may only make async-signal-safe calls, so everything it needs (argument
//! and environment arrays, descriptor lists) is prepared before the fork, and `LISTEN_PID`,
//! which must hold the child's own pid, is written in place into a buffer reserved for it.
//!
//! The successor leads a process group of its own: when it fails, whatever it started (a
//! wrapper script's ringd, or anything a script left behind) is stopped with it.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::process::activation::{self, FIRST_FD};

/// How ringd was started: what a successor runs.
#[derive(Debug, Clone)]
pub struct Executable {
    /// The executable's absolute path (symbolic links kept, so that a link switched to a
    /// new release is followed).
    pub path: PathBuf,
    /// The arguments, `argv[0]` included.
    pub args: Vec<OsString>,
}

impl Executable {
    /// This process's executable and arguments. Call it at start, before anything changes
    /// the working directory.
    pub fn current() -> io::Result<Executable> {
        let args: Vec<OsString> = std::env::args_os().collect();
        let argv0 = args.first().cloned().unwrap_or_default();
        let path = resolve(Path::new(&argv0))
            .or_else(|| std::fs::read_link("/proc/self/exe").ok())
            .ok_or_else(|| io::Error::other("cannot tell which executable ringd runs"))?;
        Ok(Executable { path, args })
    }
}

/// `argv[0]` as the shell resolved it: a path with a slash is relative to the working
/// directory; a bare name was found on `PATH`.
fn resolve(argv0: &Path) -> Option<PathBuf> {
    if argv0.as_os_str().is_empty() {
        return None;
    }
    if argv0.as_os_str().as_bytes().contains(&b'/') {
        return Some(std::env::current_dir().ok()?.join(argv0));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(argv0))
        .find(|p| p.is_file())
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                std::env::current_dir().map_or(p.clone(), |d| d.join(&p))
            }
        })
}

/// A successor that was started and has not reported yet.
#[derive(Debug)]
pub struct Successor {
    /// Its pid, and the id of the process group it leads.
    pid: libc::pid_t,
    /// The read end of its readiness pipe.
    ready: File,
    /// The write end of the pipe it reads the counters to carry on from; `None` once they
    /// were sent.
    counters: Option<File>,
    /// Reaped already.
    reaped: bool,
}

/// How the wait for a successor ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Readiness {
    /// It reported that all its workers are up.
    Ready,
    /// It closed the pipe (exited, most likely) without reporting.
    Closed,
    /// The deadline passed.
    TimedOut,
    /// The caller gave up waiting (the process is stopping).
    Aborted,
}

/// Everything the child needs between fork and exec, prepared before the fork.
struct ChildPlan {
    /// The executable.
    path: CString,
    /// `argv`, NULL-terminated; points into `_strings`.
    argv: Vec<*const libc::c_char>,
    /// `envp`, NULL-terminated; points into `_strings` and `pid_var`.
    envp: Vec<*const libc::c_char>,
    /// The storage `argv` and `envp` point into.
    _strings: Vec<CString>,
    /// `LISTEN_PID=` followed by room for the pid and its NUL (written through `pid_slot`).
    _pid_var: Vec<u8>,
    /// The descriptors to pass, in order: they become 3, 4, ….
    fds: Vec<RawFd>,
    /// Room for their temporary copies.
    scratch: Vec<RawFd>,
    /// Where to report an exec failure (errno, 4 bytes).
    err_w: RawFd,
}

/// The successor's environment: this process's, without the variables of socket activation
/// and upgrades, then those of this upgrade (the sockets named `names`, in order).
fn successor_env(names: &[&str], upgrades: u64) -> io::Result<Vec<CString>> {
    let k = names.len() as RawFd;
    let extra = [
        ("LISTEN_FDS", k.to_string()),
        ("LISTEN_FDNAMES", names.join(":")),
        (activation::READY_FD, (FIRST_FD + k).to_string()),
        (activation::COUNTERS_FD, (FIRST_FD + k + 1).to_string()),
        (activation::UPGRADE_FROM, std::process::id().to_string()),
        (activation::UPGRADES, upgrades.to_string()),
    ];
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(name, _)| !activation::VARIABLES.iter().any(|v| OsStr::new(v) == name))
        .filter_map(|(name, value)| {
            let mut kv = name.into_vec();
            kv.push(b'=');
            kv.extend(value.into_vec());
            CString::new(kv).ok()
        })
        .collect();
    for (name, value) in extra {
        env.push(CString::new(format!("{name}={value}")).map_err(io::Error::other)?);
    }
    Ok(env)
}

impl ChildPlan {
    /// Everything the child of a fork needs to exec `exe` with `env`, passing `fds`, prepared
    /// before the fork; and where the child writes its pid into `LISTEN_PID=`.
    fn new(
        exe: &Executable,
        env: Vec<CString>,
        fds: Vec<RawFd>,
        err_w: RawFd,
    ) -> io::Result<(ChildPlan, *mut u8)> {
        let args: Vec<CString> = exe
            .args
            .iter()
            .map(|a| CString::new(a.clone().into_vec()))
            .collect::<Result<_, _>>()
            .map_err(io::Error::other)?;
        let mut pid_var = PID_PREFIX.to_vec();
        pid_var.extend_from_slice(&[b'0'; 12]);
        pid_var.push(0);
        // The child writes its pid through this pointer and the exec reads the variable
        // through `envp`: one pointer for both. The Vec's heap buffer does not move when the
        // Vec does.
        let pid_slot = pid_var.as_mut_ptr();
        let mut envp: Vec<*const libc::c_char> = env.iter().map(|s| s.as_ptr()).collect();
        envp.push(pid_slot.cast_const().cast());
        envp.push(std::ptr::null());
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|s| s.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut strings = env;
        strings.extend(args);
        let scratch = vec![-1; fds.len()];
        let plan = ChildPlan {
            path: CString::new(exe.path.as_os_str().as_bytes()).map_err(io::Error::other)?,
            argv,
            envp,
            _strings: strings,
            _pid_var: pid_var,
            fds,
            scratch,
            err_w,
        };
        Ok((plan, pid_slot))
    }
}

/// Where `LISTEN_PID=` ends in [`ChildPlan::pid_var`].
const PID_PREFIX: &[u8] = b"LISTEN_PID=";

/// Starts the successor with `sockets` (named as in `LISTEN_FDNAMES`) and the upgrade count
/// it starts from. Fails if it cannot be executed.
pub fn spawn(
    exe: &Executable,
    sockets: &[(OwnedFd, &'static str)],
    upgrades: u64,
) -> io::Result<Successor> {
    let (ready_r, ready_w) = pipe()?;
    let (counters_r, counters_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let mut fds: Vec<RawFd> = sockets.iter().map(|(fd, _)| fd.as_raw_fd()).collect();
    fds.push(ready_w.as_raw_fd());
    fds.push(counters_r.as_raw_fd());
    let names: Vec<&str> = sockets.iter().map(|(_, n)| *n).collect();
    let env = successor_env(&names, upgrades)?;
    let (mut plan, pid_slot) = ChildPlan::new(exe, env, fds, err_w.as_raw_fd())?;
    // SAFETY: fork(2) has no preconditions; the child runs only `exec_child`, which makes
    // async-signal-safe calls and touches only memory prepared above.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the child of a fork: `plan` and `pid_slot` were prepared before it and
        // are not used by any other thread here (there is none).
        unsafe { exec_child(&mut plan, pid_slot) }
    }
    // The child joins its own group too; whichever runs first wins, so that the group exists
    // before anything signals it. EACCES after the child's exec is harmless.
    // SAFETY: setpgid(2) on our own child, not yet reaped.
    unsafe { libc::setpgid(pid, pid) };
    drop(ready_w);
    drop(counters_r);
    drop(err_w);
    let mut successor = Successor {
        pid,
        ready: File::from(ready_r),
        counters: Some(File::from(counters_w)),
        reaped: false,
    };
    // The error pipe closes on a successful exec; an errno arrives if it failed.
    let mut errno = [0u8; 4];
    let mut err_r = File::from(err_r);
    match read_full(&mut err_r, &mut errno) {
        Ok(4) => {
            successor.reap_blocking();
            Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
        }
        _ => Ok(successor),
    }
}

/// The child's path from fork to exec. Only async-signal-safe calls; no allocation.
///
/// # Safety
/// Call only in the child of a fork, with a plan prepared before it.
unsafe fn exec_child(plan: &mut ChildPlan, pid_slot: *mut u8) -> ! {
    // SAFETY: each call is async-signal-safe (setpgid, sigprocmask, signal, fcntl, dup2,
    // getpid, syscall(close_range), execve, write, _exit), nothing allocates, and every
    // pointer is into memory the plan owns: `pid_slot` has room for `PID_PREFIX`, 12 digits
    // and a NUL.
    unsafe {
        libc::setpgid(0, 0);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let base = FIRST_FD + plan.fds.len() as RawFd;
        // Copies above the target range first, so that placing one descriptor never
        // overwrites another still to be placed (or the error pipe).
        let err = libc::fcntl(plan.err_w, libc::F_DUPFD_CLOEXEC, base);
        if err < 0 {
            libc::_exit(126);
        }
        for (src, tmp) in plan.fds.iter().zip(plan.scratch.iter_mut()) {
            *tmp = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, base);
            if *tmp < 0 {
                fail(err);
            }
        }
        for (target, tmp) in (FIRST_FD..).zip(plan.scratch.iter()) {
            // dup2 leaves the new descriptor without close-on-exec: it is inherited.
            if libc::dup2(*tmp, target) < 0 {
                fail(err);
            }
        }
        // Everything else this process holds is closed by the exec: most descriptors are
        // close-on-exec already; this makes sure of it. Failure (old kernel) is harmless.
        libc::syscall(
            libc::SYS_close_range,
            base as u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        // LISTEN_PID=<this pid>.
        let mut pid = libc::getpid() as u32;
        let mut digits = [0u8; 12];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (pid % 10) as u8;
            n += 1;
            pid /= 10;
            if pid == 0 || n == digits.len() {
                break;
            }
        }
        let mut at = pid_slot.add(PID_PREFIX.len());
        while n > 0 {
            n -= 1;
            *at = digits[n];
            at = at.add(1);
        }
        *at = 0;
        libc::execve(plan.path.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
        fail(err)
    }
}

/// Reports errno on `err` and exits; for the child only.
///
/// # Safety
/// Call only in the child of a fork.
unsafe fn fail(err: RawFd) -> ! {
    // SAFETY: errno location, write and _exit are async-signal-safe; the buffer is on the
    // stack.
    unsafe {
        let errno = (*libc::__errno_location()).to_ne_bytes();
        libc::write(err, errno.as_ptr().cast(), errno.len());
        libc::_exit(127)
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are fresh descriptors nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads until `buf` is full or EOF; how many bytes.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(m) => n += m,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// How long a successor may take to read the counters it carries on from.
const COUNTERS_WRITE_LIMIT: Duration = Duration::from_secs(2);

impl Successor {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Sends the counters it carries on from (a snapshot's text) and closes the pipe: the
    /// end of the snapshot is the end of the pipe. Once only; later calls do nothing. A
    /// successor that does not read it (one that predates the snapshot) cannot hold this
    /// process up: the write gives up after [`COUNTERS_WRITE_LIMIT`].
    pub fn send_counters(&mut self, text: &str) -> io::Result<()> {
        let Some(mut pipe) = self.counters.take() else {
            return Ok(());
        };
        // SAFETY: fcntl(2) on a descriptor this process owns (the pipe's write end).
        unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        let deadline = Instant::now() + COUNTERS_WRITE_LIMIT;
        let mut rest = text.as_bytes();
        while !rest.is_empty() {
            match pipe.write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Waits until it reports ready, closes the pipe, `deadline` passes, or `abort` says to
    /// stop waiting (checked every 100 ms).
    pub fn wait_ready(&mut self, deadline: Instant, abort: impl Fn() -> bool) -> Readiness {
        loop {
            if abort() {
                return Readiness::Aborted;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Readiness::TimedOut;
            };
            let mut pfd = libc::pollfd {
                fd: self.ready.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.min(Duration::from_millis(100)).as_millis() as libc::c_int;
            // SAFETY: poll(2) on one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, ms.max(1)) };
            if n <= 0 {
                continue;
            }
            let mut byte = [0u8; 1];
            return match read_full(&mut self.ready, &mut byte) {
                Ok(1) => Readiness::Ready,
                _ => Readiness::Closed,
            };
        }
    }

    /// Its exit status if it has exited within `grace`. What is left of its process group
    /// (a wrapper script's children) is killed before it is reaped: until then its pid, the
    /// group's id, cannot be reused by another process.
    pub fn exited_within(&mut self, grace: Duration) -> Option<String> {
        let deadline = Instant::now() + grace;
        loop {
            // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: waitid(2) on our own child, not yet reaped; WNOWAIT leaves it unreaped.
            let r = unsafe {
                libc::waitid(
                    libc::P_PID,
                    self.pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                )
            };
            if r < 0 {
                self.reaped = true;
                return Some("is gone".into());
            }
            // SAFETY: waitid filled `info` (si_pid stays 0 when no child has exited).
            if unsafe { info.si_pid() } == self.pid {
                self.signal_group(libc::SIGKILL);
                return Some(self.reap_blocking());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops it and its process group: SIGTERM (ringd drains like any ringd), then SIGKILL
    /// if it has not exited within `grace`; reaps it. How it ended.
    pub fn terminate(&mut self, grace: Duration) -> String {
        if let Some(status) = self.exited_within(Duration::ZERO) {
            return status;
        }
        self.signal_group(libc::SIGTERM);
        if let Some(status) = self.exited_within(grace) {
            return status;
        }
        self.signal_group(libc::SIGKILL);
        self.reap_blocking()
    }

    /// Sends `sig` to every process of its group, and to it (a successor that reported
    /// ready has rejoined ours and left its group). An empty group is no error.
    fn signal_group(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the group our own child leads and on the child; it is not
        // reaped, so no other process or group can have taken its id.
        unsafe {
            libc::kill(-self.pid, sig);
            libc::kill(self.pid, sig);
        }
    }

    fn reap_blocking(&mut self) -> String {
        let mut status = 0;
        loop {
            // SAFETY: waitpid(2) on our own child, not yet reaped.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                break;
            }
            if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break;
            }
        }
        self.reaped = true;
        describe(status)
    }
}

/// A wait status in words.
fn describe(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("was killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("ended with wait status {status}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv0_resolution() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(resolve(Path::new("./x/ringd")), Some(cwd.join("./x/ringd")));
        assert_eq!(
            resolve(Path::new("/usr/bin/ringd")),
            Some(PathBuf::from("/usr/bin/ringd"))
        );
        assert_eq!(resolve(Path::new("")), None);
        // A bare name is looked up on PATH (sh is on every PATH this runs with).
        let sh = resolve(Path::new("sh")).unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{sh:?}");
    }

    #[test]
    fn a_missing_executable_is_an_error_not_a_child() {
        let exe = Executable {
            path: PathBuf::from("/nonexistent/ringd"),
            args: vec!["ringd".into()],
        };
        let err = spawn(&exe, &[], 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn the_child_gets_the_sockets_at_three_and_its_own_pid() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = OwnedFd::from(l.try_clone().unwrap());
        // The child lists its descriptors and environment, then reports "ready".
        let script = r#"ls /proc/$$/fd | sort -n | tr '\n' ' '; echo; echo "pid=$$ $LISTEN_PID $LISTEN_FDS $LISTEN_FDNAMES $RINGD_READY_FD $RINGD_COUNTERS_FD $RINGD_UPGRADES"; readlink /proc/$$/fd/3; printf r >&4; cat <&5"#;
        let out = std::env::temp_dir().join(format!("ringd-upgrade-test-{}", std::process::id()));
        let exe = Executable {
            path: PathBuf::from("/bin/sh"),
            args: vec![
                "sh".into(),
                "-c".into(),
                format!("exec >{} 2>&1; {script}", out.display()).into(),
            ],
        };
        let mut s = spawn(&exe, &[(fd, "listen")], 7).unwrap();
        let ready = s.wait_ready(Instant::now() + Duration::from_secs(10), || false);
        assert_eq!(ready, Readiness::Ready);
        s.send_counters("counters\n").unwrap();
        let status = s.exited_within(Duration::from_secs(10)).unwrap();
        assert_eq!(status, "exited with status 0");
        let text = std::fs::read_to_string(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        let lines: Vec<&str> = text.lines().collect();
        // 0, 1, 2, the socket, the ready pipe and the counters pipe; the shell's own (255
        // for ls's directory, …) may come after.
        assert!(lines[0].starts_with("0 1 2 3 4 5 "), "{text}");
        let pid = s.pid();
        assert_eq!(
            lines[1],
            format!("pid={pid} {pid} 1 listen 4 5 7"),
            "{text}"
        );
        let ino = std::fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd())).unwrap();
        assert_eq!(lines[2], ino.display().to_string());
        assert_eq!(lines[3], "counters", "{text}");
    }
}
