//! The `mutex` profile recorder: where contended [`crate::profiles::sync`] locks were released, and how
//! long others waited for them — Go's mutex profile (`runtime.SetMutexProfileFraction`).
//!
//! Called by the `heaprof::sync` guards after a release that ended someone's wait
//! ([`record_release`]) and by the profile writer ([`write()`], [`count()`]). Never from the
//! allocator or a signal handler: recording captures a stack, interns it and updates a
//! `std::sync::Mutex<BTreeMap>` (allocations go to the inner allocator under the profiler
//! guard).
//!
//! # Semantics (Go's)
//! The waiting time is charged to the stack that *released* the lock — the end of the critical
//! section that made the others wait — where `block` charges the waiters. Which waiting time
//! each release is charged with is [`crate::profiles::waiters`]' job. Fraction `R` ([`set_fraction`]):
//! `0` = off (the default); otherwise each release that ended some waiting is recorded with
//! probability `1/R`, weighted by `R` (`R` contentions, `R ×` its waiting time), so totals are
//! unbiased.
//!
//! `debug = 0`: sample types `contentions`/`count` and `delay`/`nanoseconds`, period type
//! `contentions`/`count`, `period` = the fraction (Go writes 1; values are already scaled, and
//! no reader multiplies protobuf values by the period). `debug = 1`: Go's `--- mutex:` text
//! with `cycles/second=1000000000` and `sampling period=R`, whose values are the raw sampled
//! events, which the text's readers multiply by the sampling period (as Go 1.19 writes them).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::alloc::stack_table::OVERFLOW_STACK;
use crate::unwind::{self, MAX_DEPTH};
use crate::{alloc::tables, base::tls};

mod write;

pub use write::write;

/// The mutex profile fraction; 0 = off.
static FRACTION: AtomicUsize = AtomicUsize::new(0);

/// What was recorded for one stack.
#[derive(Clone, Copy, Default)]
struct Rec {
    /// Sampled releases.
    samples: u64,
    /// Their waiting time, ns.
    sampled_ns: u64,
    /// Contentions, each sample weighted by the fraction it was taken at.
    count: u64,
    /// Waiting time, weighted likewise, ns.
    delay_ns: u64,
}

type Records = BTreeMap<u32, Rec>;

/// Records per stack id of the shared stack table.
static RECORDS: Mutex<Records> = Mutex::new(BTreeMap::new());

thread_local! {
    /// The records' lock, held by the forking thread across `fork`.
    static FORK_HELD: RefCell<Option<MutexGuard<'static, Records>>> = const { RefCell::new(None) };
}

/// Sets the fraction and returns the previous one (see the module docs).
pub fn set_fraction(rate: usize) -> usize {
    FRACTION.swap(rate, Ordering::Relaxed)
}

/// The fraction in force.
pub fn fraction() -> usize {
    FRACTION.load(Ordering::Relaxed)
}

/// Whether the profile is on: one relaxed load (a lock's only added cost while it is off).
#[inline(always)]
pub fn enabled() -> bool {
    FRACTION.load(Ordering::Relaxed) != 0
}

fn records_lock() -> MutexGuard<'static, Records> {
    // Every update is one map operation: a poisoned lock still holds a sound map.
    RECORDS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Go's `mutexevent` draw: whether a release is recorded at fraction `rate` given a uniform
/// 64-bit `rand`.
pub fn sampled(rate: usize, rand: u64) -> bool {
    rate != 0 && rand % rate as u64 == 0
}

/// A release ended `wait_ns` of others' waiting: recorded, with the caller's stack, with
/// probability 1/fraction. The heaprof and drop frames on top are trimmed when written.
#[inline(never)]
pub fn record_release(wait_ns: u64) {
    let rate = fraction();
    if wait_ns == 0 || !sampled(rate, crate::base::sampler::event_rand()) {
        return;
    }
    let _guard = tls::ProfilerGuard::enter();
    let mut frames = [0usize; MAX_DEPTH];
    let n = unwind::capture(&mut frames);
    let id = tables::get().map_or(OVERFLOW_STACK, |t| t.stacks.intern(&frames[..n]));
    let w = rate as u64;
    let mut recs = records_lock();
    let r = recs.entry(id).or_default();
    r.samples += 1;
    r.sampled_ns = r.sampled_ns.saturating_add(wait_ns);
    r.count = r.count.saturating_add(w);
    r.delay_ns = r.delay_ns.saturating_add(wait_ns.saturating_mul(w));
}

/// Forgets every record (tests; Go has no equivalent).
pub fn reset() {
    records_lock().clear();
}

/// Distinct stacks recorded (Go's `Count` for `mutex`).
pub fn count() -> usize {
    records_lock().len()
}

/// `pthread_atfork` prepare: takes the records' lock so that the child gets the map whole
/// and the lock free (listed in `lock_order`).
pub(crate) fn fork_prepare() {
    let g = records_lock();
    let _ = FORK_HELD.try_with(|h| *h.borrow_mut() = Some(g));
}

/// `pthread_atfork` parent: unlocks what [`fork_prepare`] locked.
pub(crate) fn fork_release() {
    let _ = FORK_HELD.try_with(|h| h.borrow_mut().take());
}

/// `pthread_atfork` child: unlocks, and voids every lock's waiter count from before the fork
/// (those threads are not in the child).
pub(crate) fn after_fork_child() {
    crate::profiles::waiters::after_fork_child();
    fork_release();
}

#[cfg(test)]
mod tests {
    use super::write::is_release_frame;
    use super::*;

    #[test]
    fn one_in_rate_draws_are_kept() {
        assert!(!sampled(0, 0));
        assert!((0..100).all(|r| sampled(1, r)));
        let kept = (0..1000u64).filter(|&r| sampled(10, r)).count();
        assert_eq!(kept, 100);
    }

    #[test]
    fn release_frames_are_recognised() {
        for n in [
            "heaprof::sync::MutexGuard<T>::drop",
            "<heaprof::sync::MutexGuard<T> as core::ops::drop::Drop>::drop",
            "core::ptr::drop_in_place<heaprof::sync::MutexGuard<u64>>",
            "core::mem::drop",
        ] {
            assert!(is_release_frame(n), "{n}");
        }
        assert!(!is_release_frame("my_app::worker"));
    }
}
