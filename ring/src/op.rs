//! Typed operations in `user_data`. The user of a [`crate::Driver`] names its operations with
//! its own type ([`Operation`]); the driver keeps the top bit of `user_data` for itself.
//!
//! [`Packed`] is the layout most users want: bits 0..8 the kind, 8..31 a generation, bit 31
//! one more bit of the user's (which handle of the slot), 32..63 a slot. The generation tells
//! a late completion for a slot's previous occupant from one for its current occupant.

use std::fmt;

/// An operation kind the user tags its submissions with; every completion is decoded back
/// into one, or reported as unknown (never dropped).
pub trait Operation: Copy + fmt::Debug {
    /// The `user_data` that stands for this operation; bit 63 must be clear.
    fn encode(self) -> u64;
    /// The operation `user_data` stands for; `None` for a value never encoded.
    fn decode(user_data: u64) -> Option<Self>;
}

/// Bit 63 of `user_data`: set on the driver's own submissions and on operations that own
/// memory (their `user_data` indexes the driver's table of that memory).
pub(crate) const DRIVER_BIT: u64 = 1 << 63;

/// Kind, slot, generation and one more bit in 63 bits of `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packed {
    /// What the operation is (user-defined; 0 is as good as any).
    pub kind: u8,
    /// Index in the user's table (31 bits).
    pub slot: u32,
    /// Generation of the slot (wraps at [`Packed::GEN_MASK`]).
    pub gen: u32,
    /// One more bit the user gives a meaning to.
    pub sub: bool,
}

impl Packed {
    /// Generations wrap at 23 bits.
    pub const GEN_MASK: u32 = (1 << 23) - 1;
    /// Slots fit in 31 bits.
    pub const SLOT_MASK: u32 = (1 << 31) - 1;

    /// The `user_data`: out-of-range slot and generation bits are masked off.
    pub fn encode(self) -> u64 {
        (u64::from(self.slot & Self::SLOT_MASK) << 32)
            | (u64::from(self.sub) << 31)
            | (u64::from(self.gen & Self::GEN_MASK) << 8)
            | u64::from(self.kind)
    }

    /// The fields of `user_data` (bit 63 ignored).
    pub fn decode(user_data: u64) -> Self {
        Packed {
            kind: user_data as u8,
            slot: ((user_data >> 32) as u32) & Self::SLOT_MASK,
            gen: ((user_data >> 8) as u32) & Self::GEN_MASK,
            sub: (user_data >> 31) & 1 == 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_round_trips_and_leaves_the_driver_bit_clear() {
        for p in [
            Packed {
                kind: 0xff,
                slot: Packed::SLOT_MASK,
                gen: Packed::GEN_MASK,
                sub: true,
            },
            Packed {
                kind: 1,
                slot: 70_000,
                gen: 5,
                sub: false,
            },
        ] {
            let u = p.encode();
            assert_eq!(u & DRIVER_BIT, 0);
            assert_eq!(Packed::decode(u), p);
        }
        let wide = Packed {
            kind: 2,
            slot: u32::MAX,
            gen: (1 << 23) + 3,
            sub: false,
        };
        assert_eq!(wide.encode() & DRIVER_BIT, 0);
        assert_eq!(Packed::decode(wide.encode()).gen, 3);
    }
}
