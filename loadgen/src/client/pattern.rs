//! The echo stream's bytes: a deterministic pattern, different for every connection, that
//! lets loadgen verify every echoed byte without keeping a copy of what it sent, and send
//! without a buffer of its own (bytes are written straight from the shared table).

/// Period of the pattern: a prime, so that a stream shifted by anything short of a whole
/// period (a lost, duplicated or reordered chunk) no longer matches.
const PATTERN_PERIOD: usize = 65_537;

/// Periods the table holds: a window starting anywhere in the first period runs on for all
/// the others as one contiguous slice.
const TABLE_PERIODS: usize = 4;

/// The longest contiguous slice [`pattern_window`] returns.
pub const MAX_WINDOW: usize = PATTERN_PERIOD * (TABLE_PERIODS - 1);

/// The pattern, repeated so that any `MAX_WINDOW`-long window is one contiguous slice.
fn pattern_table() -> &'static [u8] {
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let once: Vec<u8> = (0..PATTERN_PERIOD)
            .map(|_| {
                // xorshift64: deterministic, cheap, no visible structure.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        once.repeat(TABLE_PERIODS)
    })
}

/// Where stream `seed`'s byte at `offset` sits in the pattern: each connection starts at its
/// own phase, so bytes delivered to the wrong connection are caught too.
fn pattern_pos(seed: u64, offset: u64) -> usize {
    (offset.wrapping_add(seed.wrapping_mul(7_919)) % PATTERN_PERIOD as u64) as usize
}

/// The byte at `offset` of connection `seed`'s echo stream.
pub fn pattern_byte(seed: u64, offset: u64) -> u8 {
    pattern_table()[pattern_pos(seed, offset)]
}

/// Stream `seed`'s bytes from `offset` on, at most `max` (and at most [`MAX_WINDOW`]) of
/// them, as a slice of the shared table: what a sender writes, with no copy.
pub fn pattern_window(seed: u64, offset: u64, max: u64) -> &'static [u8] {
    let pos = pattern_pos(seed, offset);
    let n = max.min(MAX_WINDOW as u64) as usize;
    &pattern_table()[pos..pos + n]
}

/// Fills `buf` with the pattern of stream `seed` starting at `offset` (memcpy speed).
pub fn fill_pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut done = 0;
    while done < buf.len() {
        let w = pattern_window(seed, offset + done as u64, (buf.len() - done) as u64);
        buf[done..done + w.len()].copy_from_slice(w);
        done += w.len();
    }
}

/// Counts the bytes of `buf` that differ from the pattern of `seed` at `offset` (memcmp
/// speed when they all match).
pub fn pattern_mismatches(seed: u64, offset: u64, buf: &[u8]) -> usize {
    let mut bad = 0;
    let mut done = 0;
    while done < buf.len() {
        let want = pattern_window(seed, offset + done as u64, (buf.len() - done) as u64);
        let got = &buf[done..done + want.len()];
        if got != want {
            bad += got.iter().zip(want).filter(|(a, b)| a != b).count();
        }
        done += want.len();
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_round_trip_and_detects_corruption() {
        let mut long = vec![0u8; 500_000];
        fill_pattern(3, 12_345, &mut long);
        assert_eq!(pattern_mismatches(3, 12_345, &long), 0);
        assert_eq!(long[1000], pattern_byte(3, 13_345));
        assert_eq!(long[400_000], pattern_byte(3, 412_345));
        let mut buf = vec![0u8; 300];
        fill_pattern(7, 1000, &mut buf);
        assert_eq!(pattern_mismatches(7, 1000, &buf), 0);
        assert!(pattern_mismatches(8, 1000, &buf) > 0);
        assert!(pattern_mismatches(7, 1001, &buf) > 0);
        buf[10] ^= 1;
        assert_eq!(pattern_mismatches(7, 1000, &buf), 1);
    }

    #[test]
    fn windows_are_the_stream_and_never_longer_than_asked() {
        for (seed, offset) in [(0, 0), (5, 65_536), (9, 1 << 40)] {
            let w = pattern_window(seed, offset, u64::MAX);
            assert_eq!(w.len(), MAX_WINDOW);
            assert_eq!(pattern_mismatches(seed, offset, w), 0);
            assert_eq!(
                w[MAX_WINDOW - 1],
                pattern_byte(seed, offset + MAX_WINDOW as u64 - 1)
            );
            assert_eq!(pattern_window(seed, offset, 3).len(), 3);
        }
    }
}
