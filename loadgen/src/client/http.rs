//! HTTP/1.1 as a client speaks it: the request, built once per target, and responses read
//! as they arrive — Content-Length, chunked and close-delimited bodies, interim 1xx
//! responses, bodiless HEAD/204/304 — with the connection's fate (keep-alive or close) taken
//! from the version and the `Connection` header. Pure: bytes in, responses out; bodies are
//! counted, never buffered.

/// Longest response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Headers parsed on the fast path; heads with more are parsed again with room for
/// `MAX_HEADERS`.
const FAST_HEADERS: usize = 32;
/// Most headers a response head may have.
const MAX_HEADERS: usize = 256;

/// What a request is made of.
#[derive(Debug, Clone)]
pub struct RequestSpec<'a> {
    /// Method, e.g. `GET`.
    pub method: &'a str,
    /// Request target, e.g. `/` or `/search?q=1`.
    pub path: &'a str,
    /// `Host` header value, used unless `headers` has a Host of its own.
    pub host: &'a str,
    /// Extra headers (name, value), sent in order.
    pub headers: &'a [(String, String)],
    /// Body (`None`: none was given), sent as it is with a Content-Length.
    pub body: Option<&'a [u8]>,
    /// Ask the server to close after the response (unless `headers` says otherwise).
    pub close: bool,
}

/// Why a request cannot be built: its headers contradict each other or its body, so the
/// server would read something other than what was meant (header names compare
/// case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Host or Content-Length twice (the two header lines).
    #[error("two headers where a request has one: '{0}' and '{1}'")]
    Twice(String, String),
    /// A Content-Length that is not the body's length (the header line, the body's length).
    #[error("'{0}' disagrees with the body's length ({1} bytes): give that length or leave the header out (loadgen sends it)")]
    WrongLength(String, usize),
    /// A Transfer-Encoding with a body, which is sent as it is, not encoded (the header line).
    #[error("'{0}' with --body or --body-file: the body is sent as it is, with a Content-Length; leave the header out")]
    TransferEncodingWithBody(String),
}

/// Builds the request bytes: exactly one Host (the one given in `headers`, or `host`), and
/// for a body, or a method that carries one, one Content-Length (the one given in
/// `headers` if it is the body's length, else the body's length) unless `headers` gives a
/// Transfer-Encoding (only without a body).
pub fn build_request(spec: &RequestSpec) -> Result<Vec<u8>, RequestError> {
    let given = |name: &'static str| {
        spec.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
    };
    let has = |name| given(name).next().is_some();
    let line = |(n, v): &(String, String)| format!("{n}: {v}");
    for name in ["host", "content-length"] {
        if let [first, second, ..] = given(name).collect::<Vec<_>>()[..] {
            return Err(RequestError::Twice(line(first), line(second)));
        }
    }
    let body = spec.body.unwrap_or_default();
    if let Some(h) = given("content-length").next() {
        let value = h.1.as_str();
        let exact = value.bytes().all(|b| b.is_ascii_digit())
            && value.parse::<u64>().ok() == Some(body.len() as u64);
        if !exact {
            return Err(RequestError::WrongLength(line(h), body.len()));
        }
    }
    if spec.body.is_some() {
        if let Some(h) = given("transfer-encoding").next() {
            return Err(RequestError::TransferEncodingWithBody(line(h)));
        }
    }
    let mut req = format!("{} {} HTTP/1.1\r\n", spec.method, spec.path);
    if !has("host") {
        req.push_str(&format!("Host: {}\r\n", spec.host));
    }
    for (name, value) in spec.headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    let sends_body = !body.is_empty() || matches!(spec.method, "POST" | "PUT" | "PATCH");
    if sends_body && !has("content-length") && !has("transfer-encoding") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if spec.close && !has("connection") {
        req.push_str("Connection: close\r\n");
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    Ok(bytes)
}

