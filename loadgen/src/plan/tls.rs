//! The TLS part of a [`Plan`](super::Plan): `https://` targets or `--tls`, the trust
//! (`--cacert` or `--insecure`), the server name and resumption, checked (the CA file read)
//! into what every socket's handshake is made from.

use std::sync::Arc;

use ringd_common::ProtocolKind;

use crate::args::Args;
use crate::client::tls::{TlsVersion, ALPN_HTTP1};
use crate::client::{TlsClient, Trust};
use crate::target::Target;

/// TLS as the run uses it: the report's `config.tls`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsPlan {
    /// Per target: the server name sent (SNI) and checked against its certificate.
    pub sni: Vec<String>,
    /// How certificates are checked: `{"cafile": PATH}` or `"insecure"`.
    pub trust: Trust,
    /// `--tls-resume`: sessions are resumed; off, every handshake is a full one.
    pub resume: bool,
    /// ALPN names offered (`http/1.1` for http; none otherwise).
    pub alpn: Vec<String>,
    /// `--tls-version`: the one protocol version offered; null: 1.3 and 1.2.
    #[serde(default)]
    pub version: Option<TlsVersion>,
}

impl Args {
    /// TLS, if asked for: by `https://` targets (all of them or none) or `--tls` (with no
    /// `http://` URL). The TLS options are refused without TLS, and TLS without a way to
    /// check certificates.
    pub(super) fn checked_tls(
        &self,
        targets: &[Target],
        protocol: ProtocolKind,
    ) -> Result<Option<(TlsPlan, Arc<TlsClient>)>, String> {
        let https = targets.iter().filter(|t| t.https).count();
        if https > 0 && https < targets.len() {
            return Err(
                "https:// and other targets mixed: TLS is on for every target or for none".into(),
            );
        }
        if self.tls && targets.iter().any(|t| t.is_url() && !t.https) {
            return Err("--tls with an http:// URL: write it https:// instead".into());
        }
        if !self.tls && https == 0 {
            let tls_only = [
                ("--cacert", self.cacert.is_some()),
                ("--insecure", self.insecure),
                ("--tls-sni", self.tls_sni.is_some()),
                ("--tls-resume", self.tls_resume),
                ("--tls-version", self.tls_version.is_some()),
            ];
            return match tls_only.iter().find(|(_, given)| *given) {
                Some((name, _)) => Err(format!(
                    "{name} applies to TLS only (add --tls or use an https:// URL)"
                )),
                None => Ok(None),
            };
        }
        let trust = match (&self.cacert, self.insecure) {
            (Some(_), true) => {
                return Err("--cacert checks certificates and --insecure does not: give one".into())
            }
            (Some(path), false) => Trust::CaFile(path.clone()),
            (None, true) => Trust::Insecure,
            (None, false) => {
                return Err("TLS (https:// or --tls) needs --cacert FILE (the CA that signed the server's certificate) or --insecure (no check)".into())
            }
        };
        let sni: Vec<String> = targets
            .iter()
            .map(|t| (self.tls_sni.clone()).unwrap_or_else(|| t.host_name().to_string()))
            .collect();
        let http = protocol == ProtocolKind::Http;
        let client = TlsClient::new(&sni, &trust, http, self.tls_resume, self.tls_version)?;
        let alpn = match http {
            true => vec![String::from_utf8_lossy(ALPN_HTTP1).into_owned()],
            false => Vec::new(),
        };
        let plan = TlsPlan {
            sni,
            trust,
            resume: self.tls_resume,
            alpn,
            version: self.tls_version,
        };
        Ok(Some((plan, Arc::new(client))))
    }
}
