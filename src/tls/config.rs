//! The server's TLS configuration, built once at start from `--tls-cert`/`--tls-key` pairs:
//! PEM files read with `rustls-pki-types`, keys loaded by the `ring` provider, and a
//! certificate chosen per handshake by the name the client asks for (SNI).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The ALPN name of HTTP/1.1, offered with `--protocol http`.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Default `--tls-handshake-timeout`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS configuration could not be built; each says which file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM item of the kind wanted.
    #[error("cannot read the TLS {what} {path}: {reason}")]
    File {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The key is of a kind the provider cannot sign with, or does not match the
    /// certificate.
    #[error("the TLS key {key} cannot serve the certificate {cert}: {reason}")]
    Key {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// One `--tls-cert` / `--tls-key` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    /// PEM certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The TLS side of a server: shared read-only by every connection of every worker.
#[derive(Clone)]
pub struct ServerTls {
    /// The rustls configuration (certificates, ALPN, versions, session cache).
    pub(crate) config: Arc<ServerConfig>,
    /// A handshake not done within this is ended (`--tls-handshake-timeout`; zero: never).
    pub handshake_timeout: Duration,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("alpn", &self.config.alpn_protocols)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads `pairs` (the first is the default certificate) and builds the configuration:
    /// TLS 1.3 and 1.2 with the `ring` provider's default cipher suites, ALPN `http/1.1`
    /// when `http`.
    pub fn load(
        pairs: &[CertPair],
        http: bool,
        handshake_timeout: Duration,
    ) -> Result<Self, TlsError> {
        // ring keeps the build to a Rust toolchain and a C compiler (aws-lc needs cmake);
        // what it lacks is post-quantum key exchange, for which rustls deprecates it.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut certs = Vec::with_capacity(pairs.len());
        for pair in pairs {
            certs.push(Arc::new(load_pair(pair, &provider)?));
        }
        let Some(default) = certs.first().cloned() else {
            return Err(TlsError::Config(rustls::Error::General(
                "no certificate given".into(),
            )));
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(BySni { certs, default }));
        if http {
            config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        }
        let config = Arc::new(config);
        // A connection is made from this configuration alone: one that can be made now can
        // be made for every client (see `Tls::new`).
        rustls::ServerConnection::new(config.clone())?;
        Ok(ServerTls {
            config,
            handshake_timeout,
        })
    }
}

/// Reads one pair and checks that the key signs for the certificate.
fn load_pair(
    pair: &CertPair,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let file_error = |what, path: &Path, reason: String| TlsError::File {
        what,
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(&pair.cert)
        .and_then(|items| items.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error("certificate", &pair.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(
            "certificate",
            &pair.cert,
            "no CERTIFICATE in it".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&pair.key)
        .map_err(|e| file_error("key", &pair.key, e.to_string()))?;
    let key_error = |reason: String| TlsError::Key {
        cert: pair.cert.clone(),
        key: pair.key.clone(),
        reason,
    };
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_error(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|e| key_error(e.to_string()))?;
    Ok(certified)
}

/// Picks the first certificate valid for the name the client asks for (wildcards
/// included), else the first one given.
#[derive(Debug)]
struct BySni {
    /// In command-line order.
    certs: Vec<Arc<CertifiedKey>>,
    /// For clients without SNI or with a name no certificate holds.
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello
            .server_name()
            .and_then(|name| ServerName::try_from(name).ok())
            .and_then(|name| self.certs.iter().find(|c| valid_for(c, &name)).cloned());
        Some(chosen.unwrap_or_else(|| self.default.clone()))
    }
}

fn valid_for(cert: &CertifiedKey, name: &ServerName<'_>) -> bool {
    cert.cert.first().is_some_and(|der| {
        webpki::EndEntityCert::try_from(der)
            .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(name).is_ok())
    })
}
