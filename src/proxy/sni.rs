//! Routing by SNI without terminating TLS (`--route-sni NAME=HOST:PORT`): the first bytes
//! of a proxied client are read, and kept, until they hold a whole TLS ClientHello; the
//! name it asks for chooses the upstream; the bytes kept then go to that upstream as they
//! came, byte for byte, ahead of the rest. No I/O here: [`Sniffer`] is fed the bytes the
//! engine read (the engine keeps them to forward) and says when it has seen enough, and
//! [`SniRoutes`] says where the client goes. The ClientHello is read by rustls's
//! [`rustls::server::Acceptor`], which joins one split over records or reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::upstream::Upstreams;

/// Most bytes read from a client before its route is chosen: a ClientHello longer than
/// this (or still incomplete) is taken as not TLS.
pub const MAX_PEEK: usize = 16 * 1024;

/// Bytes handed to the parser between two questions (a TLS record's most plaintext).
const PIECE: usize = 16 * 1024;

/// What the first bytes of a client said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Not enough bytes yet to tell.
    NeedMore,
    /// A ClientHello asking for this name (lowercase).
    Name(String),
    /// A ClientHello without a name.
    NoName,
    /// Not a TLS ClientHello (or one rustls cannot read, or none within [`MAX_PEEK`] bytes,
    /// or the client ended its input first).
    NotTls,
}

/// Reads a ClientHello from the bytes fed to it; it copies what it needs and keeps no
/// reference to them.
pub struct Sniffer {
    /// The parser.
    acceptor: rustls::server::Acceptor,
    /// Bytes fed so far.
    seen: usize,
    /// Most bytes to take before giving up ([`MAX_PEEK`] or less).
    max: usize,
}

impl std::fmt::Debug for Sniffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sniffer").field("seen", &self.seen).finish()
    }
}

impl Sniffer {
    /// A sniffer that gives up after `max` bytes (at most [`MAX_PEEK`]).
    pub fn new(max: usize) -> Self {
        Sniffer {
            acceptor: rustls::server::Acceptor::default(),
            seen: 0,
            max: max.clamp(1, MAX_PEEK),
        }
    }

    /// Takes the next `bytes` the client sent; what they say so far. Once it returned
    /// anything but [`Hello::NeedMore`] it must not be fed again.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Hello {
        // A TLS record of a handshake begins with 0x16: anything else is known at once.
        if self.seen == 0 && bytes.first().is_some_and(|&b| b != 0x16) {
            return Hello::NotTls;
        }
        self.seen += bytes.len();
        // A piece at a time, asking after each: what follows a whole ClientHello in the same
        // read (early data, say) must not fill the parser's buffer before it is asked.
        while !bytes.is_empty() {
            let mut piece = &bytes[..bytes.len().min(PIECE)];
            match self.acceptor.read_tls(&mut piece) {
                Ok(n) if n > 0 => bytes = &bytes[n..],
                _ => return Hello::NotTls,
            }
            match self.acceptor.accept() {
                Ok(Some(accepted)) => {
                    return match accepted.client_hello().server_name() {
                        Some(name) => Hello::Name(name.to_ascii_lowercase()),
                        None => Hello::NoName,
                    }
                }
                Ok(None) => {}
                Err(_) => return Hello::NotTls,
            }
        }
        match self.seen < self.max {
            true => Hello::NeedMore,
            false => Hello::NotTls,
        }
    }
}

/// What `--route-sni-fallback` does with a client that sends no TLS ClientHello, or one
/// without a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// It goes to the default upstreams (`--upstream`), or is closed if there are none.
    #[default]
    Default,
    /// It is closed.
    Close,
}

/// A name a route matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// This name exactly (lowercase).
    Exact(String),
    /// Any name ending in this suffix, which begins with a dot (`*.example.com`: one label
    /// or more before `.example.com`).
    Under(String),
}

impl Pattern {
    fn parse(name: &str) -> Result<Pattern, String> {
        // A name's trailing dot is dropped, as it is from a client's.
        let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
        let host = name.strip_prefix("*.").unwrap_or(&name);
        let valid = rustls::pki_types::DnsName::try_from(host).is_ok() && !host.contains('*');
        if !valid {
            return Err(format!(
                "{name} is not a host name (NAME or *.NAME expected)"
            ));
        }
        Ok(match name.strip_prefix('*') {
            Some(suffix) => Pattern::Under(suffix.to_string()),
            None => Pattern::Exact(name),
        })
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(n) => n == name,
            Pattern::Under(suffix) => name.len() > suffix.len() && name.ends_with(suffix.as_str()),
        }
    }

    /// How specific it is: an exact name beats any wildcard, a longer suffix a shorter one.
    fn rank(&self) -> usize {
        match self {
            Pattern::Exact(_) => usize::MAX,
            Pattern::Under(s) => s.len(),
        }
    }
}

/// One route: a name and the upstream its clients go to.
#[derive(Debug)]
struct Route {
    /// The name.
    pattern: Pattern,
    /// As given, for messages.
    given: String,
    /// The upstream (one member, in the default upstreams' table).
    upstreams: Arc<Upstreams>,
}

