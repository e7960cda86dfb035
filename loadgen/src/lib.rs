//! loadgen: a load generator for ringd and any TCP echo or HTTP/1.1 server.
//!
//! Read it top to bottom like wrk: [`args`] (the command line, checked into a plan) →
//! [`client`] (requests, response framing, the echo pattern) →
//! [`run`] (threads, CPU sampling, progress) → [`worker`] (one event loop per pinned thread:
//! connect, write, read, record) → [`stats`] (per-thread histograms and counters) →
//! [`report`], [`hdr`] and [`plot`] (the table, JSON, .hgrm, .hlog and SVG).

pub mod args;
pub mod client;
pub mod clock;
pub mod hdr;
pub mod plot;
pub mod report;
pub mod run;
pub mod stats;
pub mod worker;
