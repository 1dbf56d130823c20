//! One connection while its request arrives, and the bytes of a response.
//!
//! Called by the server's poll thread (reading, refusing) and its request threads (writing).
//! Reads are non-blocking and go into a buffer bounded by [`Limits`]; the head is parsed by
//! `httparse`. A refused request is answered, its write side shut, and what the client still
//! sends is read and dropped for a moment (a close with unread input would reset the
//! connection and could destroy the answer before the client reads it).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use super::Response;

/// Headers parsed at most; more is a 431.
const MAX_HEADERS: usize = 32;
/// How long a refused connection is drained before it is closed.
const DRAIN_TIME: Duration = Duration::from_secs(1);
/// How much of a refused request is drained at most.
const DRAIN_BYTES: usize = 1 << 20;

/// Size limits of a request.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Request line and headers, bytes.
    pub max_head: usize,
    /// Body (`Content-Length`), bytes.
    pub max_body: usize,
}

/// A complete request.
#[derive(Debug)]
pub(super) struct Parsed {
    pub method: String,
    /// Path and query (an absolute-form target is reduced to them).
    pub target: String,
    pub body: Vec<u8>,
}

/// What a read made of the connection.
pub(super) enum Step {
    /// Nothing complete yet.
    More,
    /// The request is complete.
    Ready(Parsed),
    /// The request breaks a rule: answer with this status and message, then close.
    Refuse(u16, String),
    /// The client closed or the connection failed (or a drain ended): close it.
    Gone,
}

struct Head {
    method: String,
    target: String,
    head_len: usize,
    body_len: usize,
}

/// A connection whose request has not fully arrived, or that is being drained.
pub(super) struct Incoming {
    pub stream: TcpStream,
    /// When it is closed if still here.
    pub deadline: Instant,
    buf: Vec<u8>,
    head: Option<Head>,
    /// Refused and answered: input is read and dropped (counted here) until EOF or the
    /// deadline.
    drained: Option<usize>,
}

impl Incoming {
    /// A new connection (already non-blocking) with `timeout` to send its request.
    pub fn new(stream: TcpStream, timeout: Duration) -> Self {
        Incoming {
            stream,
            deadline: Instant::now() + timeout,
            buf: Vec::new(),
            head: None,
            drained: None,
        }
    }

    /// Whether the connection was refused and is being drained.
    pub fn is_draining(&self) -> bool {
        self.drained.is_some()
    }

    /// Reads what is available and says what it amounts to.
    pub fn read(&mut self, limits: Limits) -> Step {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Step::Gone,
                Ok(n) if self.drained.is_some() => {
                    let total = self.drained.unwrap_or(0) + n;
                    if total > DRAIN_BYTES {
                        return Step::Gone;
                    }
                    self.drained = Some(total);
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    match self.advance(limits) {
                        Step::More => {}
                        done => return done,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::More,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Gone,
            }
        }
    }

