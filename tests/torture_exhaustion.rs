//! Exhaustion: many over-aligned blocks, the sampled-block arena full, the large-block
//! region full, an inner allocator that returns null, and sizes near `isize::MAX`. (Full stack and bucket tables: `heap_overflow.rs`.)
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
    heaprof::set_heap_profile_rate(1);
    black_box(vec![0u8; 32 << 20]);
}

#[inline(never)]
fn overaligned_site(n: usize, align: usize) -> Vec<*mut u8> {
    let l = Layout::from_size_align(64, align).unwrap();
    (0..n)
        .map(|i| {
            // SAFETY: valid non-zero layout; freed by the caller.
            let p = unsafe { alloc(l) };
            assert!(!p.is_null() && p as usize % align == 0, "{l:?}: {p:?}");
            // SAFETY: 64 writable bytes.
            unsafe { p.write_bytes(i as u8, 64) };
            p
        })
        .collect()
}

fn check_and_free(blocks: Vec<*mut u8>, align: usize) {
    let l = Layout::from_size_align(64, align).unwrap();
    for (i, &b) in blocks.iter().enumerate() {
        // SAFETY: allocated with `l`; the contents were written there.
        unsafe {
            assert!(std::slice::from_raw_parts(b, 64)
                .iter()
                .all(|&x| x == i as u8));
            dealloc(b, l);
        }
    }
}

/// Every over-aligned block is sampled and tracked exactly, however many live at once, and
/// alignments of 2^32 and more come back aligned and are freed where they were allocated.
fn overaligned_all() {
    rate_one();
    let blocks = overaligned_site(5000, 4096);
    let t = common::totals_by_site(&profile(), &["overaligned_site"]);
    assert_eq!(t["overaligned_site"][2..], [5001, 5000 * 64 + 5000 * 8]);
    check_and_free(blocks, 4096);
    for round in 0..3 {
        for align in [1usize << 32, 1 << 33] {
            let blocks = overaligned_site(2, align);
            let t = common::totals_by_site(&profile(), &["overaligned_site"]);
            assert_eq!(t["overaligned_site"][3], 2 * 64 + 2 * 8, "round {round}");
            check_and_free(blocks, align);
            let l = Layout::from_size_align(64, align).unwrap();
            // SAFETY: valid layout; the block is checked, grown, checked and freed.
            unsafe {
                let z = std::alloc::alloc_zeroed(l);
                assert!(!z.is_null() && z as usize % align == 0);
                assert!(std::slice::from_raw_parts(z, 64).iter().all(|&x| x == 0));
                z.write_bytes(7, 64);
                let g = realloc(z, l, 5000);
                assert!(!g.is_null() && g as usize % align == 0);
                assert!(std::slice::from_raw_parts(g, 64).iter().all(|&x| x == 7));
                dealloc(g, Layout::from_size_align(5000, align).unwrap());
            }
        }
    }
    let p = profile();
    let t = common::totals_by_site(&p, &["overaligned_site"]);
    assert_eq!(t["overaligned_site"][2..], [0, 0], "all freed");
    assert_eq!(
        comment(&p, "heaprof.invalid_frees"),
        "heaprof.invalid_frees: 0"
    );
    assert_eq!(
        comment(&p, "heaprof.samples_without_room"),
        "heaprof.samples_without_room: 0"
    );
}

#[test]
fn overaligned_blocks_are_all_tracked_and_huge_alignments_hold() {
    run_case_ok(RUNNER, "overaligned_all", &[], T);
}

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

