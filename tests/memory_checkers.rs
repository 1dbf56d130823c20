//! A sampling-heavy program under the memory checkers users run their own code under:
//! valgrind memcheck (no suppression file, `--error-exitcode`) and, when this binary was
//! built with `-Zsanitizer=address` (`.ci/run` does so where `cargo +nightly` exists),
//! AddressSanitizer. Any read of memory heaprof does not own — the header of a block that
//! is not a sample, a freed block, the inner allocator's chunk headers — fails the test.
//!
//! The workload mixes what makes the free path hard: small-block churn (about 1 in 64 of
//! glibc's pointers pass the sampled-block prefilter), 32 live 200 KB blocks (sampled ones
//! live in the large-block region), reallocs that grow across the arena's classes,
//! `alloc_zeroed` of reused slots, and over-aligned blocks, on two threads, at a rate that
//! samples a few thousand blocks; then it writes a heap profile and checks its totals.

mod common;
mod torture_util;

use std::alloc::{alloc, alloc_zeroed, dealloc, realloc, Layout};
use std::hint::black_box;
use std::process::Command;
use std::time::Duration;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

const RUNNER: &str = "child_entry";

/// Churn iterations per thread.
const ROUNDS: usize = 60_000;

/// One thread's share: churn with a ring of small blocks, 16 live large ones replaced in
/// turn, and the occasional realloc, zeroed and over-aligned block.
fn churn(seed: usize) {
    let mut small: Vec<Box<[u8]>> = Vec::with_capacity(256);
    let mut large: Vec<Vec<u8>> = (0..16).map(|_| vec![1u8; 200_000]).collect();
    for i in 0..ROUNDS {
        let k = i.wrapping_mul(7919).wrapping_add(seed);
        let block = vec![i as u8; 16 + k % 300].into_boxed_slice();
        if small.len() < 256 {
            small.push(block);
        } else {
            small[k % 256] = block;
        }
        if i % 1000 == 0 {
            large[(i / 1000) % 16] = vec![2u8; 200_000 + k % 4096];
        }
        if i % 97 == 0 {
            let mut grown = Vec::with_capacity(8);
            grown.extend(0..(k % 30_000) as u32);
            black_box(&grown);
        }
        if i % 501 == 0 {
            zeroed_then_grown(3000 + k % 5000);
        }
        if i % 777 == 0 {
            over_aligned(4096);
            over_aligned(1 << 16);
        }
    }
    for b in &large {
        assert!(
            b.iter().all(|&x| x == 2),
            "every large block was replaced and intact"
        );
    }
}

fn zeroed_then_grown(size: usize) {
    let l = Layout::from_size_align(size, 8).unwrap();
    // SAFETY: a valid non-zero layout; the block is checked, written, grown and freed with
    // the layouts it has.
    unsafe {
        let p = alloc_zeroed(l);
        assert!(!p.is_null());
        assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
        p.write_bytes(3, size);
        let q = realloc(p, l, size * 40);
        assert!(!q.is_null());
        assert!(std::slice::from_raw_parts(q, size).iter().all(|&b| b == 3));
        dealloc(q, Layout::from_size_align(size * 40, 8).unwrap());
    }
}

fn over_aligned(align: usize) {
    let l = Layout::from_size_align(100, align).unwrap();
    // SAFETY: a valid non-zero layout; written, read and freed with it.
    unsafe {
        let p = alloc(l);
        assert!(!p.is_null() && p as usize % align == 0);
        p.write_bytes(5, 100);
        assert_eq!(black_box(p.add(99)).read(), 5);
        dealloc(p, l);
    }
}

/// The workload, run in a child process (under the checker, or as it is).
fn workload() {
    heaprof::set_heap_profile_rate(16 << 10);
    let threads: Vec<_> = (0..2)
        .map(|t| std::thread::spawn(move || churn(t * 104_729)))
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut out = Vec::new();
    heaprof::write_heap_profile(&mut out).unwrap();
    let p = common::decode(&out);
    let allocated: i64 = p.sample.iter().map(|s| s.value[1]).sum();
    // About 2 × 60 000 × (166 + …) bytes went through the allocator; the estimate is in range.
    assert!(allocated > 20 << 20, "allocated estimate {allocated}");
    let samples: usize = p.sample.len();
    assert!(samples > 10, "{samples} stacks sampled");
    let invalid = p
        .comment
        .iter()
        .map(|&i| p.string_table[i as usize].as_str())
        .find(|c| c.starts_with("heaprof.invalid_frees"));
    assert_eq!(invalid, Some("heaprof.invalid_frees: 0"));
}

fn have(cmd: &str) -> bool {
    Command::new(cmd).arg("--version").output().is_ok()
}

/// Whether this binary is the AddressSanitizer build (`.ci/run` sets the variable).
fn asan_build() -> bool {
    std::env::var_os("HEAPROF_ASAN_BUILD").is_some()
}

#[test]
fn valgrind_memcheck_reports_no_error_without_suppressions() {
    if asan_build() {
        eprintln!("SKIPPED: valgrind does not run AddressSanitizer builds");
        return;
    }
    if !have("valgrind") {
        eprintln!("SKIPPED: valgrind is not installed (.ci/run installs it)");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("valgrind")
        .args([
            "--tool=memcheck",
            "--error-exitcode=99",
            "--leak-check=no",
            "--track-origins=no",
            "--quiet",
        ])
        .arg(&exe)
        .args([RUNNER, "--exact", "--nocapture", "--test-threads=1"])
        .env("TORTURE_CASE", "workload")
        .env_remove("HEAPROF_RATE")
        .output()
        .expect("run valgrind");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "memcheck found errors (99) or the workload failed:\n{stderr}"
    );
    assert!(!stderr.contains("Invalid read"), "{stderr}");
}

/// The same workload in this build: the plain test, or AddressSanitizer's when `.ci/run`
/// built it with `-Zsanitizer=address` (any report aborts the child, failing the test).
#[test]
fn workload_runs_clean_in_this_build() {
    let out = torture_util::run_case(RUNNER, "workload", &[], Duration::from_secs(300));
    assert_eq!(
        out.code,
        Some(0),
        "the workload failed{}:\n{}",
        if asan_build() {
            " under AddressSanitizer"
        } else {
            ""
        },
        out.stderr
    );
    assert!(!out.stderr.contains("AddressSanitizer"), "{}", out.stderr);
}

#[test]
fn child_entry() {
    match torture_util::case().as_deref() {
        None => {}
        Some("workload") => workload(),
        Some(other) => panic!("unknown case {other}"),
    }
}
