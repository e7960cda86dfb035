//! The PROXY protocol header (HAProxy's specification, versions 1 and 2), written by the
//! `ppp` crate: the first bytes an upstream receives, so that it sees the client's address
//! instead of the proxy's.

use std::net::SocketAddr;

use super::SendProxy;

/// The header announcing a connection from `client` to `local` (the address the client
/// connected to).
pub fn encode(version: SendProxy, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    // Both ends of one connection are of one family, except for an IPv4 client on an
    // IPv6 socket, which arrives as an IPv4-mapped address: unmap both.
    let (client, local) = (unmap(client), unmap(local));
    match version {
        SendProxy::V1 => ppp::v1::Addresses::from((client, local))
            .to_string()
            .into_bytes(),
        SendProxy::V2 => {
            use ppp::v2::{Builder, Command, Protocol, Version};
            Builder::with_addresses(
                Version::Two | Command::Proxy,
                Protocol::Stream,
                (client, local),
            )
            .build()
            // Writing into a Vec with a length that fits: cannot fail.
            .unwrap_or_default()
        }
    }
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
            encode(SendProxy::V1, c, l),
            b"PROXY TCP4 192.0.2.1 127.0.0.1 5000 8080\r\n"
        );
        let v2 = encode(SendProxy::V2, c, l);
        assert_eq!(&v2[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(v2[12], 0x21, "version 2, PROXY");
        assert_eq!(v2[13], 0x11, "TCP over IPv4");
        assert_eq!(u16::from_be_bytes([v2[14], v2[15]]), 12);
        assert_eq!(&v2[16..20], &[192, 0, 2, 1]);
        assert_eq!(v2.len(), 28);
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:5000".parse().unwrap();
        let l6: SocketAddr = "[::ffff:127.0.0.1]:8080".parse().unwrap();
        assert_eq!(
            encode(SendProxy::V1, mapped, l6),
            encode(SendProxy::V1, c, l)
        );
    }
}
