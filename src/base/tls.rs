//! Per-thread state of the allocator: the byte countdown, the sampler's generator and the
//! reentrancy guard.
//!
//! Every value here has a `const` initializer and no destructor, so `thread_local!` compiles
//! to a plain `#[thread_local]` slot: no lazy registration, no `Drop`, and access stays valid
//! while and after the thread's other TLS destructors run (rust-lang/rust#116390 is what
//! happens otherwise). Called from `GlobalAlloc` methods only.

use core::cell::{Cell, UnsafeCell};
use rand::rngs::SmallRng;

/// The allocator's per-thread record.
pub struct ThreadState {
    /// Bytes still to allocate before the next sample. Invariant: 0 until the thread's
    /// first slow-path visit (so the first allocation always takes the slow path and seeds
    /// the generator) and while the rate is 1 (every allocation is sampled).
    pub countdown: Cell<u64>,
    /// The rate the current countdown was drawn with: the weight of the sample it ends.
    pub drawn_rate: Cell<usize>,
    /// True while this thread runs profiler code that may allocate (stack capture,
    /// symbolization, profile writing): such allocations go straight to the inner allocator.
    pub in_profiler: Cell<bool>,
    /// The label set in force on this thread (`labels`; 0 = none). Read by the sampled
    /// path and by signal handlers; written only by the thread itself.
    pub labels: Cell<u32>,
    /// The bucket counter shard this thread adds to, plus one (0 = not chosen yet).
    pub shard: Cell<u8>,
    /// The thread's generator; `None` until first use.
    rng: UnsafeCell<Option<SmallRng>>,
}

thread_local! {
    static STATE: ThreadState = const {
        ThreadState {
            countdown: Cell::new(0),
            drawn_rate: Cell::new(0),
            in_profiler: Cell::new(false),
            labels: Cell::new(0),
            shard: Cell::new(0),
            rng: UnsafeCell::new(None),
        }
    };
}

/// Runs `f` with this thread's state. Never fails: const, drop-free TLS is always there.
#[inline(always)]
pub fn with<R>(f: impl FnOnce(&ThreadState) -> R) -> R {
    STATE.with(f)
}

impl ThreadState {
    /// Gives `f` the thread's generator, creating it with `seed()` on first use.
    pub fn with_rng<R>(&self, seed: impl FnOnce() -> u64, f: impl FnOnce(&mut SmallRng) -> R) -> R {
        // SAFETY: the cell is only reached through this method, which is not reentrant:
        // `f` is the sampler's pure draw and never allocates or calls back here, and the
        // state is thread-local, so no other reference to the cell's content exists now.
        let slot = unsafe { &mut *self.rng.get() };
        let rng = slot.get_or_insert_with(|| crate::base::sampler::new_rng(seed()));
        f(rng)
    }
}

/// Marks this thread as inside the profiler until dropped; allocations made meanwhile are
/// neither sampled nor counted down. Nests: an inner guard leaves the outer one in force.
///
/// The fast path cannot tell profiler allocations from others (it has one subtraction and
/// one branch), so it does count them down; the outermost guard puts the countdown back
/// when it drops, so the bytes the profiler allocated (stack capture, symbolization, a
/// profile written on this thread) never move the thread's next sample point.
pub struct ProfilerGuard {
    was_inside: bool,
    /// The countdown when the outermost guard was entered.
    countdown: u64,
}

impl ProfilerGuard {
    /// Enters the profiler on this thread.
    pub fn enter() -> Self {
        with(|s| ProfilerGuard {
            was_inside: s.in_profiler.replace(true),
            countdown: s.countdown.get(),
        })
    }
}

impl Drop for ProfilerGuard {
    fn drop(&mut self) {
        let (was, countdown) = (self.was_inside, self.countdown);
        with(|s| {
            s.in_profiler.set(was);
            if !was {
                s.countdown.set(countdown);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProfilingAllocator;
    use core::alloc::{GlobalAlloc, Layout};

    #[test]
    fn allocations_inside_the_profiler_are_not_counted_down() {
        std::thread::spawn(|| {
            let a = ProfilingAllocator::system();
            // A countdown drawn at some rate: 10 000 bytes to the next sample.
            with(|t| {
                t.countdown.set(10_000);
                t.drawn_rate.set(4096);
            });
            {
                let _g = ProfilerGuard::enter();
                for size in [4000, 100, 20_000, 1 << 20] {
                    let l = Layout::from_size_align(size, 8).unwrap();
                    // SAFETY: a valid layout; the block is freed with it at once.
                    unsafe { a.dealloc(a.alloc(l), l) };
                }
                let _inner = ProfilerGuard::enter();
            }
            assert_eq!(with(|t| t.countdown.get()), 10_000);
        })
        .join()
        .unwrap();
    }
}
