//! How a worker reaches the connections its tasks own (the `tokio-uring` and `epoll`
//! engines, where each connection is a task): every live connection has an [`Entry`] in the
//! worker's [`Registry`] with the deadline its task published and an [`Alarm`]. The worker's
//! ticker rings the alarms of connections whose deadline passed, and the drain rings them
//! all; the task, woken, asks its [`crate::connection::Connection`] what the time or the drain means.
//! Nothing here writes to a socket.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use slab::Slab;

use crate::connection::Millis;

/// Wakes one task from another on the same thread; cheaper than a `Notify` (no lock, no
/// waiter list) because it serves exactly one waiter.
#[derive(Default)]
pub struct Alarm {
    /// Rung and not yet seen.
    rung: Cell<bool>,
    /// The task waiting for it.
    waker: Cell<Option<Waker>>,
}

impl Alarm {
    /// Rings: the waiting task (or the next wait) sees it once.
    pub fn ring(&self) {
        self.rung.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Waits until the alarm rings (returns at once if it rang since the last wait).
    pub fn wait(&self) -> AlarmWait<'_> {
        AlarmWait(self)
    }
}

impl std::fmt::Debug for Alarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alarm")
            .field("rung", &self.rung.get())
            .finish_non_exhaustive()
    }
}

/// The future of [`Alarm::wait`].
#[derive(Debug)]
pub struct AlarmWait<'a>(&'a Alarm);

impl Future for AlarmWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let alarm = self.0;
        if alarm.rung.replace(false) {
            return Poll::Ready(());
        }
        match alarm.waker.take() {
            Some(w) if w.will_wake(cx.waker()) => alarm.waker.set(Some(w)),
            _ => alarm.waker.set(Some(cx.waker().clone())),
        }
        Poll::Pending
    }
}

/// What the worker knows of one live connection.
#[derive(Debug)]
pub struct Entry {
    /// The connection's next deadline as its task last published it (`Millis::MAX`: none).
    pub deadline: Cell<Millis>,
    /// The server drains.
    pub drain: Cell<bool>,
    /// Rung when the deadline passes or the drain starts.
    pub alarm: Alarm,
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            deadline: Cell::new(Millis::MAX),
            drain: Cell::new(false),
            alarm: Alarm::default(),
        }
    }
}

impl Entry {
    /// Publishes the connection's next deadline.
    #[inline]
    pub fn set_deadline(&self, deadline: Option<Millis>) {
        self.deadline.set(deadline.unwrap_or(Millis::MAX));
    }
}

/// A worker's live connections. Single-threaded: each worker has its own.
#[derive(Debug, Default)]
pub struct Registry {
    /// Live connections.
    entries: RefCell<Slab<Rc<Entry>>>,
    /// Rung when the last connection leaves.
    empty: Alarm,
    /// The drain started: connections registered from now on start draining at once.
    draining: Cell<bool>,
}

impl Registry {
    /// Adds a connection; it is removed when the returned guard drops.
    pub fn insert(self: &Rc<Self>) -> Registered {
        let entry = Rc::new(Entry::default());
        entry.drain.set(self.draining.get());
        let key = self.entries.borrow_mut().insert(entry.clone());
        Registered {
            registry: self.clone(),
            entry,
            key,
        }
    }

    /// Number of live connections.
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    /// True when no connection is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rings the alarm of every connection whose deadline is `now` or earlier.
    pub fn ring_due(&self, now: Millis) {
        for (_, e) in self.entries.borrow().iter() {
            if e.deadline.get() <= now {
                e.alarm.ring();
            }
        }
    }

    /// Tells every connection, present and future, that the server drains.
    pub fn drain(&self) {
        self.draining.set(true);
        for (_, e) in self.entries.borrow().iter() {
            e.drain.set(true);
            e.alarm.ring();
        }
    }

    /// Waits until every connection has left.
    pub async fn wait_empty(&self) {
        while !self.is_empty() {
            self.empty.wait().await;
        }
    }
}

/// Keeps a connection registered while it lives.
#[derive(Debug)]
pub struct Registered {
    /// The registry it is in.
    registry: Rc<Registry>,
    /// Its entry.
    entry: Rc<Entry>,
    /// Its slot.
    key: usize,
}

impl Registered {
    /// The connection's entry.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut entries = self.registry.entries.borrow_mut();
        entries.remove(self.key);
        if entries.is_empty() {
            self.registry.empty.ring();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_due_and_drains() {
        let r: Rc<Registry> = Rc::default();
        let a = r.insert();
        let b = r.insert();
        a.entry().set_deadline(Some(100));
        b.entry().set_deadline(None);
        r.ring_due(99);
        assert!(!a.entry().alarm.rung.get());
        r.ring_due(100);
        assert!(a.entry().alarm.rung.get());
        assert!(!b.entry().alarm.rung.get());
        r.drain();
        assert!(b.entry().alarm.rung.get() && b.entry().drain.get());
        let c = r.insert();
        assert!(c.entry().drain.get(), "registered after the drain began");
        drop((a, b));
        assert_eq!(r.len(), 1);
        drop(c);
        assert!(r.is_empty());
        assert!(r.empty.rung.get());
    }
}
