//! The `/debug/pprof` server's bounds (feature `http`): a flood of half-sent requests holds no
//! threads and does not lock out a real client, incomplete requests are closed after the
//! request timeout, bodies past the limit get 413, requests past `max_requests` get 503, and a
//! waiting delta ends when its client hangs up or the server stops.
//!
//! The tests take turns (one lock): they count the process's threads.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use heaprof::http::{serve_with, ServerConfig};

static TURN: Mutex<()> = Mutex::new(());

/// Hang guard only: how long a test waits for something that happens at once or after a
/// timeout of a few seconds.
const PATIENCE: Duration = Duration::from_secs(120);

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends `raw`, reads the answer to EOF: (status, body).
fn exchange(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    parse(&out)
}

fn parse(out: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    )
}

/// Threads of this process, and those of them that belong to the HTTP server.
fn threads() -> (usize, usize) {
    let mut all = 0;
    let mut http = 0;
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        all += 1;
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.starts_with("heaprof-http") {
            http += 1;
        }
    }
    (all, http)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < end, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_half_request_flood_holds_no_threads_and_a_plain_fetch_answers() {
    let _t = turn();
    let config = ServerConfig {
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let max_pending = config.max_pending;
    let server = serve_with("127.0.0.1:0", config).unwrap();
    let addr = server.local_addr();
    let (before, _) = threads();
    let mut flood = Vec::new();
    for _ in 0..1500 {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /debug/pprof/heap HTTP/1.1\r\nHost: flood\r\n")
            .unwrap();
        flood.push(c);
    }
    // The flood's connections are all open on this side; a real client still gets answers.
    for path in ["/debug/pprof/heap", "/debug/pprof/", "/debug/pprof/cmdline"] {
        let (status, _) = get(addr, path);
        assert_eq!(status, 200, "{path}");
    }
    let (during, http) = threads();
    // The poll thread, and at most the three requests' threads on their way out: nothing
    // per flood connection.
    assert!(http <= 4, "{http} server threads during the flood");
    assert!(during <= before + 4, "threads {before} -> {during}");
    let st = server.stats();
    assert!(st.accepted >= 1503, "{st:?}");
    assert!(st.evicted >= 1500 - max_pending as u64, "{st:?}");
    assert_eq!(st.answered, 3, "{st:?}");
    // Every flood connection is closed by the server: the evicted at once, the rest when
    // their request timeout ends.
    for c in &mut flood {
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut b = [0u8; 16];
        assert!(matches!(c.read(&mut b), Ok(0) | Err(_)));
    }
    wait_until("timeouts counted", || server.stats().timed_out >= 1);
    server.stop();
}

#[test]
fn bodies_past_the_limit_get_413_and_symbol_reads_a_post_body() {
    let _t = turn();
    let server = serve_with("127.0.0.1:0", ServerConfig::default()).unwrap();
    let addr = server.local_addr();
    // A 50 MB POST: refused from its head, after 64 KiB of it was sent.
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c.write_all(
        b"POST /debug/pprof/symbol HTTP/1.1\r\nHost: t\r\nContent-Length: 50000000\r\n\r\n",
    )
    .unwrap();
    let _ = c.write_all(&b"0x1+".repeat(16 << 10));
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let (status, body) = parse(&out);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("at most 65536"), "{body}");
    // With `Expect: 100-continue` (curl's way for large bodies) nothing of the body is sent.
    let (status, _) = exchange(
        addr,
        b"POST /debug/pprof/symbol HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 50000000\r\n\r\n",
    );
    assert_eq!(status, 413);
    // A symbol request of reasonable size is answered.
    let pc = parse as fn(&[u8]) -> (u16, String) as usize;
    let body = format!("{pc:#x}+0x0");
    let req = format!(
        "POST /debug/pprof/symbol HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = exchange(addr, req.as_bytes());
    assert_eq!(status, 200);
    assert!(
        text.starts_with("num_symbols: 1\n") && text.contains("parse"),
        "{text}"
    );
    let (status, _) = exchange(
        addr,
        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(status, 411);
    assert_eq!(server.stats().refused, 3);
    server.stop();
}

#[test]
fn requests_past_max_requests_get_503_and_a_timeout_closes_a_silent_client() {
    let _t = turn();
    let config = ServerConfig {
        max_requests: 1,
        request_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let server = serve_with("127.0.0.1:0", config).unwrap();
    let addr = server.local_addr();
    let waiting = std::thread::spawn(move || get(addr, "/debug/pprof/threadcreate?seconds=2"));
    wait_until("the delta holds the one slot", || {
        server.stats().active == 1
    });
    let (status, body) = get(addr, "/debug/pprof/heap");
    assert_eq!(
        (status, body.as_str()),
        (503, "too many concurrent profile requests\n")
    );
    assert_eq!(waiting.join().unwrap().0, 200);
    wait_until("the slot is free", || server.stats().active == 0);
    assert_eq!(get(addr, "/debug/pprof/heap").0, 200);

    // Connected, silent: closed after the request timeout, with no answer.
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut b = Vec::new();
    assert!(matches!(c.read_to_end(&mut b), Ok(0)));
    // Counted before the close.
    assert_eq!(server.stats().timed_out, 1);
    server.stop();
}

#[test]
fn a_waiting_delta_ends_when_its_client_hangs_up_or_the_server_stops() {
    let _t = turn();
    let server = serve_with("127.0.0.1:0", ServerConfig::default()).unwrap();
    let addr = server.local_addr();
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /debug/pprof/heap?seconds=3600 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    wait_until("the delta is waiting", || server.stats().active == 1);
    drop(c);
    wait_until("the hang-up ends the wait", || server.stats().active == 0);

    let waiting = std::thread::spawn(move || get(addr, "/debug/pprof/allocs?seconds=3600"));
    wait_until("the delta is waiting", || server.stats().active == 1);
    server.stop();
    let (status, body) = waiting.join().unwrap();
    assert_eq!((status, body.as_str()), (500, "context canceled\n"));
}
