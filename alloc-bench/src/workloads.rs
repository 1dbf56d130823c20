//! Deterministic, seeded allocation workloads.
//!
//! Sizes are tuned so that each workload runs roughly 0.5–1 s under
//! `std::alloc::System` in release mode on the 2-core reference machine at
//! `scale = 1.0`. `scale` multiplies the amount of work (`--quick` uses 1/8).

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher};
use std::hint::black_box;

/// Names of all workloads, in the order the driver runs them.
pub const ALL: &[&str] = &[
    "churn1",
    "churn2",
    "churn8",
    "hashmap",
    "realloc",
    "longlived",
    "unsampled_pair",
];

/// Sampled-path microbenchmarks: `sampled_d<depth>[_t2]` (run by the driver
/// at rate 1 vs rate 0, not part of [`ALL`]).
pub const SAMPLED: &[&str] = &[
    "sampled_d10",
    "sampled_d30",
    "sampled_d60",
    "sampled_d10_t2",
    "sampled_d30_t2",
    "sampled_d60_t2",
];

/// What a workload reports besides its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Number of logical operations (steps, inserts, pairs ...).
    pub ops: u64,
    /// Deterministic checksum: must be identical across configurations.
    pub checksum: u64,
}

/// Runs workload `name` (from [`ALL`] or [`SAMPLED`]); `None` if unknown.
/// Never inlined: `--callgrind` counts instructions below this symbol.
#[inline(never)]
pub fn run(name: &str, scale: f64) -> Option<Outcome> {
    let n = |base: u64| ((base as f64 * scale).round() as u64).max(1);
    Some(match name {
        "churn1" => churn(1, n(CHURN_STEPS)),
        "churn2" => churn(2, n(CHURN_STEPS)),
        "churn8" => churn(8, n(CHURN_STEPS)),
        "hashmap" => hashmap(HASHMAP_REPS, n(HASHMAP_ENTRIES)),
        "realloc" => realloc(n(REALLOC_ITERS)),
        "unsampled_pair" => unsampled_pair(n(PAIR_ITERS)),
        "longlived" => longlived(n(LONGLIVED_BYTES)),
        _ => return sampled(name, n(SAMPLED_PAIRS)),
    })
}

// ---- tuning knobs (scale = 1.0) -------------------------------------------

/// Total churn steps, split evenly across the threads of churn1/2/8.
const CHURN_STEPS: u64 = 5_000_000;
/// Live window of the churn workloads (per thread).
const CHURN_RING: usize = 10_000;
/// Entries per HashMap build (scaled). 2M random-key inserts take ~1.5-2.5 s
/// on the reference VM (memory-latency bound), so 600k x 2 builds.
const HASHMAP_ENTRIES: u64 = 600_000;
/// HashMap builds (not scaled, so --quick still repeats build-and-drop).
const HASHMAP_REPS: u64 = 2;
/// Iterations of the realloc workload.
const REALLOC_ITERS: u64 = 350_000;
/// alloc+dealloc pairs of the microbenchmark.
const PAIR_ITERS: u64 = 30_000_000;
/// Live heap of the long-lived workload: 1 GiB at scale 1 (256 MiB under
/// `--all`, which runs at scale 0.25).
const LONGLIVED_BYTES: u64 = 1 << 30;
/// alloc+dealloc pairs of each sampled-path microbenchmark (all threads).
const SAMPLED_PAIRS: u64 = 200_000;

// ---- tiny deterministic PRNG ---------------------------------------------

/// xorshift64* — deterministic, no dependencies.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (seed 0 is remapped).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish value in `0..n` (n > 0).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }
}

static TEXT: &str =
    "the quick brown fox jumps over the lazy dog; PACK MY BOX WITH FIVE DOZEN LIQUOR JUGS!";

// ---- churn ----------------------------------------------------------------

