//! Accuracy of the sampled heap profile against known truth, per allocation site.
//!
//! At rate R = 4096 each site below has ≥ 5,000 expected samples, so one site's relative
//! error has σ ≤ 1/√5000 ≈ 1.4%: the 10% bound is ≥ 7σ (false-failure odds < 1e-11 per
//! value). The seed is fixed, so a failure reproduces.

mod common;

use std::hint::black_box;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

const RATE: usize = 4096;
const SMALL: usize = 64;
const SMALL_N: usize = 400_000; // 25.6 MB kept; expected samples ≈ 25.6e6/4096 ≈ 6250
const LARGE: usize = 16 << 10;
const LARGE_N: usize = 6_000; // 96 MiB allocated, half freed; p(16 KiB) = 1 − e⁻⁴ ≈ 0.98
const CHURN: usize = 200;
const CHURN_N: usize = 200_000; // 40 MB allocated, all freed; ≈ 9,800 samples

#[inline(never)]
#[allow(clippy::vec_box)] // the boxes are the allocations under test
fn site_small_kept() -> Vec<Box<[u8; SMALL]>> {
    let v = (0..SMALL_N).map(|i| Box::new([i as u8; SMALL])).collect();
    // Work after the call, so an optimised build cannot make it a tail call (which would
    // leave this function's frame off the stacks).
    black_box(v)
}

#[inline(never)]
fn site_large_half_freed() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = (0..LARGE_N).map(|i| vec![i as u8; LARGE]).collect();
    // Free every other block.
    let mut i = 0;
    v.retain(|_| {
        i += 1;
        i % 2 == 0
    });
    v
}

#[inline(never)]
fn site_churn() {
    for i in 0..CHURN_N {
        black_box(vec![i as u8; CHURN]);
    }
}

fn within(est: i64, truth: f64, what: &str) {
    let err = (est as f64 - truth).abs() / truth;
    assert!(
        err < 0.10,
        "{what}: estimate {est} vs truth {truth:.0} ({:.1}% off)",
        err * 100.0
    );
    eprintln!(
        "{what}: estimate {est} vs truth {truth:.0} ({:+.2}%)",
        (est as f64 - truth) / truth * 100.0
    );
}

#[test]
fn estimates_within_ten_percent_of_truth() {
    heaprof::set_sampler_seed(0x5eed);
    heaprof::set_heap_profile_rate(RATE);
    // Spend the countdown drawn at the default rate before the change.
    for _ in 0..64 {
        black_box(vec![0u8; 64 << 10]);
    }

    let small = site_small_kept();
    let large = site_large_half_freed();
    site_churn();
    // The Vec<Box<..>> spine of `small` is one more kept block on that site.
    let small_spine = SMALL_N * std::mem::size_of::<usize>();
    let large_spine = LARGE_N * std::mem::size_of::<Vec<u8>>();

    let mut out = Vec::new();
    heaprof::write_heap_profile(&mut out).unwrap();
    let p = common::decode(&out);
    assert_eq!(common::sample_type(&p, 3), "inuse_space");
    assert_eq!(p.period, RATE as i64);
    let t = common::totals_by_site(
        &p,
        &["site_small_kept", "site_large_half_freed", "site_churn"],
    );
    let [ao, asp, io, isp] = [0, 1, 2, 3];

    let s = &t["site_small_kept"];
    within(
        s[isp],
        (SMALL * SMALL_N + small_spine) as f64,
        "small kept: inuse_space",
    );
    within(
        s[asp],
        (SMALL * SMALL_N + small_spine) as f64,
        "small kept: alloc_space",
    );
    within(s[io], SMALL_N as f64, "small kept: inuse_objects");
    within(s[ao], SMALL_N as f64, "small kept: alloc_objects");

    let l = &t["site_large_half_freed"];
    within(l[asp], (LARGE * LARGE_N) as f64, "large: alloc_space");
    within(
        l[isp],
        (LARGE * LARGE_N / 2 + large_spine) as f64,
        "large: inuse_space",
    );
    within(l[io], (LARGE_N / 2) as f64, "large: inuse_objects");

    let c = &t["site_churn"];
    within(c[asp], (CHURN * CHURN_N) as f64, "churn: alloc_space");
    within(c[ao], CHURN_N as f64, "churn: alloc_objects");
    // Every churn block was freed, and a free subtracts exactly its sample's weight.
    assert_eq!(c[isp], 0, "churn: inuse_space");
    assert_eq!(c[io], 0, "churn: inuse_objects");

    black_box((small, large));
}
