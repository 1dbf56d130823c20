//! Stress: CPU profiling at 1000 Hz while threads allocate through the sampling allocator at
//! a 4 KiB rate (so signals often land inside the allocator's sampled path and inside the
//! unwinder) and threads are created and exit continuously for 10 s. Passes if nothing
//! deadlocks or crashes and the profile decodes with samples from the churning threads.

mod common;

use common::SharedBuf;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

/// Work of one short-lived thread: ~100 ms here in either build (debug is ~10x slower), so
/// threads both churn and live long enough to be seen by some rescans.
const SHORT_ROUNDS: usize = if cfg!(debug_assertions) {
    2_000
} else {
    20_000
};

#[inline(never)]
fn churn_allocations(rounds: usize) -> usize {
    let mut keep: Vec<Vec<u8>> = Vec::new();
    let mut total = 0;
    for i in 0..rounds {
        let v = vec![i as u8; 16 + (i * 37) % 2000];
        total += v.len();
        keep.push(v);
        if keep.len() > 64 {
            keep.swap_remove(i % 64);
        }
        let s = format!("{i}-{total}");
        total += black_box(s).len();
    }
    total
}

#[test]
fn profile_while_allocating_and_churning_threads() {
    heaprof::set_heap_profile_rate(4096);
    heaprof::set_cpu_profile_rate(1000);
    let sink = SharedBuf::default();
    heaprof::start_cpu_profile(sink.clone()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let spawned = Arc::new(AtomicU64::new(0));
    // Two long-lived allocating threads plus a spawner that keeps short-lived ones coming.
    let mut long = Vec::new();
    for k in 0..2 {
        let stop = Arc::clone(&stop);
        long.push(
            std::thread::Builder::new()
                .name(format!("alloc-{k}"))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        black_box(churn_allocations(2000));
                    }
                })
                .unwrap(),
        );
    }
    let spawner = {
        let (stop, spawned) = (Arc::clone(&stop), Arc::clone(&spawned));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let hs: Vec<_> = (0..4)
                    .map(|_| {
                        std::thread::Builder::new()
                            .name("short-lived".into())
                            .spawn(|| black_box(churn_allocations(SHORT_ROUNDS)))
                            .unwrap()
                    })
                    .collect();
                for h in hs {
                    h.join().unwrap();
                    spawned.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    // The workload's length is wall time; nothing is asserted on time.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        black_box(churn_allocations(1000));
    }
    stop.store(true, Ordering::Relaxed);
    spawner.join().unwrap();
    for h in long {
        h.join().unwrap();
    }
    heaprof::stop_cpu_profile_result().unwrap().unwrap();
    heaprof::set_cpu_profile_rate(100);

    let p = common::decode(&sink.0.lock().unwrap());
    let comments: Vec<&str> = p
        .comment
        .iter()
        .map(|&c| p.string_table[c as usize].as_str())
        .collect();
    eprintln!(
        "{} threads spawned; comments {comments:?}",
        spawned.load(Ordering::Relaxed)
    );
    assert!(spawned.load(Ordering::Relaxed) > 20);
    let total: i64 = p.sample.iter().map(|s| s.value[0]).sum();
    assert!(total > 500, "{total} samples");
    let by = common::totals_by_site(&p, &["churn_allocations"]);
    assert!(by["churn_allocations"][0] * 2 > total, "{by:?}");
    let thread_of = |s: &heaprof::__private::proto::Sample| {
        s.label
            .iter()
            .find(|l| p.string_table[l.key as usize] == "thread")
            .map(|l| p.string_table[l.str as usize].clone())
    };
    let short: i64 = p
        .sample
        .iter()
        .filter(|s| thread_of(s).as_deref() == Some("short-lived"))
        .map(|s| s.value[0])
        .sum();
    assert!(short > 0, "no samples from the short-lived threads");
    // Also readable by the reference reader.
    let path = common::write_scratch("stress.pb.gz", &sink.0.lock().unwrap());
    if let Some(out) = common::go_pprof(&["-top", &path]) {
        assert!(out.contains("churn_allocations"), "{out}");
    }
}
