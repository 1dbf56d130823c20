//! `set_heap_profile_rate` takes effect at once on the calling thread: a countdown drawn at the
//! old rate does not delay the new one.

mod common;

use std::hint::black_box;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

#[inline(never)]
fn site_after_rate_change() -> Box<[u8; 100]> {
    Box::new([7u8; 100])
}

#[test]
fn new_rate_applies_to_the_next_allocation() {
    let mut kept = Vec::with_capacity(20);
    for _ in 0..20 {
        heaprof::set_heap_profile_rate(512 << 10);
        for _ in 0..10 {
            black_box(vec![0u8; 1000]); // a countdown at 512 KiB is now in flight
        }
        heaprof::set_heap_profile_rate(1);
        kept.push(site_after_rate_change());
        heaprof::set_heap_profile_rate(0);
    }
    let mut out = Vec::new();
    heaprof::write_heap_profile(&mut out).unwrap();
    let p = common::decode(&out);
    let t = &common::totals_by_site(&p, &["site_after_rate_change"])["site_after_rate_change"];
    // Every one of the 20 boxes was sampled (at rate 1, weight 1).
    assert_eq!((t[2], t[3]), (20, 2000), "{t:?}");
    black_box(kept);
}
