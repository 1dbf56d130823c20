//! ns per uncontended lock/unlock, one thread: `heaprof::sync::Mutex` (block profile rate 0,
//! the default, and rate 1) vs `std::sync::Mutex`. Run with
//! `cargo run -p alloc-bench --release --bin lock_bench [iterations]`.

use std::hint::black_box;
use std::time::Instant;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

#[inline(never)]
fn std_loop(m: &std::sync::Mutex<u64>, n: u64) {
    for _ in 0..n {
        *black_box(m).lock().unwrap() += 1;
    }
}

#[inline(never)]
fn heaprof_loop(m: &heaprof::sync::Mutex<u64>, n: u64) {
    for _ in 0..n {
        *black_box(m).lock().unwrap() += 1;
    }
}

/// Median over `rounds` of ns per iteration.
fn median_ns(rounds: usize, n: u64, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("iterations: a number"))
        .unwrap_or(10_000_000);
    let rounds = 9;
    let sm = std::sync::Mutex::new(0u64);
    let hm = heaprof::sync::Mutex::new(0u64);
    // Interleaved, so drifting machine load hits all three alike.
    let mut results = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..3 {
        results[0].push(median_ns(rounds, n, || std_loop(&sm, n)));
        heaprof::set_block_profile_rate(0);
        results[1].push(median_ns(rounds, n, || heaprof_loop(&hm, n)));
        heaprof::set_block_profile_rate(1);
        results[2].push(median_ns(rounds, n, || heaprof_loop(&hm, n)));
        heaprof::set_block_profile_rate(0);
    }
    let best = |v: &Vec<f64>| v.iter().cloned().fold(f64::INFINITY, f64::min);
    println!(
        "uncontended lock+unlock, 1 thread, {n} iterations x {rounds} rounds x 3 (best median):"
    );
    println!(
        "  std::sync::Mutex                    {:6.2} ns",
        best(&results[0])
    );
    println!(
        "  heaprof::sync::Mutex, rate 0        {:6.2} ns",
        best(&results[1])
    );
    println!(
        "  heaprof::sync::Mutex, rate 1        {:6.2} ns (try_lock first)",
        best(&results[2])
    );
    black_box((sm, hm));
}
