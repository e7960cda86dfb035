//! What the server tells its workers about the end of their life: keep serving, drain and
//! close the listeners (SIGTERM), or drain while leaving the listeners open for a successor
//! process that now accepts on them (a live upgrade). Published by [`crate::process::server`] on a
//! watch channel that every worker reads; a closed channel means drain.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// The state every worker follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lifecycle {
    /// Accept and serve.
    #[default]
    Serving,
    /// Stop accepting and close the listeners (the kernel stops queueing connections to this
    /// process), finish the connections, stop.
    Draining,
    /// Stop accepting without touching the listening sockets, which another process shares
    /// and keeps accepting on; finish the connections, stop.
    HandingOver,
}

impl Lifecycle {
    /// True once the workers should stop accepting.
    pub fn is_stopping(self) -> bool {
        self != Lifecycle::Serving
    }

    /// True when the listening sockets must be left working for a successor.
    pub fn keeps_listeners(self) -> bool {
        self == Lifecycle::HandingOver
    }
}

/// A worker's view of the lifecycle: the state, a doorbell rung on every change (for an
/// engine that sleeps in the kernel rather than on the channel), and where it says that it
/// has stopped accepting.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The state.
    rx: tokio::sync::watch::Receiver<Lifecycle>,
    /// This worker's doorbell.
    bell: Arc<Bell>,
    /// Workers that have stopped accepting.
    stopped: Arc<AtomicUsize>,
}

impl Watch {
    /// A view of `rx` for one worker, with its own doorbell.
    pub fn new(
        rx: tokio::sync::watch::Receiver<Lifecycle>,
        bell: Arc<Bell>,
        stopped: Arc<AtomicUsize>,
    ) -> Self {
        Watch { rx, bell, stopped }
    }

    /// The doorbell's descriptor: readable once the lifecycle changed.
    pub fn bell(&self) -> &Bell {
        &self.bell
    }

    /// The worker has stopped accepting (once; later calls do nothing).
    pub fn acknowledge(&mut self) {
        if !self.bell.acknowledged.swap(true, Ordering::AcqRel) {
            self.stopped.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// An eventfd rung on every lifecycle change.
#[derive(Debug)]
pub struct Bell {
    /// The eventfd.
    fd: OwnedFd,
    /// Its worker acknowledged the stop.
    acknowledged: AtomicBool,
}

impl Bell {
    /// A new doorbell.
    pub fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd(2) with valid flags; the returned descriptor is new and ours.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Bell {
            fd,
            acknowledged: AtomicBool::new(false),
        })
    }

    /// Rings it.
    pub fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: an 8-byte write from a valid u64 to an eventfd this bell owns.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Clears it after it rang.
    pub fn clear(&self) {
        let mut n: u64 = 0;
        // SAFETY: an 8-byte read into a valid u64 from a non-blocking eventfd it owns.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
    }

    /// The eventfd, to poll.
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The current state; a closed channel (the server handle is gone) means drain.
pub fn current(watch: &Watch) -> Lifecycle {
    match watch.rx.has_changed() {
        Err(_) if !watch.rx.borrow().is_stopping() => Lifecycle::Draining,
        _ => *watch.rx.borrow(),
    }
}

/// Waits until the workers should stop accepting; returns what to do then. A closed channel
/// means drain.
pub async fn stopping(watch: &mut Watch) -> Lifecycle {
    let seen = watch.rx.wait_for(|s| s.is_stopping()).await.map(|s| *s);
    seen.unwrap_or_else(|_| current(watch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(rx: tokio::sync::watch::Receiver<Lifecycle>) -> Watch {
        Watch::new(rx, Arc::new(Bell::new().unwrap()), Arc::default())
    }

    #[test]
    fn closed_channel_means_drain() {
        let (tx, rx) = tokio::sync::watch::channel(Lifecycle::Serving);
        let w = watch(rx);
        assert_eq!(current(&w), Lifecycle::Serving);
        drop(tx);
        assert_eq!(current(&w), Lifecycle::Draining);
        let (tx, rx) = tokio::sync::watch::channel(Lifecycle::Serving);
        tx.send_replace(Lifecycle::HandingOver);
        drop(tx);
        assert_eq!(current(&watch(rx)), Lifecycle::HandingOver);
    }

    #[test]
    fn acknowledged_once() {
        let (_tx, rx) = tokio::sync::watch::channel(Lifecycle::Serving);
        let mut w = watch(rx);
        let stopped = w.stopped.clone();
        w.acknowledge();
        w.acknowledge();
        assert_eq!(stopped.load(Ordering::Relaxed), 1);
        // The bell is an eventfd: readable once rung, not after it is cleared.
        let readable = |bell: &Bell| {
            let mut p = libc::pollfd {
                fd: bell.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll(2) on one valid pollfd, without waiting.
            unsafe { libc::poll(&mut p, 1, 0) == 1 }
        };
        assert!(!readable(w.bell()));
        w.bell().ring();
        assert!(readable(w.bell()), "rung");
        w.bell().clear();
        assert!(!readable(w.bell()), "cleared");
    }
}
