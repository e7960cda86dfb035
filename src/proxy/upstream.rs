//! The upstreams of proxy mode, shared by every worker: which one a new connection goes to
//! (round-robin or least connections), passive health (an upstream that refuses or does not
//! answer within the connect timeout is marked down for a while and skipped, unless every
//! upstream is), and exact counters per upstream for the metrics endpoint.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Balance;

/// Most upstreams (a connection remembers the ones it tried in a 64-bit mask).
pub const MAX_UPSTREAMS: usize = 64;

/// Counters of one upstream (labels `upstream="HOST:PORT"`).
#[derive(Debug, Default)]
pub struct UpstreamStats {
    /// Connections established to it.
    pub connections: AtomicU64,
    /// Connections to it open now.
    pub active: AtomicU64,
    /// Connects that failed (refused, unreachable, timed out).
    pub failed_connects: AtomicU64,
    /// Bytes sent to it (from clients).
    pub bytes_sent: AtomicU64,
    /// Bytes received from it (for clients).
    pub bytes_received: AtomicU64,
    /// Times it was marked down.
    pub marked_down: AtomicU64,
}

/// One upstream.
#[derive(Debug)]
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its counters.
    pub stats: UpstreamStats,
    /// Marked down until this time (ms since [`Upstreams`] was made; 0: up).
    down_until: AtomicU64,
}

/// The upstreams and how they are chosen.
#[derive(Debug)]
pub struct Upstreams {
    /// In the order given.
    list: Vec<Upstream>,
    /// How one is chosen.
    balance: Balance,
    /// How long a failed upstream is skipped.
    down_for: Duration,
    /// The origin of `down_until`.
    epoch: Instant,
}

impl Upstreams {
    /// Upstreams at `addrs` (at most [`MAX_UPSTREAMS`], checked by the configuration).
    pub fn new(addrs: Vec<SocketAddr>, balance: Balance, down_for: Duration) -> Self {
        Upstreams {
            list: addrs
                .into_iter()
                .map(|addr| Upstream {
                    addr,
                    stats: UpstreamStats::default(),
                    down_until: AtomicU64::new(0),
                })
                .collect(),
            balance,
            down_for,
            epoch: Instant::now(),
        }
    }

    /// All of them.
    pub fn list(&self) -> &[Upstream] {
        &self.list
    }

    /// Upstream `i`.
    pub fn get(&self, i: usize) -> &Upstream {
        &self.list[i]
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// True unless upstream `i` is marked down now.
    pub fn is_up(&self, i: usize) -> bool {
        self.up_at(i, self.now_ms())
    }

    /// The next upstream to try for a connection that already tried those in `tried` (a
    /// bit per upstream); `None` when every one is tried, or every untried one is down
    /// while another is up. `cursor` is the worker's round-robin position.
    ///
    /// When every upstream is marked down the marks are set aside and the untried ones are
    /// tried anyway (as nginx does): a mark only says which upstream to prefer, and refusing
    /// every client for the whole `--upstream-down-for` would turn a backend restart of a
    /// fraction of a second into an outage of that length.
    pub fn pick(&self, cursor: &mut usize, tried: u64) -> Option<usize> {
        let n = self.list.len();
        let now = self.now_ms();
        let all_down = (0..n).all(|i| !self.up_at(i, now));
        let candidates = (0..n)
            .map(|k| (*cursor + k) % n)
            .filter(|&i| tried & (1 << i) == 0)
            .filter(|&i| all_down || self.up_at(i, now));
        let chosen = match self.balance {
            Balance::RoundRobin => candidates.into_iter().next(),
            Balance::LeastConn => {
                candidates.min_by_key(|&i| self.list[i].stats.active.load(Ordering::Relaxed))
            }
        }?;
        *cursor = (chosen + 1) % n;
        Some(chosen)
    }

    fn up_at(&self, i: usize, now: u64) -> bool {
        self.list[i].down_until.load(Ordering::Relaxed) <= now
    }

    /// A connect to upstream `i` failed: counted, and the upstream skipped for a while.
    pub fn connect_failed(&self, i: usize) {
        let u = &self.list[i];
        u.stats.failed_connects.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let until = now + self.down_for.as_millis() as u64;
        if u.down_until.swap(until, Ordering::Relaxed) <= now {
            u.stats.marked_down.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                upstream = %u.addr,
                "upstream marked down for {:?} after a failed connect",
                self.down_for
            );
        }
    }

