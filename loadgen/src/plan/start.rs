//! `--start-at`: the wall-clock instant every thread begins (warm-up first), so loadgens on
//! several hosts, started by their own tooling, measure the same window.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ringd_common::units::parse_duration;

/// How far in the past a start time may be and still mean "now": the time it takes tooling
/// to start the command after computing it.
pub const PAST_SLACK: Duration = Duration::from_secs(1);
/// Furthest ahead a start time may be.
pub const MAX_AHEAD: Duration = Duration::from_secs(24 * 3600);

/// Resolves `UNIX_TIME` (seconds since the epoch, fractions allowed) or `+DUR` (from `now`)
/// into seconds since the epoch; refuses a time more than [`PAST_SLACK`] ago or more than
/// [`MAX_AHEAD`] ahead.
pub fn resolve(s: &str, now: SystemTime) -> Result<f64, String> {
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let t = s.trim();
    let at = match t.strip_prefix('+') {
        Some(d) => now_s + parse_duration(d).map_err(|e| format!("--start-at {s:?}: {e}"))?.as_secs_f64(),
        None => t.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| {
            format!("bad --start-at {s:?}: seconds since the Unix epoch (date +%s) or +DURATION such as +30s")
        })?,
    };
    if at < now_s - PAST_SLACK.as_secs_f64() {
        return Err(format!(
            "--start-at {s}: that is {:.1} s in the past",
            now_s - at
        ));
    }
    if at > now_s + MAX_AHEAD.as_secs_f64() {
        return Err(format!(
            "--start-at {s}: that is {:.0} s ahead, more than a day",
            at - now_s
        ));
    }
    Ok(at)
}

/// How long to wait from `now` until `at_unix_s` (zero if it has passed).
pub fn wait(at_unix_s: f64, now: SystemTime) -> Duration {
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    Duration::from_secs_f64((at_unix_s - now_s).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_and_relative_times_within_a_day() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(resolve("+2s", now), Ok(1_800_000_002.0));
        assert_eq!(resolve("1800000060", now), Ok(1_800_000_060.0));
        assert_eq!(resolve("1799999999.5", now), Ok(1_799_999_999.5));
        assert!(resolve("1799999998", now)
            .unwrap_err()
            .contains("in the past"));
        assert!(resolve("+25h", now)
            .unwrap_err()
            .contains("more than a day"));
        assert!(resolve("soon", now).unwrap_err().contains("date +%s"));
        assert!(resolve("+x", now).is_err());
        assert_eq!(wait(1_800_000_002.0, now), Duration::from_secs(2));
        assert_eq!(wait(1.0, now), Duration::ZERO);
    }
}
