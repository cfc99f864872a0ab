//! A minimal HTTP/1.x server side for one GET endpoint, sans-IO: [`RequestReader`] is fed
//! bytes and yields a [`Request`] once the head (request line and headers) is complete;
//! [`respond`] maps a request (or a refusal) to response bytes. The body of a request is
//! never read (a GET has none; anything announcing one is refused), and every response
//! closes the connection.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Most bytes of a request head (request line and headers) that are buffered; a longer
/// head is refused with 431. Prometheus sends about 250 bytes.
pub const REQUEST_HEAD_BYTES_MAX: usize = 4096;
/// Most bytes of a request target (path and query).
pub const TARGET_BYTES_MAX: usize = 1024;
/// The path that serves the metrics.
pub const METRICS_PATH: &str = "/metrics";
/// The content type of the text format.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Request methods the endpoint knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// Any other well-formed token (answered 405).
    Other,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path, without the query string.
    pub path: String,
}

/// Why a request is refused before it is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// The head is malformed (answered 400); the reason is for logs.
    BadRequest(&'static str),
    /// The head exceeds [`REQUEST_HEAD_BYTES_MAX`] (answered 431).
    HeadTooLarge,
    /// The request target exceeds [`TARGET_BYTES_MAX`] (answered 414).
    TargetTooLong,
}

impl core::fmt::Display for HttpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HttpError::BadRequest(why) => write!(f, "bad request: {why}"),
            HttpError::HeadTooLarge => write!(f, "request head larger than {REQUEST_HEAD_BYTES_MAX} bytes"),
            HttpError::TargetTooLong => write!(f, "request target longer than {TARGET_BYTES_MAX} bytes"),
        }
    }
}

/// Buffers one request head, at most [`REQUEST_HEAD_BYTES_MAX`] bytes.
#[derive(Debug, Default)]
pub struct RequestReader {
    buf: Vec<u8>,
}

impl RequestReader {
    pub fn new() -> RequestReader {
        RequestReader { buf: Vec::new() }
    }

    /// Bytes buffered so far.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Feeds received bytes. `Ok(None)`: the head is not complete yet. After
    /// `Ok(Some(_))` or an error the reader is done (the connection answers and closes).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Option<Request>, HttpError> {
        // Look for the end of the head only in what is new (plus 3 bytes of overlap).
        let search_from = self.buf.len().saturating_sub(3);
        let room = REQUEST_HEAD_BYTES_MAX - self.buf.len();
        let take = bytes.len().min(room);
        self.buf.extend_from_slice(&bytes[..take]);
        match find_head_end(&self.buf[search_from..]) {
            Some(end) => parse_head(&self.buf[..search_from + end]).map(Some),
            None if take < bytes.len() || self.buf.len() >= REQUEST_HEAD_BYTES_MAX => {
                Err(if self.buf.contains(&b'\n') { HttpError::HeadTooLarge } else { request_line_too_long(&self.buf) })
            }
            None => Ok(None),
        }
    }
}

/// A request line that fills the buffer on its own: 414 if it is a request line with a
/// long target, 400 otherwise.
fn request_line_too_long(buf: &[u8]) -> HttpError {
    if buf.iter().position(|&b| b == b' ').is_some_and(|i| i > 0 && i < 16) {
        HttpError::TargetTooLong
    } else {
        HttpError::BadRequest("request line without an end")
    }
}

/// Offset of the first byte after the blank line ending a head (CRLF CRLF or LF LF).
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find_map(|i| {
        let rest = &bytes[i..];
        if rest.starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if rest.starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

fn parse_head(head: &[u8]) -> Result<Request, HttpError> {
    let text = core::str::from_utf8(head).map_err(|_| HttpError::BadRequest("head is not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next().ok_or(HttpError::BadRequest("no request line"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(HttpError::BadRequest("request line is not METHOD TARGET VERSION"));
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(HttpError::BadRequest("not HTTP/1.0 or HTTP/1.1"));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError::BadRequest("malformed method"));
    }
    if target.len() > TARGET_BYTES_MAX {
        return Err(HttpError::TargetTooLong);
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(HttpError::BadRequest("request target is not an absolute path"));
    }
    for header in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = header.split_once(':').ok_or(HttpError::BadRequest("header without a colon"))?;
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(HttpError::BadRequest("malformed header name"));
        }
        let value = value.trim();
        let has_body = (name.eq_ignore_ascii_case("content-length") && value != "0")
            || name.eq_ignore_ascii_case("transfer-encoding");
        if has_body {
            return Err(HttpError::BadRequest("a request body is not accepted"));
        }
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => Method::Other,
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Ok(Request { method, path: path.into() })
}

/// An HTTP status the endpoint answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok = 200,
    BadRequest = 400,
    NotFound = 404,
    MethodNotAllowed = 405,
    RequestTimeout = 408,
    UriTooLong = 414,
    HeadersTooLarge = 431,
    ServiceUnavailable = 503,
}

impl Status {
    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::UriTooLong => "URI Too Long",
            Status::HeadersTooLarge => "Request Header Fields Too Large",
            Status::ServiceUnavailable => "Service Unavailable",
        }
    }
}

impl From<HttpError> for Status {
    fn from(e: HttpError) -> Status {
        match e {
            HttpError::BadRequest(_) => Status::BadRequest,
            HttpError::HeadTooLarge => Status::HeadersTooLarge,
            HttpError::TargetTooLong => Status::UriTooLong,
        }
    }
}

/// What to do with a parsed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Render the metrics; send the body only if `body`.
    Metrics { body: bool },
    /// Answer with this status and a short text body.
    Refuse(Status),
}

