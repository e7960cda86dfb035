//! What every task of a tokio-based worker reads.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use super::registry::Registry;
use crate::access_log::AccessLog;
use crate::config::Service;
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
    /// The worker's coarse clock.
    pub(crate) clock: Clock,
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
