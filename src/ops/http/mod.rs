//! `/debug/pprof` over HTTP (cargo feature `http`): the endpoints of Go's `net/http/pprof`
//! that apply to heaprof, as framework-agnostic functions ([`handle`], [`handle_request`])
//! and a small bounded server of its own ([`serve`], [`serve_with`]: see [`ServerConfig`]
//! for what it holds at most).
//!
//! Called by the application. Everything here runs on request threads under the
//! profiler's guard; nothing here may run inside the allocator or a signal handler.
//! Every profile is written through [`lookup`](crate::api::profile::lookup) / [`Profile::write_to`](crate::api::profile::Profile::write_to), so
//! profiles registered by other parts of the crate or by the application appear without
//! changes here.
//!
//! | path | answer |
//! |---|---|
//! | `/debug/pprof/` | HTML index: every profile with its count, links to `?debug=1` |
//! | `/debug/pprof/NAME` | profile `NAME` (`heap`, `allocs`, `block`, `mutex`, `threadcreate`, `goroutine`, custom): gzip protobuf as `application/octet-stream` with `Content-Disposition`; `?debug=N` (N ≠ 0): text, `text/plain; charset=utf-8`; `gc=N` accepted and ignored (there is no GC) |
//! | `/debug/pprof/NAME?seconds=N` | delta profile: the profile now, again after N seconds, the difference (`filename="NAME-delta"`), for `allocs`, `block`, `goroutine` (`threads`), `heap`, `mutex`, `threadcreate` |
//! | `/debug/pprof/cmdline` | the command line, NUL-separated |
//! | `/debug/pprof/symbol?0xADDR+0xADDR` (or POST body) | `num_symbols: 1`, then `0xADDR name` lines |
//! | `/debug/pprof/profile?seconds=N` | CPU profile of N seconds (default 30) |
//!
//! Errors are `text/plain; charset=utf-8` with `X-Go-Pprof: 1`, with Go's texts: unknown
//! profile → 404 `Unknown profile`; `seconds` not a positive integer → 400 `invalid value for
//! "seconds" - must be a positive integer`; `seconds` on a profile without deltas (custom,
//! `heap_peak`) → 400 `"seconds" parameter is not supported for this profile type`; a
//! duration at or past the server's write timeout ([`Request::write_timeout`]) → 400
//! `profile duration exceeds server's WriteTimeout`; `seconds` with `debug` ≠ 0 → 400
//! `seconds and debug params are incompatible`. A waiting request (delta or CPU profile)
//! holds only its own thread.
//!
//! Mounting in another framework, e.g. axum (text only, not compiled here: axum is not a
//! dependency of heaprof):
//!
//! ```text
//! use axum::{body::Body, http::{StatusCode, Uri}, response::Response, routing::get, Router};
//!
//! async fn pprof(uri: Uri) -> Response {
//!     let pq = uri.path_and_query().map(|pq| pq.as_str().to_owned()).unwrap_or_default();
//!     // Writing a profile symbolizes and compresses: keep it off the async workers.
//!     let r = tokio::task::spawn_blocking(move || heaprof::http::handle(&pq)).await.unwrap();
//!     let mut b = Response::builder().status(StatusCode::from_u16(r.status).unwrap());
//!     for (k, v) in &r.headers { b = b.header(k.as_str(), v.as_str()); }
//!     b.body(Body::from(r.body)).unwrap()
//! }
//!
//! let app = Router::new()
//!     .route("/debug/pprof/", get(pprof))
//!     .route("/debug/pprof/*name", get(pprof));
//! ```

use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use crate::api::profile;
use crate::base::tls;
use crate::pprof::symbolize::Symbolizer;

mod conn;
mod delta;
mod query;
mod server;

use query::{go_atoi, html_escape, percent_decode, percent_encode, Query};
pub use server::{serve, serve_with, ServerConfig, ServerHandle, ServerStats};

/// The address Go programs conventionally serve pprof on; loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:6060";

const PREFIX: &str = "/debug/pprof/";

