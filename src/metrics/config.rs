//! The series of the configuration file and of the upstreams' choice: reloads by result,
//! the loaded file's hash, each upstream's active health checks by result and whether it is
//! a member of the configuration in force, the clients no upstream could take, and the
//! clients routed by SNI.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use super::Family;
use crate::config::Config;
use crate::proxy::sni::Routed;

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

/// The counter families: reloads by result, and in proxy mode each upstream's checks by
/// result and the clients no upstream could take; `config` is the configuration the server
/// started with (its upstreams' table holds every upstream any reload named).
pub fn counters(config: &Config) -> Vec<Family> {
    let l = |n: &AtomicU64| n.load(Ordering::Relaxed);
    let mut families = vec![Family {
        name: "ringd_config_reloads_total",
        help: "SIGHUP reloads of --config, by result.",
        samples: vec![
            ("result=\"ok\"".into(), l(&RELOADS_OK)),
            ("result=\"failed\"".into(), l(&RELOADS_FAILED)),
        ],
    }];
    let Some(proxy) = config.service.proxy() else {
        return families;
    };
    let ups = &proxy.upstreams;
    let list = ups.list();
    let checks = list.iter().flat_map(|u| {
        [
            ("passed", &u.stats.checks_passed),
            ("failed", &u.stats.checks_failed),
        ]
        .map(|(result, n)| (format!("upstream=\"{}\",result=\"{result}\"", u.addr), l(n)))
    });
    families.push(Family {
        name: "ringd_upstream_checks_total",
        help: "Active health checks of the upstream, by result.",
        samples: checks.collect(),
    });
    families.push(Family {
        name: "ringd_upstream_refused_total",
        help: "Clients closed because no upstream could take them (down, full or tried).",
        samples: vec![(String::new(), ups.refused())],
    });
    // Shown once routes exist or were used (a reload may have added or removed them).
    let sni = ups.sni_counts().get();
    if proxy.sni.is_some() || sni.iter().any(|&n| n > 0) {
        families.push(Family {
            name: "ringd_sni_routes_total",
            help: "Clients routed by the name in their TLS ClientHello, by how the route was \
                   chosen.",
            samples: Routed::ALL
                .iter()
                .zip(sni)
                .map(|(r, n)| (format!("result=\"{}\"", r.label()), n))
                .collect(),
        });
    }
    families
}

/// Appends `ringd_config_info`, the hash of the file in force, if there is one.
pub fn render_info(out: &mut String) {
    if let Some(sha) = &*LOADED.lock().unwrap_or_else(PoisonError::into_inner) {
        let name = "ringd_config_info";
        let _ = writeln!(
            out,
            "# HELP {name} The configuration file in force, by hash."
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name}{{sha256=\"{sha}\"}} 1");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::{EngineKind, Service};
    use crate::proxy::sni::{Fallback, Hello, SniRoutes};
    use crate::proxy::{Balance, ProxyConfig};

    #[test]
    fn sni_routes_are_counted_in_the_series_a_successor_is_handed() {
        let mut c = Config::new(
            "127.0.0.1:0".parse().unwrap(),
            crate::protocol::ProtocolKind::Echo,
            EngineKind::Epoll,
        );
        let up = "127.0.0.1:1".parse().unwrap();
        let mut p = ProxyConfig::new(
            vec![up],
            Balance::RoundRobin,
            Duration::ZERO,
            Duration::ZERO,
            None,
        );
        let items = ["a.test=127.0.0.1:2".to_string()];
        let sni = SniRoutes::parse(&items, Fallback::Default, &p.upstreams, |s| {
            s.parse()
                .map_err(|e: std::net::AddrParseError| e.to_string())
        })
        .unwrap();
        for hello in [Hello::Name("a.test".into()), Hello::NotTls, Hello::NotTls] {
            sni.choose(&hello, &p.upstreams);
        }
        p.sni = Some(Arc::new(sni));
        c.service = Service::Proxy(p);
        let totals = super::super::carried::totals(&[], &c, &[]);
        let value = |key: &str| totals.named.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
        assert_eq!(value("ringd_sni_routes_total{result=\"routed\"}"), Some(1));
        assert_eq!(value("ringd_sni_routes_total{result=\"not_tls\"}"), Some(2));
        assert_eq!(value("ringd_sni_routes_total{result=\"no_sni\"}"), Some(0));
    }
}
