//! The upstreams of proxy mode, shared by every worker: which one a new connection goes to
//! (smooth weighted round-robin or weighted least connections, backups only when every
//! primary is down, a cap on connections per upstream), health (passive: an upstream that
//! refuses or does not answer within the connect timeout is marked down for a while and
//! skipped, unless every upstream is; active: [`crate::proxy::health`] marks it down after
//! failed checks and it is never picked until checks pass again), and exact counters per
//! upstream for the metrics endpoint.
//!
//! An upstream lives in a slot of a table that every generation of the configuration
//! shares: a reload builds new [`Upstreams`] (members, weights, balance) over the same
//! table, so a connection keeps its slot, its counters and its accounting whatever the
//! reload did, and an upstream a reload removed is simply never picked again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::sni::SniCounts;
use super::Balance;

/// Most upstreams over the life of the process (a connection remembers the ones it tried in
/// a 64-bit mask, by slot).
pub const MAX_UPSTREAMS: usize = 64;

/// Largest weight: the round-robin order holds one entry per unit of weight.
pub const MAX_WEIGHT: u32 = 256;

/// Counters of one upstream (labels `upstream="HOST:PORT"`).
#[derive(Debug, Default)]
pub struct UpstreamStats {
    /// Connections established to it.
    pub connections: AtomicU64,
    /// Connections to it open now, or being opened (a pick takes the place).
    pub active: AtomicU64,
    /// Connects that failed (refused, unreachable, timed out).
    pub failed_connects: AtomicU64,
    /// Bytes sent to it (from clients).
    pub bytes_sent: AtomicU64,
    /// Bytes received from it (for clients).
    pub bytes_received: AtomicU64,
    /// Times it was marked down.
    pub marked_down: AtomicU64,
    /// Active health checks that passed.
    pub checks_passed: AtomicU64,
    /// Active health checks that failed.
    pub checks_failed: AtomicU64,
}

/// One upstream.
#[derive(Debug)]
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its counters.
    pub stats: UpstreamStats,
    /// Marked down until this time (ms since the table was made; 0: up).
    down_until: AtomicU64,
    /// Down by its active health checks (never picked while set).
    check_down: AtomicBool,
}

/// How one upstream takes part in the balancing: `HOST:PORT[,weight=N][,backup]
/// [,max-conns=N]` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its share of new connections, relative to the others (1 to [`MAX_WEIGHT`]).
    pub weight: u32,
    /// Used only while every primary upstream is down.
    pub backup: bool,
    /// Most connections open to it at once (0: no limit).
    pub max_connections: u64,
}

impl UpstreamSpec {
    /// A primary upstream of weight 1 and no limit.
    pub fn plain(addr: SocketAddr) -> Self {
        UpstreamSpec {
            addr,
            weight: 1,
            backup: false,
            max_connections: 0,
        }
    }
}

/// The slots every generation of [`Upstreams`] shares, in the order they were first listed.
#[derive(Debug)]
struct Table {
    /// [`MAX_UPSTREAMS`] slots, filled in order and never emptied.
    slots: Box<[OnceLock<Upstream>]>,
    /// Slots filled.
    len: AtomicUsize,
    /// Serialises the filling of slots.
    grow: Mutex<()>,
    /// The origin of `down_until`.
    epoch: Instant,
    /// Clients turned away because no upstream could take them.
    refused: AtomicU64,
    /// Routes chosen by SNI, by how.
    sni: SniCounts,
}

impl Table {
    fn new() -> Self {
        Table {
            slots: (0..MAX_UPSTREAMS).map(|_| OnceLock::new()).collect(),
            len: AtomicUsize::new(0),
            grow: Mutex::new(()),
            epoch: Instant::now(),
            refused: AtomicU64::new(0),
            sni: SniCounts::default(),
        }
    }

