//! What continuous profilers ask of `/debug/pprof`, with `go tool pprof` as the client: the
//! endpoints Parca's and Grafana Alloy's default configurations fetch (`allocs`, `block`,
//! `goroutine`, `mutex`, `profile?seconds=N`), `-seconds` deltas of `heap` and `allocs` with
//! known amounts at one site and none at another, and sample and period types named as a
//! real Go program names them (Pyroscope derives its profile type IDs, such as
//! `memory:alloc_space:bytes:space:bytes`, from those names).
//!
//! Without Go installed (and outside CI) the `go tool pprof` parts are skipped. The Go program
//! is built once and its profiles cached under `target/tmp/go-profiles-<hash>/`.

mod common;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

use heaprof::__private::proto;
use heaprof::http::{ServerConfig, ServerHandle};

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

/// The tests change process-wide rates: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn server() -> &'static ServerHandle {
    static S: OnceLock<ServerHandle> = OnceLock::new();
    S.get_or_init(|| heaprof::http::serve_with("127.0.0.1:0", ServerConfig::default()).unwrap())
}

fn url(path: &str) -> String {
    format!("http://{}{path}", server().local_addr())
}

/// `go tool pprof ARGS -proto -output F URL`, decoded; `None` without Go.
fn pprof_fetch(args: &[&str], path: &str, name: &str) -> Option<proto::Profile> {
    let out = common::scratch(name);
    let out_s = out.to_str().unwrap().to_string();
    let url = url(path);
    let mut all: Vec<&str> = args.to_vec();
    // pprof's own fetch timeout is 1.5 x `-seconds`; a debug build writes profiles slowly.
    all.extend(["-timeout", "300", "-proto", "-output", &out_s, &url]);
    common::go_pprof(&all)?;
    Some(common::decode(&std::fs::read(&out).unwrap()))
}

/// A plain GET of `path` from the server: the body.
fn get(addr: SocketAddr, path: &str) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(
        raw.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    raw[split + 4..].to_vec()
}

/// (type, unit) of every sample type, the period type, and the default sample type.
type Names = (Vec<(String, String)>, (String, String), String);