/// An HTTP response, independent of any server framework.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code (200, 400, 404, …).
    pub status: u16,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn new(status: u16, content_type: &str, body: Vec<u8>) -> Self {
        Response {
            status,
            headers: vec![
                ("Content-Type".into(), content_type.into()),
                ("X-Content-Type-Options".into(), "nosniff".into()),
            ],
            body,
        }
    }

    /// Go's `serveError`: plain text, `X-Go-Pprof: 1`, the message and a newline.
    fn error(status: u16, msg: &str) -> Self {
        let mut r = Response::new(
            status,
            "text/plain; charset=utf-8",
            format!("{msg}\n").into(),
        );
        r.headers.push(("X-Go-Pprof".into(), "1".into()));
        r
    }

    fn text(body: Vec<u8>) -> Self {
        Response::new(200, "text/plain; charset=utf-8", body)
    }
}

/// One request, for [`handle_request`]: what a framework hands its handler.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// `GET`, `POST`, … (only `/debug/pprof/symbol` reads a `POST` body; every path answers
    /// any method, as Go's handlers do).
    pub method: &'a str,
    /// The request target's path and query, e.g. `"/debug/pprof/heap?seconds=30"`.
    pub path_and_query: &'a str,
    /// The request body (empty for `GET`).
    pub body: &'a [u8],
    /// The serving server's write timeout (Go's `http.Server.WriteTimeout`), if it has one:
    /// a `seconds=N` at or past it is refused with 400, as Go does, instead of being cut off.
    pub write_timeout: Option<Duration>,
}

impl<'a> Request<'a> {
    /// A `GET` of `path_and_query` with no body and no write timeout.
    pub fn get(path_and_query: &'a str) -> Self {
        Request {
            method: "GET",
            path_and_query,
            body: &[],
            write_timeout: None,
        }
    }
}

/// How a handler waits: the plain [`handle_request`] sleeps; the server's requests also end
/// their wait when the client hangs up or the server stops.
pub(crate) trait Waiter {
    /// Waits `d`; `false` if the request was cancelled before the end.
    fn wait(&self, d: Duration) -> bool;
}

/// Sleeps the whole time.
struct Sleep;

impl Waiter for Sleep {
    fn wait(&self, d: Duration) -> bool {
        std::thread::sleep(d);
        true
    }
}

/// Answers one `GET` of `path_and_query` (e.g. `"/debug/pprof/heap?debug=1"`), the way Go's
/// `net/http/pprof` does. Paths outside `/debug/pprof/` get 404; `/debug/pprof` redirects.
/// A `seconds=N` request sleeps N seconds on the calling thread.
///
/// ```
/// let r = heaprof::http::handle("/debug/pprof/heap?debug=1");
/// assert_eq!(r.status, 200);
/// assert!(r.body.starts_with(b"heap profile: "));
/// assert_eq!(heaprof::http::handle("/debug/pprof/nope").status, 404);
/// ```
pub fn handle(path_and_query: &str) -> Response {
    handle_request(&Request::get(path_and_query))
}

/// Answers `request` (any method; a `POST` body is read by `/debug/pprof/symbol`), the way
/// Go's `net/http/pprof` does; see [`handle`].
///
/// ```
/// use heaprof::http::{handle_request, Request};
/// use std::time::Duration;
/// let r = handle_request(&Request {
///     write_timeout: Some(Duration::from_secs(10)),
///     ..Request::get("/debug/pprof/heap?seconds=30")
/// });
/// assert_eq!((r.status, r.body.as_slice()), (400, &b"profile duration exceeds server's WriteTimeout\n"[..]));
/// ```
pub fn handle_request(request: &Request) -> Response {
    handle_with(request, &Sleep)
}

/// [`handle_request`] with the server's [`Waiter`].
pub(crate) fn handle_with(request: &Request, waiter: &dyn Waiter) -> Response {
    let _guard = tls::ProfilerGuard::enter();
    let (raw_path, raw_query) = match request.path_and_query.split_once('?') {
        Some((p, q)) => (p, q),
        None => (request.path_and_query, ""),
    };
    let Some(path) = percent_decode(raw_path, false) else {
        return Response::error(400, "invalid escape in the URL path");
    };
    if path == "/debug/pprof" {
        let mut r = Response::new(301, "text/html; charset=utf-8", Vec::new());
        r.headers.push(("Location".into(), PREFIX.into()));
        return r;
    }
    let Some(name) = path.strip_prefix(PREFIX) else {
        return Response::error(404, "404 page not found");
    };
    let ctx = Ctx {
        request,
        query: Query::parse(raw_query),
        raw_query,
        waiter,
    };
    let result = panic::catch_unwind(AssertUnwindSafe(|| route(name, &ctx)));
    result.unwrap_or_else(|_| Response::error(500, "heaprof: the profile writer panicked"))
}

