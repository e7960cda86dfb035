//! ringd: a per-core TCP server on io_uring, with an epoll baseline beside it.
//!
//! The data path, outermost first: [`listener`] (SO_REUSEPORT sockets) → [`server`] (one
//! pinned worker thread per listener) → [`engine`] (how bytes move: io_uring, tokio-uring or
//! epoll) → [`accept`] (admission) → [`connection`] (one state machine per connection: phase,
//! ordered output, time) → [`protocol`] (pure: bytes in, bytes out).
//! [`cli`] turns the command line into a checked [`config::Config`].

pub mod accept;
pub mod activation;
pub mod cli;
pub mod config;
pub mod connection;
pub mod engine;
pub mod error;
pub mod listener;
pub mod metrics;
pub mod probe;
pub mod process;
pub mod protocol;
pub mod proxy;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod socket;
pub mod upgrade;
mod worker;

pub use config::EngineKind;
pub use config::{Config, Service};
pub use error::Error;
pub use protocol::ProtocolKind;
pub use server::{start, start_with, DrainTrigger, ServerHandle, ShutdownReport};
