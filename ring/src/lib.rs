//! The io_uring driver under ringd's `uring` engine: what touches the kernel's shared memory
//! and the raw submission entries, so that almost every `unsafe` line of the engine lives
//! here, each beside the argument for it. Provided buffer rings ([`BufRing`]) and the
//! submission fields and probes the `io-uring` crate lacks ([`sqe`]).

mod bufring;
pub mod sqe;

pub use bufring::BufRing;