/// What a handler knows of its request.
struct Ctx<'a> {
    request: &'a Request<'a>,
    query: Query,
    raw_query: &'a str,
    waiter: &'a dyn Waiter,
}

impl Ctx<'_> {
    /// Go's `durationExceedsWriteTimeout`.
    fn exceeds_write_timeout(&self, seconds: f64) -> bool {
        self.request
            .write_timeout
            .is_some_and(|t| !t.is_zero() && seconds >= t.as_secs_f64())
    }
}

/// The router: one arm per endpoint.
fn route(name: &str, ctx: &Ctx) -> Response {
    match name {
        "" => index(),
        "cmdline" => cmdline(),
        "symbol" => symbol(ctx),
        "profile" => cpu_profile(ctx),
        "trace" => Response::error(404, "execution traces are not available in heaprof"),
        _ => named_profile(name, ctx),
    }
}

/// `/debug/pprof/profile?seconds=N`: Go's CPU profile (N defaults to 30 when absent,
/// invalid or ≤ 0). A profile already running (another request, or the application's own)
/// gives Go's 500 `Could not enable CPU profiling: cpu profiling already in use`. A client
/// that hangs up ends the profile early, as in Go.
fn cpu_profile(ctx: &Ctx) -> Response {
    let seconds = ctx
        .query
        .get("seconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(30);
    if ctx.exceeds_write_timeout(seconds as f64) {
        return Response::error(400, "profile duration exceeds server's WriteTimeout");
    }
    let profile = match crate::profiles::cpu::CpuProfile::start(Vec::new()) {
        Ok(p) => p,
        Err(e) => return Response::error(500, &format!("Could not enable CPU profiling: {e}")),
    };
    ctx.waiter.wait(Duration::from_secs(seconds));
    match profile.stop() {
        Ok(body) => binary(body, "profile"),
        Err(e) => Response::error(500, &format!("Could not write CPU profile: {e}")),
    }
}

/// Go's `handler.ServeHTTP`: the profile, its delta with `seconds`, its text with `debug`.
fn named_profile(name: &str, ctx: &Ctx) -> Response {
    let Some(p) = profile::lookup(name) else {
        return Response::error(404, "Unknown profile");
    };
    if let Some(sec) = ctx.query.get("seconds").filter(|s| !s.is_empty()) {
        return delta::serve(&p, name, sec, ctx);
    }
    let debug = ctx.query.get("debug").map_or(0, go_atoi);
    let debug_u8 = match debug {
        0 => 0,
        d if d < 0 => 1,
        d => d.min(255) as u8,
    };
    let mut body = Vec::new();
    if let Err(e) = p.write_to(&mut body, debug_u8) {
        return Response::error(500, &format!("Could not write profile: {e}"));
    }
    if debug_u8 != 0 {
        return Response::text(body);
    }
    binary(body, name)
}

/// A profile as Go sends it: `application/octet-stream`, `attachment; filename="NAME"`.
fn binary(body: Vec<u8>, name: &str) -> Response {
    let mut r = Response::new(200, "application/octet-stream", body);
    let file = name.replace(['"', '\\', '\r', '\n'], "_");
    r.headers.push((
        "Content-Disposition".into(),
        format!("attachment; filename=\"{file}\""),
    ));
    r
}

fn index() -> Response {
    let mut h = String::from(
        "<html>\n<head>\n<title>/debug/pprof/</title>\n</head>\n<body>\n/debug/pprof/<br>\n\
         <p>Set debug=1 as a query parameter to export in legacy text format</p>\n<br>\n\
         Types of profiles available:\n<table>\n<thead><td>Count</td><td>Profile</td></thead>\n",
    );
    let mut described = Vec::new();
    for p in profile::profiles() {
        let name = p.name();
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td><a href='{}?debug=1'>{}</a></td></tr>",
            p.count(),
            html_escape(&percent_encode(name)),
            html_escape(name)
        );
        described.push(name.to_string());
    }
    for (name, link) in [
        ("cmdline", "cmdline"),
        ("profile", "profile"),
        ("symbol", "symbol"),
    ] {
        let _ = writeln!(h, "<tr><td></td><td><a href='{link}'>{name}</a></td></tr>");
        described.push(name.to_string());
    }
    h.push_str("</table>\n<br>\n<p>\nProfile Descriptions:\n<ul>\n");
    for name in &described {
        let desc = description(name);
        let _ = writeln!(
            h,
            "<li><div class=profile-name>{}: </div> {}</li>",
            html_escape(name),
            desc
        );
    }
    h.push_str("</ul>\n</p>\n</body>\n</html>\n");
    Response::new(200, "text/html; charset=utf-8", h.into_bytes())
}

