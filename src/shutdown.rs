//! What the server tells its workers about the end of their life: keep serving, drain and
//! close the listeners (SIGTERM), or drain while leaving the listeners open for a successor
//! process that now accepts on them (a live upgrade). Published by [`crate::server`] on a
//! watch channel that every worker reads; a closed channel means drain.

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

/// A worker's view of the lifecycle.
pub type Watch = tokio::sync::watch::Receiver<Lifecycle>;

/// The current state; a closed channel (the server handle is gone) means drain.
pub fn current(watch: &Watch) -> Lifecycle {
    match watch.has_changed() {
        Err(_) if !watch.borrow().is_stopping() => Lifecycle::Draining,
        _ => *watch.borrow(),
    }
}

/// Waits until the workers should stop accepting; returns what to do then. A closed channel
/// means drain.
pub async fn stopping(watch: &mut Watch) -> Lifecycle {
    let seen = watch.wait_for(|s| s.is_stopping()).await.map(|s| *s);
    seen.unwrap_or_else(|_| current(watch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_channel_means_drain() {
        let (tx, rx) = tokio::sync::watch::channel(Lifecycle::Serving);
        assert_eq!(current(&rx), Lifecycle::Serving);
        drop(tx);
        assert_eq!(current(&rx), Lifecycle::Draining);
        let (tx, rx) = tokio::sync::watch::channel(Lifecycle::Serving);
        tx.send_replace(Lifecycle::HandingOver);
        drop(tx);
        assert_eq!(current(&rx), Lifecycle::HandingOver);
    }
}
