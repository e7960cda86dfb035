//! What the `uring` engine needs from the kernel, checked before any worker starts: ring
//! setup flags (SINGLE_ISSUER, DEFER_TASKRUN: Linux 6.1), the opcodes it submits, and
//! provided buffer rings (5.19). Multishot recv (6.0) has no probe bit, so the kernel version
//! stands in for it. A missing piece is named in one line with the alternatives.

use io_uring::{opcode, IoUring, Probe};

use crate::engine::availability::{explain, kernel_release};
use crate::error::Error;

/// Builds a ring with the engine's setup flags. COOP_TASKRUN is an optimisation, dropped if
/// the kernel refuses it together with DEFER_TASKRUN. With `sqpoll` (an idle time in ms), a
/// kernel thread polls the submission queue instead (DEFER_TASKRUN cannot go with it).
pub fn build_ring(sq: u32, cq: u32, sqpoll: Option<u32>) -> Result<IoUring, Error> {
    let _setup = crate::engine::availability::ring_setup_lock();
    let build = |coop: bool| {
        let mut b = IoUring::builder();
        b.setup_single_issuer().setup_cqsize(cq);
        match sqpoll {
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
        b.build(sq)
    };
    match build(true).or_else(|_| build(false)) {
        Ok(r) => Ok(r),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(missing(
            "io_uring setup flags SINGLE_ISSUER and DEFER_TASKRUN (Linux 6.1)",
        )),
        Err(e) => Err(explain(e)),
    }
}

/// Checks everything the engine needs, on a throwaway ring, including what `tuning` asks
/// for.
pub fn check(tuning: &crate::config::UringTuning) -> Result<(), Error> {
    let ring = build_ring(8, 16, None)?;
    if tuning.wait_batch > 1 && !ring.params().is_feature_min_timeout() {
        return Err(missing(
            "IORING_FEAT_MIN_TIMEOUT for --uring-wait-batch (Linux 6.12)",
        ));
    }
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|_| missing("IORING_REGISTER_PROBE (Linux 5.6)"))?;
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
            return Err(missing(name));
        }
    }
    // Provided buffer rings (5.19) are registered by each worker, which reports a failure
    // as a start error; multishot recv (6.0) cannot be probed, so the version stands in.
    if kernel_version() < (6, 0) {
        return Err(missing("multishot accept and recv (Linux 6.0)"));
    }
    Ok(())
}

fn missing(what: &str) -> Error {
    Error::UringFeature {
        missing: what.to_string(),
        kernel: kernel_release(),
    }
}

/// The running kernel's (major, minor).
pub(super) fn kernel_version() -> (u32, u32) {
    let release = kernel_release();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_has_what_the_engine_needs() {
        check(&crate::config::UringTuning::default())
            .expect("the uring engine must be usable on the test hosts");
        assert!(kernel_version() >= (6, 1));
    }

    #[test]
    fn missing_feature_names_alternatives() {
        let e = missing("X").to_string();
        assert!(
            e.contains("X") && e.contains("--engine tokio-uring") && e.contains("--engine epoll"),
            "{e}"
        );
    }
}
