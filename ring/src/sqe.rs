//! Submission entries: fields the `io-uring` crate has no builder for, and the probe that
//! says whether the kernel reads them.

use io_uring::{opcode, IoUring};

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
        let mut ring = IoUring::new(8).expect("a ring");
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut v = release
            .split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let version = (v.next().unwrap_or(0), v.next().unwrap_or(0));
        assert_eq!(
            recv_total_limit(&mut ring),
            version >= (6, 17),
            "Linux {}: the probe disagrees with the version that brought the cap (6.17)",
            release.trim()
        );
    }
}
