//! A simulated provided buffer ring for the simulated-kernel tests of a connection and of a
//! proxied pair: small, so that it runs dry often, and strict about who owns each buffer.

use std::collections::{HashSet, VecDeque};

use super::sendq::Out;
use super::sock::Pool;

/// A small buffer ring, so that it runs dry often.
pub(super) struct FakePool {
    pub(super) size: usize,
    data: Vec<Vec<u8>>,
    /// In the ring, in the order the kernel takes them.
    ring: VecDeque<u16>,
    /// Filled by the kernel and not yet given back.
    out: HashSet<u16>,
    /// Read by a send in flight: not to be given back before its completion.
    lent: HashSet<u16>,
}

impl FakePool {
    pub(super) fn new(n: u16, size: usize) -> Self {
        FakePool {
            size,
            data: vec![vec![0; size]; n as usize],
            ring: (0..n).collect(),
            out: HashSet::new(),
            lent: HashSet::new(),
        }
    }

    /// A send of `buf` is submitted: its bytes, which stay put until its completion (a
    /// provided buffer stays out of the ring until then).
    pub(super) fn lend(&mut self, buf: &Out) -> Vec<u8> {
        match buf {
            Out::Bytes { data, off } => data[*off..].to_vec(),
            Out::Provided { bid, off, len } => {
                assert!(self.lent.insert(*bid), "buffer {bid} in two sends");
                self.bytes(*bid, *len)[*off..].to_vec()
            }
        }
    }

    /// The send of `buf` completed: its bytes are the sender's again.
    pub(super) fn unlend(&mut self, buf: &Out) {
        if let Out::Provided { bid, .. } = buf {
            assert!(self.lent.remove(bid), "buffer {bid} was not in a send");
        }
    }

    /// The kernel fills a buffer; `None` when the ring is empty.
    pub(super) fn fill(&mut self, bytes: &[u8]) -> Option<u16> {
        let bid = self.ring.pop_front()?;
        self.data[bid as usize][..bytes.len()].copy_from_slice(bytes);
        self.out.insert(bid);
        Some(bid)
    }
}

impl Pool for FakePool {
    fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        assert!(
            self.out.contains(&bid),
            "reading buffer {bid} the kernel does not own to us"
        );
        &self.data[bid as usize][..len]
    }
    fn give(&mut self, bid: u16) {
        assert!(
            !self.lent.contains(&bid),
            "gave back buffer {bid} while a send reads it"
        );
        assert!(
            self.out.remove(&bid),
            "gave back buffer {bid} that was not out"
        );
        self.ring.push_back(bid);
    }
    fn available(&self) -> usize {
        self.ring.len()
    }
    fn entries(&self) -> usize {
        self.data.len()
    }
}
