//! Thread exit and reentrancy: TLS destructors that allocate, threads exiting while others
//! write profiles, 10 000 short-lived threads with bounded RSS, rate-1 sampling on fresh
//! threads (the first capture allocates inside the unwinder), profiles written from `Drop`
//! at exit and from an atexit hook, and four concurrent writers. Each case in a child.

mod common;
mod torture_util;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use torture_util::run_case_ok;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

const RUNNER: &str = "child_entry";
const T: Duration = Duration::from_secs(120);

struct AllocOnDrop;
impl Drop for AllocOnDrop {
    fn drop(&mut self) {
        let v = black_box(vec![5u8; 300]);
        let s = black_box(format!("{}", v.len()));
        assert_eq!(s, "300");
    }
}
thread_local! {
    static DTOR: AllocOnDrop = const { AllocOnDrop };
}

fn tls_exit() {
    heaprof::set_heap_profile_rate(1);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut out = Vec::new();
                    heaprof::write_heap_profile(&mut out).unwrap();
                    common::decode(&out);
                }
            })
        })
        .collect();
    for round in 0..20 {
        let hs: Vec<_> = (0..10)
            .map(|i| {
                std::thread::spawn(move || {
                    DTOR.with(|_| {});
                    black_box(vec![round as u8; 64 + i]);
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
}

#[test]
fn tls_destructors_allocate_and_threads_exit_during_writes() {
    run_case_ok(RUNNER, "tls_exit", &[], T);
}

fn many_threads() {
    heaprof::set_heap_profile_rate(4096);
    let spawn_batch = |n: usize| {
        let hs: Vec<_> = (0..n)
            .map(|i| std::thread::spawn(move || black_box(vec![i as u8; 5000]).len()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<usize>()
    };
    spawn_batch(200); // warm up: pool caches, tables, glibc thread stacks cache
    let before = torture_util::rss_kib();
    for _ in 0..50 {
        assert_eq!(spawn_batch(200), 200 * 5000);
    }
    let after = torture_util::rss_kib();
    println!("10000 threads: RSS {before} KiB -> {after} KiB");
    // A leak of even 4 KiB per thread would be 40 MiB.
    assert!(after < before + 32 * 1024, "RSS {before} -> {after} KiB");
    let mut out = Vec::new();
    heaprof::lookup("threadcreate")
        .unwrap()
        .write_to(&mut out, 1)
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let total: u64 = text
        .lines()
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(total >= 10_200, "{}", text.lines().next().unwrap());
}

#[test]
fn ten_thousand_short_lived_threads_keep_rss_bounded() {
    let out = run_case_ok(RUNNER, "many_threads", &[], T);
    eprintln!(
        "{}",
        out.stdout.lines().find(|l| l.contains("RSS")).unwrap_or("")
    );
}

#[inline(never)]
#[allow(clippy::vec_box)] // the boxes are the allocations under test
fn fresh_thread_site() -> Vec<Box<u64>> {
    black_box((0..10u64).map(Box::new).collect())
}

fn fresh_threads() {
    heaprof::set_heap_profile_rate(1);
    black_box(vec![0u8; 32 << 20]);
    // Each thread's very first allocations are sampled: the capture that records them
    // reads stack bounds and leases (maybe fills) an unwinder cache, allocating inside.
    let kept: Vec<Vec<Box<u64>>> = (0..50)
        .map(|_| std::thread::spawn(fresh_thread_site).join().unwrap())
        .collect();
    let writers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                let mut out = Vec::new();
                heaprof::write_heap_profile(&mut out).unwrap();
                out
            })
        })
        .collect();
    for w in writers {
        let p = common::decode(&w.join().unwrap());
        let t = common::totals_by_site(&p, &["fresh_thread_site"]);
        // 50 × (10 boxes of 8 bytes + the Vec of 10 pointers).
        assert_eq!(t["fresh_thread_site"], vec![550, 50 * 160, 550, 50 * 160]);
    }
    black_box(kept);
}

#[test]
fn rate_one_on_fresh_threads_and_four_concurrent_writers() {
    run_case_ok(RUNNER, "fresh_threads", &[], T);
}

struct WriteOnDrop(std::path::PathBuf);
impl Drop for WriteOnDrop {
    fn drop(&mut self) {
        let f = std::fs::File::create(&self.0).unwrap();
        heaprof::write_heap_profile(f).unwrap();
    }
}

static AT_EXIT_PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
extern "C" fn at_exit() {
    if let Some(p) = AT_EXIT_PATH.get() {
        let mut out = Vec::new();
        if heaprof::write_heap_profile(&mut out).is_ok() {
            let _ = std::fs::write(p, out);
        }
    }
}

fn drop_at_exit() {
    heaprof::set_heap_profile_rate(4096);
    let dir = std::path::PathBuf::from(std::env::var("TORTURE_DIR").unwrap());
    AT_EXIT_PATH.set(dir.join("atexit.pb.gz")).unwrap();
    // SAFETY: registers a plain extern "C" fn.
    unsafe { libc::atexit(at_exit) };
    let _w = WriteOnDrop(dir.join("drop.pb.gz"));
    black_box(vec![1u8; 1 << 20]);
    // `_w` drops at the end of this function (the end of the test's main body).
}

#[test]
fn profiles_written_from_drop_and_atexit() {
    let dir = std::env::temp_dir().join(format!("heaprof-dropexit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    run_case_ok(
        RUNNER,
        "drop_at_exit",
        &[("TORTURE_DIR", dir.to_str().unwrap())],
        T,
    );
    for f in ["drop.pb.gz", "atexit.pb.gz"] {
        let bytes = std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(!common::decode(&bytes).sample_type.is_empty(), "{f}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn child_entry() {
    match torture_util::case().as_deref() {
        None => {}
        Some("tls_exit") => tls_exit(),
        Some("many_threads") => many_threads(),
        Some("fresh_threads") => fresh_threads(),
        Some("drop_at_exit") => drop_at_exit(),
        Some(other) => panic!("unknown case {other}"),
    }
}
