//! The PROXY protocol header (HAProxy's specification, versions 1 and 2), written by the
//! `ppp` crate: the first bytes an upstream receives, so that it sees the client's address
//! instead of the proxy's.

use std::net::SocketAddr;

use super::SendProxy;

/// What a connection's PROXY header says, known at its accept; encoded when the upstream
/// is connected (after the handshake, when TLS is terminated here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    /// The header's version.
    pub version: SendProxy,
    /// The client's address.
    pub client: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
}

impl Announce {
    /// The header; `tls` as for [`encode`].
    pub fn encode(&self, tls: Option<&str>) -> Vec<u8> {
        encode(self.version, self.client, self.local, tls)
    }
}

/// `PP2_TYPE_SSL` (section 2.2.5 of the specification).
const PP2_TYPE_SSL: u8 = 0x20;
/// `PP2_SUBTYPE_SSL_VERSION`, a sub-TLV of `PP2_TYPE_SSL`.
const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
/// The `client` bit of `PP2_TYPE_SSL`: the client connected over TLS.
const PP2_CLIENT_SSL: u8 = 0x01;

/// The header announcing a connection from `client` to `local` (the address the client
/// connected to); `tls`: the client spoke TLS to this server, in this version (`TLSv1.3`),
/// which version 2 says in a `PP2_TYPE_SSL` TLV (version 1 has no field for it).
pub fn encode(
    version: SendProxy,
    client: SocketAddr,
    local: SocketAddr,
    tls: Option<&str>,
) -> Vec<u8> {
    // Both ends of one connection are of one family, except for an IPv4 client on an
    // IPv6 socket, which arrives as an IPv4-mapped address: unmap both.
    let (client, local) = (unmap(client), unmap(local));
    match version {
        SendProxy::V1 => ppp::v1::Addresses::from((client, local))
            .to_string()
            .into_bytes(),
        SendProxy::V2 => {
            use ppp::v2::{Builder, Command, Protocol, Version};
            let builder = Builder::with_addresses(
                Version::Two | Command::Proxy,
                Protocol::Stream,
                (client, local),
            );
            let builder = match tls {
                Some(v) => builder.write_tlv(PP2_TYPE_SSL, &ssl_tlv(v)),
                None => Ok(builder),
            };
            // Writing into a Vec with a length that fits: cannot fail.
            builder.and_then(Builder::build).unwrap_or_default()
        }
    }
}

/// The value of a `PP2_TYPE_SSL` TLV for a TLS client of `version`: the client byte, the
/// 32-bit `verify` (non-zero: the client presented no verified certificate, as none is
/// asked for), then the version as a sub-TLV.
fn ssl_tlv(version: &str) -> Vec<u8> {
    let mut v = vec![PP2_CLIENT_SSL];
    v.extend_from_slice(&1u32.to_be_bytes());
    v.push(PP2_SUBTYPE_SSL_VERSION);
    v.extend_from_slice(&(version.len() as u16).to_be_bytes());
    v.extend_from_slice(version.as_bytes());
    v
}

fn unmap(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2() {
        let c: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let l: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            encode(SendProxy::V1, c, l, None),
            b"PROXY TCP4 192.0.2.1 127.0.0.1 5000 8080\r\n"
        );
        let v2 = encode(SendProxy::V2, c, l, None);
        assert_eq!(&v2[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(v2[12], 0x21, "version 2, PROXY");
        assert_eq!(v2[13], 0x11, "TCP over IPv4");
        assert_eq!(u16::from_be_bytes([v2[14], v2[15]]), 12);
        assert_eq!(&v2[16..20], &[192, 0, 2, 1]);
        assert_eq!(v2.len(), 28);
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:5000".parse().unwrap();
        let l6: SocketAddr = "[::ffff:127.0.0.1]:8080".parse().unwrap();
        assert_eq!(
            encode(SendProxy::V1, mapped, l6, None),
            encode(SendProxy::V1, c, l, None)
        );
    }

    #[test]
    fn v2_says_tls_and_its_version() {
        let c: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let l: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let v2 = encode(SendProxy::V2, c, l, Some("TLSv1.3"));
        let header = ppp::v2::Header::try_from(&v2[..]).unwrap();
        let tlvs: Vec<_> = header.tlvs().map(Result::unwrap).collect();
        assert_eq!(tlvs.len(), 1);
        assert_eq!(tlvs[0].kind, 0x20);
        assert_eq!(&tlvs[0].value[..], b"\x01\0\0\0\x01\x21\0\x07TLSv1.3");
        assert_eq!(
            encode(SendProxy::V1, c, l, Some("TLSv1.3")),
            encode(SendProxy::V1, c, l, None),
            "version 1 has no TLS field"
        );
    }
}
