//! Fuzzes the HTTP protocol state machine: the first byte picks where the input is split
//! into two reads; the rest is the input. The server must never panic, and its output must
//! be whole responses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringd::connection::Conn;
use ringd::protocol::client::parse_http_response;
use ringd::protocol::{ProtocolKind, ProtocolSpec};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else { return };
    let spec = ProtocolSpec::with_defaults(ProtocolKind::Http);
    let mut conn = Conn::new(&spec);
    let cut = (cut as usize).min(input.len());
    let mut closed = conn.on_bytes(&input[..cut]).close;
    if !closed {
        closed = conn.on_bytes(&input[cut..]).close;
    }
    let _ = closed;
    let mut rest = &conn.out[..];
    while !rest.is_empty() {
        // HEAD responses have no body: parse heads, then skip a GET's known body.
        let r = parse_http_response(rest, true)
            .expect("server output parses")
            .expect("server output is whole responses");
        rest = &rest[r.len..];
        if r.status == 200 && rest.starts_with(b"Hello, World!") {
            rest = &rest[13..];
        }
    }
});
