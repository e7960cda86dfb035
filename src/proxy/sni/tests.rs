use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::proxy::{Balance, UpstreamSpec};

/// The first bytes a rustls client sends to `name` (a DNS name, or an IP address, which
/// goes without SNI).
fn client_hello(name: &str) -> Vec<u8> {
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let mut c = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut out).unwrap();
    }
    out
}

#[test]
fn reads_the_name_whole_or_a_byte_at_a_time() {
    let hello = client_hello("Two.Example.com");
    assert_eq!(
        Sniffer::new(MAX_PEEK).feed(&hello),
        Hello::Name("two.example.com".into())
    );
    let mut s = Sniffer::new(MAX_PEEK);
    for (i, b) in hello.iter().enumerate() {
        let got = s.feed(std::slice::from_ref(b));
        if i + 1 < hello.len() {
            assert_eq!(
                got,
                Hello::NeedMore,
                "after {} of {} bytes",
                i + 1,
                hello.len()
            );
        } else {
            assert_eq!(got, Hello::Name("two.example.com".into()));
        }
    }
}

#[test]
fn a_hello_split_over_two_records_is_joined() {
    let hello = client_hello("a.test");
    let body = &hello[5..];
    let (one, two) = body.split_at(body.len() / 2);
    let mut records = Vec::new();
    for part in [one, two] {
        records.extend_from_slice(&hello[..3]);
        records.extend_from_slice(&(part.len() as u16).to_be_bytes());
        records.extend_from_slice(part);
    }
    assert_eq!(
        Sniffer::new(MAX_PEEK).feed(&records),
        Hello::Name("a.test".into())
    );
}

#[test]
fn no_name_garbage_and_incomplete_hellos() {
    assert_eq!(
        Sniffer::new(MAX_PEEK).feed(&client_hello("127.0.0.1")),
        Hello::NoName
    );
    assert_eq!(
        Sniffer::new(MAX_PEEK).feed(b"GET / HTTP/1.1\r\n"),
        Hello::NotTls
    );
    // A handshake record header announcing a record larger than any TLS allows.
    assert_eq!(
        Sniffer::new(MAX_PEEK).feed(&[0x16, 3, 1, 0xff, 0xff, 1, 2, 3]),
        Hello::NotTls
    );
    // A partial record waits, up to the bound.
    let hello = client_hello("a.test");
    let mut s = Sniffer::new(hello.len() - 1);
    assert_eq!(s.feed(&hello[..hello.len() / 2]), Hello::NeedMore);
    assert_eq!(
        s.feed(&hello[hello.len() / 2..hello.len() - 1]),
        Hello::NotTls,
        "the bound is reached without a whole ClientHello"
    );
}

fn routes(items: &[&str], fallback: Fallback, default: &Upstreams) -> SniRoutes {
    let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    SniRoutes::parse(&items, fallback, default, |s| {
        s.parse::<SocketAddr>().map_err(|e| e.to_string())
    })
    .unwrap()
}

/// The port of the upstream `c` goes to (`default`'s first for the default).
fn addr_of(c: Choice, default: &Upstreams) -> Option<u16> {
    let ups = match c {
        Choice::Route(ups) => &**ups,
        Choice::Default => default,
        Choice::Close => return None,
    };
    Some(ups.get(ups.member_slots()[0]).addr.port())
}

