//! ringd: a per-core TCP server on io_uring, with an epoll baseline beside it.
//!
//! The data path, outermost first: [`listener`] (SO_REUSEPORT sockets) → [`server`] (one
//! pinned worker thread per listener) → [`engine`] (how bytes move: tokio-uring or epoll) →
//! [`connection`] (buffers, registry, counters) → [`protocol`] (pure: bytes in, bytes out).
//! [`cli`] turns the command line into a checked [`config::Config`].

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
pub mod server;
pub mod service;
pub mod shutdown;
pub mod upgrade;
mod worker;

pub use config::Config;
pub use engine::EngineKind;
pub use error::Error;
pub use protocol::ProtocolKind;
pub use server::{start, start_with, DrainTrigger, ServerHandle, ShutdownReport};
