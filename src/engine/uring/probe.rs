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

/// True when the kernel can end a multishot recv by itself once it has delivered a total
/// length (`sqe->optlen`, Linux 6.17). Asked of `ring` itself: a kernel without it refuses
/// the field when the request is prepared (`EINVAL`), one with it gets as far as looking up
/// the descriptor (`EBADF` for -1). Call before anything else is in flight on `ring`.
pub fn recv_total_limit(ring: &mut IoUring) -> bool {
    const PROBE: u64 = u64::MAX;
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

/// Offset of the 32-bit union `splice_fd_in` / `file_index` / `optlen` in the kernel's
/// `struct io_uring_sqe` (uapi, fixed since the SQE got its 64-byte layout).
const SQE_OPTLEN_OFFSET: usize = 44;

/// A multishot recv `sqe` that ends (a completion without `IORING_CQE_F_MORE`) once it
/// has delivered `len` bytes; the last buffer it fills may take it past `len`. The
/// `io-uring` crate has no builder method for this field.
pub fn with_total_len(mut sqe: io_uring::squeue::Entry, len: u32) -> io_uring::squeue::Entry {
    const _: () = assert!(std::mem::size_of::<io_uring::squeue::Entry>() == 64);
    let p: *mut io_uring::squeue::Entry = &mut sqe;
    // SAFETY: `squeue::Entry` is `#[repr(C)]` around the kernel's 64-byte `io_uring_sqe`
    // (size checked above); bytes 44..48 are the `optlen` union member, inside it, and an
    // unaligned write of a `u32` there is valid for any bit pattern of the field.
    unsafe {
        p.cast::<u8>()
            .add(SQE_OPTLEN_OFFSET)
            .cast::<u32>()
            .write_unaligned(len)
    };
    sqe
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
    fn total_len_lands_in_the_optlen_field() {
        // The crate writes `file_index` (the same union) at the offset the kernel reads.
        let slot = io_uring::types::DestinationSlot::try_from_slot_target(6).unwrap();
        let sqe = opcode::Socket::new(libc::AF_INET, libc::SOCK_STREAM, 0)
            .file_index(Some(slot))
            .build();
        let raw = |e: &io_uring::squeue::Entry| {
            // SAFETY: a 64-byte `#[repr(C)]` plain-data struct read as bytes.
            unsafe { std::mem::transmute_copy::<_, [u8; 64]>(e) }
        };
        assert_eq!(raw(&sqe)[SQE_OPTLEN_OFFSET..][..4], 7u32.to_ne_bytes());
        let recv = opcode::RecvMulti::new(io_uring::types::Fd(3), 0).build();
        let capped = with_total_len(recv.clone(), 4096);
        assert_eq!(
            raw(&capped)[SQE_OPTLEN_OFFSET..][..4],
            4096u32.to_ne_bytes()
        );
        let (a, b) = (raw(&recv), raw(&capped));
        let changed: Vec<usize> = (0..64).filter(|&i| a[i] != b[i]).collect();
        assert!(changed.iter().all(|i| (44..48).contains(i)), "{changed:?}");
    }

    #[test]
    fn the_recv_cap_is_found_where_the_kernel_has_it() {
        let mut ring = build_ring(8, 16, None).expect("a ring");
        assert_eq!(
            recv_total_limit(&mut ring),
            kernel_version() >= (6, 17),
            "Linux {}: the probe disagrees with the version that brought the cap (6.17)",
            kernel_release()
        );
    }

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