#[test]
fn routes_exact_names_then_the_longest_wildcard() {
    let default = Upstreams::new(
        vec!["127.0.0.1:1".parse().unwrap()],
        Balance::RoundRobin,
        Duration::from_secs(1),
    );
    let r = routes(
        &[
            "a.example.com=127.0.0.1:2",
            "*.example.com=127.0.0.1:3",
            "*.b.example.com=127.0.0.1:4",
        ],
        Fallback::Default,
        &default,
    );
    let to = |name: &str| addr_of(r.choose(&Hello::Name(name.into()), &default), &default);
    assert_eq!(to("a.example.com"), Some(2));
    assert_eq!(to("c.example.com"), Some(3));
    assert_eq!(to("x.a.example.com"), Some(3));
    assert_eq!(to("x.b.example.com"), Some(4));
    assert_eq!(
        to("example.com"),
        Some(1),
        "a wildcard needs a label before it"
    );
    assert_eq!(to("other.test"), Some(1));
    assert_eq!(
        addr_of(r.choose(&Hello::NoName, &default), &default),
        Some(1)
    );
    assert_eq!(
        addr_of(r.choose(&Hello::NotTls, &default), &default),
        Some(1)
    );
    assert_eq!(default.sni_counts().get(), [4, 2, 1, 1]);
    assert_eq!(default.list().len(), 4, "the routes share the table");

    let close = routes(&["a.example.com=127.0.0.1:2"], Fallback::Close, &default);
    assert_eq!(
        addr_of(close.choose(&Hello::NotTls, &default), &default),
        None
    );
    assert_eq!(
        addr_of(close.choose(&Hello::NoName, &default), &default),
        None
    );
    assert_eq!(
        addr_of(
            close.choose(&Hello::Name("z.test".into()), &default),
            &default
        ),
        Some(1),
        "an unknown name goes to the default"
    );
    let none = Upstreams::new(Vec::new(), Balance::RoundRobin, Duration::from_secs(1));
    let only = routes(&["a.test=127.0.0.1:2"], Fallback::Default, &none);
    assert_eq!(
        addr_of(only.choose(&Hello::Name("z.test".into()), &none), &none),
        None
    );
    assert_eq!(
        addr_of(only.choose(&Hello::Name("a.test".into()), &none), &none),
        Some(2)
    );
}

#[test]
fn bad_routes_are_refused() {
    let default = Upstreams::new(Vec::new(), Balance::RoundRobin, Duration::from_secs(1));
    let parse = |item: &str| {
        SniRoutes::parse(&[item.to_string()], Fallback::Default, &default, |s| {
            s.parse::<SocketAddr>().map_err(|e| e.to_string())
        })
    };
    for (item, says) in [
        ("a.test", "NAME=HOST:PORT"),
        ("a b=127.0.0.1:1", "not a host name"),
        ("a.*.test=127.0.0.1:1", "not a host name"),
        ("a.test=nowhere", "--route-sni a.test=nowhere"),
        ("a.test=127.0.0.1:0", "cannot be connected to"),
    ] {
        let e = parse(item).unwrap_err();
        assert!(e.contains(says), "{item}: {e}");
    }
    let twice = [
        "a.test=127.0.0.1:1".to_string(),
        "A.test=127.0.0.1:2".into(),
    ];
    let e = SniRoutes::parse(&twice, Fallback::Default, &default, |s| {
        s.parse::<SocketAddr>().map_err(|e| e.to_string())
    })
    .unwrap_err();
    assert!(e.contains("already routed"), "{e}");
}

#[test]
fn a_hello_with_much_more_behind_it_in_one_read_is_still_read() {
    let mut read = client_hello("a.test");
    read.extend(std::iter::repeat_n(0x17, 30_000));
    assert_eq!(
        Sniffer::new(MAX_PEEK).feed(&read),
        Hello::Name("a.test".into())
    );
}

#[test]
fn a_route_with_a_trailing_dot_matches_and_shares_its_upstream_limit() {
    let limited = UpstreamSpec {
        max_connections: 1,
        ..UpstreamSpec::plain("127.0.0.1:1".parse().unwrap())
    };
    let default = Upstreams::with_specs(vec![limited], Balance::RoundRobin, Duration::from_secs(1));
    let r = routes(
        &["a.test.=127.0.0.1:1", "b.test=127.0.0.1:2"],
        Fallback::Close,
        &default,
    );
    for name in ["a.test", "a.test."] {
        let c = r.choose(&Hello::Name(name.into()), &default);
        assert_eq!(addr_of(c, &default), Some(1), "{name}");
    }
    let Choice::Route(a) = r.choose(&Hello::Name("a.test".into()), &default) else {
        panic!("a.test has a route");
    };
    // The same address as the limited `--upstream`: one connection, by either way in.
    assert!(a.specs().iter().all(|s| s.max_connections == 1));
    let Choice::Route(b) = r.choose(&Hello::Name("b.test".into()), &default) else {
        panic!("b.test has a route");
    };
    assert!(b.specs().iter().all(|s| s.max_connections == 0));
}
