//! The configuration in force, replaced as a whole by a reload (SIGHUP) while the workers
//! run. A worker looks at the generation, one atomic load, once per loop turn or new
//! connection, and takes the new configuration (a lock, rare) only when it changed: nothing
//! on the per-request path waits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::Config;

/// The configuration in force and its generation.
#[derive(Debug)]
pub struct Live {
    /// Bumped after every replacement of `current`.
    generation: AtomicU64,
    /// The configuration in force.
    current: Mutex<Arc<Config>>,
}

impl Live {
    /// `config` in force, generation 0.
    pub fn new(config: Arc<Config>) -> Arc<Live> {
        Arc::new(Live {
            generation: AtomicU64::new(0),
            current: Mutex::new(config),
        })
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<Config> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `config` in force for everything that looks from now on.
    pub fn replace(&self, config: Arc<Config>) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = config;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// How many times the configuration was replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// One worker's view of [`Live`]: the generation it last took.
#[derive(Debug)]
pub struct LiveView {
    /// What it follows.
    live: Arc<Live>,
    /// The generation it last took.
    seen: u64,
}

impl LiveView {
    /// A view that has taken the configuration in force now.
    pub fn new(live: Arc<Live>) -> Self {
        let seen = live.generation();
        LiveView { live, seen }
    }

    /// The configuration in force if it was replaced since the last call, else `None`.
    pub fn changed(&mut self) -> Option<Arc<Config>> {
        let now = self.live.generation();
        if now == self.seen {
            return None;
        }
        self.seen = now;
        Some(self.live.current())
    }
}

/// What a reload cannot apply, because it needs new sockets, threads or rings: the keys of
/// the settings that differ between `running` and `next`.
pub fn needs_upgrade(running: &Config, next: &Config) -> Vec<&'static str> {
    let differs = [
        ("listen", running.listen != next.listen),
        ("engine", running.engine != next.engine),
        ("threads", running.threads != next.threads),
        ("pin", running.cpus != next.cpus),
        (
            "backlog",
            running.listen_options.backlog != next.listen_options.backlog,
        ),
        (
            "send-buffer",
            running.listen_options.send_buffer != next.listen_options.send_buffer,
        ),
        (
            "recv-buffer",
            running.listen_options.recv_buffer != next.listen_options.recv_buffer,
        ),
        ("buffer-size", running.buffer_size != next.buffer_size),
        ("buffers", running.buffers != next.buffers),
        (
            "no-direct-descriptors",
            running.direct_descriptors != next.direct_descriptors,
        ),
        ("uring-*", running.uring != next.uring),
        ("metrics", running.metrics != next.metrics),
        ("protocol", running.service.name() != next.service.name()),
        ("access-log*", running.access_log != next.access_log),
    ];
    differs
        .into_iter()
        .filter_map(|(key, d)| d.then_some(key))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EngineKind;
    use crate::protocol::ProtocolKind;

    fn config() -> Config {
        let addr = "127.0.0.1:0".parse().unwrap();
        Config::new(addr, ProtocolKind::Echo, EngineKind::Epoll)
    }

    #[test]
    fn a_view_sees_each_replacement_once() {
        let live = Live::new(Arc::new(config()));
        let mut view = LiveView::new(live.clone());
        assert!(view.changed().is_none());
        let mut next = config();
        next.idle_timeout = std::time::Duration::from_secs(1);
        live.replace(Arc::new(next));
        let got = view.changed().expect("a new generation");
        assert_eq!(got.idle_timeout, std::time::Duration::from_secs(1));
        assert!(view.changed().is_none());
    }

    #[test]
    fn sockets_and_threads_need_an_upgrade() {
        let running = config();
        let mut next = config();
        next.idle_timeout = std::time::Duration::from_secs(1);
        next.max_connections = 10;
        assert!(needs_upgrade(&running, &next).is_empty());
        next.threads = 2;
        next.engine = EngineKind::Uring;
        assert_eq!(needs_upgrade(&running, &next), ["engine", "threads"]);
    }
}