/// Routes a request: `GET`/`HEAD /metrics`, everything else refused.
pub fn route(request: &Request) -> Route {
    match (request.method, request.path == METRICS_PATH) {
        (Method::Get, true) => Route::Metrics { body: true },
        (Method::Head, true) => Route::Metrics { body: false },
        (Method::Other, true) => Route::Refuse(Status::MethodNotAllowed),
        (_, false) => Route::Refuse(Status::NotFound),
    }
}

/// A complete response that closes the connection. With `send_body == false` (HEAD)
/// the headers announce `body`'s length but the body is left out.
pub fn response(status: Status, content_type: &str, body: &[u8], send_body: bool) -> Vec<u8> {
    let allow = if status == Status::MethodNotAllowed { "Allow: GET, HEAD\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        status as u16,
        status.reason(),
        body.len()
    );
    let mut out = Vec::with_capacity(head.len() + if send_body { body.len() } else { 0 });
    out.extend_from_slice(head.as_bytes());
    if send_body {
        out.extend_from_slice(body);
    }
    out
}

/// A refusal with the status line's reason as a text body.
pub fn refusal(status: Status) -> Vec<u8> {
    let body = format!("{} {}\n", status as u16, status.reason());
    response(status, "text/plain; charset=utf-8", body.as_bytes(), true)
}

#[cfg(test)]
mod test {
    use super::*;
    use alloc::vec;

    const PROMETHEUS_GET: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: [fd67::1]:9100\r\nUser-Agent: Prometheus/2.45.3\r\n\
Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n\
Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n";

    #[test]
    fn a_prometheus_scrape_parses_in_one_push_and_byte_by_byte() {
        let want = Request { method: Method::Get, path: "/metrics".into() };
        assert_eq!(RequestReader::new().push(PROMETHEUS_GET), Ok(Some(want.clone())));
        let mut r = RequestReader::new();
        for (i, b) in PROMETHEUS_GET.iter().enumerate() {
            let got = r.push(core::slice::from_ref(b));
            if i + 1 < PROMETHEUS_GET.len() {
                assert_eq!(got, Ok(None), "at byte {i}");
            } else {
                assert_eq!(got, Ok(Some(want.clone())));
            }
        }
        assert_eq!(route(&want), Route::Metrics { body: true });
    }

    #[test]
    fn curl_style_lf_only_and_query_string() {
        let got = RequestReader::new().push(b"HEAD /metrics?x=1 HTTP/1.0\n\n");
        let request = got.ok().flatten().expect("request");
        assert_eq!(request.path, "/metrics");
        assert_eq!(route(&request), Route::Metrics { body: false });
    }

    #[test]
    fn routes_other_paths_and_methods_to_refusals() {
        let r = |m, p: &str| route(&Request { method: m, path: p.into() });
        assert_eq!(r(Method::Get, "/"), Route::Refuse(Status::NotFound));
        assert_eq!(r(Method::Other, "/metrics"), Route::Refuse(Status::MethodNotAllowed));
        assert_eq!(RequestReader::new().push(b"POST /metrics HTTP/1.1\r\n\r\n").map(|r| r.map(|r| r.method)), Ok(Some(Method::Other)));
    }

    #[test]
    fn malformed_heads_are_bad_requests() {
        for head in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET /metrics HTTP/2.0\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 extra\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"\x00\x01\x02\r\n\r\n",
        ] {
            let got = RequestReader::new().push(head);
            assert!(matches!(got, Err(HttpError::BadRequest(_))), "{head:?}: {got:?}");
            assert_eq!(got.map_err(Status::from).err(), Some(Status::BadRequest));
        }
    }

    #[test]
    fn an_endless_head_is_refused_at_the_bound_without_buffering_more() {
        let mut r = RequestReader::new();
        assert_eq!(r.push(b"GET /metrics HTTP/1.1\r\n"), Ok(None));
        let header = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        let mut result = Ok(None);
        for _ in 0..1000 {
            result = r.push(header);
            if result != Ok(None) {
                break;
            }
        }
        assert_eq!(result, Err(HttpError::HeadTooLarge));
        assert_eq!(r.buffered_bytes(), REQUEST_HEAD_BYTES_MAX);
        assert_eq!(Status::from(HttpError::HeadTooLarge) as u16, 431);
    }

    #[test]
    fn one_huge_push_is_refused_too() {
        let mut big = vec![b'a'; 100_000];
        big.splice(0..4, *b"GET ");
        assert_eq!(RequestReader::new().push(&big), Err(HttpError::TargetTooLong));
        let junk = vec![b'x'; 10_000];
        assert!(matches!(RequestReader::new().push(&junk), Err(HttpError::BadRequest(_))));
        let long_target = alloc::format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(TARGET_BYTES_MAX + 1));
        assert_eq!(RequestReader::new().push(long_target.as_bytes()), Err(HttpError::TargetTooLong));
    }

    #[test]
    fn responses_carry_length_and_close() {
        let r = response(Status::Ok, CONTENT_TYPE_TEXT, b"a 1\n", true);
        let text = core::str::from_utf8(&r).expect("utf8");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 4\r\n") && text.contains("Connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\na 1\n"), "{text}");
        let head = response(Status::Ok, CONTENT_TYPE_TEXT, b"a 1\n", false);
        assert!(head.ends_with(b"\r\n\r\n"));
        let refused = refusal(Status::HeadersTooLarge);
        assert!(refused.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(core::str::from_utf8(&refusal(Status::MethodNotAllowed)).is_ok_and(|t| t.contains("Allow: GET, HEAD")));
    }
}
