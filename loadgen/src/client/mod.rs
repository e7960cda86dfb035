//! The client halves of the protocols loadgen speaks: HTTP requests and response framing
//! ([`http`]), the echo stream's verification pattern ([`pattern`]), TLS between the
//! socket and the plaintext ([`tls`]), and one connection's client side built on them
//! ([`session`]). Pure code with no I/O, unit-tested on its own;
//! the event loops in [`crate::worker`] drive it.

pub mod http;
pub mod pattern;
pub mod session;
pub mod tls;

pub use http::{
    build_request, parse_header, parse_http_response, RequestError, RequestSpec, Response,
    ResponseReader,
};
pub use pattern::{fill_pattern, pattern_byte, pattern_mismatches, pattern_window};
pub use session::{Next, Pending, Session, Spec};
pub use tls::{TlsClient, Trust};