    /// A connection to upstream `i` was established.
    pub fn connected(&self, i: usize) {
        let s = &self.list[i].stats;
        s.connections.fetch_add(1, Ordering::Relaxed);
        s.active.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection to upstream `i` ended.
    pub fn released(&self, i: usize) {
        self.list[i].stats.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three(balance: Balance) -> Upstreams {
        let addrs = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"];
        Upstreams::new(
            addrs.iter().map(|a| a.parse().unwrap()).collect(),
            balance,
            Duration::from_secs(60),
        )
    }

    #[test]
    fn round_robin_skips_down_and_tried() {
        let u = three(Balance::RoundRobin);
        let mut cur = 0;
        assert_eq!(u.pick(&mut cur, 0), Some(0));
        assert_eq!(u.pick(&mut cur, 0), Some(1));
        assert_eq!(u.pick(&mut cur, 0), Some(2));
        assert_eq!(u.pick(&mut cur, 0), Some(0));
        u.connect_failed(1);
        assert!(!u.is_up(1));
        assert_eq!(u.get(1).stats.marked_down.load(Ordering::Relaxed), 1);
        u.connect_failed(1);
        assert_eq!(
            u.get(1).stats.marked_down.load(Ordering::Relaxed),
            1,
            "already down"
        );
        assert_eq!(u.get(1).stats.failed_connects.load(Ordering::Relaxed), 2);
        assert_eq!(u.pick(&mut cur, 0), Some(2));
        assert_eq!(u.pick(&mut cur, 0b001), Some(2), "0 was tried");
        assert_eq!(u.pick(&mut cur, 0b101), None, "0 tried, 1 down, 2 tried");
    }

    #[test]
    fn least_conn_takes_the_least_busy() {
        let u = three(Balance::LeastConn);
        let mut cur = 0;
        u.connected(0);
        u.connected(0);
        u.connected(1);
        assert_eq!(u.pick(&mut cur, 0), Some(2));
        u.connected(2);
        u.connected(2);
        assert_eq!(u.pick(&mut cur, 0), Some(1));
        u.released(0);
        u.released(0);
        assert_eq!(u.pick(&mut cur, 0), Some(0));
    }

    #[test]
    fn down_ends_after_its_time() {
        let u = Upstreams::new(
            vec![
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            ],
            Balance::RoundRobin,
            Duration::from_millis(30),
        );
        u.connect_failed(0);
        assert_eq!(u.pick(&mut 0, 0), Some(1));
        assert_eq!(u.pick(&mut 0, 0b10), None, "0 down while 1 is up");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(u.pick(&mut 0, 0), Some(0));
    }

    #[test]
    fn every_upstream_down_tries_them_anyway() {
        for balance in [Balance::RoundRobin, Balance::LeastConn] {
            let u = three(balance);
            for i in 0..3 {
                u.connect_failed(i);
            }
            assert!((0..3).all(|i| !u.is_up(i)));
            let mut cur = 0;
            assert_eq!(u.pick(&mut cur, 0), Some(0), "{balance:?}");
            assert_eq!(u.pick(&mut cur, 0b001), Some(1), "{balance:?}");
            assert_eq!(u.pick(&mut cur, 0b011), Some(2), "{balance:?}");
            assert_eq!(u.pick(&mut cur, 0b111), None, "{balance:?}: all tried");
        }
        // One down of one: the only upstream is still tried.
        let u = Upstreams::new(
            vec!["127.0.0.1:1".parse().unwrap()],
            Balance::RoundRobin,
            Duration::from_secs(60),
        );
        u.connect_failed(0);
        assert_eq!(u.pick(&mut 0, 0), Some(0));
    }
}
