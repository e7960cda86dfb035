//! io_uring availability: checked once before any worker starts, so that a kernel without
//! io_uring, `kernel.io_uring_disabled` or a seccomp filter gives one clear line instead of a
//! failure deep inside a worker.

use std::collections::HashSet;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard};

use crate::error::Error;

/// Held while ringd creates or probes an io_uring instance, so that a worker can tell which
/// new ring descriptor is the one its runtime made (see [`io_uring_fds`]).
static RING_SETUP: Mutex<()> = Mutex::new(());

/// Serialises io_uring setup in this process (poisoning is harmless: the lock guards no data).
pub fn ring_setup_lock() -> MutexGuard<'static, ()> {
    RING_SETUP.lock().unwrap_or_else(|p| p.into_inner())
}

/// The descriptors of this process that are io_uring instances.
pub fn io_uring_fds() -> HashSet<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return HashSet::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let target = std::fs::read_link(e.path()).ok()?;
        (target.as_os_str() == "anon_inode:[io_uring]")
            .then(|| e.file_name().to_str()?.parse().ok())?
    })
    .collect()
}

/// Tries to create a tiny ring.
pub fn check_io_uring() -> Result<(), Error> {
    let _setup = ring_setup_lock();
    io_uring::IoUring::new(2).map(drop).map_err(explain)
}

/// Turns a ring setup error into an [`Error::IoUringUnavailable`] that names the cause.
pub fn explain(err: io::Error) -> Error {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .map(|s| s.trim().to_string());
    let reason = match (err.raw_os_error(), disabled.as_deref()) {
        (Some(libc::ENOSYS), _) => {
            format!("this kernel ({}) has no io_uring support", kernel_release())
        }
        (Some(libc::EPERM), Some(v)) if v != "0" => {
            format!("kernel.io_uring_disabled is {v} (set it to 0 to allow io_uring)")
        }
        (Some(libc::EPERM), _) => {
            "io_uring_setup was denied (a seccomp profile or container policy blocks it)".into()
        }
        (Some(libc::ENOMEM), _) => {
            "not enough locked memory for the ring (raise RLIMIT_MEMLOCK)".into()
        }
        _ => format!("io_uring_setup failed: {err}"),
    };
    Error::IoUringUnavailable { reason }
}

/// The running kernel's release string.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_uring_is_available_here() {
        // The test hosts have io_uring enabled; fail loudly if not.
        check_io_uring().expect("io_uring must be available to test the io_uring engines");
    }

    #[test]
    fn explanations_name_the_fix() {
        let e = explain(io::Error::from_raw_os_error(libc::ENOSYS)).to_string();
        assert!(
            e.contains("no io_uring support") && e.ends_with("use --engine epoll"),
            "{e}"
        );
        let e = explain(io::Error::from_raw_os_error(libc::EPERM)).to_string();
        assert!(e.contains("use --engine epoll"), "{e}");
    }
}
