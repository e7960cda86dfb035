//! The ring's file table (direct descriptors): sockets accepted straight into it
//! (`IORING_FILE_INDEX_ALLOC`) are never installed in the process's descriptor table, and
//! every later operation on them names the slot, which saves the kernel an install, a removal
//! and a reference per operation. When the table runs low, accepting falls back to ordinary
//! descriptors until half of it is free again.

use std::os::fd::{AsRawFd, OwnedFd};

use crate::sqe::Target;

/// A socket: an ordinary descriptor or a slot in the ring's file table. Closed through the
/// driver ([`crate::Driver::close`]), which frees the slot.
#[derive(Debug)]
pub enum Descriptor {
    /// An ordinary descriptor.
    Os(OwnedFd),
    /// A slot in the ring's file table.
    Fixed(u32),
}

impl Descriptor {
    /// What SQEs on it name.
    pub fn target(&self) -> Target {
        match self {
            Descriptor::Os(fd) => Target::Fd(fd.as_raw_fd()),
            Descriptor::Fixed(i) => Target::Fixed(*i),
        }
    }
}

/// The file table's occupancy and whether accepts go into it.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileTable {
    /// Slots registered (0: no table).
    pub(crate) size: u32,
    /// Slots holding a socket (or whose close is in flight).
    pub(crate) used: u32,
    /// Accepts go into the table (false once it is nearly full, until its usable part is
    /// half free).
    pub(crate) direct: bool,
    /// Slots kept free: accepting leaves the table when no more than this many are left,
    /// because a direct accept that finds the table full loses its connection (the kernel
    /// closes it) and accepts already under way still take slots.
    pub(crate) headroom: u32,
}

impl FileTable {
    /// Slots registered (0: no table).
    pub fn size(&self) -> u32 {
        self.size
    }

    /// True while accepts go into the table.
    pub fn direct(&self) -> bool {
        self.direct
    }

    /// A socket was created into a slot.
    pub(crate) fn opened(&mut self) {
        self.used += 1;
    }

    /// A close of a slot succeeded.
    pub(crate) fn closed(&mut self) {
        self.used -= 1;
    }

    /// A direct accept took a slot; true when accepting must leave the table now.
    pub(crate) fn took(&mut self) -> bool {
        self.used += 1;
        self.direct && self.used + self.headroom >= self.size
    }

    /// Accepting leaves the table (nearly full, or a direct accept failed with `ENFILE`).
    pub fn leave(&mut self) {
        self.direct = false;
    }

    /// Accepting goes back into the table, if [`FileTable::may_return`] says it may; true
    /// when it did.
    pub fn enter(&mut self) -> bool {
        if self.may_return() {
            self.direct = true;
        }
        self.direct
    }

    /// True when accepting may go back into the table: its usable part (what the headroom
    /// leaves) is half free.
    pub fn may_return(&self) -> bool {
        self.size > 0 && !self.direct && self.used < (self.size - self.headroom) / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_when_the_headroom_is_reached_and_returns_at_half() {
        let mut t = FileTable {
            size: 20,
            used: 0,
            direct: true,
            headroom: 4,
        };
        let left = (0..16).map(|_| t.took()).position(|l| l);
        assert_eq!(left, Some(15), "leaves once 16 of 20 are used");
        t.leave();
        assert!(!t.may_return());
        t.used = 8;
        assert!(!t.may_return());
        t.used = 7;
        assert!(t.may_return());
    }
}
