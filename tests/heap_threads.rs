//! Four threads allocating and freeing at once while another writes profiles: no deadlock,
//! and at rate 1 the totals are exactly what the threads did.

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

const THREADS: usize = 4;
const ROUNDS: usize = 20_000;

#[inline(never)]
fn site_thread_churn(seed: usize) -> Vec<Vec<u8>> {
    let mut kept = Vec::with_capacity(ROUNDS / 10);
    for i in 0..ROUNDS {
        let v = vec![(seed + i) as u8; 8 + (i % 7) * 8];
        if i % 10 == 0 {
            kept.push(v);
        } else {
            black_box(v);
        }
    }
    kept
}

#[test]
fn concurrent_alloc_free_and_write() {
    heaprof::set_heap_profile_rate(1);
    black_box(vec![0u8; 1 << 20]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut writes = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut out = Vec::new();
                heaprof::write_heap_profile(&mut out).unwrap();
                // Every snapshot taken mid-flight is a valid profile (it may be empty if
                // it ran before the first sample).
                let p = common::decode(&out);
                assert!(p.sample.iter().all(|s| s.value.len() == 4));
                writes += 1;
            }
            writes
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| std::thread::spawn(move || site_thread_churn(t)))
        .collect();
    let kept: Vec<Vec<Vec<u8>>> = workers.into_iter().map(|h| h.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(writes >= 1);

    let mut out = Vec::new();
    heaprof::write_heap_profile(&mut out).unwrap();
    let p = common::decode(&out);
    let t = &common::totals_by_site(&p, &["site_thread_churn"])["site_thread_churn"];
    let sizes: i64 = (0..ROUNDS).map(|i| 8 + (i % 7) as i64 * 8).sum();
    let kept_bytes: i64 = (0..ROUNDS)
        .filter(|i| i % 10 == 0)
        .map(|i| 8 + (i % 7) as i64 * 8)
        .sum();
    let spine = (ROUNDS / 10 * std::mem::size_of::<Vec<u8>>()) as i64;
    let n = THREADS as i64;
    assert_eq!(t[0], n * (ROUNDS as i64 + 1), "alloc_objects");
    assert_eq!(t[1], n * (sizes + spine), "alloc_space");
    assert_eq!(t[2], n * (ROUNDS as i64 / 10 + 1), "inuse_objects");
    assert_eq!(t[3], n * (kept_bytes + spine), "inuse_space");
    black_box(kept);
}
