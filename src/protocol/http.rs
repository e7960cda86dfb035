//! `http`: HTTP/1.1 plaintext server side, parsed with `httparse`.
//!
//! Keep-alive by default (HTTP/1.0 only when asked), pipelined requests answered in order,
//! `GET`/`HEAD` → `200` with a fixed body, any other method → `405` (its body skipped),
//! malformed (an HTTP/1.1 request without `Host`, any with two included) → `400` and close, a
//! header block over [`MAX_HEADER_BYTES`] → `431` and close. Every response has a `Date`.
//! Responses are rendered from pre-built pieces so the per-request cost is a few copies.

use std::sync::Arc;

use super::date::{self, DateLine};
use super::Outcome;

/// The default body of a `200` response.
pub const DEFAULT_BODY: &str = "Hello, World!";

/// Largest request header block accepted; a longer one gets `431` and the connection closes.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Headers parsed per request; more is answered like an oversized header block.
const MAX_HEADERS: usize = 64;

/// Error statuses the server sends before closing a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStatus {
    /// Malformed request.
    BadRequest,
    /// The header block did not arrive within the header timeout.
    RequestTimeout,
    /// Header block too large.
    HeaderTooLarge,
    /// A transfer coding the server does not implement.
    NotImplemented,
    /// Over the connection limit.
    Unavailable,
}

impl ErrorStatus {
    fn line(self) -> &'static str {
        match self {
            ErrorStatus::BadRequest => "400 Bad Request",
            ErrorStatus::RequestTimeout => "408 Request Timeout",
            ErrorStatus::HeaderTooLarge => "431 Request Header Fields Too Large",
            ErrorStatus::NotImplemented => "501 Not Implemented",
            ErrorStatus::Unavailable => "503 Service Unavailable",
        }
    }
}

/// Status line and `Server` of a `200`; the `Date` line follows.
const OK_STATUS: &[u8] = b"HTTP/1.1 200 OK\r\nServer: ringd\r\n";

/// Pre-rendered response pieces, shared by every connection.
#[derive(Debug)]
pub(super) struct Responses {
    /// The headers of a `200` after `Date`, up to and excluding `Connection`.
    ok_fields: Vec<u8>,
    /// Body of a `200` to `GET`.
    body: Vec<u8>,
}

impl Responses {
    pub(super) fn new(body: &[u8]) -> Self {
        let ok_fields = format!(
            "Content-Type: text/plain\r\nContent-Length: {}\r\n",
            body.len()
        )
        .into_bytes();
        Responses {
            ok_fields,
            body: body.to_vec(),
        }
    }
}

/// A complete error response that closes the connection, dated now.
pub fn error_response(status: ErrorStatus) -> Vec<u8> {
    let mut out = Vec::new();
    write_error(status, &date::now(), &mut out);
    out
}

/// Appends the error response for `status` to `out`.
pub(super) fn write_error(status: ErrorStatus, date: &DateLine, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.line().as_bytes());
    out.extend_from_slice(b"\r\nServer: ringd\r\n");
    out.extend_from_slice(date);
    out.extend_from_slice(b"Content-Length: 0\r\nConnection: close\r\n\r\n");
}

/// State of one `http` connection.
#[derive(Debug)]
pub struct Http {
    /// Shared response pieces.
    responses: Arc<Responses>,
    /// Request body bytes still to skip before the next request starts.
    skip: u64,
    /// Requests answered so far (for the server's counters).
    answered: u64,
    /// The server is draining: the next response says `Connection: close` and ends the
    /// connection.
    closing: bool,
    /// It closed after a whole request and its response (not an error, no body still to
    /// come): the client has nothing more to send.
    clean_close: bool,
}

/// What one parsed request asks of us.
struct Request {
    /// Header block length in bytes.
    head_len: usize,
    /// GET or HEAD (anything else is 405).
    method: Method,
    /// Keep the connection open after answering.
    keep_alive: bool,
    /// HTTP/1.0 (needs an explicit `Connection: keep-alive` in the response).
    http10: bool,
    /// Declared body length to skip.
    body_len: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Other,
}

/// Parsing a request header block failed or must stop the connection.
enum Reject {
    /// The header block is incomplete.
    Partial,
    /// Answer with this status and close.
    Status(ErrorStatus),
}

impl Http {
    pub(super) fn new(responses: Arc<Responses>) -> Self {
        Http {
            responses,
            skip: 0,
            answered: 0,
            closing: false,
            clean_close: false,
        }
    }

    /// True when it closed after a whole request and its response.
    pub(super) fn clean_close(&self) -> bool {
        self.clean_close
    }

    /// The server drains: answer the request in progress (or the next one), with
    /// `Connection: close`, then close.
    pub(super) fn drain(&mut self) {
        self.closing = true;
    }

