//! Figures as the table and the progress line print them: latencies in the unit that fits
//! and fractions as percentages. Every layer that prints a figure uses these, so they sit
//! below all of them.

/// `1.5%`, `0.013%`, `0%`.
pub fn percent(f: f64) -> String {
    let p = f * 100.0;
    if p == 0.0 {
        "0%".into()
    } else if p >= 1.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.3}%")
    }
}

/// A latency in the unit that fits: `850ns`, `105.5µs`, `12.34ms`, `1.50s`, up to an hour
/// (`3600.00s`) in at most 8 characters.
pub fn fmt_ns(ns: u64) -> String {
    let v = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", v / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", v / 1e6)
    } else {
        format!("{:.2}s", v / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_read_in_the_unit_that_fits() {
        assert_eq!(fmt_ns(850), "850ns");
        assert_eq!(fmt_ns(105_500), "105.5µs");
        assert_eq!(fmt_ns(999_949), "999.9µs");
        assert_eq!(fmt_ns(12_345_678), "12.35ms");
        assert_eq!(fmt_ns(1_500_000_000), "1.50s");
        assert_eq!(fmt_ns(crate::stats::MAX_LATENCY_NS), "3600.00s");
        assert!(fmt_ns(crate::stats::MAX_LATENCY_NS).chars().count() <= 8);
    }

    #[test]
    fn percentages() {
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.25), "25.0%");
        assert_eq!(percent(0.00013), "0.013%");
    }
}
