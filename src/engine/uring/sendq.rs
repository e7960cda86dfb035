//! A connection's unsent output, in order, for the `uring` engine. The first entry lives
//! inline: a request/response connection never has more than one, so an idle connection
//! that has answered requests owns no heap memory for its queue.

use std::collections::VecDeque;

pub use ringd_ring::SendBuf as Out;

/// First-in first-out output with the first entry inline.
#[derive(Debug, Default)]
pub struct SendQueue {
    /// The front entry.
    head: Option<Out>,
    /// Everything behind it; allocated only when two entries wait at once.
    rest: VecDeque<Out>,
}

impl SendQueue {
    /// Appends an entry.
    pub fn push_back(&mut self, out: Out) {
        if self.head.is_none() {
            self.head = Some(out);
        } else {
            self.rest.push_back(out);
        }
    }

    /// Puts an entry in front of the others.
    pub fn push_front(&mut self, out: Out) {
        if let Some(head) = self.head.replace(out) {
            self.rest.push_front(head);
        }
    }

    /// Removes the front entry.
    pub fn pop_front(&mut self) -> Option<Out> {
        let out = self.head.take();
        self.head = self.rest.pop_front();
        out
    }

    /// Removes the back entry.
    pub fn pop_back(&mut self) -> Option<Out> {
        self.rest.pop_back().or_else(|| self.head.take())
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.head.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(bid: u16) -> Out {
        Out::Provided {
            bid,
            off: 0,
            len: 10,
        }
    }

    fn bid(o: Option<Out>) -> Option<u16> {
        match o {
            Some(Out::Provided { bid, .. }) => Some(bid),
            _ => None,
        }
    }

    #[test]
    fn fifo_with_inline_head() {
        let mut q = SendQueue::default();
        assert!(q.is_empty());
        q.push_back(buf(1));
        q.push_back(buf(2));
        q.push_back(buf(3));
        q.push_front(buf(0));
        assert_eq!(bid(q.pop_front()), Some(0));
        assert_eq!(bid(q.pop_front()), Some(1));
        assert_eq!(bid(q.pop_back()), Some(3));
        assert_eq!(bid(q.pop_back()), Some(2));
        assert!(q.is_empty());
        assert_eq!(bid(q.pop_front()), None);
    }
}