    pub(super) fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, limit: usize) -> Outcome {
        let mut pos = 0;
        // Read once for all the requests of this input, and only if one is answered.
        let mut date = None;
        loop {
            if self.skip > 0 {
                let n = (self.skip.min((input.len() - pos) as u64)) as usize;
                self.skip -= n as u64;
                pos += n;
                if self.skip > 0 {
                    return Outcome::keep(pos);
                }
            }
            let rest = &input[pos..];
            if rest.is_empty() || out.len() >= limit {
                return Outcome::keep(pos);
            }
            match parse(rest) {
                Ok(mut req) => {
                    pos += req.head_len;
                    self.skip = req.body_len;
                    req.keep_alive &= !self.closing;
                    self.respond(&req, date.get_or_insert_with(date::now), out);
                    if !req.keep_alive {
                        self.clean_close = self.skip == 0;
                        return Outcome::close(pos);
                    }
                }
                Err(Reject::Partial) => return Outcome::keep(pos),
                Err(Reject::Status(status)) => {
                    self.answered += 1;
                    write_error(status, date.get_or_insert_with(date::now), out);
                    return Outcome::close(input.len());
                }
            }
        }
    }

    /// Requests answered so far.
    pub fn answered(&self) -> u64 {
        self.answered
    }

    fn respond(&mut self, req: &Request, date: &DateLine, out: &mut Vec<u8>) {
        self.answered += 1;
        let connection: &[u8] = match (req.keep_alive, req.http10) {
            (false, _) => b"Connection: close\r\n",
            (true, true) => b"Connection: keep-alive\r\n",
            (true, false) => b"",
        };
        match req.method {
            Method::Get | Method::Head => {
                out.extend_from_slice(OK_STATUS);
                out.extend_from_slice(date);
                out.extend_from_slice(&self.responses.ok_fields);
                out.extend_from_slice(connection);
                out.extend_from_slice(b"\r\n");
                if req.method == Method::Get {
                    out.extend_from_slice(&self.responses.body);
                }
            }
            Method::Other => {
                out.extend_from_slice(b"HTTP/1.1 405 Method Not Allowed\r\nServer: ringd\r\n");
                out.extend_from_slice(date);
                out.extend_from_slice(b"Allow: GET, HEAD\r\nContent-Length: 0\r\n");
                out.extend_from_slice(connection);
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

/// Parses one request header block at the start of `buf`.
fn parse(buf: &[u8]) -> Result<Request, Reject> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEADER_BYTES => n,
        Ok(httparse::Status::Complete(_)) => {
            return Err(Reject::Status(ErrorStatus::HeaderTooLarge))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEADER_BYTES => {
            return Err(Reject::Status(ErrorStatus::HeaderTooLarge))
        }
        Ok(httparse::Status::Partial) => return Err(Reject::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Reject::Status(ErrorStatus::HeaderTooLarge))
        }
        Err(_) => return Err(Reject::Status(ErrorStatus::BadRequest)),
    };
    let http10 = req.version == Some(0);
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        _ => Method::Other,
    };
    let mut keep_alive = !http10;
    let mut body_len = None;
    let mut hosts = 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let len = content_length(h.value).ok_or(Reject::Status(ErrorStatus::BadRequest))?;
            // Two different lengths make the framing ambiguous (request smuggling).
            if body_len.is_some_and(|prev| prev != len) {
                return Err(Reject::Status(ErrorStatus::BadRequest));
            }
            body_len = Some(len);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Reject::Status(ErrorStatus::NotImplemented));
        }
    }
    // RFC 9112 §3.2: an HTTP/1.1 request names its host exactly once; HTTP/1.0 may omit it.
    if hosts > 1 || (hosts == 0 && !http10) {
        return Err(Reject::Status(ErrorStatus::BadRequest));
    }
    Ok(Request {
        head_len,
        method,
        keep_alive,
        http10,
        body_len: body_len.unwrap_or(0),
    })
}

