//! The `Date` header of every `http` response (RFC 9110 §6.6.1: an origin server with a
//! clock sends one), as an IMF-fixdate. The only clock the protocol layer reads: the line is
//! formatted at most once a second, per thread (each worker keeps its own, nothing is
//! shared on the hot path), and copied into each response. A test pins it ([`pin`]) to
//! compare whole responses byte for byte.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::time::{clock_gettime, ClockId};

/// Length of a [`DateLine`]: `Date: `, an IMF-fixdate (always 29 bytes), CRLF.
pub const LINE_LEN: usize = 37;

/// A whole header line, `Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n`.
pub type DateLine = [u8; LINE_LEN];

/// The last second httpdate formats (it refuses years past 9999).
const LAST_SECOND: u64 = 253_402_300_799;

/// One thread's line and the second it is for.
#[derive(Debug)]
struct Cache {
    /// Seconds since the Unix epoch that `line` says (`u64::MAX`: not yet formatted).
    secs: u64,
    /// The line for `secs`.
    line: DateLine,
    /// Set by [`pin`]: `line` is kept whatever the clock says.
    pinned: bool,
}

thread_local! {
    static CACHE: RefCell<Cache> = const {
        RefCell::new(Cache { secs: u64::MAX, line: [0; LINE_LEN], pinned: false })
    };
}

/// The `Date` line for now (or the pinned one).
pub fn now() -> DateLine {
    CACHE.with_borrow_mut(|c| {
        if !c.pinned {
            // The coarse clock (the time of the last tick, a few ms behind) is read from the
            // vDSO in a few ns, where a precise read (`SystemTime::now`) costs tens of ns on
            // a VM: a large share of a response. A date to the second needs no more.
            let secs = clock_gettime(ClockId::RealtimeCoarse).tv_sec;
            let secs = u64::try_from(secs).unwrap_or(0).min(LAST_SECOND);
            if secs != c.secs {
                c.secs = secs;
                c.line = render(UNIX_EPOCH + Duration::from_secs(secs));
            }
        }
        c.line
    })
}

/// The `Date` line for `t`, a time from 1970 to 9999.
fn render(t: SystemTime) -> DateLine {
    let mut line = [0u8; LINE_LEN];
    line[..6].copy_from_slice(b"Date: ");
    // IMF-fixdate has a fixed length: httpdate writes 29 bytes for every time it accepts
    // (`now` clamps to those).
    line[6..LINE_LEN - 2].copy_from_slice(httpdate::fmt_http_date(t).as_bytes());
    line[LINE_LEN - 2..].copy_from_slice(b"\r\n");
    line
}

/// Pins this thread's line to the one for `t`, or with `None` returns it to the clock.
#[cfg(test)]
pub(crate) fn pin(t: Option<SystemTime>) {
    CACHE.with_borrow_mut(|c| {
        c.pinned = t.is_some();
        c.secs = u64::MAX;
        if let Some(t) = t {
            c.line = render(t);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imf_fixdate_of_now_cached_and_pinned() {
        let line = now();
        let text = std::str::from_utf8(&line).unwrap();
        let value = text
            .strip_prefix("Date: ")
            .and_then(|v| v.strip_suffix("\r\n"))
            .unwrap();
        let then = httpdate::parse_http_date(value).unwrap();
        let age = SystemTime::now().duration_since(then).unwrap();
        assert!(age < Duration::from_secs(60), "{text:?} is {age:?} old");
        // RFC 9110's example.
        pin(Some(UNIX_EPOCH + Duration::from_secs(784_111_777)));
        assert_eq!(&now(), b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n");
        pin(None);
        assert_ne!(&now(), b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n");
        assert_eq!(
            &render(UNIX_EPOCH + Duration::from_secs(LAST_SECOND)),
            b"Date: Fri, 31 Dec 9999 23:59:59 GMT\r\n"
        );
        assert_eq!(
            &render(UNIX_EPOCH),
            b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
        );
    }
}