    /// The slots of `addrs`, in order, the new ones filled; `None`, with nothing filled,
    /// when the table has no room for all the new ones.
    fn slots_of(&self, addrs: &[SocketAddr]) -> Option<Vec<usize>> {
        let _one = self.grow.lock().unwrap_or_else(PoisonError::into_inner);
        let mut len = self.len.load(Ordering::Acquire);
        let known = |addr: &SocketAddr, len: usize| (0..len).find(|&i| self.get(i).addr == *addr);
        let mut fresh: Vec<SocketAddr> = addrs
            .iter()
            .filter(|a| known(a, len).is_none())
            .copied()
            .collect();
        fresh.sort_unstable();
        fresh.dedup();
        if len + fresh.len() > MAX_UPSTREAMS {
            return None;
        }
        let mut slots = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            if let Some(i) = known(&addr, len) {
                slots.push(i);
                continue;
            }
            let _ = self.slots[len].set(Upstream {
                addr,
                stats: UpstreamStats::default(),
                down_until: AtomicU64::new(0),
                check_down: AtomicBool::new(false),
            });
            slots.push(len);
            len += 1;
            self.len.store(len, Ordering::Release);
        }
        Some(slots)
    }

    fn get(&self, i: usize) -> &Upstream {
        // Invariant: slot indices handed out come from `slots_of`, which fills the slot
        // before anyone can hold its index.
        self.slots[i]
            .get()
            .expect("an upstream slot in use is filled")
    }
}

/// One member of a generation.
#[derive(Debug, Clone, Copy)]
struct Member {
    /// Its slot in the table.
    slot: usize,
    /// As configured.
    spec: UpstreamSpec,
}

/// The upstreams of one configuration and how they are chosen.
#[derive(Debug)]
pub struct Upstreams {
    /// Every upstream the process has known (shared with the other generations).
    table: Arc<Table>,
    /// This generation's upstreams, in the order given.
    members: Vec<Member>,
    /// Smooth weighted round-robin order of the primaries (indices into `members`).
    primaries: Vec<u8>,
    /// The same for the backups.
    backups: Vec<u8>,
    /// How one is chosen.
    balance: Balance,
    /// How long a failed upstream is skipped.
    down_for: Duration,
}

impl Upstreams {
    /// Primary upstreams of weight 1 at `addrs` (at most [`MAX_UPSTREAMS`], distinct: checked
    /// by the configuration).
    pub fn new(addrs: Vec<SocketAddr>, balance: Balance, down_for: Duration) -> Self {
        let specs = addrs.into_iter().map(UpstreamSpec::plain).collect();
        Self::with_specs(specs, balance, down_for)
    }

    /// Upstreams as `specs` say, in a table of their own.
    pub fn with_specs(specs: Vec<UpstreamSpec>, balance: Balance, down_for: Duration) -> Self {
        Self::build(Arc::new(Table::new()), &specs, balance, down_for)
            .expect("at most MAX_UPSTREAMS upstreams, checked by the configuration")
    }

    /// The same members and choices over `previous`'s table, so that an upstream listed in
    /// both keeps its slot, counters and health; an error when the table has no room left
    /// for the new addresses.
    pub fn succeed(&self, previous: &Upstreams) -> Result<Upstreams, String> {
        let specs: Vec<UpstreamSpec> = self.members.iter().map(|m| m.spec).collect();
        Self::build(previous.table.clone(), &specs, self.balance, self.down_for).ok_or_else(|| {
            format!(
                "upstream: more than {MAX_UPSTREAMS} different upstream addresses over the \
                 life of the process: a live upgrade (SIGUSR2) starts afresh"
            )
        })
    }

    /// Other upstreams over this one's table (an SNI route's), balanced alike; an error
    /// when the table has no room left for the new addresses.
    pub fn sibling(&self, specs: Vec<UpstreamSpec>) -> Result<Upstreams, String> {
        Self::build(self.table.clone(), &specs, self.balance, self.down_for)
            .ok_or_else(|| format!("at most {MAX_UPSTREAMS} upstreams in all"))
    }

    /// True when it has no members (proxy mode with SNI routes only).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Routes chosen by SNI, by how, over the life of the table.
    pub fn sni_counts(&self) -> &SniCounts {
        &self.table.sni
    }

