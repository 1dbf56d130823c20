//! `heap_peak`: the in-use heap at the moment in-use was highest.
//!
//! Build a 200 MB structure, drop it, then hold 20 MB: `heap` must show ~20 MB, `heap_peak`
//! ~220 MB, both within 10%. Sampled at 8 KiB: the 20 MB of 4 KiB blocks are each sampled
//! with p = 1 − e^(−1/2) ≈ 0.39 (≈ 1,900 samples, σ ≈ √((1−p)/n) ≈ 1.8%: the bound is 5σ),
//! the 64 KiB blocks of the big structure almost surely.

mod common;

use std::hint::black_box;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

const MB: usize = 1_000_000;

#[inline(never)]
fn build_big_structure() -> Vec<Vec<u8>> {
    black_box(
        (0..200 * MB / 65_536)
            .map(|i| vec![i as u8; 65_536])
            .collect(),
    )
}

#[inline(never)]
fn hold_working_set() -> Vec<Vec<u8>> {
    black_box((0..20 * MB / 4096).map(|i| vec![i as u8; 4096]).collect())
}

fn inuse_total(bytes: &[u8]) -> i64 {
    let p = common::decode(bytes);
    let idx = (0..p.sample_type.len())
        .find(|&i| common::sample_type(&p, i) == "inuse_space")
        .unwrap();
    p.sample.iter().map(|s| s.value[idx]).sum()
}

fn within(est: i64, truth: f64, what: &str) {
    let err = (est as f64 - truth).abs() / truth;
    eprintln!(
        "{what}: {est} vs {truth:.0} ({:+.1}%)",
        (est as f64 - truth) / truth * 100.0
    );
    assert!(
        err < 0.10,
        "{what}: estimate {est} vs truth {truth:.0} ({:.1}% off)",
        err * 100.0
    );
}

#[test]
fn peak_shows_the_dropped_structure_heap_does_not() {
    heaprof::set_sampler_seed(0xbeef);
    heaprof::set_heap_profile_rate(8 << 10);
    for _ in 0..64 {
        black_box(vec![0u8; 1 << 20]); // leave the default-rate countdown behind
    }
    let working = hold_working_set();
    let big = build_big_structure();
    black_box(&big);
    drop(big);
    // Allocate a little after the drop: no new peak.
    let small: Vec<Vec<u8>> = (0..100).map(|_| vec![1u8; 1000]).collect();

    let mut heap = Vec::new();
    heaprof::lookup("heap")
        .unwrap()
        .write_to(&mut heap, 0)
        .unwrap();
    let peak_profile = heaprof::lookup("heap_peak").expect("heap_peak is predefined");
    let mut peak = Vec::new();
    peak_profile.write_to(&mut peak, 0).unwrap();
    assert!(peak_profile.count() > 0);

    let spine_w = (20 * MB / 4096 * 24) as f64;
    let spine_b = (200 * MB / 65_536 * 24) as f64;
    let kept = (20 * MB / 4096 * 4096) as f64 + spine_w;
    let big_truth = (200 * MB / 65_536 * 65_536) as f64 + spine_b;
    // In-use now also counts what the test harness holds; it is small next to 20 MB.
    within(inuse_total(&heap), kept, "heap inuse_space now");
    within(
        inuse_total(&peak),
        kept + big_truth,
        "heap_peak inuse_space",
    );

    let p = common::decode(&peak);
    assert_eq!(p.sample_type.len(), 2, "heap_peak has in-use types only");
    let t = common::totals_by_site(&p, &["build_big_structure", "hold_working_set"]);
    within(
        t["build_big_structure"][1],
        big_truth,
        "heap_peak at build_big_structure",
    );
    within(
        t["hold_working_set"][1],
        kept,
        "heap_peak at hold_working_set",
    );
    let comments: Vec<&str> = p
        .comment
        .iter()
        .map(|&i| p.string_table[i as usize].as_str())
        .collect();
    assert!(
        comments.iter().any(|c| c.starts_with("heaprof.heap_peak:")),
        "{comments:?}"
    );

    // The text form is readable by the reference reader.
    let mut txt = Vec::new();
    peak_profile.write_to(&mut txt, 1).unwrap();
    assert!(txt.starts_with(b"heap profile: "));
    let f = common::write_scratch("peak.pb.gz", &peak);
    if let Some(top) = common::go_pprof(&["-top", &f]) {
        assert!(top.contains("build_big_structure"), "{top}");
    }
    black_box((working, small));
}
