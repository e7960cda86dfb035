//! Time in a merge: the window every run was measuring, how many requests each run
//! completed inside it, and each run's seconds placed on one shared clock. Pure arithmetic
//! on wall-clock seconds, so it is tested without any run.

/// What one run counted over one span of wall-clock time (a second of its timeseries, or
/// one interval of its log).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Start, seconds since the Unix epoch.
    pub start: f64,
    /// Length in seconds.
    pub len: f64,
    /// Requests completed in it.
    pub completed: u64,
    /// Error events in it.
    pub errors: u64,
}

/// One run's measured window and what it counted in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Start of the measured window, seconds since the Unix epoch.
    pub start: f64,
    /// End of the measured window, on the same clock.
    pub end: f64,
    /// Its counts over time, in order.
    pub buckets: Vec<Bucket>,
}

/// The window every run was measuring: from the latest start to the earliest end. `None`
/// when they never all measured at once.
pub fn common(spans: &[Span]) -> Option<(f64, f64)> {
    let start = spans.iter().map(|s| s.start).fold(f64::MIN, f64::max);
    let end = spans.iter().map(|s| s.end).fold(f64::MAX, f64::min);
    (!spans.is_empty() && end > start).then_some((start, end))
}

/// Requests `span` completed within `[w0, w1]`. A bucket counts for the part of it inside
/// both the run's window and `[w0, w1]`, assuming its requests spread evenly over it; a
/// bucket wholly outside the run's window (the responses that came in after the window
/// closed) counts as if at the window's edge. So a run merged alone counts every request
/// it measured, and runs that started apart count only what they did together.
pub fn completed_within(span: &Span, w0: f64, w1: f64) -> f64 {
    let mut total = 0.0;
    for b in &span.buckets {
        let a = b.start.max(span.start);
        let z = (b.start + b.len).min(span.end);
        let n = b.completed as f64;
        if z > a {
            let inside = (z.min(w1) - a.max(w0)).max(0.0);
            total += n * inside / (z - a);
        } else {
            let edge = if b.start >= span.end {
                span.end
            } else {
                span.start
            };
            if (w0..=w1).contains(&edge) {
                total += n;
            }
        }
    }
    total
}

/// Which second of a clock starting at `t0` a bucket starting at `start` falls in, to the
/// nearest second (runs start at fractions of a second apart; their seconds line up to
/// within half of one).
pub fn second_of(start: f64, t0: f64) -> usize {
    (start - t0).round().max(0.0) as usize
}

/// A wall-clock time as seconds after `t0`, for messages.
pub fn after(t: f64, t0: f64) -> String {
    format!("+{:.3} s", t - t0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: f64, secs: &[u64], end: f64) -> Span {
        Span {
            start,
            end,
            buckets: secs
                .iter()
                .enumerate()
                .map(|(k, &n)| Bucket {
                    start: start + k as f64,
                    len: 1.0,
                    completed: n,
                    errors: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn the_common_window_is_the_overlap() {
        let a = span(100.0, &[], 110.0);
        let b = span(100.4, &[], 110.4);
        assert_eq!(common(&[a.clone(), b.clone()]), Some((100.4, 110.0)));
        assert_eq!(common(std::slice::from_ref(&a)), Some((100.0, 110.0)));
        let late = span(110.0, &[], 120.0);
        assert_eq!(common(&[a.clone(), late]), None);
        assert_eq!(common(&[]), None);
        let empty = span(105.0, &[], 105.0);
        assert_eq!(common(&[a, empty]), None);
    }

    #[test]
    fn a_run_alone_counts_every_request_even_the_late_ones() {
        // 3 s measured; the fourth bucket holds responses that came after the window.
        let s = span(100.0, &[10, 10, 10, 4], 103.0);
        assert_eq!(completed_within(&s, 100.0, 103.0), 34.0);
        // A window of 2.5 s: 2.5 seconds' worth; the late ones are past its end.
        assert_eq!(completed_within(&s, 100.0, 102.5), 25.0);
        assert_eq!(completed_within(&s, 100.5, 103.0), 29.0);
    }

    #[test]
    fn a_partial_last_second_is_counted_over_its_real_length() {
        // 2.5 s measured: the third second's requests came in its first half.
        let s = span(0.0, &[10, 10, 5], 2.5);
        assert_eq!(completed_within(&s, 0.0, 2.5), 25.0);
        assert_eq!(completed_within(&s, 2.0, 2.25), 2.5);
    }

    #[test]
    fn seconds_line_up_to_the_nearest() {
        assert_eq!(second_of(100.4, 100.0), 0);
        assert_eq!(second_of(100.6, 100.0), 1);
        assert_eq!(second_of(99.0, 100.0), 0);
        assert_eq!(after(101.25, 100.0), "+1.250 s");
    }
}
