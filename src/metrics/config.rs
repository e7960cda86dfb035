//! The series of the configuration file and of the upstreams' choice: reloads by result,
//! the loaded file's hash, each upstream's active health checks by result and whether it is
//! a member of the configuration in force, and the clients no upstream could take.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::config::Config;

/// Reloads applied.
static RELOADS_OK: AtomicU64 = AtomicU64::new(0);
/// Reloads refused.
static RELOADS_FAILED: AtomicU64 = AtomicU64::new(0);
/// SHA-256 of the configuration file in force, in hex.
static LOADED: Mutex<Option<String>> = Mutex::new(None);

/// The configuration file with this hash is in force.
pub fn loaded(sha256: &str) {
    *LOADED.lock().unwrap_or_else(PoisonError::into_inner) = Some(sha256.to_string());
}

/// Counts a reload, applied or refused.
pub fn count_reload(applied: bool) {
    let counter = if applied {
        &RELOADS_OK
    } else {
        &RELOADS_FAILED
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Appends the series to `out`; `config` is the configuration the server started with
/// (its upstreams' table holds every upstream any reload named).
pub fn render(out: &mut String, config: &Config) {
    let name = "ringd_config_reloads_total";
    let _ = writeln!(out, "# HELP {name} SIGHUP reloads of --config, by result.");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (result, n) in [("ok", &RELOADS_OK), ("failed", &RELOADS_FAILED)] {
        let _ = writeln!(
            out,
            "{name}{{result=\"{result}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    if let Some(sha) = &*LOADED.lock().unwrap_or_else(PoisonError::into_inner) {
        let name = "ringd_config_info";
        let _ = writeln!(
            out,
            "# HELP {name} The configuration file in force, by hash."
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name}{{sha256=\"{sha}\"}} 1");
    }
    let Some(proxy) = config.service.proxy() else {
        return;
    };
    let ups = &proxy.upstreams;
    let name = "ringd_upstream_checks_total";
    let _ = writeln!(
        out,
        "# HELP {name} Active health checks of the upstream, by result."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for u in ups.list() {
        for (result, n) in [
            ("passed", &u.stats.checks_passed),
            ("failed", &u.stats.checks_failed),
        ] {
            let n = n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}{{upstream=\"{}\",result=\"{result}\"}} {n}",
                u.addr
            );
        }
    }
    let name = "ringd_upstream_refused_total";
    let _ = writeln!(
        out,
        "# HELP {name} Clients closed because no upstream could take them (down, full or tried)."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(out, "{name} {}", ups.refused());
}
