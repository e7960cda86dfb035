//! Ring setup and what the kernel offers: the setup flags every driver ring uses
//! (SINGLE_ISSUER with DEFER_TASKRUN and COOP_TASKRUN, or SQPOLL), the opcodes a networking
//! user needs, and the features that have no probe bit of their own.

use io_uring::{opcode, IoUring, Probe};

use crate::sqe::with_total_len;

/// Queue sizes and the submission mode of a ring.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// Submission queue entries.
    pub sq: u32,
    /// Completion queue entries.
    pub cq: u32,
    /// A kernel thread polls the submission queue, idling after this many milliseconds
    /// (DEFER_TASKRUN cannot go with it).
    pub sqpoll: Option<u32>,
}

/// Why a ring cannot be had.
#[derive(Debug)]
pub enum SetupError {
    /// The kernel lacks this (a sentence naming it and the Linux release that brought it).
    Missing(&'static str),
    /// Setting up failed for another reason (`io_uring_disabled`, seccomp, memory).
    Os(std::io::Error),
}

/// What this kernel's io_uring does beyond the minimum, found once per ring.
#[derive(Debug, Clone, Copy, Default)]
pub struct Features {
    /// A multishot recv can be capped to a total length (`sqe->optlen`, Linux 6.17).
    pub recv_total_limit: bool,
    /// A wait can ask for a batch with a minimum wait time (Linux 6.12).
    pub min_timeout: bool,
}

/// Builds a ring. COOP_TASKRUN is an optimisation, dropped if the kernel refuses it beside
/// DEFER_TASKRUN.
pub fn build(setup: Setup) -> Result<IoUring, SetupError> {
    let build = |coop: bool| {
        let mut b = IoUring::builder();
        b.setup_single_issuer().setup_cqsize(setup.cq);
        match setup.sqpoll {
            Some(idle) => {
                b.setup_sqpoll(idle);
            }
            None => {
                b.setup_defer_taskrun();
            }
        }
        if coop {
            b.setup_coop_taskrun();
        }
        b.build(setup.sq)
    };
    match build(true).or_else(|_| build(false)) {
        Ok(r) => Ok(r),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(SetupError::Missing(
            "io_uring setup flags SINGLE_ISSUER and DEFER_TASKRUN (Linux 6.1)",
        )),
        Err(e) => Err(SetupError::Os(e)),
    }
}

/// Checks, on a throwaway ring, that the kernel has the networking opcodes, multishot
/// accept and recv, and (`min_timeout`) batched waits with a minimum wait time.
pub fn check(min_timeout: bool) -> Result<(), SetupError> {
    let ring = build(Setup {
        sq: 8,
        cq: 16,
        sqpoll: None,
    })?;
    if min_timeout && !ring.params().is_feature_min_timeout() {
        return Err(SetupError::Missing(
            "IORING_FEAT_MIN_TIMEOUT for batched waits (Linux 6.12)",
        ));
    }
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|_| SetupError::Missing("IORING_REGISTER_PROBE (Linux 5.6)"))?;
    for (code, name) in [
        (opcode::Accept::CODE, "IORING_OP_ACCEPT"),
        (opcode::Recv::CODE, "IORING_OP_RECV"),
        (opcode::Send::CODE, "IORING_OP_SEND"),
        (opcode::Close::CODE, "IORING_OP_CLOSE"),
        (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
        (opcode::Timeout::CODE, "IORING_OP_TIMEOUT"),
        (opcode::Shutdown::CODE, "IORING_OP_SHUTDOWN"),
    ] {
        if !probe.is_supported(code) {
            return Err(SetupError::Missing(name));
        }
    }
    // Multishot recv (6.0) has no probe bit: the version stands in for it.
    if kernel_version() < (6, 0) {
        return Err(SetupError::Missing("multishot accept and recv (Linux 6.0)"));
    }
    Ok(())
}

/// The running kernel's (major, minor).
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

impl Features {
    /// Probes `ring`; call before anything else is in flight on it.
    pub(crate) fn probe(ring: &mut IoUring) -> Self {
        Features {
            recv_total_limit: recv_total_limit(ring),
            min_timeout: ring.params().is_feature_min_timeout(),
        }
    }
}

/// True when the kernel ends a multishot recv by itself once it has delivered a total
/// length. Asked of `ring` itself: a kernel without it refuses the field when the request
/// is prepared (`EINVAL`), one with it gets as far as looking up the descriptor (`EBADF`
/// for -1).
fn recv_total_limit(ring: &mut IoUring) -> bool {
    const PROBE: u64 = u64::MAX - 1;
    let sqe = with_total_len(
        opcode::RecvMulti::new(io_uring::types::Fd(-1), 0).build(),
        1,
    )
    .user_data(PROBE);
    // SAFETY: the SQE names no memory (no buffer address; the kernel would pick a provided
    // buffer, and the request fails before it could).
    if unsafe { ring.submission().push(&sqe) }.is_err() || ring.submit_and_wait(1).is_err() {
        return false;
    }
    let res = ring
        .completion()
        .find(|c| c.user_data() == PROBE)
        .map(|c| c.result());
    matches!(res, Some(r) if r != -libc::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> IoUring {
        build(Setup {
            sq: 8,
            cq: 16,
            sqpoll: None,
        })
        .expect("io_uring must be usable on the test hosts")
    }

    #[test]
    fn this_kernel_has_what_a_networking_ring_needs() {
        check(false).expect("the kernel must have the networking opcodes");
        assert!(kernel_version() >= (6, 1));
    }

    #[test]
    fn the_recv_cap_is_found_where_the_kernel_has_it() {
        let version = kernel_version();
        assert_eq!(
            Features::probe(&mut ring()).recv_total_limit,
            version >= (6, 17),
            "Linux {version:?}: the probe disagrees with the version that brought the cap (6.17)",
        );
    }
}