/// Size mix: 95 % 16–512 B, 4.98 % 4–64 KiB, 0.02 % 1 MiB.
#[inline]
fn churn_alloc(rng: &mut Rng) -> Vec<u8> {
    let r = rng.below(10_000);
    let size = if r < 2 {
        1 << 20
    } else if r < 500 {
        4096 + rng.below(60 * 1024 + 1) as usize
    } else {
        16 + rng.below(497) as usize
    };
    let mut v = Vec::with_capacity(size);
    v.push(size as u8);
    black_box(v)
}

fn churn_thread(seed: u64, steps: u64) -> u64 {
    let mut rng = Rng::new(seed);
    let mut ring: Vec<Vec<u8>> = (0..CHURN_RING).map(|_| churn_alloc(&mut rng)).collect();
    let mut sum = 0u64;
    for _ in 0..steps {
        let slot = rng.below(CHURN_RING as u64) as usize;
        let v = churn_alloc(&mut rng);
        sum = sum.wrapping_add(v.capacity() as u64 ^ v[0] as u64);
        ring[slot] = v; // drops the old block
    }
    black_box(&ring);
    sum
}

/// Sliding-window churn of mixed sizes on `threads` threads; `steps` is the
/// total over all threads (so the work is the same for churn1/2/8).
fn churn(threads: u64, steps: u64) -> Outcome {
    let per = steps / threads;
    let checksum = if threads == 1 {
        churn_thread(1, per)
    } else {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|t| s.spawn(move || churn_thread(t + 1, per)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("churn thread panicked"))
                .fold(0u64, u64::wrapping_add)
        })
    };
    Outcome {
        ops: per * threads,
        checksum,
    }
}

// ---- hashmap ----------------------------------------------------------------

/// Build-and-drop of a `HashMap<u64, String>` with `entries` random keys (no
/// pre-sizing, so the table grows by doubling), `reps` times. Fixed-key
/// SipHash keeps it deterministic.
fn hashmap(reps: u64, entries: u64) -> Outcome {
    type Map = HashMap<u64, String, BuildHasherDefault<DefaultHasher>>;
    let mut rng = Rng::new(42);
    let mut checksum = 0u64;
    for _ in 0..reps {
        let mut m = Map::default();
        let mut probe = 0;
        for i in 0..entries {
            let k = rng.next_u64();
            let len = 8 + (k % 40) as usize;
            m.insert(k, String::from(&TEXT[..len]));
            if i == entries / 2 {
                probe = k;
            }
        }
        checksum = checksum
            .wrapping_add(m.len() as u64)
            .wrapping_add(m.get(&probe).map_or(0, |s| s.len() as u64));
        black_box(&m);
        drop(m);
    }
    Outcome {
        ops: reps * entries,
        checksum,
    }
}

// ---- realloc ----------------------------------------------------------------

/// Realloc-heavy: `Vec<u64>` push growth, `String` push_str growth, and
/// `reserve_exact` step growth + `shrink_to_fit`; results are kept in rings
/// of 1024 so the heap is not trivially empty.
fn realloc(iters: u64) -> Outcome {
    const KEEP: usize = 1024;
    static ZEROS: [u8; 64] = [0; 64];
    let mut rng = Rng::new(7);
    let mut vecs: Vec<Vec<u64>> = (0..KEEP).map(|_| Vec::new()).collect();
    let mut strings: Vec<String> = (0..KEEP).map(|_| String::new()).collect();
    let mut bytes: Vec<Vec<u8>> = (0..KEEP).map(|_| Vec::new()).collect();
    let mut checksum = 0u64;
    for it in 0..iters {
        let slot = rng.below(KEEP as u64) as usize;
        match it % 3 {
            0 => {
                let len = 1 + rng.below(512);
                let mut v = Vec::new();
                for j in 0..len {
                    v.push(black_box(j));
                }
                checksum = checksum.wrapping_add(v.len() as u64);
                vecs[slot] = v;
            }
            1 => {
                let pieces = 1 + rng.below(64);
                let mut s = String::new();
                for _ in 0..pieces {
                    s.push_str(&TEXT[..1 + rng.below(16) as usize]);
                }
                checksum = checksum.wrapping_add(s.len() as u64);
                strings[slot] = black_box(s);
            }
            _ => {
                let steps = 1 + rng.below(32);
                let mut v: Vec<u8> = Vec::new();
                for _ in 0..steps {
                    let add = 16 + rng.below(48) as usize;
                    v.reserve_exact(add); // one realloc per step
                    v.extend_from_slice(&ZEROS[..add]);
                }
                v.truncate(v.len() / 2);
                v.shrink_to_fit();
                checksum = checksum.wrapping_add(v.len() as u64);
                bytes[slot] = black_box(v);
            }
        }
    }
    black_box((&vecs, &strings, &bytes));
    Outcome {
        ops: iters,
        checksum,
    }
}

