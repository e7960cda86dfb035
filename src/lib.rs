//! ringd: a per-core TCP server on io_uring, with an epoll baseline beside it.
//!
//! The layers, each using only those below it: [`process`] (the process: listening sockets
//! bound or inherited, one pinned worker thread per listener, signals, live upgrades) →
//! [`engine`] (how bytes move: io_uring, tokio-uring or epoll; admission and the drain) →
//! [`connection`] and [`proxy`] (one state machine per connection or proxied pair: phase,
//! ordered output, time) → [`protocol`] (pure: bytes in, bytes out). [`config`] turns the
//! command line into the checked [`Config`] every layer reads.

pub mod access_log;
pub mod config;
pub mod connection;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod process;
pub mod protocol;
pub mod proxy;
pub mod tls;

pub use config::EngineKind;
pub use config::{Config, Service};
pub use error::Error;
pub use process::server::{start, start_with, DrainTrigger, ServerHandle, ShutdownReport};
pub use protocol::ProtocolKind;
