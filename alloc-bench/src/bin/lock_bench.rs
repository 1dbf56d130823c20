//! ns per uncontended lock/unlock, one thread: `heaprof::sync::Mutex` with both profiles off
//! (the default), the block profile at rate 1, the mutex profile at fraction 1 and 100, vs
//! `std::sync::Mutex`. Run with
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
    // Interleaved, so drifting machine load hits all of them alike.
    let configs: [(&str, u64, usize); 4] = [
        ("both profiles off", 0, 0),
        ("block rate 1", 1, 0),
        ("mutex fraction 1", 0, 1),
        ("mutex fraction 100", 0, 100),
    ];
    let mut std_ns = Vec::new();
    let mut results = vec![Vec::new(); configs.len()];
    for _ in 0..3 {
        std_ns.push(median_ns(rounds, n, || std_loop(&sm, n)));
        for (i, &(_, block, fraction)) in configs.iter().enumerate() {
            heaprof::set_block_profile_rate(block);
            heaprof::set_mutex_profile_fraction(fraction);
            results[i].push(median_ns(rounds, n, || heaprof_loop(&hm, n)));
        }
        heaprof::set_block_profile_rate(0);
        heaprof::set_mutex_profile_fraction(0);
    }
    let best = |v: &Vec<f64>| v.iter().cloned().fold(f64::INFINITY, f64::min);
    println!(
        "uncontended lock+unlock, 1 thread, {n} iterations x {rounds} rounds x 3 (best median):"
    );
    let base = best(&std_ns);
    println!("  std::sync::Mutex                          {base:6.2} ns");
    for (i, (name, _, _)) in configs.iter().enumerate() {
        let ns = best(&results[i]);
        println!(
            "  heaprof::sync::Mutex, {name:<19} {ns:6.2} ns  ({:.3} x std)",
            ns / base
        );
    }
    black_box((sm, hm));
}