fn description(name: &str) -> &'static str {
    match name {
        "allocs" => "A sampling of all past memory allocations",
        "block" => "Stack traces that led to blocking on synchronization primitives",
        "heap" => "A sampling of memory allocations of live objects",
        "heap_peak" => "A sampling of the live objects at the largest heap seen",
        "mutex" => "Stack traces of holders of contended mutexes",
        "threadcreate" => "Stack traces that led to the creation of new OS threads",
        "threads" => "Stack traces of all current threads (also served as goroutine)",
        "cmdline" => "The command line invocation of the current program",
        "profile" => "CPU profile. You can specify the duration in the seconds GET parameter.",
        "symbol" => "Maps program counters (0x-prefixed, +-separated) to function names",
        _ => "A custom profile",
    }
}

fn cmdline() -> Response {
    let mut body = Vec::new();
    for (i, a) in std::env::args_os().enumerate() {
        if i > 0 {
            body.push(0);
        }
        body.extend_from_slice(a.as_encoded_bytes());
    }
    Response::text(body)
}

/// Go's `Symbol` handler: `+`-separated addresses in the raw query, or in the body of a POST.
fn symbol(ctx: &Ctx) -> Response {
    let words = if ctx.request.method.eq_ignore_ascii_case("POST") {
        String::from_utf8_lossy(ctx.request.body).into_owned()
    } else {
        ctx.raw_query.to_string()
    };
    let mut out = String::from("num_symbols: 1\n");
    let mut sym = Symbolizer::new();
    for word in words.split('+').map(str::trim) {
        let hex = word.strip_prefix("0x").or_else(|| word.strip_prefix("0X"));
        let Some(pc) = hex.and_then(|h| usize::from_str_radix(h, 16).ok()) else {
            continue;
        };
        // The outermost function at the PC is the symbol that contains it.
        if let Some(f) = sym.resolve(pc).last().filter(|f| !f.name.is_empty()) {
            let _ = writeln!(out, "{word} {}", f.name);
        }
    }
    Response::text(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_errors_like_go() {
        let r = handle("/debug/pprof/no.such");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (404, &b"Unknown profile\n"[..])
        );
        assert_eq!(r.header("x-go-pprof"), Some("1"));
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        for bad in ["x", "0", "-3", "1.5"] {
            let r = handle(&format!("/debug/pprof/heap?seconds={bad}"));
            assert_eq!(r.status, 400, "seconds={bad}");
            assert!(String::from_utf8_lossy(&r.body).contains("seconds"));
        }
        assert_eq!(handle("/debug/pprof/heap?seconds=").status, 200);
        assert_eq!(handle("/elsewhere").status, 404);
        assert_eq!(handle("/debug/pprof").header("location"), Some(PREFIX));
        // The CPU route itself is exercised end to end in tests/http_pprof.rs (it holds the
        // process-wide CPU profiler for `seconds`).
    }

    #[test]
    fn binary_and_text_content_types() {
        let r = handle("/debug/pprof/allocs");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert_eq!(
            r.header("content-disposition"),
            Some("attachment; filename=\"allocs\"")
        );
        assert!(r.body.starts_with(&[0x1f, 0x8b]));
        let t = handle("/debug/pprof/heap?debug=1&gc=1");
        assert_eq!(t.header("content-type"), Some("text/plain; charset=utf-8"));
        assert!(t.body.starts_with(b"heap profile: "));
        // Invalid debug is 0, as with Go's Atoi.
        assert_eq!(
            handle("/debug/pprof/heap?debug=zz").header("content-type"),
            Some("application/octet-stream")
        );
    }

    #[test]
    fn index_lists_profiles_with_counts_and_escapes() {
        let r = handle("/debug/pprof/");
        let html = String::from_utf8(r.body).unwrap();
        for p in profile::profiles() {
            assert!(
                html.contains(&format!("<a href='{}?debug=1'>{}</a>", p.name(), p.name())),
                "{html}"
            );
        }
        assert!(html.contains("<a href='cmdline'>cmdline</a>"));
        assert_eq!(handle("/debug/pprof/%zz").status, 400);
    }

    #[test]
    fn symbol_names_a_known_function_from_the_query_or_a_post_body() {
        let pc = go_atoi as fn(&str) -> i64 as usize;
        let r = handle(&format!("/debug/pprof/symbol?{pc:#x}+junk"));
        let text = String::from_utf8(r.body).unwrap();
        assert!(text.starts_with("num_symbols: 1\n"), "{text}");
        assert!(
            text.contains(&format!("{pc:#x} ")) && text.contains("go_atoi"),
            "{text}"
        );
        let body = format!("junk+{pc:#x}");
        let r = handle_request(&Request {
            method: "POST",
            body: body.as_bytes(),
            ..Request::get("/debug/pprof/symbol")
        });
        assert!(String::from_utf8(r.body).unwrap().contains("go_atoi"));
    }

    /// Go's checks of `seconds`, in Go's order, each with Go's text.
    #[test]
    fn delta_requests_are_checked_like_go() {
        let err = |pq: &str, timeout: Option<u64>| {
            let r = handle_request(&Request {
                write_timeout: timeout.map(Duration::from_secs),
                ..Request::get(pq)
            });
            assert_eq!(r.header("x-go-pprof"), Some("1"), "{pq}");
            (r.status, String::from_utf8(r.body).unwrap())
        };
        let invalid = (
            400,
            "invalid value for \"seconds\" - must be a positive integer\n".into(),
        );
        let unsupported = (
            400,
            "\"seconds\" parameter is not supported for this profile type\n".into(),
        );
        let too_long = (
            400,
            "profile duration exceeds server's WriteTimeout\n".into(),
        );
        let with_debug = (400, "seconds and debug params are incompatible\n".into());
        crate::Profile::new("http.delta_test");
        assert_eq!(
            err("/debug/pprof/http.delta_test?seconds=0&debug=1", Some(1)),
            invalid
        );
        assert_eq!(
            err("/debug/pprof/http.delta_test?seconds=1", None),
            unsupported
        );
        assert_eq!(
            err("/debug/pprof/heap_peak?seconds=1&debug=1", Some(1)),
            unsupported
        );
        assert_eq!(
            err("/debug/pprof/heap?seconds=10&debug=1", Some(10)),
            too_long
        );
        assert_eq!(
            err("/debug/pprof/goroutine?seconds=9&debug=1", Some(10)),
            with_debug
        );
        assert_eq!(
            err("/debug/pprof/no.such?seconds=x", None),
            (404, "Unknown profile\n".into())
        );
        assert_eq!(err("/debug/pprof/profile?seconds=10", Some(10)), too_long);
    }

    #[test]
    fn a_delta_is_a_named_attachment_covering_the_wait() {
        let r = handle("/debug/pprof/threadcreate?seconds=1&gc=1");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.header("content-disposition"),
            Some("attachment; filename=\"threadcreate-delta\"")
        );
        let p = crate::read_profile(&r.body).unwrap();
        assert!(p.duration_nanos >= 1_000_000_000, "{}", p.duration_nanos);
        assert!(p.time_nanos > 0);
    }
}