/// Parses a `Name: value` header argument.
pub fn parse_header(arg: &str) -> Result<(String, String), String> {
    let (name, value) = arg
        .split_once(':')
        .ok_or_else(|| format!("bad header {arg:?}: expected 'Name: value'"))?;
    let (name, value) = (name.trim(), value.trim());
    if !is_token(name) {
        return Err(format!(
            "bad header name {name:?} in {arg:?}: letters, digits and !#$%&'*+-.^_`|~ only"
        ));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(format!("bad header value in {arg:?}: no line breaks"));
    }
    Ok((name.to_string(), value.to_string()))
}

/// True for an HTTP token (a method or header name).
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// One complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Body bytes (after de-chunking).
    pub body_len: u64,
    /// The server closes the connection after this response.
    pub close: bool,
}

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Not a valid HTTP/1.x response.
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
}

fn malformed(why: impl Into<String>) -> ResponseError {
    ResponseError::Malformed(why.into())
}

/// Where the reader is within the current response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a whole head.
    Head,
    /// Content-Length body with this many bytes left.
    Length(u64),
    /// Waiting for a chunk-size line.
    ChunkSize,
    /// Chunk data with this many bytes left.
    ChunkData(u64),
    /// The line break after chunk data.
    ChunkEnd,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailers,
    /// A body that ends when the connection does.
    UntilClose,
}

/// Reads the responses of one connection, in order.
#[derive(Debug, Clone)]
pub struct ResponseReader {
    /// The requests are HEAD: no response has a body.
    head_request: bool,
    state: State,
    status: u16,
    close: bool,
    body_len: u64,
}

/// What a parsed head says about what follows it.
enum Head {
    /// An interim 1xx response: the real one follows.
    Interim,
    /// The response is complete with its head.
    Complete,
    /// A body follows.
    Body(State),
}

impl ResponseReader {
    /// A reader for responses to `HEAD` requests (`head_request`) or to any other method.
    pub fn new(head_request: bool) -> Self {
        ResponseReader {
            head_request,
            state: State::Head,
            status: 0,
            close: false,
            body_len: 0,
        }
    }

    /// True between responses: no byte of the next one has been consumed (bytes the caller
    /// keeps for lack of a whole head are not counted).
    pub fn at_start(&self) -> bool {
        self.state == State::Head
    }