/// Unsampled, an inner allocator's null reaches the caller and a failed realloc keeps the
/// block; sampled blocks never come from the inner allocator, so its failures cannot touch
/// them.
#[inline(never)] // a site of its own (its reallocs are charged to it)
fn inner_null() {
    let mut kept = Vec::with_capacity(3000);
    heaprof::set_heap_profile_rate(1 << 40); // in effect nothing is sampled
    black_box(vec![0u8; 1 << 20]);
    let l = null_layout();
    FLAKY_HERE.set(true);
    FAIL_EVERY.store(3, Ordering::Relaxed);
    let nulls = null_site(3000, &mut kept);
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
    FLAKY_HERE.set(false);
    assert!(
        (900..=1100).contains(&nulls) && re_nulls > 0,
        "nulls {nulls}, realloc nulls {re_nulls}"
    );
    for p in kept.drain(..) {
        // SAFETY: live with layout `l`.
        unsafe { dealloc(p, l) };
    }
    // Sampled: every call to the inner allocator would fail, and none is made.
    rate_one();
    FLAKY_HERE.set(true);
    FAIL_EVERY.store(1, Ordering::Relaxed);
    let nulls = null_site(2000, &mut kept);
    FAIL_EVERY.store(0, Ordering::Relaxed);
    FLAKY_HERE.set(false);
    assert_eq!(nulls, 0);
    let t = common::totals_by_site(&profile(), &["null_site"]);
    assert_eq!(
        t["null_site"][2..],
        [2000, 2000 * 40],
        "every block sampled"
    );
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
    // More than fit in the whole arena: the last ones go to the large-block region.
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
    assert_eq!(
        comment(&p, "heaprof.samples_without_room"),
        "heaprof.samples_without_room: 0"
    );
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
fn arena_full_overflows_into_the_large_region() {
    run_case_ok(RUNNER, "arena_full", &[], T);
}

#[inline(never)]
fn no_room_site(n: usize, size: usize) -> Vec<*mut u8> {
    let l = Layout::from_size_align(size, 8).unwrap();
    (0..n)
        .map(|i| {
            // SAFETY: valid non-zero layout; freed by the caller.
            let p = unsafe { alloc(l) };
            assert!(!p.is_null());
            // SAFETY: `size` writable bytes; only the first page is touched.
            unsafe { p.write(i as u8) };
            p
        })
        .collect()
}

/// With the large-block region full, samples go to the inner allocator unkept: counted,
/// their allocation still in the allocated totals, nothing lost or corrupted.
fn no_room() {
    heaprof::__private::limit_large_region(1 << 30);
    rate_one();
    let p = profile();
    let region = comment(&p, "heaprof.large_region");
    assert!(region.ends_with("of 1073741824 reserved"), "{region}");
    let size = 100 << 20; // 128 MiB extents: at most 8 fit in 1 GiB
    let blocks = no_room_site(12, size);
    let p = profile();
    let c = comment(&p, "heaprof.samples_without_room");
    let k: i64 = c.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((4..=12).contains(&k), "{c}");
    let t = common::totals_by_site(&p, &["no_room_site"]);
    let s = size as i64;
    assert_eq!(
        t["no_room_site"],
        [13, 12 * s + 12 * 8, 13 - k, (12 - k) * s + 12 * 8]
    );
    let l = Layout::from_size_align(size, 8).unwrap();
    for (i, &b) in blocks.iter().enumerate() {
        // SAFETY: allocated above with `l`; the first byte was written there.
        unsafe {
            assert_eq!(b.read(), i as u8);
            dealloc(b, l);
        }
    }
    drop(blocks);
    let p = profile();
    let t = common::totals_by_site(&p, &["no_room_site"]);
    assert_eq!(t["no_room_site"][2..], [0, 0], "all freed");
    assert_eq!(
        comment(&p, "heaprof.invalid_frees"),
        "heaprof.invalid_frees: 0"
    );
}

#[test]
fn large_region_full_keeps_allocated_totals() {
    // Nothing sampled before the case lowers the region's size (the tables, and with them
    // the region, are made at the first sample).
    run_case_ok(RUNNER, "no_room", &[("HEAPROF_RATE", "0")], T);
}

#[test]
fn inner_allocator_null_is_returned_and_sampled_blocks_never_use_it() {
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
        Some("overaligned_all") => overaligned_all(),
        Some("no_room") => no_room(),
        Some("inner_null") => inner_null(),
        Some("arena_full") => arena_full(),
        Some("huge") => huge(),
        Some(other) => panic!("unknown case {other}"),
    }
}
