//! Units on the command line: byte sizes (`4096`, `4KiB`, `1MiB`) and durations (`500ms`,
//! `10s`, `0`), shared by ringd and loadgen.

use std::time::Duration;

/// Parses a byte size such as `4096`, `4KiB`, `64 KB` or `1MiB`.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let n = parse_size::parse_size(s).map_err(|e| format!("{e} (try e.g. 4096, 4KiB, 1MiB)"))?;
    usize::try_from(n).map_err(|_| "size too large".to_string())
}

/// Longest duration accepted: deadlines are instants and milliseconds in `u64`, which a
/// duration of centuries would overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a duration such as `10s`, `500ms`, `1m30s` or `0`, up to [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (try e.g. 10s, 500ms, 1m)"))?;
    if d > MAX_DURATION {
        return Err("longer than the longest duration accepted, 365 days".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_bytes("64KiB"), Ok(65536));
        assert_eq!(parse_bytes("512"), Ok(512));
        assert!(parse_bytes("lots").is_err());
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
        assert!(parse_duration("366d").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
