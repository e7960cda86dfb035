//! A provided buffer ring (IORING_REGISTER_PBUF_RING): one pool of receive buffers per worker
//! that the kernel picks from when a multishot recv has data. A connection holds a buffer only
//! from the completion that filled it until its bytes are sent or consumed, so an idle
//! connection holds none.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// Alignment of the ring and the buffers (the kernel requires a page-aligned ring).
const PAGE: usize = 4096;

/// The ring of buffer descriptors and the buffers it describes.
#[derive(Debug)]
pub struct BufRing {
    /// Buffer group id the recv SQEs name.
    bgid: u16,
    /// Ring entries (a power of two).
    entries: u16,
    /// Size of each buffer.
    size: usize,
    /// The descriptor ring, shared with the kernel.
    ring: *mut BufRingEntry,
    /// The buffers, `entries * size` bytes.
    bufs: *mut u8,
    /// Our copy of the tail; published to the kernel by [`BufRing::publish`].
    tail: u16,
    /// Buffers in the ring, which the kernel may fill: given back and not yet taken by a
    /// completion. Equals `entries` exactly when every buffer is back in the ring.
    available: usize,
    /// Who has each buffer.
    state: Vec<Holder>,
}

/// Who has a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    /// The ring: the kernel may write it at any time.
    Ring,
    /// The user, since a completion handed it over.
    User,
    /// A send the kernel has not completed reads it.
    Lent,
}

impl BufRing {
    /// Allocates `entries` buffers of `size` bytes and registers them as group `bgid`.
    pub(crate) fn new(ring: &IoUring, bgid: u16, entries: u16, size: usize) -> io::Result<Self> {
        if !entries.is_power_of_two() || entries > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--buffers must be a power of two up to 32768",
            ));
        }
        let ring_layout = Self::ring_layout(entries);
        let buf_layout = Self::buf_layout(entries, size)?;
        // SAFETY: both layouts have non-zero size (entries ≥ 1, size ≥ 64).
        let (ring_mem, bufs) = unsafe { (alloc_zeroed(ring_layout), alloc_zeroed(buf_layout)) };
        if ring_mem.is_null() || bufs.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut this = BufRing {
            bgid,
            entries,
            size,
            ring: ring_mem.cast(),
            bufs,
            tail: 0,
            available: 0,
            state: vec![Holder::User; entries as usize],
        };
        // SAFETY: the ring memory is page aligned, `entries` descriptors long, and lives until
        // `Drop`, which runs only after the ring is unregistered (see `unregister`) with
        // nothing in flight; the driver leaks it otherwise (see `Driver`'s `Drop`).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(this.ring as u64, entries, bgid, 0)?;
        }
        for bid in 0..entries {
            this.give(bid);
        }
        this.publish();
        Ok(this)
    }

    fn ring_layout(entries: u16) -> Layout {
        // A valid size and a power-of-two alignment: cannot fail.
        Layout::from_size_align(entries as usize * std::mem::size_of::<BufRingEntry>(), PAGE)
            .expect("ring layout")
    }

    fn buf_layout(entries: u16, size: usize) -> io::Result<Layout> {
        (entries as usize)
            .checked_mul(size)
            .and_then(|total| Layout::from_size_align(total, PAGE).ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "buffer pool too large"))
    }

    /// Buffer `bid`'s first `len` bytes, as filled by a recv completion.
    ///
    /// # Panics
    /// If `bid` or `len` is out of range, or the buffer is in the ring.
    pub fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        assert!(
            bid < self.entries && len <= self.size,
            "buffer id or length out of range"
        );
        assert!(
            self.state[bid as usize] != Holder::Ring,
            "buffer {bid} read while the kernel may write it"
        );
        // SAFETY: `bid` and `len` are in range (checked above); the buffer is not in the ring
        // (checked above): the kernel finished writing it before posting the completion that
        // handed it over, and it will not write it again until it is given back, which needs
        // `&mut self` and so cannot happen while the slice lives.
        unsafe { std::slice::from_raw_parts(self.bufs.add(bid as usize * self.size), len) }
    }

    /// Returns buffer `bid` to the ring (visible to the kernel after [`BufRing::publish`]).
    ///
    /// # Panics
    /// If a send in flight still reads it (the kernel could receive into it mid-send), or
    /// it is in the ring already.
    pub fn give(&mut self, bid: u16) {
        match self.state[bid as usize] {
            Holder::User => self.state[bid as usize] = Holder::Ring,
            Holder::Lent => panic!("buffer {bid} given back while a send reads it"),
            Holder::Ring => panic!("buffer {bid} given back twice"),
        }
        let idx = (self.tail & (self.entries - 1)) as usize;
        // SAFETY: `idx` < entries; the slot at the tail is not in use by the kernel (it only
        // reads slots between its head and our published tail).
        let entry = unsafe { &mut *self.ring.add(idx) };
        // SAFETY: `bid` < entries, so the address is inside the buffer allocation.
        entry.set_addr(unsafe { self.bufs.add(bid as usize * self.size) } as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.available += 1;
    }

    /// Publishes the tail so the kernel sees every buffer given back.
    pub fn publish(&self) {
        // SAFETY: the tail field overlays entry 0's reserved field, inside the ring memory;
        // the kernel reads it with acquire ordering, so a release store publishes the entries.
        unsafe {
            let tail = BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// Unregisters the group; the memory is freed when `self` drops.
    pub(crate) fn unregister(&self, ring: &IoUring) -> io::Result<()> {
        ring.submitter().unregister_buf_ring(self.bgid)
    }
}

impl BufRing {
    /// A completion handed buffer `bid` to us: the kernel has one fewer to fill. The driver
    /// calls it for every completion that names a buffer.
    ///
    /// # Panics
    /// If the buffer was not in the ring.
    pub(crate) fn taken(&mut self, bid: u16) {
        let s = &mut self.state[bid as usize];
        assert_eq!(*s, Holder::Ring, "buffer {bid} taken but not in the ring");
        *s = Holder::User;
        self.available -= 1;
    }

    /// Buffers the kernel can fill now.
    pub fn available(&self) -> usize {
        self.available
    }

    /// Buffers in all.
    pub fn entries(&self) -> usize {
        self.entries as usize
    }

    /// A send reads buffer `bid` until its completion: it cannot be given back until then.
    pub(crate) fn lend(&mut self, bid: u16) {
        let s = &mut self.state[bid as usize];
        assert_eq!(*s, Holder::User, "buffer {bid} sent but not the user's");
        *s = Holder::Lent;
    }

    /// The send that read buffer `bid` completed.
    pub(crate) fn unlend(&mut self, bid: u16) {
        self.state[bid as usize] = Holder::User;
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly these layouts; the kernel no longer uses
        // them (unregistered, or the ring was dropped before us).
        unsafe {
            dealloc(self.ring.cast(), Self::ring_layout(self.entries));
            if let Ok(l) = Self::buf_layout(self.entries, self.size) {
                dealloc(self.bufs, l);
            }
        }
    }
}