/// How a client's route was chosen (`ringd_sni_routes_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Its name has a route.
    Matched,
    /// Its name has none.
    Unmatched,
    /// Its ClientHello has no name.
    NoName,
    /// It sent no TLS ClientHello.
    NotTls,
}

impl Routed {
    /// In counter order.
    pub const ALL: [Routed; 4] = [
        Routed::Matched,
        Routed::Unmatched,
        Routed::NoName,
        Routed::NotTls,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Routed::Matched => "routed",
            Routed::Unmatched => "unmatched",
            Routed::NoName => "no_sni",
            Routed::NotTls => "not_tls",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Routes chosen, by [`Routed`] (kept with the upstream table, which every generation of
/// the configuration shares).
#[derive(Debug, Default)]
pub struct SniCounts([AtomicU64; 4]);

impl SniCounts {
    /// Counts one.
    pub fn count(&self, r: Routed) {
        self.0[r.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts, in [`Routed::ALL`] order.
    pub fn get(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// Where a client goes.
#[derive(Debug, Clone, Copy)]
pub enum Choice<'a> {
    /// To the upstream of its route.
    Route(&'a Arc<Upstreams>),
    /// To the default upstreams (`--upstream`).
    Default,
    /// Nowhere: it is closed.
    Close,
}

/// The routes of `--route-sni` and what `--route-sni-fallback` says.
#[derive(Debug)]
pub struct SniRoutes {
    /// In the order given.
    routes: Vec<Route>,
    /// For clients without a name.
    fallback: Fallback,
}

impl SniRoutes {
    /// The routes of `items` (`NAME=HOST:PORT` each, addresses resolved by `resolve`), their
    /// upstreams in `default`'s table.
    pub fn parse(
        items: &[String],
        fallback: Fallback,
        default: &Upstreams,
        resolve: impl Fn(&str) -> Result<std::net::SocketAddr, String>,
    ) -> Result<SniRoutes, String> {
        let mut routes: Vec<Route> = Vec::new();
        for item in items.iter().map(|i| i.trim()) {
            let bad = |why: String| format!("--route-sni {item}: {why}");
            let (name, addr) = item
                .split_once('=')
                .ok_or_else(|| bad("expected NAME=HOST:PORT".into()))?;
            let pattern = Pattern::parse(name).map_err(bad)?;
            if let Some(r) = routes.iter().find(|r| r.pattern == pattern) {
                return Err(bad(format!("{name} is already routed by {}", r.given)));
            }
            let addr = resolve(addr.trim()).map_err(bad)?;
            if addr.port() == 0 || addr.ip().is_unspecified() {
                return Err(bad(format!("{addr} cannot be connected to")));
            }
            // An address that is also an `--upstream` keeps its limit: its connections
            // count alike by either way in.
            let spec = (default.specs().into_iter())
                .find(|s| s.addr == addr)
                .map_or(super::UpstreamSpec::plain(addr), |s| super::UpstreamSpec {
                    max_connections: s.max_connections,
                    ..super::UpstreamSpec::plain(addr)
                });
            let upstreams = default.sibling(vec![spec]).map_err(bad)?;
            routes.push(Route {
                pattern,
                given: item.to_string(),
                upstreams: Arc::new(upstreams),
            });
        }
        Ok(SniRoutes { routes, fallback })
    }

    /// The same routes over `previous`'s upstream table (a reload).
    pub fn succeed(&self, previous: &Upstreams) -> Result<SniRoutes, String> {
        let routes = self
            .routes
            .iter()
            .map(|r| {
                Ok(Route {
                    pattern: r.pattern.clone(),
                    given: r.given.clone(),
                    upstreams: Arc::new(r.upstreams.succeed(previous)?),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(SniRoutes {
            routes,
            fallback: self.fallback,
        })
    }

    /// What happens to a client whose first bytes said `hello` (not [`Hello::NeedMore`]),
    /// with `default` the upstreams of `--upstream`; counted in `default`'s table.
    pub fn choose(&self, hello: &Hello, default: &Upstreams) -> Choice<'_> {
        let (routed, choice) = match hello {
            Hello::Name(name) => match self.route(name) {
                Some(ups) => (Routed::Matched, Choice::Route(ups)),
                None => (Routed::Unmatched, Choice::Default),
            },
            Hello::NoName => (Routed::NoName, self.fallback()),
            Hello::NotTls | Hello::NeedMore => (Routed::NotTls, self.fallback()),
        };
        default.sni_counts().count(routed);
        match choice {
            Choice::Default if default.is_empty() => Choice::Close,
            c => c,
        }
    }

    fn fallback(&self) -> Choice<'static> {
        match self.fallback {
            Fallback::Default => Choice::Default,
            Fallback::Close => Choice::Close,
        }
    }

    /// The upstreams of the most specific route matching `name`.
    fn route(&self, name: &str) -> Option<&Arc<Upstreams>> {
        let name = name.trim_end_matches('.');
        self.routes
            .iter()
            .filter(|r| r.pattern.matches(name))
            .max_by_key(|r| r.pattern.rank())
            .map(|r| &r.upstreams)
    }

    /// True when there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests;