// ---- long-lived heap ----------------------------------------------------------

/// A large long-lived heap with slow turnover: fills `bytes` with blocks of
/// 512 B – 16 KiB (every byte written, so the RSS is real), then replaces
/// random blocks until as many bytes as the live set have been turned over
/// once (i.e. about one replacement per block).
fn longlived(bytes: u64) -> Outcome {
    let mut rng = Rng::new(11);
    let size = |rng: &mut Rng| 512 + rng.below(16 * 1024 - 512 + 1) as usize;
    let mut live: Vec<Vec<u8>> = Vec::new();
    let mut total = 0u64;
    while total < bytes {
        let sz = size(&mut rng);
        total += sz as u64;
        live.push(vec![(sz & 0x7f) as u8 | 1; sz]);
    }
    let mut turned = 0u64;
    let mut steps = 0u64;
    let mut sum = 0u64;
    while turned < bytes {
        let slot = rng.below(live.len() as u64) as usize;
        let sz = size(&mut rng);
        turned += sz as u64;
        steps += 1;
        let v = vec![(sz & 0x7f) as u8 | 1; sz];
        sum = sum.wrapping_add(v[sz / 2] as u64 ^ live[slot].len() as u64);
        live[slot] = v;
    }
    black_box(&live);
    Outcome {
        ops: live.len() as u64 + steps,
        checksum: sum.wrapping_add(live.len() as u64),
    }
}

// ---- sampled-path microbenchmark ------------------------------------------

/// Recurses `depth` frames (not inlined, not a tail call), then runs the
/// pairs loop, so every allocation's stack is `depth` frames deeper than the
/// harness's own.
#[inline(never)]
fn at_depth(depth: u32, pairs: u64) -> u64 {
    if depth == 0 {
        return unsampled_pair(pairs).ops;
    }
    let r = at_depth(black_box(depth - 1), pairs);
    black_box(r)
}

/// `sampled_d<depth>[_t2]`: 64 B alloc+dealloc pairs at recursion depth
/// `depth`, on 1 or 2 threads (pairs split between them).
fn sampled(name: &str, pairs: u64) -> Option<Outcome> {
    let rest = name.strip_prefix("sampled_d")?;
    let (d, threads) = match rest.strip_suffix("_t2") {
        Some(d) => (d, 2),
        None => (rest, 1),
    };
    let depth: u32 = d.parse().ok().filter(|d| (1..=200).contains(d))?;
    let per = pairs / threads;
    let ops = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| s.spawn(move || at_depth(depth, per)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("sampled thread panicked"))
            .sum::<u64>()
    });
    Some(Outcome { ops, checksum: ops })
}

// ---- microbenchmark ---------------------------------------------------------

/// `alloc` + `dealloc` of 64 B through the global allocator, `iters` times.
fn unsampled_pair(iters: u64) -> Outcome {
    let layout = Layout::from_size_align(64, 8).expect("layout");
    for _ in 0..iters {
        let layout = black_box(layout);
        // SAFETY: non-zero-size layout; the pointer is checked and freed with
        // the same layout it was allocated with.
        unsafe {
            let p = alloc(layout);
            if p.is_null() {
                handle_alloc_error(layout);
            }
            dealloc(black_box(p), layout);
        }
    }
    Outcome {
        ops: iters,
        checksum: iters,
    }
}
