//! loadgen: a load generator for ringd and any TCP echo or HTTP/1.1 server.
//!
//! Read it top to bottom like wrk: [`app`] (the command from arguments to exit status) →
//! [`args`], [`target`] and [`plan`] (the command line, checked into a plan) → [`run`]
//! (threads, CPU sampling, progress, signals) → [`worker`] (one event loop per pinned
//! thread: connect, write, read, record) using [`client`] (requests, response framing, the
//! echo pattern) → [`stats`] (per-thread histograms and counters) → [`report`], [`hdr`] and
//! [`plot`] (the table, JSON, .hgrm, .hlog and SVG). [`source`] binds connections to a pool
//! of source addresses; [`merge`] is `loadgen merge`, one report from several runs.

pub mod app;
pub mod args;
pub mod client;
pub mod clock;
pub mod hdr;
pub mod headroom;
pub mod human;
pub mod merge;
pub mod output;
pub mod plan;
pub mod plot;
pub mod report;
pub mod run;
pub mod source;
pub mod stats;
pub mod target;
pub mod worker;
