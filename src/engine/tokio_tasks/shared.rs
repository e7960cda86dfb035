//! What every task of a tokio-based worker reads.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use super::registry::Registry;
use crate::access_log::AccessLog;
use crate::config::{Config, Service};
use crate::connection::{Clock, Limits, WorkerStats};
use crate::engine::admission::Limit;
use crate::protocol::ProtocolSpec;

/// What every connection task of a worker reads.
#[derive(Debug)]
pub(crate) struct Shared {
    /// What is done with each connection.
    pub(crate) service: Service,
    /// How a connection over `--max-connections` is turned away.
    pub(crate) rejection: ProtocolSpec,
    /// This worker's round-robin position over the upstreams.
    pub(crate) cursor: Cell<usize>,
    /// The worker's coarse clock (one for every generation of `Shared`).
    pub(crate) clock: Rc<Clock>,
    /// Timeouts and the output bound.
    pub(crate) limits: Limits,
    /// Bytes read at most per read.
    pub(crate) buffer_size: usize,
    /// Live connections.
    pub(crate) registry: Rc<Registry>,
    /// Where each connection is logged at its close, if anywhere.
    pub(crate) access_log: Option<Arc<AccessLog>>,
    /// The worker's index.
    pub(crate) worker: usize,
    /// Counters.
    pub(crate) stats: Arc<WorkerStats>,
    /// `--max-connections`.
    pub(crate) limit: Arc<Limit>,
}

impl Shared {
    /// The same worker under configuration `c` (a reload): connections that start from now
    /// on read it; those already running keep the generation they started with.
    pub(crate) fn reloaded(&self, c: &Config) -> Shared {
        Shared {
            service: c.service.clone(),
            rejection: c.service.rejection(),
            cursor: Cell::new(self.cursor.get()),
            clock: self.clock.clone(),
            limits: c.limits(),
            buffer_size: self.buffer_size,
            registry: self.registry.clone(),
            access_log: self.access_log.clone(),
            worker: self.worker,
            stats: self.stats.clone(),
            limit: self.limit.clone(),
        }
    }
}
