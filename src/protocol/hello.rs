//! `hello`: the origin server. Read one message (up to 1024 bytes), reply the greeting,
//! close. A connect-request-close workload.
//!
//! The origin read with a single `recv(1024)` and replied whatever it got, even nothing: so
//! the first input of any size triggers the reply, and so does EOF before any input.

use std::sync::Arc;

use super::Outcome;

/// The most the origin read of the message.
const MESSAGE_LIMIT: usize = 1024;

/// State of one `hello` connection.
#[derive(Debug)]
pub struct Hello {
    /// The reply.
    greeting: Arc<[u8]>,
    /// The greeting was already queued; nothing more will be.
    replied: bool,
}

impl Hello {
    pub(super) fn new(greeting: Arc<[u8]>) -> Self {
        Hello {
            greeting,
            replied: false,
        }
    }

    pub(super) fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Outcome {
        if input.is_empty() {
            return Outcome::keep(0);
        }
        self.reply(out);
        Outcome::close(input.len().min(MESSAGE_LIMIT))
    }

    pub(super) fn on_eof(&mut self, out: &mut Vec<u8>) {
        self.reply(out);
    }

    /// Replies sent so far (0 or 1).
    pub fn answered(&self) -> u64 {
        u64::from(self.replied)
    }

    fn reply(&mut self, out: &mut Vec<u8>) {
        if !self.replied {
            self.replied = true;
            out.extend_from_slice(&self.greeting);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::protocol::testutil::assert_split_invariant;
    use crate::protocol::{ProtocolKind, ProtocolSpec};

    #[test]
    fn replies_greeting_once_and_closes() {
        let spec = ProtocolSpec::with_defaults(ProtocolKind::Hello);
        let (out, close) = assert_split_invariant(&spec, b"hi there");
        assert_eq!(out, b"Hello, world!");
        assert!(close);
    }

    #[test]
    fn eof_without_input_still_greets_once() {
        let spec = ProtocolSpec::with_defaults(ProtocolKind::Hello);
        let mut s = spec.session();
        let mut out = Vec::new();
        s.on_eof(&mut out);
        s.on_eof(&mut out);
        assert_eq!(out, b"Hello, world!");
    }

    #[test]
    fn custom_greeting() {
        let spec = ProtocolSpec::new(ProtocolKind::Hello, b"hey", b"");
        let mut out = Vec::new();
        let o = spec.session().on_input(&[0u8; 4000], &mut out);
        assert_eq!(out, b"hey");
        assert!(o.close);
        assert_eq!(o.consumed, 1024);
    }
}