    fn build(
        table: Arc<Table>,
        specs: &[UpstreamSpec],
        balance: Balance,
        down_for: Duration,
    ) -> Option<Self> {
        let addrs: Vec<SocketAddr> = specs.iter().map(|s| s.addr).collect();
        let members: Vec<Member> = table
            .slots_of(&addrs)?
            .into_iter()
            .zip(specs)
            .map(|(slot, &spec)| Member { slot, spec })
            .collect();
        let order = |backup: bool| {
            let weights: Vec<(u8, u32)> = (0..members.len())
                .filter(|&m| members[m].spec.backup == backup)
                .map(|m| (m as u8, members[m].spec.weight.clamp(1, MAX_WEIGHT)))
                .collect();
            smooth_order(&weights)
        };
        Some(Upstreams {
            primaries: order(false),
            backups: order(true),
            table,
            members,
            balance,
            down_for,
        })
    }

    /// Every upstream the process has known, by slot (a reload may have removed some from
    /// the balancing: their connections and counters remain).
    pub fn list(&self) -> Vec<&Upstream> {
        let len = self.table.len.load(Ordering::Acquire);
        (0..len).map(|i| self.table.get(i)).collect()
    }

    /// The upstreams of this configuration, as configured.
    pub fn specs(&self) -> Vec<UpstreamSpec> {
        self.members.iter().map(|m| m.spec).collect()
    }

    /// The slots of this configuration's upstreams.
    pub fn member_slots(&self) -> Vec<usize> {
        self.members.iter().map(|m| m.slot).collect()
    }

    /// How one is chosen.
    pub fn balance(&self) -> Balance {
        self.balance
    }

    /// The upstream in slot `i`.
    pub fn get(&self, i: usize) -> &Upstream {
        self.table.get(i)
    }

    /// Clients turned away because no upstream could take them (all down, all at their
    /// `max-conns`, or all tried).
    pub fn refused(&self) -> u64 {
        self.table.refused.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        self.table.epoch.elapsed().as_millis() as u64 + 1
    }

    /// True unless upstream `i` is marked down now (by a failed connect or its checks).
    pub fn is_up(&self, i: usize) -> bool {
        !self.checked_down(i) && self.up_at(i, self.now_ms())
    }

    /// True while upstream `i`'s health checks hold it down.
    pub fn checked_down(&self, i: usize) -> bool {
        self.get(i).check_down.load(Ordering::Relaxed)
    }

    /// Sets what the health checks say of upstream `i`; true if that changed its state.
    pub fn set_checked_down(&self, i: usize, down: bool) -> bool {
        let u = self.get(i);
        let was = u.check_down.swap(down, Ordering::Relaxed);
        if down && !was {
            u.stats.marked_down.fetch_add(1, Ordering::Relaxed);
        }
        was != down
    }

