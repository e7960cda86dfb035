//! Multishot `recvmsg` into provided buffers, for a receiver that wants each socket
//! read's kernel receive time (`SO_TIMESTAMPNS`): each completion's buffer starts with an
//! `io_uring_recvmsg_out`, then the control data (the stamp), then the bytes. [`Sqe::
//! recvmsg_multi`](crate::Sqe::recvmsg_multi) reads, [`parse`] splits what it left.

use std::mem::size_of;

use io_uring::types::RecvMsgOut;

/// Size of `struct io_uring_recvmsg_out` (namelen, controllen, payloadlen, flags: four
/// u32), which heads each buffer.
const OUT_LEN: usize = 16;

/// Control space one `SCM_TIMESTAMPNS` needs (header and a `timespec`, aligned).
// SAFETY: CMSG_SPACE is arithmetic on its argument.
pub const STAMP_CONTROL: u32 = unsafe { libc::CMSG_SPACE(size_of::<libc::timespec>() as u32) };

/// The `msghdr` a multishot recvmsg is given: only the lengths of the name (none) and of
/// the control data count; the kernel lays both out in each provided buffer.
#[derive(Debug)]
pub(crate) struct Header(pub(crate) libc::msghdr);

// SAFETY: the header's pointers are all null: it refers to no memory of any thread.
unsafe impl Send for Header {}

impl Header {
    /// No name, `control` bytes of control data.
    pub(crate) fn new(control: u32) -> Self {
        // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
        let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
        m.msg_controllen = control as usize;
        Header(m)
    }
}

/// What one completion of a multishot recvmsg with `control` bytes of control space left
/// in its buffer `buf` (the completion's result: its length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received<'a> {
    /// The bytes read; empty at the end of the stream.
    pub payload: &'a [u8],
    /// `SCM_TIMESTAMPNS`: the kernel's receive time of the last segment read, in ns on
    /// CLOCK_REALTIME; `None` when the socket has no stamps (or the control space was short).
    pub stamp_ns: Option<u64>,
}

/// Splits a multishot recvmsg's buffer; `None` if it is shorter than its own layout says.
pub fn parse(buf: &[u8], control: u32) -> Option<Received<'_>> {
    let out = RecvMsgOut::parse(buf, &Header::new(control).0).ok()?;
    let stamp_ns = match out.is_control_data_truncated() {
        true => None,
        false => timestamp_ns(out.control_data()),
    };
    // The payload follows the header and the control space (no name asked for).
    let from = OUT_LEN + control as usize;
    let payload = buf.get(from..from + out.payload_data().len())?;
    Some(Received { payload, stamp_ns })
}

/// The `SCM_TIMESTAMPNS` in control data `control`, in ns.
fn timestamp_ns(control: &[u8]) -> Option<u64> {
    // SAFETY: an all-zero msghdr is valid; it only points the CMSG macros at `control`.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_control = control.as_ptr() as *mut libc::c_void;
    m.msg_controllen = control.len();
    // SAFETY: `m` describes `control`, which lives through the loop; CMSG_FIRSTHDR and
    // CMSG_NXTHDR return only headers that lie whole inside it (or null).
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&m) };
    while !cmsg.is_null() {
        // SAFETY: a non-null header from the macros lies inside `control` (alignment:
        // the kernel aligns control data; read unaligned anyway).
        let hdr = unsafe { cmsg.read_unaligned() };
        let len = size_of::<libc::timespec>();
        if hdr.cmsg_level == libc::SOL_SOCKET
            && hdr.cmsg_type == libc::SCM_TIMESTAMPNS
            // SAFETY: CMSG_LEN is arithmetic.
            && hdr.cmsg_len as usize >= unsafe { libc::CMSG_LEN(len as u32) } as usize
        {
            // SAFETY: the header's length covers a timespec of data after it, inside
            // `control` (CMSG_FIRSTHDR/NXTHDR checked the header, the length is the
            // kernel's and within the buffer's control space).
            let ts = unsafe {
                libc::CMSG_DATA(cmsg)
                    .cast::<libc::timespec>()
                    .read_unaligned()
            };
            return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
        }
        // SAFETY: `cmsg` is a header inside `m`'s control data.
        cmsg = unsafe { libc::CMSG_NXTHDR(&m, cmsg) };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer laid out as the kernel lays out a recvmsg completion.
    fn completion(control: &[u8], payload: &[u8], space: u32) -> Vec<u8> {
        let head = [0, control.len() as u32, payload.len() as u32, 0];
        let mut buf: Vec<u8> = head.iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert_eq!(buf.len(), OUT_LEN);
        let mut ctl = control.to_vec();
        ctl.resize(space as usize, 0);
        buf.extend_from_slice(&ctl);
        buf.extend_from_slice(payload);
        buf
    }

    fn stamp_cmsg(sec: i64, nsec: i64) -> Vec<u8> {
        let mut c = vec![0u8; STAMP_CONTROL as usize];
        // SAFETY: CMSG_LEN is arithmetic.
        let len = unsafe { libc::CMSG_LEN(size_of::<libc::timespec>() as u32) } as usize;
        c[..8].copy_from_slice(&len.to_ne_bytes());
        c[8..12].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        c[12..16].copy_from_slice(&libc::SCM_TIMESTAMPNS.to_ne_bytes());
        c[16..24].copy_from_slice(&sec.to_ne_bytes());
        c[24..32].copy_from_slice(&nsec.to_ne_bytes());
        c
    }

    #[test]
    fn the_stamp_and_the_bytes_come_apart() {
        let buf = completion(&stamp_cmsg(3, 5), b"hello", STAMP_CONTROL);
        let r = parse(&buf, STAMP_CONTROL).unwrap();
        assert_eq!(r.payload, b"hello");
        assert_eq!(r.stamp_ns, Some(3_000_000_005));
    }

    #[test]
    fn no_stamp_no_bytes_and_short_buffers_are_told_apart() {
        let buf = completion(&[], b"", STAMP_CONTROL);
        let r = parse(&buf, STAMP_CONTROL).unwrap();
        assert_eq!((r.payload, r.stamp_ns), (&b""[..], None));
        assert!(parse(&buf[..10], STAMP_CONTROL).is_none());
    }
}
