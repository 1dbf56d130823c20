//! A full stack table and a full bucket table: samples are counted under the overflow
//! pseudo-frame, the profile says so, and the program is unaffected.

mod common;

use std::hint::black_box;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

/// Allocates `size` bytes from a stack that differs per `depth` (recursion depth).
#[inline(never)]
fn site_deep(depth: usize, size: usize) -> Vec<u8> {
    if depth == 0 {
        return vec![1u8; size];
    }
    let v = site_deep(depth - 1, size);
    black_box(&v);
    v
}

/// The test harness allocates before the test runs, so a sample (which creates the
/// tables) may already have happened: the body runs in a child process started with
/// sampling off (`HEAPROF_RATE=0`) and capacities from the environment.
#[test]
fn full_tables_overflow_into_a_pseudo_frame() {
    if std::env::var_os("HEAPROF_OVERFLOW_CHILD").is_none() {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "full_tables_overflow_into_a_pseudo_frame",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("HEAPROF_OVERFLOW_CHILD", "1")
            .env("HEAPROF_RATE", "0")
            .env("HEAPROF_STACKS", "100")
            .env("HEAPROF_BUCKETS", "16")
            .status()
            .unwrap();
        assert!(status.success(), "child failed: {status}");
        return;
    }
    // No sample yet: code can still choose the capacity, and wins over the environment.
    assert!(
        heaprof::set_table_capacity(0, 16).is_err(),
        "zero capacity is rejected"
    );
    heaprof::set_table_capacity(8, 16).unwrap();
    heaprof::set_heap_profile_rate(1);
    black_box(vec![0u8; 32 << 20]); // recheck the rate now

    let mut kept = Vec::new();
    for depth in 0..40 {
        for size in [10usize, 20, 30] {
            kept.push(site_deep(depth, size));
        }
    }
    // The program still works: every block is intact.
    for (i, v) in kept.iter().enumerate() {
        assert_eq!(v.len(), [10, 20, 30][i % 3]);
        assert!(v.iter().all(|&b| b == 1));
    }
    let err = heaprof::set_table_capacity(100, 100).unwrap_err();
    assert!(err.to_string().contains("before the first sample"), "{err}");

    let mut out = Vec::new();
    heaprof::write_heap_profile(&mut out).unwrap();
    let p = common::decode(&out);
    let t = common::totals_by_site(&p, &["heaprof::table_overflow"]);
    let o = &t["heaprof::table_overflow"];
    assert!(o[0] > 0 && o[1] > 0, "overflow counted: {o:?}");
    let comments: Vec<&str> = p
        .comment
        .iter()
        .map(|&i| p.string_table[i as usize].as_str())
        .collect();
    let stacks_line = comments
        .iter()
        .find(|c| c.starts_with("heaprof.stacks_overflowed"))
        .unwrap();
    assert_ne!(*stacks_line, "heaprof.stacks_overflowed: 0", "{comments:?}");
    // Everything that was allocated is accounted: overflow plus named samples equal the
    // total, and in-use bytes cover at least what `kept` holds.
    let total_inuse: i64 = p.sample.iter().map(|s| s.value[3]).sum();
    assert!(total_inuse >= 40 * 60, "{total_inuse}");
    black_box(kept);
}
