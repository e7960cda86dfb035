//! A small io_uring driver, under ringd's `uring` engine and reusable by any single-threaded
//! event loop over sockets. It holds everything that touches the ring's shared memory or
//! hands memory to the kernel, so that almost every `unsafe` line lives here, each beside the
//! argument for it:
//!
//! - ring setup and what the kernel offers ([`setup`]);
//! - the user's operations, typed, in `user_data` ([`Operation`], [`Packed`]); every
//!   completion decodes to one or is reported as [`Event::Unknown`];
//! - SQEs that carry the memory they use ([`Sqe`]), pushed alone or as a linked chain that
//!   reaches the kernel whole ([`Driver::push_chain`]), and one submit-and-wait per turn;
//! - provided buffer rings ([`BufRing`]) and the file table ([`FileTable`], [`Descriptor`]);
//! - buffers owned until their completion: a send takes its [`SendBuf`] and its completion
//!   gives it back; a provided buffer a send reads cannot be recycled meanwhile;
//! - cancel-and-reap on drop: nothing the kernel may touch is freed while it may.

mod bufring;
mod driver;
pub mod msg;
pub mod op;
pub mod setup;
pub mod sqe;
mod table;

pub use bufring::BufRing;
pub use driver::{Completion, Driver, Event, Wait};
pub use op::{Operation, Packed};
pub use setup::{Features, Setup, SetupError};
pub use sqe::{SendBuf, Sqe, Target};
pub use table::{Descriptor, FileTable};
