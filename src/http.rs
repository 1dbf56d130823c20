//! `/debug/pprof` over HTTP (cargo feature `http`): the endpoints of Go's `net/http/pprof`
//! that apply to heaprof, as a framework-agnostic [`handle`] function and a small server on
//! its own thread ([`serve`], using `tiny_http`).
//!
//! Called by the application. Everything here runs on request threads under the
//! profiler's guard; nothing here may run inside the allocator or a signal handler.
//! Every profile is written through [`crate::lookup`] / [`crate::Profile::write_to`], so
//! profiles registered by other parts of the crate or by the application appear without
//! changes here.
//!
//! | path | answer |
//! |---|---|
//! | `/debug/pprof/` | HTML index: every profile with its count, links to `?debug=1` |
//! | `/debug/pprof/NAME` | profile `NAME` (`heap`, `allocs`, `threadcreate`, custom): gzip protobuf as `application/octet-stream` with `Content-Disposition`; `?debug=N` (N ≠ 0): text, `text/plain; charset=utf-8` |
//! | `/debug/pprof/cmdline` | the command line, NUL-separated |
//! | `/debug/pprof/symbol?0xADDR+0xADDR` | `num_symbols: 1`, then `0xADDR name` lines (GET only) |
//! | `/debug/pprof/profile` | CPU profile: `404 CPU profiling not available in this build` until wired |
//!
//! Errors are `text/plain; charset=utf-8` with `X-Go-Pprof: 1`, like Go's: unknown profile
//! → 404 `Unknown profile`; a `seconds` that is not a positive integer → 400; `seconds`
//! with `debug` → 400; `seconds` on a profile other than heap/allocs/threadcreate → 400.
//! Delta profiles (`seconds=N` on heap/allocs/threadcreate) are not implemented: 501 with a
//! message (fetch twice and use `go tool pprof -base old new`).
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
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::Error;
use crate::profile;
use crate::symbolize::Symbolizer;
use crate::tls;

/// The address Go programs conventionally serve pprof on; loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:6060";

const PREFIX: &str = "/debug/pprof/";

/// Requests served at the same time; more get `503`.
const MAX_CONCURRENT: usize = 4;

/// Profiles for which Go serves `seconds=N` delta profiles.
const DELTA_PROFILES: &[&str] = &["allocs", "heap", "threadcreate"];

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

/// Answers one `GET` of `path_and_query` (e.g. `"/debug/pprof/heap?debug=1"`), the way Go's
/// `net/http/pprof` does. Paths outside `/debug/pprof/` get 404; `/debug/pprof` redirects.
///
/// ```
/// let r = heaprof::http::handle("/debug/pprof/heap?debug=1");
/// assert_eq!(r.status, 200);
/// assert!(r.body.starts_with(b"heap profile: "));
/// assert_eq!(heaprof::http::handle("/debug/pprof/nope").status, 404);
/// ```
pub fn handle(path_and_query: &str) -> Response {
    let _guard = tls::ProfilerGuard::enter();
    let (raw_path, raw_query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path_and_query, ""),
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
    let query = Query::parse(raw_query);
    let result = panic::catch_unwind(AssertUnwindSafe(|| route(name, &query, raw_query)));
    result.unwrap_or_else(|_| Response::error(500, "heaprof: the profile writer panicked"))
}

/// The router: one arm per endpoint. The CPU route is [`cpu_profile`].
fn route(name: &str, query: &Query, raw_query: &str) -> Response {
    match name {
        "" => index(),
        "cmdline" => cmdline(),
        "symbol" => symbol(raw_query),
        "profile" => cpu_profile(query),
        "trace" => Response::error(404, "execution traces are not available in heaprof"),
        _ => named_profile(name, query),
    }
}

/// `/debug/pprof/profile?seconds=N`: Go's CPU profile (N defaults to 30 when absent,
/// invalid or ≤ 0). A profile already running (another request, or the application's own)
/// gives Go's 500 `Could not enable CPU profiling: cpu profiling already in use`.
fn cpu_profile(query: &Query) -> Response {
    let seconds = query
        .get("seconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(30);
    let body = SharedBuf::default();
    if let Err(e) = crate::start_cpu_profile(body.clone()) {
        return Response::error(500, &format!("Could not enable CPU profiling: {e}"));
    }
    std::thread::sleep(std::time::Duration::from_secs(seconds));
    match crate::stop_cpu_profile_result() {
        Some(Err(e)) => Response::error(500, &format!("Could not write CPU profile: {e}")),
        _ => binary(body.take(), "profile"),
    }
}

/// A writer the CPU profiler keeps until stop, read back afterwards.
#[derive(Clone, Default)]
struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl SharedBuf {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl io::Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn named_profile(name: &str, query: &Query) -> Response {
    let Some(p) = profile::lookup(name) else {
        return Response::error(404, "Unknown profile");
    };
    let debug = query.get("debug").map_or(0, go_atoi);
    if let Some(sec) = query.get("seconds").filter(|s| !s.is_empty()) {
        if !sec.parse::<i64>().is_ok_and(|s| s > 0) {
            return Response::error(
                400,
                r#"invalid value for "seconds" - must be a positive integer"#,
            );
        }
        if !DELTA_PROFILES.contains(&name) {
            return Response::error(
                400,
                r#""seconds" parameter is not supported for this profile type"#,
            );
        }
        if debug != 0 {
            return Response::error(400, "seconds and debug params are incompatible");
        }
        return Response::error(
            501,
            "delta profiles (seconds=N) are not implemented by heaprof; \
             fetch the profile twice and compare with go tool pprof -base OLD NEW",
        );
    }
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
        "heap" => "A sampling of memory allocations of live objects",
        "threadcreate" => "Stack traces that led to the creation of new OS threads",
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

/// Go's `Symbol` handler for GET: `+`-separated addresses in the raw query.
fn symbol(raw_query: &str) -> Response {
    let mut out = String::from("num_symbols: 1\n");
    let mut sym = Symbolizer::new();
    for word in raw_query.split('+') {
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

/// Go's `strconv.Atoi` with the error ignored: invalid → 0.
fn go_atoi(s: &str) -> i64 {
    s.parse().unwrap_or(0)
}

/// Query parameters, decoded; the first value of a key wins (Go's `FormValue`).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Self {
        let pairs = raw
            .split('&')
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                Some((percent_decode(k, true)?, percent_decode(v, true)?))
            })
            .collect();
        Query(pairs)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-._~/".contains(&c) {
            out.push(c as char);
        } else {
            let _ = write!(out, "%{c:02X}");
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '"' => out.push_str("&#34;"),
            c => out.push(c),
        }
    }
    out
}

