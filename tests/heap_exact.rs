//! At rate 1 every allocation is recorded: the profile must be exact, through frees,
//! realloc, zeroed and over-aligned layouts.

mod common;

use std::alloc::{alloc, alloc_zeroed, dealloc, realloc, Layout};
use std::hint::black_box;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

#[inline(never)]
#[allow(clippy::vec_box)] // the boxes are the allocations under test
fn site_boxes(n: usize) -> Vec<Box<u64>> {
    black_box((0..n as u64).map(Box::new).collect())
}

#[inline(never)]
fn site_raw_layouts() -> Vec<(*mut u8, Layout)> {
    let mut kept = Vec::new();
    for &align in &[1usize, 8, 16, 64, 128, 4096, 8192, 65536] {
        for &size in &[1usize, 24, 100, 5000] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero size, valid layout; every block is freed or kept below.
            unsafe {
                let p = alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "alignment {align}");
                p.write_bytes(0xab, size);
                let z = alloc_zeroed(layout);
                assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                assert_eq!(z as usize % align, 0);
                dealloc(p, layout);
                kept.push((z, layout));
            }
        }
    }
    kept
}

#[inline(never)]
fn site_realloc() -> Vec<*mut u8> {
    let mut kept = Vec::new();
    for &align in &[8usize, 64, 4096] {
        let layout = Layout::from_size_align(16, align).unwrap();
        // SAFETY: grow then shrink the same block; contents must survive each move.
        unsafe {
            let mut p = alloc(layout);
            p.write_bytes(7, 16);
            let mut size = 16;
            for new in [100usize, 10_000, 50, 300_000] {
                p = realloc(p, Layout::from_size_align(size, align).unwrap(), new);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0);
                assert!(std::slice::from_raw_parts(p, size.min(new).min(16))
                    .iter()
                    .all(|&b| b == 7));
                size = new;
            }
            // The final block (300,000 bytes) stays live.
            kept.push(p);
        }
    }
    kept
}

#[test]
fn rate_one_is_exact() {
    heaprof::set_heap_profile_rate(1);
    black_box(vec![0u8; 1 << 20]); // let the thread leave its default-rate countdown

    let boxes = site_boxes(1000);
    drop(site_boxes(500));
    let raw = site_raw_layouts();
    let re = site_realloc();

    let mut out = Vec::new();
    heaprof::write_heap_profile(&mut out).unwrap();
    let p = common::decode(&out);
    let t = common::totals_by_site(&p, &["site_boxes", "site_raw_layouts", "site_realloc"]);

    // site_boxes: 1500 boxes of 8 bytes allocated, 1000 live; plus the two Vec spines
    // (8000 B live, 4000 B freed) — collect with an exact size hint allocates once.
    let b = &t["site_boxes"];
    assert_eq!(
        b,
        &vec![1502, 1500 * 8 + 12_000, 1001, 1000 * 8 + 8000],
        "site_boxes [alloc_objects, alloc_space, inuse_objects, inuse_space]"
    );

    // site_raw_layouts: 8 alignments × 4 sizes (1 + 24 + 100 + 5000 bytes), each
    // allocated twice (alloc, then alloc_zeroed) and the first freed; plus the kept Vec of
    // 24-byte entries growing to 4, 8, 16, 32 (each growth a new block, the old one freed).
    let sizes: i64 = 1 + 24 + 100 + 5000;
    let spine = 24 * (4 + 8 + 16 + 32);
    assert_eq!(
        t["site_raw_layouts"],
        vec![64 + 4, 2 * 8 * sizes + spine, 32 + 1, 8 * sizes + 24 * 32],
        "site_raw_layouts"
    );

    // site_realloc: per alignment one block of 16 bytes moved to 100, 10000, 50 and
    // 300000 bytes (each move a new block, the old freed), the last kept; plus the kept
    // Vec of 3 pointers (capacity 4 → 32 bytes).
    let moves: i64 = 16 + 100 + 10_000 + 50 + 300_000;
    assert_eq!(
        t["site_realloc"],
        vec![3 * 5 + 1, 3 * moves + 32, 3 + 1, 3 * 300_000 + 32],
        "site_realloc"
    );

    for (p, l) in raw {
        // SAFETY: allocated above with this layout.
        unsafe { dealloc(p, l) };
    }
    for (p, align) in re.into_iter().zip([8usize, 64, 4096]) {
        // SAFETY: allocated by realloc above with this final layout.
        unsafe { dealloc(p, Layout::from_size_align(300_000, align).unwrap()) };
    }
    black_box(boxes);
}

#[inline(never)]
#[allow(clippy::vec_box)]
fn site_one_size(n: usize) -> Vec<Box<[u8; 40]>> {
    black_box((0..n).map(|_| Box::new([1u8; 40])).collect())
}

/// Allocates one block of every size from `first` to `last` (kept), all from one call
/// instruction (a plain loop: an iterator may peel its last element into other code).
#[inline(never)]
fn site_many_sizes(first: usize, last: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(last + 1 - first);
    let mut n = first;
    while black_box(n) <= last {
        out.push(Vec::with_capacity(n));
        n += 1;
    }
    out
}

/// The `bytes` label of every sample whose stack contains `site` (none: 0).
fn bytes_labels(p: &heaprof::__private::proto::Profile, site: &str) -> Vec<i64> {
    let key = p.string_table.iter().position(|s| s == "bytes").unwrap() as i64;
    p.sample
        .iter()
        .filter(|s| common::stack_names(p, s).iter().any(|n| n.contains(site)))
        .map(|s| s.label.iter().find(|l| l.key == key).map_or(0, |l| l.num))
        .collect()
}

#[test]
fn bytes_label_is_the_object_size_and_sizes_share_classes() {
    heaprof::set_heap_profile_rate(1);
    black_box(vec![0u8; 1 << 20]);
    let one = site_one_size(100);
    // 4097..=4608 is one size class; 4097..=8192 spans eight.
    let narrow = site_many_sizes(4097, 4608);
    let wide = site_many_sizes(4097, 8192);
    let mut out = Vec::new();
    heaprof::write_heap_profile(&mut out).unwrap();
    let p = common::decode(&out);

    let mut labels = bytes_labels(&p, "site_one_size");
    labels.sort();
    // The boxes, and the collected Vec's spine (100 pointers, allocated once).
    assert_eq!(labels, vec![40, 800], "site_one_size");

    // One record of 512 sizes: the label is their mean (4097 + 4608) / 2 = 4352.5, rounded.
    // (The spine of 512 Vecs, 12 KiB, is a record of its own.)
    let labels = bytes_labels(&p, "site_many_sizes");
    // The two calls are two stacks; 4097..=8192 takes eight records (one per class, the
    // first with the same mean), never one per size.
    let mut in_range: Vec<i64> = labels
        .iter()
        .copied()
        .filter(|b| (4097..=8192).contains(b))
        .collect();
    in_range.sort();
    let eighth = 512;
    let expected: Vec<i64> = std::iter::once(4353)
        .chain((0..8).map(|k| 4097 + k * eighth + (eighth - 1) / 2 + 1))
        .collect();
    assert_eq!(in_range, expected, "{labels:?}");
    let t = common::totals_by_site(&p, &["site_many_sizes"]);
    let spines = 24 * (512 + 4096); // the Vecs holding 512 and 4096 Vec<u8>s
    let bytes: i64 = (4097..=4608i64).sum::<i64>() + (4097..=8192i64).sum::<i64>() + spines;
    assert_eq!(
        t["site_many_sizes"][3], bytes,
        "inuse_space exact at rate 1"
    );
    black_box((one, narrow, wide));
}
