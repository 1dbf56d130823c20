//! The rates: one naming scheme (`set_<kind>_profile_rate` / `<kind>_profile_rate`, the mutex
//! profile keeping Go's `fraction`), unsigned types, and the old names still working as
//! deprecated aliases of the new ones.

#[test]
fn every_rate_is_unsigned() {
    // Fails to compile if a signature changes.
    let _: fn(usize) = heaprof::set_heap_profile_rate;
    let _: fn() -> usize = heaprof::heap_profile_rate;
    let _: fn(u32) = heaprof::set_cpu_profile_rate;
    let _: fn() -> u32 = heaprof::cpu_profile_rate;
    let _: fn(u64) = heaprof::set_block_profile_rate;
    let _: fn() -> u64 = heaprof::block_profile_rate;
    let _: fn(usize) -> usize = heaprof::set_mutex_profile_fraction;
    let _: fn() -> usize = heaprof::mutex_profile_fraction;
}

#[test]
#[allow(deprecated)]
fn old_names_are_aliases_of_the_new_ones() {
    heaprof::set_sample_rate(12_345);
    assert_eq!(heaprof::heap_profile_rate(), 12_345);
    heaprof::set_heap_profile_rate(777);
    assert_eq!(heaprof::sample_rate(), 777);
    heaprof::set_sample_rate(usize::MAX);
    assert_eq!(heaprof::heap_profile_rate(), heaprof::MAX_SAMPLE_RATE);
    heaprof::set_heap_profile_rate(heaprof::DEFAULT_SAMPLE_RATE);
    assert_eq!(
        heaprof::heap_profile_rate(),
        heaprof::DEFAULT_HEAP_PROFILE_RATE
    );
    assert_eq!(heaprof::MAX_SAMPLE_RATE, heaprof::MAX_HEAP_PROFILE_RATE);
    assert_eq!(
        heaprof::DEFAULT_CPU_HZ,
        i64::from(heaprof::DEFAULT_CPU_PROFILE_RATE)
    );
}
