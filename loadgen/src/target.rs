//! Targets as people type them: `HOST:PORT`, or a URL `http[s]://HOST[:PORT][/PATH]` as wrk
//! and oha take it (the URL also gives the HTTP `Host` header, the request path and, for
//! `https`, TLS; a `#fragment` stays with the client, as browsers keep it).

use std::net::{SocketAddr, ToSocketAddrs};

/// One target, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// What was typed.
    pub name: String,
    /// Where connections go.
    pub addr: SocketAddr,
    /// The `Host` header for it.
    pub host: String,
    /// The path a URL gave, without its fragment (`None` for `HOST:PORT`).
    pub path: Option<String>,
    /// An `https://` URL.
    pub https: bool,
}

impl Target {
    /// True when given as a URL.
    pub fn is_url(&self) -> bool {
        self.path.is_some()
    }

    /// The host part without its port (and an IPv6 address without its brackets): the TLS
    /// server name.
    pub fn host_name(&self) -> &str {
        let h = &self.host;
        match h.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => h.rsplit_once(':').map_or(h.as_str(), |(name, _)| name),
        }
    }
}

/// `s` up to its first `#`: a fragment is never sent.
pub fn without_fragment(s: &str) -> &str {
    s.split_once('#').map_or(s, |(before, _)| before)
}

/// Parses and resolves one target.
pub fn parse_target(s: &str) -> Result<Target, String> {
    let lower = s.to_ascii_lowercase();
    let scheme = ["http://", "https://"]
        .into_iter()
        .find(|p| lower.starts_with(p));
    let https = scheme == Some("https://");
    let (authority, path) = if let Some(scheme) = scheme {
        let rest = without_fragment(&s[scheme.len()..]);
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        if let Some(bad) = path.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("bad URL {s:?}: {bad:?} in the path"));
        }
        (authority, Some(path))
    } else if s.contains("://") {
        return Err(format!(
            "bad target {s:?}: only http:// or https:// URLs or HOST:PORT"
        ));
    } else {
        (s, None)
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!(
            "bad target {s:?}: expected HOST:PORT or http://HOST[:PORT]/PATH"
        ));
    }
    // A port is needed for HOST:PORT; a URL defaults to 80 (https: 443). `[v6]` addresses
    // keep brackets.
    let has_port = match authority.rfind(']') {
        Some(close) => authority[close..].contains(':'),
        None => authority.contains(':'),
    };
    let with_port = match (has_port, path.is_some()) {
        (true, _) => authority.to_string(),
        (false, true) => format!("{authority}:{}", if https { 443 } else { 80 }),
        (false, false) => {
            return Err(format!(
                "bad target {s:?}: expected HOST:PORT or http://HOST[:PORT]/PATH"
            ))
        }
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| {
            format!(
                "cannot resolve target {s:?}: {e} (expected HOST:PORT or http://HOST[:PORT]/PATH)"
            )
        })?
        .next()
        .ok_or_else(|| format!("target {s:?} resolves to no address"))?;
    Ok(Target {
        name: s.to_string(),
        addr,
        host: authority.to_string(),
        path,
        https,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_and_urls() {
        let t = parse_target("127.0.0.1:8080").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((t.host.as_str(), t.path), ("127.0.0.1:8080", None));
        let t = parse_target("http://127.0.0.1:9000/a/b?c=d").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:9000");
        assert_eq!(t.path.as_deref(), Some("/a/b?c=d"));
        let t = parse_target("HTTP://127.0.0.1").unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.path.as_deref(), Some("/"));
        let t = parse_target("http://[::1]:81?x").unwrap();
        assert_eq!(t.addr, "[::1]:81".parse().unwrap());
        assert_eq!(t.path.as_deref(), Some("/?x"));
        assert!(parse_target("http://localhost:8080/").is_ok());
        assert!(!t.https);
    }

    #[test]
    fn https_urls_default_to_443_and_name_their_host() {
        let t = parse_target("https://localhost/x").unwrap();
        assert!(t.https);
        assert_eq!((t.addr.port(), t.host_name()), (443, "localhost"));
        assert_eq!(t.path.as_deref(), Some("/x"));
        let t = parse_target("HTTPS://127.0.0.1:8443").unwrap();
        assert_eq!((t.addr.port(), t.host_name()), (8443, "127.0.0.1"));
        let t = parse_target("https://[::1]:9/").unwrap();
        assert_eq!(t.host_name(), "::1");
        assert_eq!(parse_target("[::1]:9").unwrap().host_name(), "::1");
        assert_eq!(
            parse_target("localhost:9").unwrap().host_name(),
            "localhost"
        );
    }

    #[test]
    fn fragments_are_not_part_of_the_path() {
        for (url, host, path) in [
            ("http://127.0.0.1:9/p#frag", "127.0.0.1:9", "/p"),
            ("http://127.0.0.1:9/p?q=1#frag", "127.0.0.1:9", "/p?q=1"),
            ("http://127.0.0.1:9#frag", "127.0.0.1:9", "/"),
            ("http://127.0.0.1:9/#a#b", "127.0.0.1:9", "/"),
            ("http://127.0.0.1:9/p#", "127.0.0.1:9", "/p"),
            ("http://[::1]:9?x#/y", "[::1]:9", "/?x"),
        ] {
            let t = parse_target(url).unwrap();
            assert_eq!(
                (t.host.as_str(), t.path.as_deref()),
                (host, Some(path)),
                "{url}"
            );
            assert_eq!(t.name, url);
        }
    }

    #[test]
    fn bad_targets_say_what_is_expected() {
        for (t, needle) in [
            ("ftp://127.0.0.1/", "http://"),
            ("127.0.0.1", "HOST:PORT"),
            ("http:///x", "HOST:PORT"),
            ("http://u@127.0.0.1/", "HOST:PORT"),
            ("http://127.0.0.1/a b", "path"),
            ("127.0.0.1:99999", "cannot resolve"),
        ] {
            let e = parse_target(t).unwrap_err();
            assert!(e.contains(needle), "{t}: {e}");
        }
    }
}
