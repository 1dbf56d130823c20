//! Per-lock waiting time, for the `mutex` profile: how long threads waited on one
//! [`crate::profiles::sync`] lock since its last release, so that the release can be charged with it.
//!
//! Called by the `heaprof::sync` wrappers only: [`LockWaits::arrive`] before a contended
//! wait, [`LockWaits::depart`] once the lock is taken, [`LockWaits::release`] before it is
//! given back. Never from the allocator or a signal handler.
//!
//! The waiting time is an integral: every nanosecond each registered waiter spends waiting is
//! added to `acc`, and a release takes what accrued since the previous one. So each
//! nanosecond of waiting is charged to exactly one release: the end of the critical section
//! during which it was spent (Go's semantics since 1.22; 1.19 charged the woken waiter's wait).
//!
//! The three fields change together under a busy bit in `state` (held for a handful of
//! instructions, never across a wait or a call out). Its spin is bounded: after
//! [`SPIN_LIMIT`] tries the caller gives up that one update, so a busy bit left set by a thread
//! that vanished in a `fork` costs the child some accounting, never a hang. A child's locks
//! may also count waiters that do not exist there; [`after_fork_child`] starts a new
//! generation, and a lock whose state is of an older generation is reset on its next update.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::base::sys;

/// `state` bits 0..=30: registered waiters.
const WAITERS: u64 = (1 << 31) - 1;
/// `state` bit 31: an update is in progress.
const BUSY: u64 = 1 << 31;
/// `state` bits 32..64: the fork generation the state belongs to.
const GEN_SHIFT: u32 = 32;
/// Tries at the busy bit before an update is given up.
const SPIN_LIMIT: u32 = 20_000;

/// Bumped in a forked child: every lock's waiter count from before the fork is void there.
static GENERATION: AtomicU32 = AtomicU32::new(0);

/// Starts a new generation (`pthread_atfork` child handler; one atomic add).
pub(crate) fn after_fork_child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// One lock's waiters and their accrued waiting time. 24 bytes.
#[derive(Default)]
pub(crate) struct LockWaits {
    state: AtomicU64,
    /// Waiting nanoseconds accrued since the last release took them.
    acc: AtomicU64,
    /// When `acc` was last brought up to date (monotonic ns).
    t_last: AtomicU64,
}

impl LockWaits {
    /// A lock nobody waits for.
    pub(crate) const fn new() -> Self {
        LockWaits {
            state: AtomicU64::new(0),
            acc: AtomicU64::new(0),
            t_last: AtomicU64::new(0),
        }
    }

    /// Whether any thread is registered as waiting: one relaxed load, the only cost a release
    /// pays when nobody waited.
    #[inline(always)]
    pub(crate) fn has_waiters(&self) -> bool {
        self.state.load(Ordering::Relaxed) & WAITERS != 0
    }

    /// A thread is about to wait for the lock.
    pub(crate) fn arrive(&self) {
        self.update(|n| (n.saturating_add(1).min(WAITERS), false));
    }

    /// A thread that [`arrive`](Self::arrive)d has the lock now. When it was the last
    /// waiter, what accrued since the last release (its wake-up after that release) is
    /// dropped rather than charged to some later, unrelated release.
    pub(crate) fn depart(&self) {
        self.update(|n| {
            let left = n.saturating_sub(1);
            (left, left == 0)
        });
    }

    /// The lock is about to be released: the waiting nanoseconds accrued since the last
    /// release, now charged to this one (0 when nobody waited or the update was given up).
    pub(crate) fn release(&self) -> u64 {
        self.update(|n| (n, true))
    }

    /// Under the busy bit: brings `acc` up to now, sets the waiter count to what `f` returns
    /// and, if `f` says so, takes and returns `acc`.
    fn update(&self, f: impl FnOnce(u64) -> (u64, bool)) -> u64 {
        let gen = u64::from(GENERATION.load(Ordering::Relaxed));
        let Some((waiters, stale)) = self.lock(gen) else {
            return 0;
        };
        let now = sys::monotonic_nanos();
        let mut n = waiters;
        if stale {
            // A state from before a fork: its waiters are not in this process.
            n = 0;
            self.acc.store(0, Ordering::Relaxed);
        } else {
            let dt = now.saturating_sub(self.t_last.load(Ordering::Relaxed));
            let acc = self.acc.load(Ordering::Relaxed);
            self.acc
                .store(acc.saturating_add(n.saturating_mul(dt)), Ordering::Relaxed);
        }
        self.t_last.store(now, Ordering::Relaxed);
        let (n, take) = f(n);
        let charged = if take {
            self.acc.swap(0, Ordering::Relaxed)
        } else {
            0
        };
        self.state.store((gen << GEN_SHIFT) | n, Ordering::Release);
        charged
    }

    /// Sets the busy bit of generation `gen`; returns the waiter count before and whether the
    /// state was of an older generation (then taken over even if busy: its holder is gone).
    /// `None` after [`SPIN_LIMIT`] tries.
    fn lock(&self, gen: u64) -> Option<(u64, bool)> {
        for i in 0..SPIN_LIMIT {
            let s = self.state.load(Ordering::Relaxed);
            let stale = s >> GEN_SHIFT != gen;
            if s & BUSY == 0 || stale {
                let taken = (gen << GEN_SHIFT) | BUSY | (s & WAITERS);
                if self
                    .state
                    .compare_exchange_weak(s, taken, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Some((s & WAITERS, stale));
                }
            }
            if i % 64 == 63 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        None
    }
}

impl std::fmt::Debug for LockWaits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockWaits")
            .field("waiters", &(self.state.load(Ordering::Relaxed) & WAITERS))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn no_waiters_nothing_charged() {
        let w = LockWaits::new();
        assert!(!w.has_waiters());
        assert_eq!(w.release(), 0);
    }

    #[test]
    fn waiting_time_is_charged_once_to_the_release_that_ends_it() {
        let w = LockWaits::new();
        w.arrive();
        w.arrive();
        assert!(w.has_waiters());
        std::thread::sleep(Duration::from_millis(20));
        let first = w.release();
        // Two waiters for at least 20 ms each.
        assert!(first >= 40_000_000, "{first}");
        w.depart();
        std::thread::sleep(Duration::from_millis(10));
        let second = w.release();
        assert!(second >= 10_000_000, "{second}");
        // What the first release took is not charged again: the second release sees one
        // waiter since then, so less than both waiters' whole time.
        w.depart();
        assert!(!w.has_waiters());
        assert_eq!(w.release(), 0);
    }

    #[test]
    fn a_stale_generation_or_busy_bit_never_hangs() {
        let w = LockWaits::new();
        w.arrive();
        // A busy bit that nobody will clear (a thread lost in a fork): updates give up.
        w.state.fetch_or(BUSY, Ordering::Relaxed);
        assert_eq!(w.release(), 0);
        // The same state seen from a later generation (a forked child): taken over, its
        // phantom waiter dropped.
        let gen = u64::from(GENERATION.load(Ordering::Relaxed));
        w.state
            .store(((gen + 1) << GEN_SHIFT) | BUSY | 3, Ordering::Relaxed);
        w.arrive();
        assert_eq!(w.state.load(Ordering::Relaxed), (gen << GEN_SHIFT) | 1);
        w.depart();
        assert!(!w.has_waiters());
    }
}
