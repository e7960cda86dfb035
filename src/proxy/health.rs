//! Active health checks of proxy mode, off the workers: one thread checks every upstream of
//! the configuration in force each `--check-interval` (all of them at once, each on a thread
//! of its own for that round, with plain blocking sockets and timeouts), and marks an
//! upstream down after `--check-fall` failures in a row, up again after `--check-rise`
//! passes. A check is a TCP connect; with `--check-send` it also sends that text, and with
//! `--check-expect` the reply must begin with that text.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Upstreams;

/// How upstreams are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Time between the starts of two checks of an upstream.
    pub interval: Duration,
    /// How long a check (connect, send, reply) may take in all.
    pub timeout: Duration,
    /// Passes in a row that bring a down upstream back.
    pub rise: u32,
    /// Failures in a row that take an upstream down.
    pub fall: u32,
    /// Sent once connected, if any.
    pub send: Option<Vec<u8>>,
    /// What the reply must begin with, if anything.
    pub expect: Option<Vec<u8>>,
}

/// One check of `addr`: true if it passed.
pub fn check(addr: SocketAddr, how: &HealthCheck) -> bool {
    let deadline = Instant::now() + how.timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, how.timeout) else {
        return false;
    };
    if let Some(send) = &how.send {
        let Some(t) = left() else { return false };
        if s.set_write_timeout(Some(t)).is_err() || s.write_all(send).is_err() {
            return false;
        }
    }
    let Some(expect) = &how.expect else {
        return true;
    };
    let mut got = Vec::with_capacity(expect.len());
    let mut buf = [0u8; 512];
    while got.len() < expect.len() {
        let Some(t) = left() else { return false };
        if s.set_read_timeout(Some(t)).is_err() {
            return false;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got.starts_with(expect)
}

/// Passes or failures in a row, per slot.
#[derive(Debug, Default)]
pub struct Streaks {
    /// Slot → (passes in a row, failures in a row).
    by_slot: HashMap<usize, (u32, u32)>,
}

impl Streaks {
    /// Counts one result for slot `i` of `ups`, and marks it down or up when its streak
    /// reaches `fall` or `rise`.
    pub fn record(&mut self, ups: &Upstreams, i: usize, passed: bool, how: &HealthCheck) {
        let u = ups.get(i);
        let streak = self.by_slot.entry(i).or_default();
        if passed {
            u.stats.checks_passed.fetch_add(1, Ordering::Relaxed);
            *streak = (streak.0.saturating_add(1), 0);
            if streak.0 >= how.rise && ups.set_checked_down(i, false) {
                tracing::info!(upstream = %u.addr, "upstream up: {} checks passed", streak.0);
            }
        } else {
            u.stats.checks_failed.fetch_add(1, Ordering::Relaxed);
            *streak = (0, streak.1.saturating_add(1));
            if streak.1 >= how.fall && ups.set_checked_down(i, true) {
                tracing::warn!(upstream = %u.addr, "upstream down: {} checks failed", streak.1);
            }
        }
    }
}

/// Checks every upstream of `ups` once, at the same time; returns (slot, passed).
pub fn round(ups: &Upstreams, how: &HealthCheck) -> Vec<(usize, bool)> {
    let slots = ups.member_slots();
    std::thread::scope(|s| {
        let running: Vec<_> = slots
            .iter()
            .map(|&i| {
                let addr = ups.get(i).addr;
                // A thread that cannot start (no memory, a thread limit) is a failed check,
                // not the end of the checks.
                let t = std::thread::Builder::new().spawn_scoped(s, move || check(addr, how));
                (i, t.ok())
            })
            .collect();
        running
            .into_iter()
            .map(|(i, t)| (i, t.is_some_and(|t| t.join().unwrap_or(false))))
            .collect()
    })
}

/// Runs rounds of checks until `stopped` says so: `current` gives the upstreams in force and
/// their checks, if any. Upstreams whose checks were turned off are up as far as checks go.
pub fn run(
    current: impl Fn() -> Option<(Arc<Upstreams>, Option<HealthCheck>)>,
    stopped: impl Fn() -> bool,
) {
    let mut streaks = Streaks::default();
    let mut next = Instant::now();
    while !stopped() {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
            continue;
        }
        next = now + Duration::from_millis(200);
        match current() {
            Some((ups, Some(how))) => {
                next = now + how.interval;
                for (i, passed) in round(&ups, &how) {
                    streaks.record(&ups, i, passed, &how);
                }
            }
            Some((ups, None)) => {
                streaks = Streaks::default();
                for i in ups.member_slots() {
                    ups.set_checked_down(i, false);
                }
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::Balance;
    use std::net::TcpListener;

    fn how(send: Option<&str>, expect: Option<&str>) -> HealthCheck {
        HealthCheck {
            interval: Duration::from_millis(10),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 2,
            send: send.map(|s| s.as_bytes().to_vec()),
            expect: expect.map(|s| s.as_bytes().to_vec()),
        }
    }

    #[test]
    fn a_check_connects_sends_and_expects() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..3 {
                let (mut s, _) = l.accept().unwrap();
                let mut b = [0u8; 4];
                let _ = s.read_exact(&mut b);
                let _ = s.write_all(b"+PONG\r\n");
            }
        });
        assert!(check(addr, &how(Some("PING"), Some("+PONG"))));
        assert!(!check(addr, &how(Some("PING"), Some("-ERR"))));
        assert!(check(addr, &how(Some("PING"), None)));
        server.join().unwrap();
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(!check(closed, &how(None, None)));
    }

    #[test]
    fn fall_and_rise_need_streaks() {
        let ups = Upstreams::new(
            vec!["127.0.0.1:1".parse().unwrap()],
            Balance::RoundRobin,
            Duration::ZERO,
        );
        let how = how(None, None);
        let mut s = Streaks::default();
        s.record(&ups, 0, false, &how);
        assert!(!ups.checked_down(0));
        s.record(&ups, 0, true, &how);
        s.record(&ups, 0, false, &how);
        assert!(!ups.checked_down(0), "the streak was broken");
        s.record(&ups, 0, false, &how);
        assert!(ups.checked_down(0));
        s.record(&ups, 0, true, &how);
        assert!(ups.checked_down(0));
        s.record(&ups, 0, true, &how);
        assert!(!ups.checked_down(0));
        assert_eq!(ups.get(0).stats.checks_failed.load(Ordering::Relaxed), 3);
        assert_eq!(ups.get(0).stats.checks_passed.load(Ordering::Relaxed), 3);
    }
}
