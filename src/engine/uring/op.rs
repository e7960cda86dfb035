//! The operations of the `uring` engine, typed. Every SQE carries an [`Op`] encoded in its
//! `user_data`, and every completion is decoded back into one and matched exhaustively: an
//! operation added later cannot be dropped silently by a catch-all.
//!
//! Layout of `user_data` ([`Packed`]): the operation, the session's slot and generation, and
//! the socket (a proxied connection has two: client, upstream). The generation tells a late
//! completion for a slot's previous session from one for its current session.

use ringd_ring::{Operation, Packed};

use crate::proxy::Side;

/// A connection's socket as the ring knows it: its slot in the worker's table, the
/// generation of that slot, and which socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// Index in the worker's connection table.
    pub slot: u32,
    /// How many connections used the slot before (23 bits, wrapping).
    pub gen: u32,
    /// The socket.
    pub side: Side,
}

impl Token {
    /// Generations wrap at 23 bits.
    pub const GEN_MASK: u32 = Packed::GEN_MASK;

    /// The token of slot `slot`, generation `gen`, client socket.
    pub fn new(slot: usize, gen: u32) -> Self {
        Token {
            slot: slot as u32,
            gen: gen & Self::GEN_MASK,
            side: Side::Client,
        }
    }

    /// The same connection's socket `side`.
    pub fn on(self, side: Side) -> Self {
        Token { side, ..self }
    }
}

/// What a submission is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The multishot accept on the worker's listener.
    Accept,
    /// The pause before accepting again after a resource error.
    AcceptRetry,
    /// The cancel of the accept when the listener is handed over.
    AcceptCancel,
    /// The loop's multishot heartbeat.
    Tick,
    /// The multishot poll on the worker's lifecycle doorbell.
    Bell,
    /// A connection's multishot recv.
    Recv(Token),
    /// A connection's send (of the front of its queue).
    Send(Token),
    /// A connection's FIN (`shutdown(SHUT_WR)`), alone or linked behind its last send.
    Fin(Token),
    /// A cancel of a connection's operations (its recv, or all of them).
    Cancel(Token),
    /// A connection's close.
    Close(Token),
    /// A proxied connection's connect to its upstream.
    Connect(Token),
    /// The `SO_LINGER` 0 before a connection's close (a reset).
    Linger(Token),
}

impl Op {
    const ACCEPT: u64 = 1;
    const ACCEPT_RETRY: u64 = 2;
    const ACCEPT_CANCEL: u64 = 3;
    const TICK: u64 = 4;
    const RECV: u64 = 5;
    const SEND: u64 = 6;
    const FIN: u64 = 7;
    const CANCEL: u64 = 8;
    const CLOSE: u64 = 9;
    const CONNECT: u64 = 11;
    const BELL: u64 = 12;
    const LINGER: u64 = 13;

    fn packed(self) -> Packed {
        let conn = |kind: u64, t: Token| Packed {
            kind: kind as u8,
            slot: t.slot,
            gen: t.gen,
            sub: t.side == Side::Upstream,
        };
        let worker = |kind: u64| Packed {
            kind: kind as u8,
            slot: 0,
            gen: 0,
            sub: false,
        };
        match self {
            Op::Accept => worker(Self::ACCEPT),
            Op::AcceptRetry => worker(Self::ACCEPT_RETRY),
            Op::AcceptCancel => worker(Self::ACCEPT_CANCEL),
            Op::Tick => worker(Self::TICK),
            Op::Bell => worker(Self::BELL),
            Op::Recv(t) => conn(Self::RECV, t),
            Op::Send(t) => conn(Self::SEND, t),
            Op::Fin(t) => conn(Self::FIN, t),
            Op::Cancel(t) => conn(Self::CANCEL, t),
            Op::Close(t) => conn(Self::CLOSE, t),
            Op::Connect(t) => conn(Self::CONNECT, t),
            Op::Linger(t) => conn(Self::LINGER, t),
        }
    }
}

impl Operation for Op {
    fn encode(self) -> u64 {
        self.packed().encode()
    }

    fn decode(user_data: u64) -> Option<Op> {
        let p = Packed::decode(user_data);
        let token = Token {
            slot: p.slot,
            gen: p.gen,
            side: match p.sub {
                false => Side::Client,
                true => Side::Upstream,
            },
        };
        let worker_op = |op: Op| (user_data >> 8 == 0).then_some(op);
        match u64::from(p.kind) {
            Self::ACCEPT => worker_op(Op::Accept),
            Self::ACCEPT_RETRY => worker_op(Op::AcceptRetry),
            Self::ACCEPT_CANCEL => worker_op(Op::AcceptCancel),
            Self::TICK => worker_op(Op::Tick),
            Self::BELL => worker_op(Op::Bell),
            Self::RECV => Some(Op::Recv(token)),
            Self::SEND => Some(Op::Send(token)),
            Self::FIN => Some(Op::Fin(token)),
            Self::CANCEL => Some(Op::Cancel(token)),
            Self::CLOSE => Some(Op::Close(token)),
            Self::CONNECT => Some(Op::Connect(token)),
            Self::LINGER => Some(Op::Linger(token)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = Token::new(70_000, (1 << 23) + 5);
        assert_eq!(t.gen, 5);
        let u = t.on(Side::Upstream);
        for op in [
            Op::Accept,
            Op::AcceptRetry,
            Op::AcceptCancel,
            Op::Tick,
            Op::Bell,
            Op::Recv(t),
            Op::Send(t),
            Op::Fin(t),
            Op::Cancel(t),
            Op::Close(Token::new(Packed::SLOT_MASK as usize, Token::GEN_MASK)),
            Op::Recv(u),
            Op::Connect(u),
            Op::Linger(u),
            Op::Close(Token::new(Packed::SLOT_MASK as usize, Token::GEN_MASK).on(Side::Upstream)),
        ] {
            assert_eq!(Op::decode(op.encode()), Some(op), "{op:?}");
        }
        assert_eq!(Op::decode(0), None);
        assert_eq!(Op::decode(0xff), None);
        assert_eq!(Op::decode((1 << 32) | 1), None, "worker ops carry no slot");
    }
}