fn names(p: &proto::Profile) -> Names {
    let s = |i: i64| p.string_table[i as usize].clone();
    let vt = |t: &proto::ValueType| (s(t.r#type), s(t.unit));
    (
        p.sample_type.iter().map(vt).collect(),
        p.period_type.as_ref().map(vt).unwrap_or_default(),
        s(p.default_sample_type),
    )
}

// ---- contention for block and mutex -------------------------------------------------------

#[inline(never)]
fn release_site(m: &heaprof::sync::Mutex<u64>, locked: &mpsc::Sender<()>) {
    let mut g = m.lock().unwrap();
    locked.send(()).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    *g += 1;
    drop(black_box(g));
}

#[inline(never)]
fn blocked_site(m: &heaprof::sync::Mutex<u64>) {
    *black_box(m.lock().unwrap()) += 1;
}

/// Ten waits of `blocked_site` on a lock `release_site` holds.
fn contend() {
    let m = Arc::new(heaprof::sync::Mutex::new(0));
    let (tx, rx) = mpsc::channel();
    let (ack_tx, ack_rx) = mpsc::channel::<()>();
    let m2 = m.clone();
    let holder = std::thread::spawn(move || {
        for _ in 0..10 {
            release_site(&m2, &tx);
            ack_rx.recv().unwrap();
        }
    });
    for _ in 0..10 {
        rx.recv().unwrap();
        blocked_site(&m);
        ack_tx.send(()).unwrap();
    }
    holder.join().unwrap();
}

fn has_site(p: &proto::Profile, site: &str) -> bool {
    p.sample
        .iter()
        .any(|s| common::stack_names(p, s).iter().any(|n| n.ends_with(site)))
}

// ---- the endpoints scrapers fetch ----------------------------------------------------------

#[test]
fn allocs_is_cumulative_with_the_four_heap_types() {
    let _s = serial();
    // 16 MiB in one block: sampled at the default rate with probability 1 - e^-32.
    black_box(vec![0u8; 16 << 20]);
    let Some(p) = pprof_fetch(&[], "/debug/pprof/allocs", "scrape_allocs.pb.gz") else {
        return;
    };
    let (types, period, default) = names(&p);
    let want = [
        ("alloc_objects", "count"),
        ("alloc_space", "bytes"),
        ("inuse_objects", "count"),
        ("inuse_space", "bytes"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(types, want);
    assert_eq!(period, ("space".into(), "bytes".into()));
    assert_eq!(default, "alloc_space");
    assert!(!p.sample.is_empty());
}

#[test]
fn block_and_mutex_show_the_waiter_and_the_releaser() {
    let _s = serial();
    heaprof::set_block_profile_rate(1);
    heaprof::set_mutex_profile_fraction(1);
    contend();
    heaprof::set_block_profile_rate(0);
    let block = pprof_fetch(&[], "/debug/pprof/block", "scrape_block.pb.gz");
    let mutex = pprof_fetch(&[], "/debug/pprof/mutex", "scrape_mutex.pb.gz");
    heaprof::set_mutex_profile_fraction(0);
    let (Some(block), Some(mutex)) = (block, mutex) else {
        return;
    };
    assert!(has_site(&block, "blocked_site"));
    assert!(has_site(&mutex, "release_site"));
    assert!(!has_site(&mutex, "blocked_site"));
    for p in [&block, &mutex] {
        assert_eq!(names(p).1, ("contentions".into(), "count".into()));
    }
}

#[test]
fn goroutine_lists_every_thread_under_gos_type() {
    let _s = serial();
    let Some(p) = pprof_fetch(&[], "/debug/pprof/goroutine", "scrape_goroutine.pb.gz") else {
        return;
    };
    assert_eq!(
        names(&p).0,
        [("goroutine".to_string(), "count".to_string())]
    );
    let total: i64 = p.sample.iter().map(|s| s.value[0]).sum();
    assert!(total >= 2, "{total}");
}

#[test]
fn profile_with_seconds_is_a_cpu_profile() {
    let _s = serial();
    let Some(p) = pprof_fetch(
        &["-seconds", "1"],
        "/debug/pprof/profile",
        "scrape_cpu.pb.gz",
    ) else {
        return;
    };
    let (types, period, _) = names(&p);
    assert_eq!(
        types,
        [
            ("samples".to_string(), "count".to_string()),
            ("cpu".into(), "nanoseconds".into())
        ]
    );
    assert_eq!(period, ("cpu".into(), "nanoseconds".into()));
    assert!(p.duration_nanos >= 1_000_000_000);
}

// ---- -seconds deltas with known amounts ----------------------------------------------------

const BLOCK: usize = 64 << 10;

#[inline(never)]
fn idle_site() -> Vec<Vec<u8>> {
    (0..16).map(|_| black_box(vec![1u8; BLOCK])).collect()
}

#[inline(never)]
fn freed_site(into: &mut Vec<Vec<u8>>) {
    for _ in 0..32 {
        into.push(black_box(vec![2u8; BLOCK]));
    }
}

#[inline(never)]
fn window_site(into: &mut Vec<Vec<u8>>) {
    for _ in 0..64 {
        into.push(black_box(vec![3u8; BLOCK]));
    }
}

/// Runs `go tool pprof -seconds N` on `path` while, inside its window, `window_site`
/// allocates 4 MiB (kept) and `freed_site`'s 2 MiB from before the window are freed;
/// `idle_site`'s 1 MiB from before stays untouched. `None` without Go.
fn delta_with_known_amounts(path: &str, name: &str) -> Option<proto::Profile> {
    let idle = idle_site();
    let mut seconds = 2;
    loop {
        // The outer vectors are allocated here, so the sites hold exactly their blocks.
        let mut freed = Vec::with_capacity(32);
        freed_site(&mut freed);
        let mut kept: Vec<Vec<u8>> = Vec::with_capacity(64);
        let secs = seconds.to_string();
        let (path, name) = (path.to_string(), name.to_string());
        let fetch = std::thread::spawn(move || pprof_fetch(&["-seconds", &secs], &path, &name));
        // Inside the window: after the first snapshot, before the second.
        let st = server();
        let mut inside = false;
        while !fetch.is_finished() {
            if st.stats().waiting == 1 {
                window_site(&mut kept);
                freed.clear();
                inside = st.stats().waiting == 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let p = fetch.join().unwrap()?;
        black_box((&kept, &idle));
        if inside {
            return Some(p);
        }
        // The machine was too slow for the window (or Go is missing): a longer one.
        assert!(seconds < 64, "never managed to allocate inside the window");
        seconds *= 2;
    }
}

fn site_values(p: &proto::Profile) -> std::collections::HashMap<String, Vec<i64>> {
    common::totals_by_site(p, &["window_site", "freed_site", "idle_site"])
}

#[test]
fn heap_delta_shows_what_grew_and_shrank_in_the_window() {
    let _s = serial();
    heaprof::set_heap_profile_rate(1);
    let p = delta_with_known_amounts("/debug/pprof/heap", "scrape_heap_delta.pb.gz");
    heaprof::set_heap_profile_rate(heaprof::DEFAULT_HEAP_PROFILE_RATE);
    let Some(p) = p else { return };
    assert!(p.duration_nanos >= 2_000_000_000, "{}", p.duration_nanos);
    let v = site_values(&p);
    // [alloc_objects, alloc_space, inuse_objects, inuse_space]; every allocation sampled.
    assert_eq!(
        v.get("window_site"),
        Some(&vec![64, 64 * BLOCK as i64, 64, 64 * BLOCK as i64])
    );
    assert_eq!(
        v.get("freed_site"),
        Some(&vec![0, 0, -32, -32 * BLOCK as i64])
    );
    assert_eq!(v.get("idle_site"), None, "{v:?}");
}

#[test]
fn allocs_delta_shows_only_what_was_allocated_in_the_window() {
    let _s = serial();
    heaprof::set_heap_profile_rate(1);
    let p = delta_with_known_amounts("/debug/pprof/allocs", "scrape_allocs_delta.pb.gz");
    heaprof::set_heap_profile_rate(heaprof::DEFAULT_HEAP_PROFILE_RATE);
    let Some(p) = p else { return };
    assert_eq!(names(&p).2, "alloc_space");
    let v = site_values(&p);
    assert_eq!(v["window_site"][..2], [64, 64 * BLOCK as i64]);
    assert_eq!(v.get("idle_site"), None, "{v:?}");
}

// ---- names as a Go program writes them -----------------------------------------------------

const GO_PROGRAM: &str = r#"package main

import (
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"
)

var sink [][]byte
var spins int

func write(dir, name string, f func(*os.File) error) {
	out, err := os.Create(dir + "/" + name + ".pb.gz")
	if err != nil {
		panic(err)
	}
	if err := f(out); err != nil {
		panic(err)
	}
	out.Close()
}

func main() {
	dir := os.Args[1]
	runtime.SetBlockProfileRate(1)
	runtime.SetMutexProfileFraction(1)
	for i := 0; i < 1000; i++ {
		sink = append(sink, make([]byte, 4096))
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				mu.Lock()
				time.Sleep(100 * time.Microsecond)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	runtime.GC()
	for _, name := range []string{"heap", "allocs", "block", "mutex", "goroutine", "threadcreate"} {
		write(dir, name, func(f *os.File) error { return pprof.Lookup(name).WriteTo(f, 0) })
	}
	write(dir, "profile", func(f *os.File) error {
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		end := time.Now().Add(100 * time.Millisecond)
		for time.Now().Before(end) {
			spins++
		}
		pprof.StopCPUProfile()
		return nil
	})
}
"#;

/// The Go program's profiles, built and run once (cached by the program's hash); `None`
/// without Go outside CI.
fn go_profiles() -> Option<PathBuf> {
    let mut h = DefaultHasher::new();
    GO_PROGRAM.hash(&mut h);
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("go-profiles-{:016x}", h.finish()));
    if dir.join("profile.pb.gz").exists() {
        return Some(dir);
    }
    let go = common::go_binary()?;
    let work = dir.with_extension("build");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("main.go"), GO_PROGRAM).unwrap();
    let home = std::env::temp_dir().join("heaprof-go-home");
    let bin = work.join("writer");
    let built = Command::new(go)
        .args(["build", "-o"])
        .arg(&bin)
        .arg("main.go")
        .current_dir(&work)
        .env("HOME", &home)
        .env("GOCACHE", home.join("cache"))
        .env("GO111MODULE", "off")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    // Written to a fresh directory and renamed, so a cached directory is always complete.
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let ran = Command::new(&bin).arg(&tmp).output().unwrap();
    assert!(
        ran.status.success(),
        "go program: {}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let _ = std::fs::rename(&tmp, &dir);
    Some(dir)
}

#[test]
fn sample_and_period_types_are_named_as_go_names_them() {
    let _s = serial();
    let Some(dir) = go_profiles() else { return };
    let addr = server().local_addr();
    for name in [
        "heap",
        "allocs",
        "block",
        "mutex",
        "goroutine",
        "threadcreate",
        "profile",
    ] {
        let go = common::decode(&std::fs::read(dir.join(format!("{name}.pb.gz"))).unwrap());
        let path = match name {
            "profile" => "/debug/pprof/profile?seconds=1".to_string(),
            _ => format!("/debug/pprof/{name}"),
        };
        let ours = common::decode(&get(addr, &path));
        assert_eq!(names(&ours), names(&go), "{name}");
    }
}