    /// Reads from `buf` until a response completes or more bytes are needed. Returns the
    /// bytes consumed and the response, if one completed. Bytes not consumed (part of a
    /// head or of a chunk line) must be handed in again, with more appended, next time.
    pub fn read(&mut self, buf: &[u8]) -> Result<(usize, Option<Response>), ResponseError> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.state {
                State::Head => {
                    let Some((n, next)) = self.parse_head(rest)? else {
                        return Ok((pos, None));
                    };
                    pos += n;
                    match next {
                        Head::Interim => {}
                        Head::Complete => return Ok((pos, Some(self.done()))),
                        Head::Body(s) => self.state = s,
                    }
                }
                State::Length(left) | State::ChunkData(left) => {
                    let take = left.min(rest.len() as u64);
                    pos += take as usize;
                    self.body_len += take;
                    let chunked = matches!(self.state, State::ChunkData(_));
                    if take < left {
                        self.state = if chunked {
                            State::ChunkData(left - take)
                        } else {
                            State::Length(left - take)
                        };
                        return Ok((pos, None));
                    }
                    if !chunked {
                        return Ok((pos, Some(self.done())));
                    }
                    self.state = State::ChunkEnd;
                }
                State::ChunkSize => {
                    let Some((n, line)) = line(rest)? else {
                        return Ok((pos, None));
                    };
                    pos += n;
                    let size = line.split(|&b| b == b';').next().unwrap_or_default();
                    let size = std::str::from_utf8(size)
                        .ok()
                        .map(str::trim)
                        .filter(|s| !s.is_empty() && s.len() <= 15)
                        .and_then(|s| u64::from_str_radix(s, 16).ok())
                        .ok_or_else(|| malformed("bad chunk size"))?;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkEnd => {
                    let Some((n, line)) = line(rest)? else {
                        return Ok((pos, None));
                    };
                    if !line.is_empty() {
                        return Err(malformed("chunk data longer than its size"));
                    }
                    pos += n;
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let Some((n, line)) = line(rest)? else {
                        return Ok((pos, None));
                    };
                    pos += n;
                    if line.is_empty() {
                        return Ok((pos, Some(self.done())));
                    }
                }
                State::UntilClose => {
                    self.body_len += rest.len() as u64;
                    return Ok((buf.len(), None));
                }
            }
        }
    }

    /// The connection ended: completes a body that lasts until the close; `None` when a
    /// response was cut short (or none had begun).
    pub fn eof(&mut self) -> Option<Response> {
        (self.state == State::UntilClose).then(|| self.done())
    }

    fn done(&mut self) -> Response {
        let r = Response {
            status: self.status,
            body_len: self.body_len,
            close: self.close,
        };
        self.state = State::Head;
        self.body_len = 0;
        r
    }

    /// Parses a head at the start of `buf`: its length and what follows, or `None` when
    /// it is not all there yet.
    fn parse_head(&mut self, buf: &[u8]) -> Result<Option<(usize, Head)>, ResponseError> {
        let mut fast = [httparse::EMPTY_HEADER; FAST_HEADERS];
        let mut resp = httparse::Response::new(&mut fast);
        let mut many;
        let parsed = match resp.parse(buf) {
            Err(httparse::Error::TooManyHeaders) => {
                many = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
                resp = httparse::Response::new(&mut many);
                resp.parse(buf)
            }
            other => other,
        };
        let n = match parsed {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(malformed(format!("head longer than {MAX_HEAD} bytes")))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(malformed(e.to_string())),
        };
        let status = resp.code.unwrap_or(0);
        let mut length: Option<u64> = None;
        let (mut chunked, mut close_token, mut keep_alive_token) = (false, false, false);
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let v = std::str::from_utf8(h.value)
                    .ok()
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| malformed("bad Content-Length"))?;
                if length.is_some_and(|l| l != v) {
                    return Err(malformed("conflicting Content-Length headers"));
                }
                length = Some(v);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked |= tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("connection") {
                for t in tokens(h.value) {
                    close_token |= t.eq_ignore_ascii_case(b"close");
                    keep_alive_token |= t.eq_ignore_ascii_case(b"keep-alive");
                }
            }
        }
        self.status = status;
        self.body_len = 0;
        // HTTP/1.0 closes unless asked to keep alive; HTTP/1.1 keeps alive unless told.
        self.close = if resp.version == Some(0) {
            !keep_alive_token || close_token
        } else {
            close_token
        };
        let next = match status {
            100 | 102..=199 => Head::Interim,
            // An upgraded connection no longer speaks HTTP: this is its last response.
            101 => {
                self.close = true;
                Head::Complete
            }
            204 | 304 => Head::Complete,
            _ if self.head_request => Head::Complete,
            _ if chunked => Head::Body(State::ChunkSize),
            _ => match length {
                Some(0) => Head::Complete,
                Some(len) => Head::Body(State::Length(len)),
                None => {
                    self.close = true;
                    Head::Body(State::UntilClose)
                }
            },
        };
        Ok(Some((n, next)))
    }
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// A line at the start of `buf`: its length with the line break, and its content without.
fn line(buf: &[u8]) -> Result<Option<(usize, &[u8])>, ResponseError> {
    let window = &buf[..buf.len().min(MAX_LINE)];
    match window.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let content = &buf[..i];
            Ok(Some((
                i + 1,
                content.strip_suffix(b"\r").unwrap_or(content),
            )))
        }
        None if buf.len() >= MAX_LINE => Err(malformed("chunk line too long")),
        None => Ok(None),
    }
}

