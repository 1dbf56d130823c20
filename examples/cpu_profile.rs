//! CPU profile of a small two-thread workload, written to `cpu.pb.gz` and summarised from
//! the file itself.
//!
//! ```text
//! cargo run --release --example cpu_profile
//! go tool pprof -top cpu.pb.gz
//! go tool pprof -top -tagfocus thread=hasher cpu.pb.gz   # one thread's share
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

/// FNV-1a over a buffer, many times: pure CPU.
#[inline(never)]
fn hash_blocks(rounds: usize) -> u64 {
    let data: Vec<u8> = (0..64 * 1024).map(|i| i as u8).collect();
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for _ in 0..rounds {
        for &b in black_box(&data) {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

/// Sorting fresh vectors: CPU plus allocation.
#[inline(never)]
fn sort_records(rounds: usize) -> u64 {
    let mut acc = 0;
    for r in 0..rounds {
        let mut v: Vec<u64> = (0..20_000u64)
            .map(|i| i.wrapping_mul(2654435761) ^ r as u64)
            .collect();
        v.sort_unstable();
        acc ^= v[v.len() / 2];
    }
    acc
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = std::fs::File::create("cpu.pb.gz")?;
    let profile = heaprof::CpuProfile::start(std::io::BufWriter::new(file))?;
    let hasher = std::thread::Builder::new()
        .name("hasher".into())
        .spawn(|| {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(2) {
                black_box(hash_blocks(20));
            }
        })?;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        black_box(sort_records(10));
    }
    hasher.join().expect("hasher thread");
    profile.stop()?;

    let bytes = std::fs::read("cpu.pb.gz")?;
    println!("wrote cpu.pb.gz ({} bytes)\n", bytes.len());
    print!("{}", heaprof::top_table(&bytes, 10)?);
    Ok(())
}
