//! Cost of a custom profile's `add` + `remove` pair (stack capture, interning, sharded map),
//! on 1 and 2 threads: the price of tracking a connection on a server's hot path.
//!
//! ```text
//! cargo run -p alloc-bench --release --bin profile_add
//! ```
//! Prints ns per pair (wall time / pairs per thread); no assertion (timings are noisy).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

const PAIRS: usize = 200_000;

/// A stack of a realistic depth above `add` (a server's accept loop is ~10-20 frames deep).
#[inline(never)]
fn nest(depth: usize, f: &mut dyn FnMut()) {
    if depth == 0 {
        f();
    } else {
        nest(depth - 1, f);
    }
    black_box(());
}

#[inline(never)]
fn churn(p: &heaprof::Profile, thread: usize) {
    for i in 0..PAIRS {
        let key = (thread, i);
        p.add(key, 0);
        // Keep a few keys live so the map is not trivially empty.
        if i >= 16 {
            p.remove(&(thread, i - 16));
        }
    }
    for i in PAIRS - 16..PAIRS {
        p.remove(&(thread, i));
    }
}

fn run(p: &Arc<heaprof::Profile>, threads: usize) -> f64 {
    let start = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let p = Arc::clone(p);
            std::thread::spawn(move || nest(12, &mut || churn(&p, t)))
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    start.elapsed().as_nanos() as f64 / PAIRS as f64
}

fn main() {
    let p = Arc::new(heaprof::Profile::new("profile_add_bench.keys"));
    run(&p, 1); // warm up: module list, caches, stack table entries
    for threads in [1, 2] {
        let ns = (0..3).map(|_| run(&p, threads)).fold(f64::MAX, f64::min);
        println!("{threads} thread(s): {ns:.0} ns per add+remove pair (best of 3)");
    }
    assert_eq!(p.count(), 0);
}
