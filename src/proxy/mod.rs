//! Proxy mode (`--protocol proxy --upstream …`): each accepted connection is paired with a
//! connection to an upstream and bytes flow both ways until both directions are closed. The
//! pair is one connection with two sockets: [`relay::Relay`] is its state machine (no I/O,
//! like [`crate::connection::Connection`]), [`upstream::Upstreams`] chooses upstreams and
//! keeps their health and counters (shared by every worker), [`header`] writes the PROXY
//! protocol header a backend may ask for. The engines move the bytes.

pub mod header;
pub mod health;
pub mod relay;
pub mod sni;
pub mod terminate;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::connection::{Limits, Millis};
use crate::tls::ServerTls;

pub use health::HealthCheck;
pub use relay::{Relay, Side};
pub use sni::SniRoutes;
pub use upstream::{Upstream, UpstreamSpec, UpstreamStats, Upstreams};

/// How an upstream is chosen for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Each worker takes the upstreams in turn.
    #[default]
    RoundRobin,
    /// The upstream with the fewest active connections (over all workers).
    LeastConn,
}

/// The PROXY protocol header sent to upstreams first, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendProxy {
    /// Version 1: one human-readable line.
    V1,
    /// Version 2: binary.
    V2,
}

/// What proxy mode runs with.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The upstreams, their health and counters.
    pub upstreams: Arc<Upstreams>,
    /// How long a connect to an upstream may take before the next one is tried.
    pub connect_timeout: Duration,
    /// The PROXY header to send first, if any.
    pub send_proxy: Option<SendProxy>,
    /// Active health checks, if any.
    pub check: Option<HealthCheck>,
    /// Routes by the name of the client's TLS ClientHello, if any (`upstreams` is then the
    /// default route).
    pub sni: Option<Arc<SniRoutes>>,
    /// TLS terminated here (`--tls-cert`): the client speaks TLS, the upstream plaintext.
    pub tls: Option<ServerTls>,
}

impl ProxyConfig {
    /// Proxy mode to primary upstreams of weight 1 at `upstreams`, without active checks.
    pub fn new(
        upstreams: Vec<SocketAddr>,
        balance: Balance,
        connect_timeout: Duration,
        down_for: Duration,
        send_proxy: Option<SendProxy>,
    ) -> Self {
        ProxyConfig {
            upstreams: Arc::new(Upstreams::new(upstreams, balance, down_for)),
            connect_timeout,
            send_proxy,
            check: None,
            sni: None,
            tls: None,
        }
    }

    /// True when a client's first bytes come before its upstream is chosen: the ClientHello
    /// (SNI routes), or the whole TLS handshake (TLS termination).
    pub fn routes_first(&self) -> bool {
        self.sni.is_some() || self.tls.is_some()
    }

    /// How long a client may take to send what [`ProxyConfig::routes_first`] waits for
    /// (0: no limit): `--tls-handshake-timeout` when TLS is terminated, else
    /// `--header-timeout`, else `--idle-timeout`.
    pub fn routing_ms(&self, limits: &Limits) -> Millis {
        let tls = self
            .tls
            .as_ref()
            .map(|t| t.handshake_timeout.as_millis() as Millis);
        match tls {
            Some(ms) => ms,
            None => [limits.header_ms, limits.idle_ms]
                .into_iter()
                .find(|&ms| ms > 0)
                .unwrap_or(0),
        }
    }

    /// The same configuration over `previous`'s upstream table (a reload), so that the
    /// upstreams listed in both keep their slots, counters and health.
    pub fn succeed(&mut self, previous: &ProxyConfig) -> Result<(), String> {
        let upstreams = self.upstreams.succeed(&previous.upstreams)?;
        if let Some(sni) = &self.sni {
            self.sni = Some(Arc::new(sni.succeed(&previous.upstreams)?));
        }
        self.upstreams = Arc::new(upstreams);
        Ok(())
    }
}
