//! `echo`: every byte back, in order. The canonical benchmark protocol.
//!
//! Engines with owned buffers never call this: they send the received buffer itself
//! (see [`super::Session::is_echo`]). It exists so that every engine can drive every protocol
//! through one interface, and as the reference the zero-copy paths are tested against.

use super::Outcome;

/// Copies all of `input` to `out`.
pub(super) fn on_input(input: &[u8], out: &mut Vec<u8>) -> Outcome {
    out.extend_from_slice(input);
    Outcome::keep(input.len())
}

#[cfg(test)]
mod tests {
    use crate::protocol::testutil::assert_split_invariant;
    use crate::protocol::{ProtocolKind, ProtocolSpec};

    #[test]
    fn echoes_everything_at_every_split() {
        let spec = ProtocolSpec::with_defaults(ProtocolKind::Echo);
        let input: Vec<u8> = (0..=255u8).collect();
        let (out, close) = assert_split_invariant(&spec, &input);
        assert_eq!(out, input);
        assert!(!close);
    }

    #[test]
    fn empty_input_is_a_no_op() {
        let spec = ProtocolSpec::with_defaults(ProtocolKind::Echo);
        let mut out = Vec::new();
        let o = spec.session().on_input(&[], &mut out);
        assert_eq!(o.consumed, 0);
        assert!(out.is_empty());
    }
}
