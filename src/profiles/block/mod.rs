//! The `block` profile recorder: where threads waited on heaprof's locks and condition
//! variables ([`crate::profiles::sync`]), and for how long, sampled like Go's `SetBlockProfileRate`.
//!
//! Called by the `heaprof::sync` wrappers after a wait ([`record`]) and by the profile writer
//! ([`write()`], [`count()`]). Never called from the allocator or a signal handler: recording
//! captures a stack, interns it and updates a `std::sync::Mutex<HashMap>` (allocations go to
//! the inner allocator under the profiler guard).
//!
//! # Sampling (Go's `blocksampled` / `saveblockevent`)
//! Rate `R` in nanoseconds ([`set_rate`]): `0` = off (the default); `1` = every event;
//! otherwise an event that blocked `d` ns (`d` ≥ 1) is kept if `d ≥ R`, else with probability
//! exactly `d / R` (skip if `rand % R >= d`; Go's `>` keeps `d + 1` residues of `R`, a bias
//! of `1/d`, negligible at nanosecond resolution but avoidable). A kept event with `d < R` counts
//! `R / d` contentions and `R` ns of delay — each kept short event stands for the `R / d`
//! like it that were not kept (Horvitz–Thompson, Go CL 299991), so totals are unbiased; an
//! event with `d ≥ R` counts 1 and `d`. [`sample`] is this rule as a pure function.
//!
//! Counts are kept as `f64` per stack and written rounded, delays as `u64` ns.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::alloc::stack_table::OVERFLOW_STACK;
use crate::unwind::{self, MAX_DEPTH};
use crate::{alloc::tables, base::tls};

mod write;

pub use write::{is_lock_frame, write};

/// The block profile rate in ns; 0 = off.
static RATE: AtomicU64 = AtomicU64::new(0);

/// (count, delay ns) per stack id of the shared stack table.
static RECORDS: Mutex<BTreeMap<u32, (f64, u64)>> = Mutex::new(BTreeMap::new());
static RECORDS_FORK: crate::base::fork::HeldAcrossFork<BTreeMap<u32, (f64, u64)>> =
    crate::base::fork::HeldAcrossFork::new();

/// Fork prepare: waits for a record or a copy in progress and holds the lock across the fork.
pub(crate) fn fork_prepare() {
    RECORDS_FORK.hold(&RECORDS);
}

/// Fork parent and child: releases the lock.
pub(crate) fn fork_release() {
    RECORDS_FORK.release();
}

/// Sets the rate (see the module docs). Takes effect for events that end after the call.
pub fn set_rate(rate_ns: u64) {
    RATE.store(rate_ns, Ordering::Relaxed);
}

/// The rate in force: one relaxed load (the uncontended lock path's only cost).
#[inline(always)]
pub fn rate() -> u64 {
    RATE.load(Ordering::Relaxed)
}

/// Go's sampling rule: for an event of `delay_ns` at rate `rate_ns`, with `rand` a uniform
/// 64-bit draw, `None` if it is not sampled, else the (contentions, delay ns) it adds.
pub fn sample(delay_ns: u64, rate_ns: u64, rand: u64) -> Option<(f64, u64)> {
    let d = delay_ns.max(1);
    if rate_ns == 0 || (rate_ns > d && rand % rate_ns >= d) {
        return None;
    }
    if d < rate_ns {
        Some((rate_ns as f64 / d as f64, rate_ns))
    } else {
        Some((1.0, d))
    }
}

/// Records one blocking event of `delay_ns` at `rate_ns` (the rate read before the wait, so
/// a thread that saw 0 never gets here), charged to the caller's stack. The heaprof frames on
/// top are trimmed when the profile is written.
#[inline(never)]
pub fn record(delay_ns: u64, rate_ns: u64) {
    let Some((count, delay)) = sample(delay_ns, rate_ns, crate::base::sampler::event_rand()) else {
        return;
    };
    let _guard = tls::ProfilerGuard::enter();
    crate::base::fork::ensure_registered();
    let mut frames = [0usize; MAX_DEPTH];
    let n = unwind::capture(&mut frames);
    let id = tables::get().map_or(OVERFLOW_STACK, |t| t.stacks.intern(&frames[..n]));
    let mut recs = RECORDS.lock().unwrap_or_else(|e| e.into_inner());
    let e = recs.entry(id).or_insert((0.0, 0));
    e.0 += count;
    e.1 = e.1.saturating_add(delay);
}

/// Forgets every recorded event (tests; Go has no equivalent).
pub fn reset() {
    RECORDS.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Distinct stacks recorded (Go's `Count` for `block`).
pub fn count() -> usize {
    RECORDS.lock().unwrap_or_else(|e| e.into_inner()).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_zero_samples_nothing_and_rate_one_everything() {
        for d in [0, 1, 5, 1_000_000] {
            for r in [0, 1, u64::MAX] {
                assert_eq!(sample(d, 0, r), None);
            }
            assert_eq!(sample(d, 1, 12345), Some((1.0, d.max(1))));
        }
    }

    #[test]
    fn long_events_are_always_kept_at_face_value() {
        assert_eq!(sample(10_000, 1_000, 999), Some((1.0, 10_000)));
        assert_eq!(sample(1_000, 1_000, u64::MAX), Some((1.0, 1_000)));
    }

    #[test]
    fn short_events_follow_gos_test_and_are_scaled() {
        // rate 1000, delay 100: kept iff rand % 1000 < 100.
        assert_eq!(sample(100, 1000, 99), Some((10.0, 1000)));
        assert_eq!(sample(100, 1000, 2099), Some((10.0, 1000)));
        assert_eq!(sample(100, 1000, 100), None);
        assert_eq!(sample(100, 1000, 999), None);
        // A zero delay counts as 1 ns, like Go's `cycles <= 0 → 1`.
        assert_eq!(sample(0, 1000, 0), Some((1000.0, 1000)));
        assert_eq!(sample(0, 1000, 1), None);
    }

    #[test]
    fn scaled_totals_are_unbiased_over_the_random_source() {
        // Every residue of rand % rate once: the exact expectation of the estimator.
        let rate = 1000u64;
        for d in [1u64, 37, 250, 999] {
            let (mut c, mut t) = (0.0, 0u64);
            for rand in 0..rate {
                if let Some((ci, ti)) = sample(d, rate, rand) {
                    c += ci;
                    t += ti;
                }
            }
            // Kept for rand in 0..d: d of R draws, each worth R/d contentions and R ns, so the
            // mean over the draws is exactly 1 contention and d ns per event.
            assert!((c / rate as f64 - 1.0).abs() < 1e-9, "d={d}: {c}");
            assert_eq!(t, d * rate, "d={d}");
        }
    }

    #[test]
    fn lock_frames_are_recognised() {
        assert!(is_lock_frame("heaprof::sync::Mutex<T>::lock"));
        assert!(is_lock_frame("<heaprof::sync::Condvar>::wait"));
        assert!(!is_lock_frame("my_app::worker"));
        assert!(!is_lock_frame("std::thread::sleep"));
    }
}
