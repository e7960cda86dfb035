//! Fuzzes the HTTP protocol state machine: the first byte picks where the input is split
//! into two reads; the rest is the input. The server must never panic, and its output must
//! be whole responses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringd::connection::Conn;
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
        let (len, status) = response_head(rest).expect("server output is whole responses");
        rest = &rest[len..];
        if status == 200 && rest.starts_with(b"Hello, World!") {
            rest = &rest[13..];
        }
    }
});

/// The length and status of the whole response head at the start of `buf`.
fn response_head(buf: &[u8]) -> Option<(usize, u16)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => Some((n, resp.code?)),
        _ => None,
    }
}