/// Parses one whole response at the start of `buf`: its length and what it said, or `None`
/// if it is not all there (or its body lasts until the connection closes).
pub fn parse_http_response(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<(usize, Response)>, ResponseError> {
    let (n, r) = ResponseReader::new(head_request).read(buf)?;
    Ok(r.map(|r| (n, r)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringd::protocol::{ProtocolKind, ProtocolSpec};

    /// Reads `input` delivered in the given pieces, keeping unconsumed bytes like a
    /// connection does; returns the responses and whether the stream ended cleanly.
    fn read_all(pieces: &[&[u8]], head: bool) -> Result<(Vec<Response>, bool), ResponseError> {
        let mut reader = ResponseReader::new(head);
        let mut pending = Vec::new();
        let mut out = Vec::new();
        for piece in pieces {
            pending.extend_from_slice(piece);
            loop {
                let (n, r) = reader.read(&pending)?;
                pending.drain(..n);
                match r {
                    Some(r) => out.push(r),
                    None => break,
                }
            }
        }
        if let Some(r) = reader.eof() {
            out.push(r);
        }
        Ok((out, pending.is_empty() && reader.at_start()))
    }

    /// Same result however the input is split in two.
    fn assert_split_invariant(input: &[u8], head: bool) -> (Vec<Response>, bool) {
        let whole = read_all(&[input], head).unwrap();
        for cut in 0..=input.len() {
            let split = read_all(&[&input[..cut], &input[cut..]], head).unwrap();
            assert_eq!(split, whole, "split at byte {cut}");
        }
        whole
    }

    fn resp(status: u16, body_len: u64, close: bool) -> Response {
        Response {
            status,
            body_len,
            close,
        }
    }

    #[test]
    fn ringd_responses_parse_at_every_length() {
        let spec = ProtocolSpec::with_defaults(ProtocolKind::Http);
        let mut out = Vec::new();
        let req = build_request(&RequestSpec {
            method: "GET",
            path: "/",
            host: "h",
            headers: &[],
            body: None,
            close: false,
        })
        .unwrap();
        spec.session().on_input(&req, &mut out);
        for cut in 0..out.len() {
            assert_eq!(parse_http_response(&out[..cut], false), Ok(None));
        }
        assert_eq!(
            parse_http_response(&out, false),
            Ok(Some((out.len(), resp(200, 13, false))))
        );
    }

    #[test]
    fn keep_alive_and_close_by_version_and_header() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi\
HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n\
HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\nx\
HTTP/1.1 500 Oops\r\nConnection: keep-alive, Close\r\nContent-Length: 3\r\n\r\nabc\
HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\ny";
        let (rs, clean) = assert_split_invariant(input, false);
        assert_eq!(
            rs,
            [
                resp(200, 2, false),
                resp(404, 0, false),
                resp(200, 1, false),
                resp(500, 3, true),
                resp(200, 1, true),
            ]
        );
        assert!(clean);
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n\
HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 99\r\n\r\n\
A\nabcdefghij\n0\r\nX-Trailer: 1\r\n\r\n";
        let (rs, clean) = assert_split_invariant(input, false);
        assert_eq!(rs, [resp(200, 12, false), resp(200, 10, false)]);
        assert!(clean);
    }

    #[test]
    fn close_delimited_body_ends_at_eof() {
        let input = b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nall of this is the body";
        let (rs, _) = assert_split_invariant(input, false);
        assert_eq!(rs, [resp(200, 23, true)]);
        // Cut short: a Content-Length body that never finished is no response.
        let cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        assert_eq!(read_all(&[cut], false).unwrap(), (vec![], false));
    }

    #[test]
    fn bodiless_responses_and_interim_ones() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 204 No Content\r\n\r\n\
HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        let (rs, clean) = assert_split_invariant(input, false);
        assert_eq!(
            rs,
            [
                resp(204, 0, false),
                resp(304, 0, false),
                resp(200, 3, false)
            ]
        );
        assert!(clean);
        // HEAD: the Content-Length describes a body that is not sent.
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHTTP/1.1 200 OK\r\n\r\n";
        let (rs, clean) = assert_split_invariant(head, true);
        assert_eq!(rs, [resp(200, 0, false), resp(200, 0, false)]);
        assert!(clean);
    }

    #[test]
    fn malformed_responses_are_errors() {
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
        ] {
            assert!(
                read_all(&[bad], false).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let huge = [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &[b'a'; MAX_HEAD]].concat();
        assert!(read_all(&[&huge], false).is_err());
    }

    #[test]
    fn many_headers_are_fine() {
        let mut input = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..100 {
            input.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        input.extend_from_slice(b"Content-Length: 1\r\n\r\nz");
        assert_eq!(
            parse_http_response(&input, false),
            Ok(Some((input.len(), resp(200, 1, false))))
        );
    }

    #[test]
    fn requests_carry_method_host_headers_and_body() {
        let headers = vec![("Host".to_string(), "example.com".to_string())];
        let req = build_request(&RequestSpec {
            method: "POST",
            path: "/submit?x=1",
            host: "127.0.0.1:8080",
            headers: &headers,
            body: Some(b"abc"),
            close: true,
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "POST /submit?x=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\
Connection: close\r\n\r\nabc"
        );
        let req = build_request(&RequestSpec {
            method: "GET",
            path: "/",
            host: "h:1",
            headers: &[],
            body: None,
            close: false,
        })
        .unwrap();
        assert_eq!(req, b"GET / HTTP/1.1\r\nHost: h:1\r\n\r\n");
    }

    fn request(method: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> String {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|&(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let spec = RequestSpec {
            method,
            path: "/",
            host: "h:1",
            headers: &headers,
            body,
            close: false,
        };
        match build_request(&spec) {
            Ok(bytes) => String::from_utf8(bytes).unwrap(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn one_host_and_one_content_length_that_is_the_body_s() {
        // A Host of any case replaces the default one.
        assert_eq!(
            request("GET", &[("host", "example.com")], None),
            "GET / HTTP/1.1\r\nhost: example.com\r\n\r\n"
        );
        // A Content-Length that is the body's is sent once, where it was given.
        assert_eq!(
            request(
                "POST",
                &[("content-length", "5"), ("X", "y")],
                Some(b"hello")
            ),
            "POST / HTTP/1.1\r\nHost: h:1\r\ncontent-length: 5\r\nX: y\r\n\r\nhello"
        );
        assert_eq!(
            request("GET", &[("Content-Length", "0")], None),
            "GET / HTTP/1.1\r\nHost: h:1\r\nContent-Length: 0\r\n\r\n"
        );
        // Without a body, a Transfer-Encoding is the caller's business.
        assert_eq!(
            request("GET", &[("Transfer-Encoding", "identity")], None),
            "GET / HTTP/1.1\r\nHost: h:1\r\nTransfer-Encoding: identity\r\n\r\n"
        );
    }

    #[test]
    fn headers_that_contradict_the_request_are_refused() {
        for (headers, body, error) in [
            (
                &[("Host", "a"), ("HOST", "b")][..],
                None,
                RequestError::Twice("Host: a".into(), "HOST: b".into()),
            ),
            (
                &[("Content-Length", "5"), ("content-length", "5")],
                Some(&b"hello"[..]),
                RequestError::Twice("Content-Length: 5".into(), "content-length: 5".into()),
            ),
            (
                &[("Content-Length", "3")],
                Some(b"hello"),
                RequestError::WrongLength("Content-Length: 3".into(), 5),
            ),
            (
                &[("content-length", "+5")],
                Some(b"hello"),
                RequestError::WrongLength("content-length: +5".into(), 5),
            ),
            (
                &[("Content-Length", "3")],
                None,
                RequestError::WrongLength("Content-Length: 3".into(), 0),
            ),
            (
                &[("transfer-encoding", "chunked")],
                Some(b"hello"),
                RequestError::TransferEncodingWithBody("transfer-encoding: chunked".into()),
            ),
            (
                &[("Transfer-Encoding", "chunked")],
                Some(b""),
                RequestError::TransferEncodingWithBody("Transfer-Encoding: chunked".into()),
            ),
        ] {
            assert_eq!(
                request("POST", headers, body),
                format!("error: {error}"),
                "{headers:?}"
            );
        }
        assert_eq!(
            RequestError::WrongLength("Content-Length: 3".into(), 5).to_string(),
            "'Content-Length: 3' disagrees with the body's length (5 bytes): give that length \
or leave the header out (loadgen sends it)"
        );
    }

    #[test]
    fn header_arguments_are_checked() {
        assert_eq!(
            parse_header("Accept:  text/plain "),
            Ok(("Accept".into(), "text/plain".into()))
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("Bad Name: x").is_err());
        assert!(parse_header("X: a\r\nInjected: 1").is_err());
        assert!(is_token("GET") && is_token("M-SEARCH") && !is_token("G T") && !is_token(""));
    }
}
