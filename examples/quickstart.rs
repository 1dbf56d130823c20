//! Quickstart: profile a small but realistic workload, write `heap.pb.gz`, and print a top
//! table read back from that file — no Go needed to see the result.
//!
//! ```text
//! cargo run --release --example quickstart
//! go tool pprof -top heap.pb.gz      # the same file in the reference reader, if you have Go
//! ```

use std::collections::HashMap;
use std::hint::black_box;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

/// Small strings, all kept: many tiny allocations (a session table's keys, say).
#[inline(never)]
fn load_user_names(n: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("user-{i:08}@example.com")).collect();
    black_box(&names); // keeps this frame on the stack (no tail call into collect)
    names
}

/// One large buffer, kept.
#[inline(never)]
fn read_file_into_buffer() -> Vec<u8> {
    vec![0x5au8; 48 << 20]
}

/// A map from ids to records: kept.
#[inline(never)]
fn build_index(n: u64) -> HashMap<u64, [u64; 4]> {
    let index: HashMap<u64, [u64; 4]> = (0..n).map(|i| (i, [i; 4])).collect();
    black_box(&index);
    index
}

/// Request handling: every buffer is freed when the request ends (allocated, not in use).
#[inline(never)]
fn handle_requests(n: usize) -> usize {
    let mut served = 0;
    for i in 0..n {
        let body: Vec<u8> = vec![(i % 251) as u8; 2048 + (i % 16) * 256];
        let reply = format!(
            "{} bytes, checksum {}",
            body.len(),
            body.iter().map(|&b| b as u64).sum::<u64>()
        );
        served += black_box(reply).len();
    }
    served
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let names = load_user_names(300_000);
    let buffer = read_file_into_buffer();
    let index = build_index(200_000);
    let served = handle_requests(50_000);

    let path = "heap.pb.gz";
    heaprof::write_heap_profile(std::fs::File::create(path)?)?;
    println!(
        "kept {} names, a {} MiB buffer, {} index entries; served {served} reply bytes",
        names.len(),
        buffer.len() >> 20,
        index.len()
    );
    println!(
        "wrote {path} (sample rate {} bytes)\n",
        heaprof::heap_profile_rate()
    );
    print!("{}", heaprof::top_table(&std::fs::read(path)?, 8)?);
    println!("\nnext: go tool pprof -top {path}   (or -http=: for the web UI)");
    Ok(())
}