/// A `Content-Length` value: `1*DIGIT` (RFC 9110 §8.6) once the optional whitespace around a
/// field value is set aside. Anything else (`+5`, `-1`, `5,5`, `0x5`, an overflow) is refused:
/// two parsers reading different lengths out of one request is how requests are smuggled.
fn content_length(value: &[u8]) -> Option<u64> {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b))?;
    let end = value.iter().rposition(|b| !is_ows(b))? + 1;
    let digits = &value[start..end];
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testutil::{assert_split_invariant, drive};
    use crate::protocol::{ProtocolKind, ProtocolSpec};

    /// The default spec, with this thread's `Date` pinned to [`DATE`].
    fn spec() -> ProtocolSpec {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
        crate::protocol::pin_date(Some(t));
        ProtocolSpec::with_defaults(ProtocolKind::Http)
    }

    const DATE: &str = "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n";

    const OK: &str = "HTTP/1.1 200 OK\r\nServer: ringd\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

    fn text(out: &[u8]) -> String {
        String::from_utf8_lossy(out).into_owned()
    }

    #[test]
    fn get_keep_alive() {
        let (out, close) = assert_split_invariant(&spec(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(text(&out), OK);
        assert!(!close);
    }

    #[test]
    fn three_pipelined_requests_in_order() {
        let input = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\nHost: x\r\n\r\n";
        let (out, close) = assert_split_invariant(&spec(), input);
        let head = format!("HTTP/1.1 200 OK\r\nServer: ringd\r\n{DATE}Content-Type: text/plain\r\nContent-Length: 13\r\n");
        let expected = format!("{OK}{head}\r\n{head}Connection: close\r\n\r\nHello, World!");
        assert_eq!(text(&out), expected);
        assert!(close);
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let (out, close) = assert_split_invariant(&spec(), b"GET / HTTP/1.0\r\n\r\n");
        assert!(text(&out).contains("Connection: close\r\n"));
        assert!(close);
        let (out, close) =
            assert_split_invariant(&spec(), b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(text(&out).contains("Connection: keep-alive\r\n"));
        assert!(!close);
    }

    #[test]
    fn head_has_no_body() {
        let (out, _) = assert_split_invariant(&spec(), b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(text(&out).ends_with("Content-Length: 13\r\n\r\n"));
    }

    #[test]
    fn garbage_is_400_and_close() {
        let (out, close) = assert_split_invariant(&spec(), b"\x00\x01garbage\r\n\r\n");
        assert!(text(&out).starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(close);
    }

    #[test]
    fn oversized_header_block_is_431() {
        let mut input = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        input.extend(std::iter::repeat_n(b'a', MAX_HEADER_BYTES));
        // Incomplete and already over the limit.
        let (out, close) = drive(&spec(), &[&input]);
        assert!(text(&out).starts_with("HTTP/1.1 431 "), "{}", text(&out));
        assert!(close);
        // Complete but over the limit.
        input.extend_from_slice(b"\r\n\r\n");
        let (out, close) = drive(&spec(), &[&input]);
        assert!(text(&out).starts_with("HTTP/1.1 431 "));
        assert!(close);
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut input = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            input.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        input.extend_from_slice(b"\r\n");
        let (out, close) = drive(&spec(), &[&input]);
        assert!(text(&out).starts_with("HTTP/1.1 431 "));
        assert!(close);
    }

    #[test]
    fn other_methods_get_405_and_body_is_skipped() {
        let input = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let (out, close) = assert_split_invariant(&spec(), input);
        let t = text(&out);
        assert!(t.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{t}");
        assert!(t.ends_with(OK), "{t}");
        assert!(!close);
    }

    #[test]
    fn conflicting_content_length_is_400() {
        let input = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        let (out, close) = drive(&spec(), &[input]);
        assert!(text(&out).starts_with("HTTP/1.1 400 "));
        assert!(close);
    }

    #[test]
    fn content_length_must_be_digits() {
        for bad in [
            "+5",
            "-1",
            "5,5",
            "5 5",
            "0x5",
            "",
            "5\x0b",
            "99999999999999999999999",
        ] {
            let input = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {bad}\r\n\r\nhello");
            let (out, close) = drive(&spec(), &[input.as_bytes()]);
            assert!(
                text(&out).starts_with("HTTP/1.1 400 "),
                "{bad:?}: {}",
                text(&out)
            );
            assert!(close, "{bad:?}");
        }
        // Whitespace around the value is not part of it.
        let (out, close) = drive(
            &spec(),
            &[b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length:  5 \r\n\r\nhello"],
        );
        assert!(text(&out).starts_with("HTTP/1.1 405 "), "{}", text(&out));
        assert!(!close);
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b"\t42 "), Some(42));
        assert_eq!(content_length(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(content_length(b"18446744073709551616"), None);
    }

    #[test]
    fn chunked_is_501() {
        let input = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (out, close) = drive(&spec(), &[input]);
        assert!(text(&out).starts_with("HTTP/1.1 501 "));
        assert!(close);
    }

    #[test]
    fn http11_without_host_is_400() {
        let (out, close) = assert_split_invariant(&spec(), b"GET / HTTP/1.1\r\n\r\n");
        assert!(text(&out).starts_with("HTTP/1.1 400 "), "{}", text(&out));
        assert!(close);
        // After a request that had one: answered, then the one without gets its 400.
        let input = b"GET / HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\nX-Host: y\r\n\r\n";
        let (out, close) = assert_split_invariant(&spec(), input);
        let t = text(&out);
        assert!(t.starts_with(OK), "{t}");
        assert!(t[OK.len()..].starts_with("HTTP/1.1 400 "), "{t}");
        assert!(close);
    }

    #[test]
    fn two_hosts_are_400_in_any_version() {
        for input in [
            &b"GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\nhOST: y\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n",
        ] {
            let (out, close) = assert_split_invariant(&spec(), input);
            assert!(text(&out).starts_with("HTTP/1.1 400 "), "{}", text(&out));
            assert!(close);
        }
    }

    #[test]
    fn http10_may_omit_host() {
        for input in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
        ] {
            let (out, _) = assert_split_invariant(&spec(), input);
            assert!(
                text(&out).starts_with("HTTP/1.1 200 OK\r\n"),
                "{}",
                text(&out)
            );
        }
    }

    /// Every status the protocol sends, each with one `Date` after `Server`.
    #[test]
    fn every_response_is_dated() {
        let cases: [(&[u8], &str); 6] = [
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "200"),
            (b"HEAD / HTTP/1.0\r\n\r\n", "200"),
            (b"PUT / HTTP/1.1\r\nHost: x\r\n\r\n", "405"),
            (b"GET / HTTP/1.1\r\n\r\n", "400"),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                "501",
            ),
            (&[b'a'; MAX_HEADER_BYTES + 1], "431"),
        ];
        let mut outs: Vec<(Vec<u8>, &str)> = cases
            .iter()
            .map(|(input, status)| (drive(&spec(), &[input]).0, *status))
            .collect();
        let mut s = spec().session();
        let mut out = Vec::new();
        s.on_header_timeout(&mut out);
        outs.push((out, "408"));
        let mut out = Vec::new();
        s.on_rejected(&mut out);
        outs.push((out, "503"));
        for (out, status) in outs {
            let t = text(&out);
            assert!(
                t.starts_with(&format!("HTTP/1.1 {status} ")),
                "{status}: {t}"
            );
            assert!(t.contains(&format!("\r\nServer: ringd\r\n{DATE}")), "{t}");
            assert_eq!(t.matches("Date: ").count(), 1, "{t}");
        }
    }

    #[test]
    fn partial_request_waits() {
        let mut s = spec().session();
        let mut out = Vec::new();
        let o = s.on_input(b"GET / HTTP/1.1\r\nHost:", &mut out);
        assert_eq!(o, Outcome::keep(0));
        assert!(out.is_empty());
    }

    #[test]
    fn custom_body() {
        let spec = ProtocolSpec::new(ProtocolKind::Http, b"", b"pong");
        let (out, _) = drive(&spec, &[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]);
        assert!(text(&out).ends_with("Content-Length: 4\r\n\r\npong"));
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use crate::protocol::testutil::drive;
    use crate::protocol::{ProtocolKind, ProtocolSpec};

    /// Bytes that look like HTTP often enough to reach deep states: valid requests, near
    /// misses and noise, concatenated.
    fn requestish() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
            Just(b"HEAD /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".to_vec()),
            Just(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc".to_vec()),
            Just(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_vec()),
            Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..64),
        ];
        proptest::collection::vec(piece, 0..8).prop_map(|v| v.concat())
    }

    /// The length and status of the whole response head at the start of `buf`.
    fn response_head(buf: &[u8]) -> Option<(usize, u16)> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => Some((n, resp.code?)),
            _ => None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever arrives, however split: no panic, and the output is a sequence of whole
        /// responses; an error response (400/431/501) is the last thing sent and closes.
        #[test]
        fn arbitrary_input_gives_whole_responses(
            input in prop_oneof![requestish(), proptest::collection::vec(any::<u8>(), 0..2048)],
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
        ) {
            let spec = ProtocolSpec::with_defaults(ProtocolKind::Http);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
            points.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for p in points {
                pieces.push(&input[last..p]);
                last = p;
            }
            pieces.push(&input[last..]);
            let (out, close) = drive(&spec, &pieces);
            let mut rest = &out[..];
            let mut statuses = Vec::new();
            while !rest.is_empty() {
                // Parse the head alone; a 200 to GET is followed by the known body, a 200 to
                // HEAD by the next response.
                let (len, status) = response_head(rest)
                    .expect("server output must be whole, well-formed responses");
                statuses.push(status);
                rest = &rest[len..];
                if status == 200 && rest.starts_with(super::DEFAULT_BODY.as_bytes()) {
                    rest = &rest[super::DEFAULT_BODY.len()..];
                }
            }
            for (i, s) in statuses.iter().enumerate() {
                prop_assert!(matches!(s, 200 | 405 | 400 | 431 | 501), "status {}", s);
                if matches!(s, 400 | 431 | 501) {
                    prop_assert!(close, "an error response must close");
                    prop_assert_eq!(i, statuses.len() - 1, "nothing may follow an error response");
                }
            }
        }
    }
}
