//! Soak: ~1 GB/s of allocation churn on two threads for 5 minutes with a SIGUSR1 heap dump
//! every second. RSS must stay bounded and every dump must parse. Ignored by default; run:
//! `cargo test --release --test torture_soak -- --ignored --nocapture`
//! (`TORTURE_SOAK_SECS` shortens or lengthens the run).

mod common;
mod torture_util;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

/// Churn: blocks of 16 B to 256 KiB, a window of 256 kept live, the rest freed.
#[inline(never)]
fn soak_churn(stop: &AtomicBool, bytes: &AtomicU64, seed: u64) {
    let mut x = seed | 1;
    let mut window: Vec<Vec<u8>> = (0..256).map(|_| Vec::new()).collect();
    let mut local = 0u64;
    while !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let size = 16usize << (x % 15);
        let v = vec![x as u8; size];
        local += size as u64;
        window[(x >> 20) as usize % 256] = black_box(v);
        if local > 64 << 20 {
            bytes.fetch_add(local, Ordering::Relaxed);
            local = 0;
        }
    }
    bytes.fetch_add(local, Ordering::Relaxed);
}

#[test]
#[ignore = "5-minute soak; run with --release --ignored"]
fn soak_churn_with_dumps_every_second() {
    let secs: u64 = std::env::var("TORTURE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let dir = std::env::temp_dir().join(format!("heaprof-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let h = heaprof::dump_on_signal(heaprof::DumpConfig {
        dir: dir.clone(),
        prefix: "soak".into(),
        ..Default::default()
    })
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let (stop, bytes) = (stop.clone(), bytes.clone());
            std::thread::spawn(move || soak_churn(&stop, &bytes, 0x9e37_79b9 + i))
        })
        .collect();
    let start = Instant::now();
    let mut rss = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        // SAFETY: kill on our own pid with a signal heaprof handles.
        unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
        rss.push(torture_util::rss_kib());
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    while h.stats().signals_pending() > 0 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = h.stats();
    let mut parsed = 0;
    for seq in 1..=s.dumps_finished {
        let path = h.path_for(seq, "heap");
        let p = common::decode(&std::fs::read(&path).unwrap());
        assert!(!p.sample_type.is_empty(), "{}", path.display());
        parsed += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let gb = bytes.load(Ordering::Relaxed) as f64 / 1e9;
    // Skip the first 10 s (heap warm-up) for the bound.
    let warm = &rss[rss.len().min(10)..];
    let (min, max) = (
        *warm.iter().min().unwrap_or(&0),
        *warm.iter().max().unwrap_or(&0),
    );
    eprintln!(
        "soak: {elapsed:.0} s, {gb:.1} GB allocated ({:.2} GB/s), {} signals, {} dumps ({} files, {} errors), {parsed} parsed, RSS after warm-up min {} MiB max {} MiB",
        gb / elapsed,
        s.signals_received,
        s.dumps_finished,
        s.files_written,
        s.write_errors,
        min / 1024,
        max / 1024
    );
    assert_eq!(s.write_errors, 0);
    assert!(parsed as u64 >= secs / 2, "{parsed} dumps for {secs} s");
    assert!(max <= min * 2 + 64 * 1024, "RSS grew: {min} → {max} KiB");
    let _ = std::fs::remove_dir_all(&dir);
}
