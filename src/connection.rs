//! Connections: between the engine (which moves bytes) and the protocol (which decides what
//! they mean). [`Conn`] keeps a connection's unconsumed input and pending output and feeds the
//! protocol; [`Registry`] lets a worker reach all its connections at shutdown; [`WorkerStats`]
//! counts them.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use slab::Slab;

use crate::protocol::{ProtocolSpec, Session};

/// One connection's protocol state and buffers, independent of the engine.
#[derive(Debug)]
pub struct Conn {
    /// The protocol state machine.
    session: Session,
    /// Input the protocol has not consumed yet (an incomplete request).
    pending: Vec<u8>,
    /// Output waiting to be sent.
    pub out: Vec<u8>,
}

impl Conn {
    /// A connection speaking `spec`. Its buffers allocate on first use, so an idle echo
    /// connection costs only this struct.
    pub fn new(spec: &ProtocolSpec) -> Self {
        Conn {
            session: spec.session(),
            pending: Vec::new(),
            out: Vec::new(),
        }
    }

    /// See [`Session::is_echo`]: the engine may send received buffers back as they are.
    pub fn is_echo(&self) -> bool {
        self.session.is_echo()
    }

    /// Feeds bytes that arrived; output is appended to [`Conn::out`]. Returns true when the
    /// connection must close once the output is flushed.
    pub fn on_bytes(&mut self, data: &[u8]) -> bool {
        if self.pending.is_empty() {
            // Fast path: whole requests in one read need no copy.
            let o = self.session.on_input(data, &mut self.out);
            if !o.close && o.consumed < data.len() {
                self.pending.extend_from_slice(&data[o.consumed..]);
            }
            o.close
        } else {
            self.pending.extend_from_slice(data);
            let o = self.session.on_input(&self.pending, &mut self.out);
            self.pending.drain(..o.consumed);
            o.close
        }
    }

    /// The peer closed its side; final output (if any) is appended to [`Conn::out`].
    pub fn on_eof(&mut self) {
        self.session.on_eof(&mut self.out);
    }
}

/// A worker's live connections, so that shutdown can reach them. Single-threaded: each worker
/// has its own.
#[derive(Debug)]
pub struct Registry<T> {
    /// Live connections.
    conns: RefCell<Slab<Rc<T>>>,
    /// Woken when the last connection leaves.
    empty: tokio::sync::Notify,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            conns: RefCell::new(Slab::new()),
            empty: tokio::sync::Notify::new(),
        }
    }
}

impl<T> Registry<T> {
    /// Adds a connection; it is removed when the returned guard drops.
    pub fn insert(self: &Rc<Self>, conn: Rc<T>) -> Registered<T> {
        let key = self.conns.borrow_mut().insert(conn);
        Registered {
            registry: self.clone(),
            key,
        }
    }

    /// Number of live connections.
    pub fn len(&self) -> usize {
        self.conns.borrow().len()
    }

    /// True when no connection is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` on every live connection.
    pub fn for_each(&self, mut f: impl FnMut(&T)) {
        // Clone out first: `f` may cause a connection to finish and deregister.
        let all: Vec<Rc<T>> = self.conns.borrow().iter().map(|(_, c)| c.clone()).collect();
        for c in &all {
            f(c);
        }
    }

    /// Waits until every connection has left.
    pub async fn wait_empty(&self) {
        while !self.is_empty() {
            self.empty.notified().await;
        }
    }
}

/// Keeps a connection registered while it lives.
#[derive(Debug)]
pub struct Registered<T> {
    /// The registry it is in.
    registry: Rc<Registry<T>>,
    /// Its slot.
    key: usize,
}

impl<T> Drop for Registered<T> {
    fn drop(&mut self) {
        let mut conns = self.registry.conns.borrow_mut();
        conns.remove(self.key);
        if conns.is_empty() {
            self.registry.empty.notify_waiters();
        }
    }
}

/// Counters of one worker, readable from any thread. Relaxed: they are statistics.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections closed.
    pub closed: AtomicU64,
    /// Accept errors.
    pub accept_errors: AtomicU64,
    /// Receives that found the provided buffer ring empty (`uring`).
    pub recv_enobufs: AtomicU64,
    /// Receive buffers not back in the ring when the worker stopped (`uring`; 0 expected).
    pub leaked_buffers: AtomicU64,
    /// Connections still open when the worker stopped (`uring`; 0 expected).
    pub leaked_fds: AtomicU64,
}

impl WorkerStats {
    /// Connections open now.
    pub fn active(&self) -> u64 {
        self.accepted
            .load(Ordering::Relaxed)
            .saturating_sub(self.closed.load(Ordering::Relaxed))
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProtocolKind;

    #[test]
    fn conn_keeps_partial_input_between_reads() {
        let spec = ProtocolSpec::with_defaults(ProtocolKind::Http);
        let mut c = Conn::new(&spec);
        assert!(!c.on_bytes(b"GET / HT"));
        assert!(c.out.is_empty());
        assert!(!c.on_bytes(b"TP/1.1\r\n\r\nGET"));
        assert!(c.out.starts_with(b"HTTP/1.1 200 OK"));
        c.out.clear();
        assert!(c.on_bytes(b" / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(c.out.starts_with(b"HTTP/1.1 200 OK"));
    }

    #[test]
    fn registry_tracks_and_notifies() {
        let r: Rc<Registry<u32>> = Rc::default();
        let a = r.insert(Rc::new(1));
        let b = r.insert(Rc::new(2));
        let mut seen = Vec::new();
        r.for_each(|v| seen.push(*v));
        seen.sort();
        assert_eq!(seen, [1, 2]);
        drop(a);
        assert_eq!(r.len(), 1);
        drop(b);
        assert!(r.is_empty());
    }
}