/// A running `/debug/pprof` server. Dropping the handle leaves the server running;
/// [`ServerHandle::stop`] ends it.
pub struct ServerHandle {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

impl ServerHandle {
    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting requests and waits for the server thread to end (requests already
    /// being answered finish on their own threads).
    pub fn stop(mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            // A panic on the accept thread has been printed already; nothing to add.
            let _ = t.join();
        }
    }
}

/// Serves [`handle`] over HTTP/1.1 at `addr` (e.g. [`DEFAULT_ADDR`], or `"127.0.0.1:0"`
/// for a free port) from a thread of its own; each request is answered on a short-lived
/// thread, at most 4 at a time (then `503`). Bind to loopback unless the network is
/// trusted: profiles reveal code structure and allocation sizes.
///
/// ```no_run
/// let server = heaprof::http::serve(heaprof::http::DEFAULT_ADDR)?;
/// eprintln!("go tool pprof http://{}/debug/pprof/heap", server.local_addr());
/// # Ok::<(), heaprof::Error>(())
/// ```
pub fn serve(addr: impl ToSocketAddrs + std::fmt::Debug) -> Result<ServerHandle, Error> {
    let listener = TcpListener::bind(&addr)
        .map_err(|e| Error::InvalidConfig(format!("cannot listen on {addr:?}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::InvalidConfig(format!("cannot listen on {addr:?}: {e}")))?;
    let server = tiny_http::Server::from_listener(listener, None)
        .map_err(|e| Error::InvalidConfig(format!("cannot serve on {local}: {e}")))?;
    let server = Arc::new(server);
    let accept = Arc::clone(&server);
    let thread = std::thread::Builder::new()
        .name("heaprof-http".into())
        .spawn(move || accept_loop(&accept))
        .map_err(|e| Error::InvalidConfig(format!("cannot start the HTTP thread: {e}")))?;
    Ok(ServerHandle {
        addr: local,
        server,
        thread: Some(thread),
    })
}

static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Tests of the fork protocol: counts as many request threads as the limit allows, or
/// takes them back.
pub(crate) fn hold_for_test(held: bool) {
    if held {
        ACTIVE.fetch_add(MAX_CONCURRENT, Ordering::AcqRel);
    } else {
        ACTIVE.fetch_sub(MAX_CONCURRENT, Ordering::AcqRel);
    }
}

/// In a forked child: the parent's request threads do not exist there, so none is active
/// (a server the child starts would otherwise count them against its limit).
pub(crate) fn after_fork_child() {
    ACTIVE.store(0, Ordering::Relaxed);
}

fn accept_loop(server: &tiny_http::Server) {
    let _guard = tls::ProfilerGuard::enter();
    for request in server.incoming_requests() {
        if ACTIVE.fetch_add(1, Ordering::AcqRel) >= MAX_CONCURRENT {
            ACTIVE.fetch_sub(1, Ordering::AcqRel);
            respond(
                request,
                Response::error(503, "too many concurrent profile requests"),
            );
            continue;
        }
        let spawned = std::thread::Builder::new()
            .name("heaprof-http-req".into())
            .spawn(move || {
                let _guard = tls::ProfilerGuard::enter();
                let r = handle(request.url());
                respond(request, r);
                ACTIVE.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            // The request was moved into the closure that could not start: its connection
            // is dropped (the client sees a reset). Nothing else to undo.
            ACTIVE.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn respond(request: tiny_http::Request, r: Response) {
    let mut out = tiny_http::Response::from_data(r.body).with_status_code(r.status);
    for (k, v) in &r.headers {
        if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
            out = out.with_header(h);
        }
    }
    // The client may have gone away; that is its business, not the profiler's.
    let _ = request.respond(out);
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
        assert_eq!(handle("/debug/pprof/heap?seconds=2&debug=1").status, 400);
        assert_eq!(handle("/debug/pprof/heap?seconds=2").status, 501);
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
        assert_eq!(html_escape("<a'&\">"), "&lt;a&#39;&amp;&#34;&gt;");
        assert_eq!(percent_encode("a b/c?"), "a%20b/c%3F");
        assert_eq!(percent_decode("a%20b+c", true).as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(handle("/debug/pprof/%zz").status, 400);
    }

    #[test]
    fn symbol_names_a_known_function() {
        let pc = go_atoi as fn(&str) -> i64 as usize;
        let r = handle(&format!("/debug/pprof/symbol?{pc:#x}+junk"));
        let text = String::from_utf8(r.body).unwrap();
        assert!(text.starts_with("num_symbols: 1\n"), "{text}");
        assert!(
            text.contains(&format!("{pc:#x} ")) && text.contains("go_atoi"),
            "{text}"
        );
    }
}