    fn advance(&mut self, limits: Limits) -> Step {
        if self.head.is_none() {
            match parse_head(&self.buf, limits) {
                Ok(None) if self.buf.len() > limits.max_head => {
                    return Step::Refuse(431, "request header fields too large".into())
                }
                Ok(None) => return Step::More,
                Ok(Some((head, expect_continue))) => {
                    if expect_continue && head.body_len > 0 {
                        // Small enough for any socket buffer; a client that does not get it
                        // sends the body after its own timeout anyway.
                        let _ = self.stream.write(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    self.head = Some(head);
                }
                Err((status, msg)) => return Step::Refuse(status, msg),
            }
        }
        let Some(h) = &self.head else {
            return Step::More;
        };
        if self.buf.len() < h.head_len + h.body_len {
            return Step::More;
        }
        let body = self.buf[h.head_len..h.head_len + h.body_len].to_vec();
        Step::Ready(Parsed {
            method: h.method.clone(),
            target: h.target.clone(),
            body,
        })
    }

    /// Answers a refused request (best effort: the socket is non-blocking and the answer
    /// small), shuts the write side and starts draining. `false` if the connection is
    /// already unusable.
    pub fn refuse(&mut self, status: u16, msg: &str) -> bool {
        let bytes = response_bytes(&Response::error(status, msg), false);
        let _ = self.stream.write(&bytes);
        self.buf = Vec::new();
        self.drained = Some(0);
        self.deadline = self.deadline.min(Instant::now() + DRAIN_TIME);
        self.stream.shutdown(Shutdown::Write).is_ok()
    }
}

/// Parses the request head: `Ok(None)` while incomplete, else the head and whether the client
/// waits for `100 Continue`; `Err` with the status and message of a request to refuse.
fn parse_head(buf: &[u8], limits: Limits) -> Result<Option<(Head, bool)>, (u16, String)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => {
            return Err((431, "request header fields too large".into()))
        }
        // Debug, not Display: httparse has Display only since a later 1.x.
        Err(e) => return Err((400, format!("malformed HTTP request: {e:?}"))),
    };
    let (mut body_len, mut expect_continue) = (0usize, false);
    let mut lengths = 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            body_len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or((400, "malformed Content-Length".to_string()))?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err((411, "request bodies need a Content-Length".into()));
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    if lengths > 1 {
        return Err((400, "more than one Content-Length".into()));
    }
    if body_len > limits.max_body {
        return Err((
            413,
            format!(
                "request body too large: {body_len} bytes, at most {} accepted",
                limits.max_body
            ),
        ));
    }
    let target = req.path.unwrap_or("/");
    let head = Head {
        method: req.method.unwrap_or("GET").to_string(),
        target: origin_form(target).to_string(),
        head_len,
        body_len,
    };
    Ok(Some((head, expect_continue)))
}

/// `http://host/path?q` → `/path?q`; other targets as they are.
fn origin_form(target: &str) -> &str {
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"));
    match rest {
        Some(r) => r.find('/').map_or("/", |i| &r[i..]),
        None => target,
    }
}

/// A response as HTTP/1.1 bytes, `Connection: close`; `head_only` leaves the body out (HEAD).
pub(super) fn response_bytes(r: &Response, head_only: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status)).into_bytes();
    for (k, v) in &r.headers {
        // Header values are ours; a CR or LF in one would split the response, so drop it.
        if !k.contains(['\r', '\n']) && !v.contains(['\r', '\n']) {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
    }
    out.extend_from_slice(
        format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            r.body.len()
        )
        .as_bytes(),
    );
    if !head_only {
        out.extend_from_slice(&r.body);
    }
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        301 => "Moved Permanently",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_head: 8192,
        max_body: 100,
    };

    fn head(raw: &str) -> Result<Option<(Head, bool)>, (u16, String)> {
        parse_head(raw.as_bytes(), LIMITS)
    }

    #[test]
    fn heads_parse_and_rules_refuse() {
        assert!(head("GET /debug/pprof/heap HTTP/1.1\r\nHost: x\r\n")
            .unwrap()
            .is_none());
        let (h, cont) = head("POST http://h:1/debug/pprof/symbol?a HTTP/1.1\r\nContent-Length: 7\r\nExpect: 100-continue\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.method.as_str(), h.target.as_str(), h.body_len, cont),
            ("POST", "/debug/pprof/symbol?a", 7, true)
        );
        let status = |raw: &str| head(raw).err().map(|e| e.0);
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n"),
            Some(413)
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(411)
        );
        assert_eq!(status("GET / HTTP/1.1\r\nBad Header\r\n\r\n"), Some(400));
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(status(&many), Some(431));
    }

    #[test]
    fn response_bytes_are_http_1_1_with_length_and_close() {
        let r = Response::error(413, "too big");
        let text = String::from_utf8(response_bytes(&r, false)).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n"));
        assert!(text.contains("X-Go-Pprof: 1\r\n"));
        let head_only = response_bytes(&r, true);
        assert!(head_only.ends_with(b"\r\n\r\n"));
        assert_eq!(origin_form("https://a.b"), "/");
        assert_eq!(origin_form("/x?y"), "/x?y");
    }
}
