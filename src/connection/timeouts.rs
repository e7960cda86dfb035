//! Time on the connection layer: a worker's coarse clock and the limits its connections
//! measure against. Times are milliseconds since the worker started ([`Millis`]); the engine
//! advances the clock once per turn of its loop (or per tick), never per byte.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Milliseconds on a worker's [`Clock`]; 0 never occurs as a time, so it can mean "none".
pub type Millis = u64;

/// How long a closing connection reads and drops input after its FIN while waiting for the
/// peer's EOF, at most (nginx calls this a lingering close).
pub const LINGER: Duration = Duration::from_secs(2);

/// How long a connection that is idle when a drain starts (or becomes idle during it) may
/// still bring one more request, answered with `Connection: close`.
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// A worker's coarse millisecond clock.
#[derive(Debug)]
pub struct Clock {
    /// When the worker started.
    origin: Instant,
    /// Milliseconds since `origin`, plus one so that 0 can mean "never".
    now: Cell<Millis>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            origin: Instant::now(),
            now: Cell::new(1),
        }
    }
}

impl Clock {
    /// The time last read.
    #[inline]
    pub fn now(&self) -> Millis {
        self.now.get()
    }

    /// Reads the real time, keeps it and returns it.
    pub fn advance(&self) -> Millis {
        let t = self.origin.elapsed().as_millis() as Millis + 1;
        self.now.set(t);
        t
    }
}

/// The limits a worker's connections run under, in milliseconds (0: off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `--idle-timeout`: no bytes either way for this long ends a connection.
    pub idle_ms: Millis,
    /// `--header-timeout`: an incomplete request older than this gets a `408` (http).
    pub header_ms: Millis,
    /// The lingering close after a FIN ([`LINGER`], never longer than the idle timeout).
    pub linger_ms: Millis,
    /// The drain's grace for idle connections ([`DRAIN_GRACE`], at most half the shutdown
    /// timeout).
    pub drain_grace_ms: Millis,
    /// `--max-pending-output`: stop reading while more than this is unsent; resume at half.
    pub max_pending: usize,
}

impl Limits {
    /// The limits from `--idle-timeout`, `--header-timeout`, `--shutdown-timeout` and
    /// `--max-pending-output`.
    pub fn new(idle: Duration, header: Duration, shutdown: Duration, max_pending: usize) -> Self {
        let ms = |d: Duration| d.as_millis().min(u128::from(u32::MAX)) as Millis;
        let idle_ms = ms(idle);
        let linger = ms(LINGER);
        Limits {
            idle_ms,
            header_ms: ms(header),
            linger_ms: if idle_ms > 0 {
                linger.min(idle_ms)
            } else {
                linger
            },
            drain_grace_ms: ms(DRAIN_GRACE).min(ms(shutdown) / 2),
            max_pending,
        }
    }

    /// How often a worker looks for connections whose deadline passed: a quarter of the
    /// shortest limit, between 10 and 100 ms.
    pub fn tick(&self) -> Duration {
        let shortest = [
            self.idle_ms,
            self.header_ms,
            self.linger_ms,
            self.drain_grace_ms,
        ]
        .into_iter()
        .filter(|&t| t > 0)
        .min()
        .unwrap_or(400);
        Duration::from_millis((shortest / 4).clamp(10, 100))
    }
}

#[cfg(test)]
impl Limits {
    /// Limits for unit tests.
    pub fn for_tests(idle_ms: Millis, header_ms: Millis, max_pending: usize) -> Self {
        Limits {
            idle_ms,
            header_ms,
            linger_ms: 2000,
            drain_grace_ms: 1000,
            max_pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_options() {
        let ms = Duration::from_millis;
        let l = Limits::new(ms(500), Duration::ZERO, ms(600), 1024);
        assert_eq!(l.idle_ms, 500);
        assert_eq!(l.header_ms, 0);
        assert_eq!(l.linger_ms, 500);
        assert_eq!(l.drain_grace_ms, 300);
        assert_eq!(l.tick(), Duration::from_millis(75));
        let l = Limits::new(Duration::ZERO, Duration::ZERO, Duration::from_secs(5), 1024);
        assert_eq!(l.linger_ms, 2000);
        assert_eq!(l.drain_grace_ms, 1000);
        assert_eq!(l.tick(), Duration::from_millis(100));
    }
}