    /// The next upstream to try for a connection that already tried those in `tried` (a
    /// bit per slot); `None` (counted as refused) when no upstream can take it. `cursor` is
    /// the worker's position in the balancing.
    ///
    /// The primaries that are up are the candidates; when none is, the backups that are up;
    /// when none is either, the passive marks are set aside and the primaries, then the
    /// backups, are tried anyway (as nginx does: a mark only says which upstream to prefer,
    /// and refusing every client for the whole `--upstream-down-for` would turn a backend
    /// restart of a fraction of a second into an outage of that length). An upstream that its
    /// health checks hold down, or that has `max-conns` connections open, is never picked.
    pub fn pick(&self, cursor: &mut usize, tried: u64) -> Option<usize> {
        // A place under `max-conns` is taken when the upstream is picked, not when its
        // connect completes, so that clients arriving together cannot all see room. Another
        // worker may take the last place between the look and the taking: look again.
        for _ in 0..=self.members.len() {
            let m = match self.candidate(cursor, tried) {
                Some(m) => m,
                None => break,
            };
            let Member { slot, spec } = self.members[m];
            let max = spec.max_connections;
            let taken = self.get(slot).stats.active.fetch_update(
                Ordering::AcqRel,
                Ordering::Acquire,
                |a| (max == 0 || a < max).then_some(a + 1),
            );
            if taken.is_ok() {
                return Some(slot);
            }
        }
        self.table.refused.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// The member [`Upstreams::pick`] would take now, before its place is taken.
    fn candidate(&self, cursor: &mut usize, tried: u64) -> Option<usize> {
        let now = self.now_ms();
        let usable = |m: usize, passive: bool| {
            let slot = self.members[m].slot;
            !self.checked_down(slot) && (!passive || self.up_at(slot, now))
        };
        let tier = [
            (&self.primaries, true),
            (&self.backups, true),
            (&self.primaries, false),
            (&self.backups, false),
        ]
        .into_iter()
        .find(|(order, passive)| order.iter().any(|&m| usable(m as usize, *passive)));
        tier.and_then(|(order, passive)| {
            let open = |m: usize| {
                let Member { slot, spec } = self.members[m];
                let active = self.get(slot).stats.active.load(Ordering::Relaxed);
                usable(m, passive)
                    && tried & (1 << slot) == 0
                    && (spec.max_connections == 0 || active < spec.max_connections)
            };
            match self.balance {
                Balance::RoundRobin => self.next_in_turn(order, cursor, open),
                Balance::LeastConn => self.least_loaded(order, cursor, open),
            }
        })
    }

    /// Round-robin: the first open member in `order` from the cursor on.
    fn next_in_turn(
        &self,
        order: &[u8],
        cursor: &mut usize,
        open: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = order.len();
        let start = *cursor % n.max(1);
        let k = (0..n).find(|k| open(order[(start + k) % n] as usize))?;
        *cursor = (start + k + 1) % n;
        Some(order[(start + k) % n] as usize)
    }

    /// Least connections: the open member of the tier `order` walks with the fewest active
    /// connections per unit of weight; ties go to the first from the cursor on, so that
    /// they spread.
    fn least_loaded(
        &self,
        order: &[u8],
        cursor: &mut usize,
        open: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let backup = self.members[*order.first()? as usize].spec.backup;
        let n = self.members.len();
        let start = *cursor % n;
        let load = |m: usize| {
            let Member { slot, spec } = self.members[m];
            let active = self.get(slot).stats.active.load(Ordering::Relaxed);
            (active, u64::from(spec.weight))
        };
        let m = (0..n)
            .map(|k| (start + k) % n)
            .filter(|&m| self.members[m].spec.backup == backup && open(m))
            .min_by(|&a, &b| {
                let ((la, wa), (lb, wb)) = (load(a), load(b));
                (la * wb).cmp(&(lb * wa))
            })?;
        *cursor = (m + 1) % n;
        Some(m)
    }

    fn up_at(&self, i: usize, now: u64) -> bool {
        self.get(i).down_until.load(Ordering::Relaxed) <= now
    }

    /// A connect to upstream `i` failed: counted, its place given back, and the upstream
    /// skipped for a while.
    pub fn connect_failed(&self, i: usize) {
        let u = self.get(i);
        u.stats.active.fetch_sub(1, Ordering::Relaxed);
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

    /// A connection to upstream `i` was established (it holds the place its pick took).
    pub fn connected(&self, i: usize) {
        let s = &self.get(i).stats;
        s.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// The place [`Upstreams::pick`] took on upstream `i` is given back: its connection
    /// ended, or its connect was given up for a reason that says nothing of the upstream
    /// (the client left, a local shortage). Every pick ends in this or in
    /// [`Upstreams::connect_failed`], once.
    pub fn released(&self, i: usize) {
        self.get(i).stats.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// nginx's smooth weighted round-robin, run for one full cycle: each turn every member gains
/// its weight, the one with the most is chosen and loses the total. Heavier members come
/// more often, interleaved with the others rather than in a block.
fn smooth_order(weights: &[(u8, u32)]) -> Vec<u8> {
    let total: i64 = weights.iter().map(|&(_, w)| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            for (c, &(_, w)) in current.iter_mut().zip(weights) {
                *c += i64::from(w);
            }
            let best = (0..weights.len())
                .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
                .expect("a member, since the total weight is positive");
            current[best] -= total;
            weights[best].0
        })
        .collect()
}

#[cfg(test)]
mod tests;
