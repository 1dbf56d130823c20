//! Exhaustion: the over-aligned live set full, the sampled-block arena full, an inner
//! allocator that returns null, and sizes near `isize::MAX`. (Full stack and bucket tables: `heap_overflow.rs`.)
//! Each case runs in a child process under a timeout.

mod common;
mod torture_util;

use std::alloc::{alloc, dealloc, realloc, GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use torture_util::run_case_ok;

/// System, failing every `FAIL_EVERY`-th call on the thread that set `FLAKY_HERE` (other
/// threads, such as the test harness's, would abort on a failed allocation).
struct Flaky;
static FAIL_EVERY: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static FLAKY_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn fail_now() -> bool {
    let n = FAIL_EVERY.load(Ordering::Relaxed);
    n != 0 && FLAKY_HERE.get() && CALLS.fetch_add(1, Ordering::Relaxed) % n == n - 1
}

// SAFETY: forwards to System, or returns null (allowed by the GlobalAlloc contract).
unsafe impl GlobalAlloc for Flaky {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if fail_now() {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if fail_now() {
            return std::ptr::null_mut();
        }
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if fail_now() {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator<Flaky> = heaprof::ProfilingAllocator::new(Flaky);

const RUNNER: &str = "child_entry";
const T: Duration = Duration::from_secs(120);

fn profile() -> heaprof::__private::proto::Profile {
    let mut out = Vec::new();
    heaprof::write_heap_profile(&mut out).unwrap();
    common::decode(&out)
}

fn comment(p: &heaprof::__private::proto::Profile, key: &str) -> String {
    p.comment
        .iter()
        .map(|&i| p.string_table[i as usize].clone())
        .find(|c| c.starts_with(key))
        .unwrap_or_default()
}

fn rate_one() {
    heaprof::set_sample_rate(1);
    black_box(vec![0u8; 32 << 20]);
}

#[inline(never)]
fn overaligned_site(n: usize) -> Vec<*mut u8> {
    let l = Layout::from_size_align(64, 4096).unwrap();
    (0..n)
        .map(|i| {
            // SAFETY: valid non-zero layout; freed by the caller.
            let p = unsafe { alloc(l) };
            assert!(!p.is_null() && p as usize % 4096 == 0);
            // SAFETY: 64 writable bytes.
            unsafe { p.write_bytes(i as u8, 64) };
            p
        })
        .collect()
}

fn overaligned_full() {
    rate_one();
    let l = Layout::from_size_align(64, 4096).unwrap();
    // The set takes 3/4 of its 4096 slots; 5000 live blocks overflow it by 1928.
    let blocks = overaligned_site(5000);
    let p = profile();
    assert_eq!(
        comment(&p, "heaprof.overaligned_unsampled"),
        "heaprof.overaligned_unsampled: 1928"
    );
    let t = common::totals_by_site(&p, &["overaligned_site"]);
    // 3072 sampled blocks of 64 bytes plus the Vec of 5000 pointers.
    assert_eq!(t["overaligned_site"][3], 3072 * 64 + 5000 * 8);
    for (i, &b) in blocks.iter().enumerate() {
        // SAFETY: allocated above with `l`; the contents were written there.
        unsafe {
            assert!(std::slice::from_raw_parts(b, 64)
                .iter()
                .all(|&x| x == i as u8));
            dealloc(b, l);
        }
    }
    drop(blocks);
    // Room again: new blocks are sampled, nothing more is skipped.
    let again = overaligned_site(10);
    let p = profile();
    assert_eq!(
        comment(&p, "heaprof.overaligned_unsampled"),
        "heaprof.overaligned_unsampled: 1928"
    );
    let t = common::totals_by_site(&p, &["overaligned_site"]);
    assert_eq!(t["overaligned_site"][3], 10 * 64 + 10 * 8);
    for b in again {
        // SAFETY: allocated with `l`.
        unsafe { dealloc(b, l) };
    }
}

#[test]
fn overaligned_set_full_counts_and_degrades() {
    run_case_ok(RUNNER, "overaligned_full", &[], T);
}

/// Aligned to 64, so sampled blocks come from the inner allocator, not the arena.
fn null_layout() -> Layout {
    Layout::from_size_align(40, 64).unwrap()
}

#[inline(never)]
fn null_site(n: usize, out: &mut Vec<*mut u8>) -> usize {
    let l = null_layout();
    let mut nulls = 0;
    for _ in 0..n {
        // SAFETY: valid layout; successes are freed by the caller.
        let p = unsafe { alloc(l) };
        if p.is_null() {
            nulls += 1;
        } else {
            out.push(p);
        }
    }
    nulls
}

#[inline(never)] // a site of its own (its reallocs are charged to it)
fn inner_null() {
    rate_one();
    let mut kept = Vec::with_capacity(3000);
    black_box(null_site(1, &mut kept)); // warm up: this thread's first capture allocates
    let l = null_layout();
    FLAKY_HERE.set(true);
    FAIL_EVERY.store(3, Ordering::Relaxed);
    let nulls = null_site(2999, &mut kept);
    // A sampled realloc whose inner allocation fails keeps the old block.
    let mut re_nulls = 0;
    for p in kept.iter_mut().take(300) {
        // SAFETY: `p` is live with layout `l`.
        let q = unsafe { realloc(*p, l, 80) };
        if q.is_null() {
            re_nulls += 1;
            // SAFETY: still live and intact after a failed realloc.
            unsafe { p.write_bytes(1, 40) };
        } else {
            // SAFETY: the moved block; shrink back so every kept block has layout `l`.
            let r = unsafe { realloc(q, Layout::from_size_align(80, 64).unwrap(), 40) };
            *p = if r.is_null() { unreachable_free(q) } else { r };
        }
    }
    FAIL_EVERY.store(0, Ordering::Relaxed);
    assert!(
        nulls > 500 && re_nulls > 0,
        "nulls {nulls}, realloc nulls {re_nulls}"
    );
    let p = profile();
    // Blocks moved by realloc are charged to `inner_null` (the realloc site), which also
    // holds `kept` (one block of 3000 pointers).
    let t = common::totals_by_site(&p, &["null_site", "inner_null"]);
    let live = kept.len() as i64;
    let (a, b) = (&t["null_site"], &t["inner_null"]);
    assert_eq!(
        a[2] + b[2],
        live + 1,
        "in-use objects = successful allocations"
    );
    assert_eq!(a[3] + b[3], live * 40 + 3000 * 8, "in-use bytes");
    for p in kept {
        // SAFETY: live with layout `l`.
        unsafe { dealloc(p, l) };
    }
}

/// A shrink after a successful grow failed: keep the grown block's place but it cannot be
/// freed with the shared layout; fail the case (happens only if FAIL_EVERY hits twice in a
/// row, which every-3rd cannot do).
fn unreachable_free(_q: *mut u8) -> *mut u8 {
    panic!("shrinking realloc failed twice in a row")
}

#[inline(never)]
fn arena_site(n: usize, size: usize) -> Vec<*mut u8> {
    let l = Layout::from_size_align(size, 8).unwrap();
    (0..n)
        .map(|i| {
            // SAFETY: valid non-zero layout; freed by the caller.
            let p = unsafe { alloc(l) };
            assert!(!p.is_null());
            // SAFETY: `size` writable bytes.
            unsafe { p.write(i as u8) };
            p
        })
        .collect()
}

fn arena_full() {
    rate_one();
    let size = heaprof::__private::ARENA_MAX_BLOCK;
    // One more than fits in the whole arena: the last ones must go to the inner allocator.
    let n = heaprof::__private::ARENA_BYTES / (size + 32) + 100;
    let blocks = arena_site(n, size);
    let p = profile();
    assert_eq!(
        comment(&p, "heaprof.arena_committed"),
        format!(
            "heaprof.arena_committed: {0} of {0}",
            heaprof::__private::ARENA_BYTES
        ),
        "the arena filled up"
    );
    let t = common::totals_by_site(&p, &["arena_site"]);
    // Every block, wherever it lives, plus the Vec of pointers.
    assert_eq!(t["arena_site"][2], n as i64 + 1);
    assert_eq!(t["arena_site"][3], (n * size + n * 8) as i64);
    let l = Layout::from_size_align(size, 8).unwrap();
    for (i, &b) in blocks.iter().enumerate() {
        // SAFETY: allocated above with `l`; the first byte was written there.
        unsafe {
            assert_eq!(b.read(), i as u8);
            dealloc(b, l);
        }
    }
    drop(blocks);
    let t = common::totals_by_site(&profile(), &["arena_site"]);
    assert_eq!(t["arena_site"][2..], [0, 0], "all freed");
    // Freed slots serve new samples.
    let again = arena_site(10, size);
    let t = common::totals_by_site(&profile(), &["arena_site"]);
    assert_eq!(t["arena_site"][3], (10 * size + 10 * 8) as i64);
    for b in again {
        // SAFETY: allocated with `l`.
        unsafe { dealloc(b, l) };
    }
}

#[test]
fn arena_full_degrades_to_the_inner_allocator() {
    run_case_ok(RUNNER, "arena_full", &[], T);
}

#[test]
fn inner_allocator_null_is_returned_and_nothing_is_recorded() {
    run_case_ok(RUNNER, "inner_null", &[], T);
}

#[inline(never)]
fn huge_site() -> usize {
    let mut nulls = 0;
    for (size, align) in [
        (isize::MAX as usize - 64, 8),
        (isize::MAX as usize - 5000, 64),
        (isize::MAX as usize - 8192, 4096),
        (1usize << 62, 16),
    ] {
        let l = Layout::from_size_align(size, align).unwrap();
        // SAFETY: valid layouts; the results are null (checked). `black_box`, so an optimised
        // build cannot drop an allocation whose only use is the null test.
        unsafe {
            nulls += black_box(alloc(l)).is_null() as usize;
            nulls += black_box(std::alloc::alloc_zeroed(l)).is_null() as usize;
        }
    }
    let small = Layout::from_size_align(16, 8).unwrap();
    // SAFETY: grow a live block to an impossible size: null, the block stays valid.
    unsafe {
        let p = alloc(small);
        p.write_bytes(9, 16);
        let q = realloc(p, small, isize::MAX as usize - 64);
        nulls += q.is_null() as usize;
        assert!(std::slice::from_raw_parts(p, 16).iter().all(|&b| b == 9));
        dealloc(p, small);
    }
    nulls
}

fn huge() {
    rate_one();
    assert_eq!(huge_site(), 9);
    let p = profile();
    let t = common::totals_by_site(&p, &["huge_site"]);
    // Only the 16-byte block was recorded (allocated and freed).
    assert_eq!(
        t.get("huge_site").cloned().unwrap_or_default(),
        vec![1, 16, 0, 0]
    );
}

#[test]
fn huge_sizes_return_null_without_records() {
    run_case_ok(RUNNER, "huge", &[], T);
}

#[test]
fn child_entry() {
    match torture_util::case().as_deref() {
        None => {}
        Some("overaligned_full") => overaligned_full(),
        Some("inner_null") => inner_null(),
        Some("arena_full") => arena_full(),
        Some("huge") => huge(),
        Some(other) => panic!("unknown case {other}"),
    }
}
