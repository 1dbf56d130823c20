//! The rate setters of the heap, block and mutex profiles (the CPU profile's are in
//! [`crate::profiles::cpu`]), and their old names.

use crate::alloc::tables;
use crate::base::config::{self, DEFAULT_HEAP_PROFILE_RATE, MAX_HEAP_PROFILE_RATE};
use crate::base::error::Error;
use crate::base::tls;
use crate::profiles::{block, mutex};

/// Sets the heap profile rate: the mean number of bytes allocated between samples (Go's
/// `MemProfileRate`). `0` turns sampling off, `1` records every allocation; rates above
/// [`MAX_HEAP_PROFILE_RATE`] (16 GiB) are clamped to it. The calling thread switches at once
/// (its countdown is redrawn at its next allocation); every other thread at its next sample.
/// Samples already taken keep the weight of the rate they were taken at.
///
/// ```
/// heaprof::set_heap_profile_rate(64 * 1024);
/// assert_eq!(heaprof::heap_profile_rate(), 64 * 1024);
/// heaprof::set_heap_profile_rate(usize::MAX);
/// assert_eq!(heaprof::heap_profile_rate(), heaprof::MAX_HEAP_PROFILE_RATE);
/// heaprof::set_heap_profile_rate(heaprof::DEFAULT_HEAP_PROFILE_RATE);
/// ```
pub fn set_heap_profile_rate(bytes: usize) {
    config::set_sample_rate(bytes);
    tls::with(|t| {
        t.countdown.set(0);
        t.drawn_rate.set(0);
    });
}

/// The heap profile rate in force, in bytes (`HEAPROF_RATE` or
/// [`DEFAULT_HEAP_PROFILE_RATE`] until set; 0 = off).
///
/// ```
/// assert!(heaprof::heap_profile_rate() <= heaprof::MAX_HEAP_PROFILE_RATE);
/// ```
pub fn heap_profile_rate() -> usize {
    config::sample_rate()
}

/// The old name of [`set_heap_profile_rate`].
#[deprecated(note = "renamed `set_heap_profile_rate` (same argument); removed in the next release")]
pub fn set_sample_rate(bytes: usize) {
    set_heap_profile_rate(bytes)
}

/// The old name of [`heap_profile_rate`].
#[deprecated(note = "renamed `heap_profile_rate`; removed in the next release")]
pub fn sample_rate() -> usize {
    heap_profile_rate()
}

/// The old name of [`DEFAULT_HEAP_PROFILE_RATE`].
#[deprecated(note = "renamed `DEFAULT_HEAP_PROFILE_RATE`; removed in the next release")]
pub const DEFAULT_SAMPLE_RATE: usize = DEFAULT_HEAP_PROFILE_RATE;

/// The old name of [`MAX_HEAP_PROFILE_RATE`].
#[deprecated(note = "renamed `MAX_HEAP_PROFILE_RATE`; removed in the next release")]
pub const MAX_SAMPLE_RATE: usize = MAX_HEAP_PROFILE_RATE;

/// Fixes the sampler's seed so that a run's sampling decisions are reproducible.
pub fn set_sampler_seed(seed: u64) {
    config::set_sampler_seed(seed)
}

/// Chooses the capacity of the stack table and of the heap bucket table. Only before the
/// first sample; see the crate docs for the memory each slot costs.
pub fn set_table_capacity(stacks: usize, buckets: usize) -> Result<(), Error> {
    tables::set_capacity(stacks, buckets)
}

/// Sets the block profile rate in nanoseconds (Go's `runtime.SetBlockProfileRate`): `0` (the
/// default) records nothing, `1` records every blocking event of the [`sync`](crate::sync) wrappers, `R`
/// records an event that blocked `d` ns with probability `min(1, d / R)`, scaled so the
/// `block` profile's totals are unbiased. Takes effect for waits that end after the call.
///
/// ```
/// heaprof::set_block_profile_rate(1);
/// assert_eq!(heaprof::block_profile_rate(), 1);
/// heaprof::set_block_profile_rate(0);
/// ```
pub fn set_block_profile_rate(rate_ns: u64) {
    block::set_rate(rate_ns)
}

/// The block profile rate in force, in nanoseconds (0 = off).
pub fn block_profile_rate() -> u64 {
    block::rate()
}

/// Sets the mutex profile fraction (Go's `runtime.SetMutexProfileFraction`) and returns the
/// previous one: `0` (the default) records nothing; `rate` records on average 1 in `rate`
/// releases of a contended [`sync`](crate::sync) lock, each weighted by `rate` so the `mutex` profile's
/// totals stay unbiased. As in Go, the time others waited is charged to the stack that
/// released the lock (the end of the critical section that made them wait); the `block`
/// profile charges the waiters.
///
/// ```
/// assert_eq!(heaprof::set_mutex_profile_fraction(5), 0);
/// assert_eq!(heaprof::mutex_profile_fraction(), 5);
/// assert_eq!(heaprof::set_mutex_profile_fraction(0), 5);
/// ```
pub fn set_mutex_profile_fraction(rate: usize) -> usize {
    mutex::set_fraction(rate)
}

/// The mutex profile fraction in force (0 = off); Go's `SetMutexProfileFraction(-1)`.
pub fn mutex_profile_fraction() -> usize {
    mutex::fraction()
}
