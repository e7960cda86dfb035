//! Time for the event loops: CLOCK_MONOTONIC in nanoseconds (a vDSO call, no syscall), and a
//! timerfd armed at absolute times so an open-loop schedule wakes the loop to the nanosecond
//! instead of to the millisecond of an `epoll_wait` timeout.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Nanoseconds on CLOCK_MONOTONIC.
#[inline]
pub fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Nanoseconds on CLOCK_REALTIME: the clock of the kernel's receive stamps.
#[inline]
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Nanoseconds on `clock`, one that always exists on Linux.
#[inline]
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; callers pass clocks Linux always has.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A non-blocking timerfd on CLOCK_MONOTONIC, armed at absolute times.
#[derive(Debug)]
pub struct Timer {
    fd: OwnedFd,
    /// The time it is armed for (0: disarmed).
    armed: u64,
}

impl Timer {
    /// Creates a disarmed timer.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain system call with constant flags; the result is checked below.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: timerfd_create returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Timer { fd, armed: 0 })
    }

    /// Makes sure the timer fires no later than `at` (ns on CLOCK_MONOTONIC).
    pub fn arm_by(&mut self, at: u64) -> io::Result<()> {
        if self.armed != 0 && self.armed <= at {
            return Ok(());
        }
        let at = at.max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at / 1_000_000_000) as libc::time_t,
                tv_nsec: (at % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec and the fd is a timerfd we own.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = at;
        Ok(())
    }

    /// Consumes an expiry after the fd became readable; the timer is then disarmed.
    pub fn fired(&mut self) {
        let mut buf = [0u8; 8];
        // SAFETY: reading 8 bytes into an 8-byte buffer from a timerfd we own.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
        self.armed = 0;
    }
}

impl AsFd for Timer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Lowers this thread's timer slack to 1 ns so timeouts are not rounded up by 50 µs.
pub fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and affects only this thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
}

/// CPU seconds (user + system) this process has used.
pub fn process_cpu_secs() -> f64 {
    // SAFETY: an all-zero rusage is valid and getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid for writes.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Nanoseconds the calling thread has spent on a CPU or runnable and waiting for one, from
/// /proc/thread-self/schedstat (run time + run-queue wait). A thread starved of CPU by
/// another process is as much the limit as one that computes all the time, and only the
/// wait shows it. Without schedstat (a kernel built without it): the thread's CPU time.
pub fn thread_busy_ns() -> u64 {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").ok();
    let parsed = schedstat.and_then(|s| {
        let mut f = s.split_whitespace().map(|v| v.parse::<u64>().ok());
        Some(f.next()?? + f.next()??)
    });
    parsed.unwrap_or_else(|| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; the thread CPU clock always exists.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    })
}

/// CPU seconds (utime + stime) of another process, from /proc/PID/stat.
pub fn pid_cpu_secs(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("malformed /proc stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15 (1-based).
    let ticks = |i: usize| -> io::Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| io::Error::other("malformed /proc stat"))
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(11)? + ticks(12)?) / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_moves_forward() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a && a > 0);
    }

    #[test]
    fn own_cpu_time_is_readable_both_ways() {
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(process_cpu_secs() > 0.0);
        assert!(pid_cpu_secs(std::process::id()).unwrap() >= 0.0);
        assert!(pid_cpu_secs(u32::MAX).is_err());
    }

    #[test]
    fn a_spinning_thread_is_busy_and_a_sleeping_one_is_not() {
        let (b0, w0) = (thread_busy_ns(), now_ns());
        while now_ns() - w0 < 50_000_000 {
            std::hint::spin_loop();
        }
        let spun = thread_busy_ns() - b0;
        let (b1, w1) = (thread_busy_ns(), now_ns());
        std::thread::sleep(std::time::Duration::from_millis(50));
        let slept = thread_busy_ns() - b1;
        let wall = now_ns() - w1;
        assert!(spun >= 40_000_000, "{spun}");
        assert!(slept < wall / 2, "{slept} of {wall}");
    }

    #[test]
    fn timer_fires_at_absolute_time() {
        let mut t = Timer::new().unwrap();
        let at = now_ns() + 2_000_000;
        t.arm_by(at).unwrap();
        let mut pfd = libc::pollfd {
            fd: t.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 1000) };
        assert_eq!(n, 1);
        assert!(now_ns() >= at);
        t.fired();
    }
}
