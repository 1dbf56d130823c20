//! End to end (feature `http`, on for the crate's own tests through its self
//! dev-dependency): the `server` example serves `/debug/pprof`; `go tool pprof` reads the
//! heap profile over HTTP, and plain GETs see Go's statuses, content types and messages.

mod common;
mod server_proc;

use std::io::{Read, Write};
use std::net::TcpStream;

use server_proc::{fresh_dir, Server};

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A plain HTTP/1.0 GET over a std `TcpStream` (the server closes after the reply).
fn get(addr: &str, path: &str) -> Reply {
    let mut c = TcpStream::connect(addr).unwrap();
    write!(c, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

#[test]
fn debug_pprof_over_http() {
    let dir = fresh_dir("http");
    let s = Server::start(&dir, &[("HEAPROF_RATE", "16k")], &["127.0.0.1:0"]);
    let addr = s
        .http
        .clone()
        .expect("the example was built without feature http");
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    // The reference reader, straight from the server.
    let url = format!("http://{addr}/debug/pprof/heap");
    if let Some(out) = common::go_pprof(&["-raw", &url]) {
        assert!(out.contains("PeriodType: space bytes"), "{out}");
        assert!(out.contains("grow_session_cache"), "{out}");
    }

    let heap = get(&addr, "/debug/pprof/heap");
    assert_eq!(heap.status, 200);
    assert_eq!(
        heap.header("Content-Type"),
        Some("application/octet-stream")
    );
    assert_eq!(
        heap.header("Content-Disposition"),
        Some("attachment; filename=\"heap\"")
    );
    let p = common::decode(&heap.body);
    assert_eq!(common::sample_type(&p, 3), "inuse_space");

    let index = get(&addr, "/debug/pprof/");
    assert_eq!(index.status, 200);
    assert_eq!(
        index.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    let html = index.text();
    for name in ["allocs", "heap"] {
        let row = html
            .lines()
            .find(|l| l.contains(&format!("<a href='{name}?debug=1'>{name}</a>")))
            .unwrap_or_else(|| panic!("no {name} row in {html}"));
        let count: usize = row
            .strip_prefix("<tr><td>")
            .and_then(|r| r.split('<').next())
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no count in {row}"));
        assert!(count > 0, "{row}");
    }

    let text = get(&addr, "/debug/pprof/allocs?debug=1");
    assert_eq!(text.status, 200);
    assert_eq!(
        text.header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(text.text().starts_with("heap profile: "), "{}", text.text());
    assert!(text.text().contains("handle_request"));

    let unknown = get(&addr, "/debug/pprof/no_such_profile");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.text(), "Unknown profile\n");
    assert_eq!(unknown.header("X-Go-Pprof"), Some("1"));
    assert_eq!(
        unknown.header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );

    for bad in ["abc", "0", "-1"] {
        let r = get(&addr, &format!("/debug/pprof/heap?seconds={bad}"));
        assert_eq!(r.status, 400, "seconds={bad}");
        assert!(
            r.text().contains("invalid value for \"seconds\""),
            "{}",
            r.text()
        );
        assert_eq!(r.header("X-Go-Pprof"), Some("1"));
    }
    // Two deltas at once and a plain fetch beside them: each request has its own thread.
    let deltas: Vec<_> = ["heap", "allocs"]
        .into_iter()
        .map(|name| {
            let addr = addr.clone();
            std::thread::spawn(move || get(&addr, &format!("/debug/pprof/{name}?seconds=2")))
        })
        .collect();
    let plain = get(&addr, "/debug/pprof/allocs");
    assert_eq!(plain.status, 200);
    for (d, name) in deltas.into_iter().zip(["heap", "allocs"]) {
        let d = d.join().unwrap();
        assert_eq!(d.status, 200, "{}", d.text());
        assert_eq!(
            d.header("Content-Disposition"),
            Some(format!("attachment; filename=\"{name}-delta\"").as_str())
        );
        let p = common::decode(&d.body);
        assert!(p.duration_nanos >= 2_000_000_000, "{}", p.duration_nanos);
        assert_eq!(common::sample_type(&p, 1), "alloc_space");
        // The example allocates continuously: its request buffers were allocated in the window.
        let sites = common::totals_by_site(&p, &["handle_request"]);
        assert!(
            sites.get("handle_request").is_some_and(|v| v[1] > 0),
            "{sites:?}"
        );
    }

    // CPU: a 1-second profile of the busy server; a second request while it runs gets Go's
    // 500; go tool pprof reads the endpoint.
    let busy = {
        let addr = addr.clone();
        std::thread::spawn(move || get(&addr, "/debug/pprof/profile?seconds=2"))
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    let clash = get(&addr, "/debug/pprof/profile?seconds=1");
    assert_eq!(clash.status, 500, "{}", clash.text());
    assert!(
        clash
            .text()
            .starts_with("Could not enable CPU profiling: cpu profiling already in use"),
        "{}",
        clash.text()
    );
    let cpu = busy.join().unwrap();
    assert_eq!(cpu.status, 200, "{}", cpu.text());
    let f = common::write_scratch("http_cpu.pb.gz", &cpu.body);
    if let Some(top) = common::go_pprof(&["-top", &f]) {
        assert!(top.contains("Type: cpu"), "{top}");
    }
    let url = format!("http://{addr}/debug/pprof/profile?seconds=1");
    if let Some(raw) = common::go_pprof(&["-raw", &url]) {
        assert!(raw.contains("samples/count cpu/nanoseconds"), "{raw}");
    }

    let cmdline = get(&addr, "/debug/pprof/cmdline");
    assert!(cmdline.text().contains("--until-eof"), "{}", cmdline.text());

    s.finish();
}
