//! The client halves of ringd's protocols, as loadgen speaks them: building requests,
//! recognising where a response ends, and the deterministic byte pattern that lets a client
//! verify every echoed byte without keeping a copy of what it sent.

/// Builds an HTTP/1.1 keep-alive `GET` request.
pub fn http_get(host: &str, path: &str, extra_headers: &[String]) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for h in extra_headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// One HTTP response recognised at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpResponse {
    /// Bytes of the whole response (head and body).
    pub len: usize,
    /// Status code.
    pub status: u16,
    /// Body length.
    pub body_len: usize,
    /// The server said it will close the connection.
    pub close: bool,
}

/// Why a response could not be recognised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Not a valid HTTP/1.x response head.
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    /// Chunked or close-delimited bodies are not supported by this client.
    #[error("HTTP response without Content-Length")]
    NoContentLength,
}

/// Parses one HTTP response at the start of `buf`; `Ok(None)` means more bytes are needed.
/// `head` says the request was `HEAD` (no body follows whatever Content-Length says).
pub fn parse_http_response(buf: &[u8], head: bool) -> Result<Option<HttpResponse>, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ResponseError::Malformed(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    let mut body_len = None;
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| ResponseError::Malformed("bad Content-Length".into()))?;
            body_len = Some(v);
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let body_len = match (head, body_len) {
        (true, _) => 0,
        (false, Some(n)) => n,
        (false, None) => return Err(ResponseError::NoContentLength),
    };
    let len = head_len + body_len;
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(HttpResponse {
        len,
        status,
        body_len,
        close,
    }))
}

/// Period of the echo verification pattern: a prime, so that a stream shifted by anything
/// short of a whole period (a lost, duplicated or reordered chunk) no longer matches.
const PATTERN_PERIOD: usize = 65_537;

/// The pattern, twice over so that any `PATTERN_PERIOD`-long window is one contiguous slice.
fn pattern_table() -> &'static [u8] {
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let once: Vec<u8> = (0..PATTERN_PERIOD)
            .map(|_| {
                // xorshift64: deterministic, cheap, no visible structure.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        [once.as_slice(), once.as_slice()].concat()
    })
}

/// Where stream `seed`'s byte at `offset` sits in the pattern: each connection starts at its
/// own phase, so bytes delivered to the wrong connection are caught too.
fn pattern_pos(seed: u64, offset: u64) -> usize {
    (offset.wrapping_add(seed.wrapping_mul(7_919)) % PATTERN_PERIOD as u64) as usize
}

/// The byte at `offset` of connection `seed`'s echo stream.
pub fn pattern_byte(seed: u64, offset: u64) -> u8 {
    pattern_table()[pattern_pos(seed, offset)]
}

/// Fills `buf` with the pattern of stream `seed` starting at `offset` (memcpy speed).
pub fn fill_pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    let table = pattern_table();
    let mut done = 0;
    while done < buf.len() {
        let pos = pattern_pos(seed, offset + done as u64);
        let n = (buf.len() - done).min(PATTERN_PERIOD);
        buf[done..done + n].copy_from_slice(&table[pos..pos + n]);
        done += n;
    }
}

/// Counts the bytes of `buf` that differ from the pattern of `seed` at `offset` (memcmp
/// speed when they all match).
pub fn pattern_mismatches(seed: u64, offset: u64, buf: &[u8]) -> usize {
    let table = pattern_table();
    let mut bad = 0;
    let mut done = 0;
    while done < buf.len() {
        let pos = pattern_pos(seed, offset + done as u64);
        let n = (buf.len() - done).min(PATTERN_PERIOD);
        let (got, want) = (&buf[done..done + n], &table[pos..pos + n]);
        if got != want {
            bad += got.iter().zip(want).filter(|(a, b)| a != b).count();
        }
        done += n;
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringd::protocol::{ProtocolKind, ProtocolSpec};

    #[test]
    fn server_responses_parse_at_every_length() {
        let spec = ProtocolSpec::with_defaults(ProtocolKind::Http);
        let mut out = Vec::new();
        spec.session().on_input(&http_get("h", "/", &[]), &mut out);
        for cut in 0..out.len() {
            assert_eq!(parse_http_response(&out[..cut], false), Ok(None));
        }
        let r = parse_http_response(&out, false).unwrap().unwrap();
        assert_eq!(
            (r.len, r.status, r.body_len, r.close),
            (out.len(), 200, 13, false)
        );
    }

    #[test]
    fn head_response_has_no_body() {
        let r = parse_http_response(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(r.body_len, 0);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_http_response(b"SSH-2.0\r\n\r\n", false).is_err());
    }

    #[test]
    fn pattern_round_trip_and_detects_corruption() {
        let mut long = vec![0u8; 200_000];
        fill_pattern(3, 12_345, &mut long);
        assert_eq!(pattern_mismatches(3, 12_345, &long), 0);
        assert_eq!(long[1000], pattern_byte(3, 13_345));
        let mut buf = vec![0u8; 300];
        fill_pattern(7, 1000, &mut buf);
        assert_eq!(pattern_mismatches(7, 1000, &buf), 0);
        assert!(pattern_mismatches(8, 1000, &buf) > 0);
        assert!(pattern_mismatches(7, 1001, &buf) > 0);
        buf[10] ^= 1;
        assert_eq!(pattern_mismatches(7, 1000, &buf), 1);
    }
}
