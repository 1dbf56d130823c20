//! [`ForkOnce`]: a lazily initialised value, like `spin::Once`, that a forked child can
//! initialise again when the fork caught another thread in the middle of initialising it.
//!
//! Used by the tables created on the allocator's first sample (`tables`, `threadcreate`)
//! and the environment snapshot (`env`): waiters spin (the initialiser only maps memory
//! and reads or copies the environment, so the wait is
//! short and bounded), nothing allocates. With `spin::Once` a fork during that window leaves
//! the child's copy "running" forever, owned by a thread that does not exist in the child,
//! and the child's first sampled allocation spins forever. [`ForkOnce::reset_after_fork`]
//! (called by the fork protocol's child hooks, `lock_order`) turns such a value back to
//! "empty"; what the vanished initialiser had built is leaked (memory mapped, never read).
//!
//! Must never allocate, lock or block in a way the initialiser cannot end.

use core::mem::MaybeUninit;

use crate::base::atomics::{Atomic, Family, Ordering, SharedCell, Std};

const EMPTY: u8 = 0;
const RUNNING: u8 = 1;
const READY: u8 = 2;

/// A value initialised once, by the first caller of [`ForkOnce::call_once`] (atomics and
/// cell of `F`: see `atomics`).
pub struct ForkOnce<T, F: Family = Std> {
    state: F::U8,
    value: F::Cell<MaybeUninit<T>>,
}

// SAFETY: the value is written once, by the one thread that moved `state` EMPTY → RUNNING,
// before the Release store of READY; it is read only after an Acquire load of READY and never
// written again, so shared access is to an immutable `T` (hence `T: Sync`), and the value may
// be created on one thread and used on others (`T: Send`).
unsafe impl<T: Send + Sync, F: Family> Sync for ForkOnce<T, F> {}

impl<T> ForkOnce<T> {
    /// An empty cell.
    pub const fn new() -> Self {
        ForkOnce {
            state: core::sync::atomic::AtomicU8::new(EMPTY),
            value: core::cell::UnsafeCell::new(MaybeUninit::uninit()),
        }
    }
}

impl<T, F: Family> ForkOnce<T, F> {
    /// The value, initialising it with `f` if no one has; waits (spinning) while another
    /// thread initialises it. `f` must not call back into this cell.
    pub fn call_once(&self, f: impl FnOnce() -> T) -> &T {
        // Ready: a plain load. (A compare-exchange that fails is still a locked write-intent
        // access: on the sampled path of two threads it made this line bounce between cores.)
        if let Some(v) = self.get() {
            return v;
        }
        loop {
            match self
                .state
                .compare_exchange(EMPTY, RUNNING, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => {
                    let v = f();
                    // SAFETY: this thread won EMPTY → RUNNING, so it alone writes the slot,
                    // and no reader looks at it before READY is published below.
                    self.value.with_mut(|p| unsafe { (*p).write(v) });
                    self.state.store(READY, Ordering::Release);
                    break;
                }
                Err(READY) => break,
                Err(_) => F::spin_loop(),
            }
        }
        // SAFETY: READY was observed with Acquire (or stored by this thread): the value is
        // initialised and never written again.
        unsafe { self.value_ref() }
    }

    /// The value if it is initialised.
    pub fn get(&self) -> Option<&T> {
        if self.state.load(Ordering::Acquire) == READY {
            // SAFETY: as in `call_once`.
            Some(unsafe { self.value_ref() })
        } else {
            None
        }
    }

    /// The value, for as long as `self` lives.
    ///
    /// # Safety
    /// READY was observed with Acquire (or stored by this thread).
    #[inline(always)]
    unsafe fn value_ref(&self) -> &T {
        // SAFETY: the value is initialised (caller) and never written again, so a shared
        // reference tied to `&self` stays valid.
        self.value.with(|p| unsafe { (*p).assume_init_ref() })
    }

    /// True once the value is initialised.
    pub fn is_completed(&self) -> bool {
        self.state.load(Ordering::Acquire) == READY
    }

    /// Tests of the fork protocol: `true` puts an empty cell in the state of an
    /// initialisation in progress on another thread (false if it is not empty); `false`
    /// takes it back to empty.
    pub fn hold_for_test(&self, held: bool) -> bool {
        let (from, to) = if held {
            (EMPTY, RUNNING)
        } else {
            (RUNNING, EMPTY)
        };
        self.state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// In a forked child, before any other thread exists: forget an initialisation that was
    /// in progress in the parent (its thread does not exist here), so the next caller
    /// initialises afresh. A value already initialised is kept.
    pub fn reset_after_fork(&self) {
        let _ = self
            .state
            .compare_exchange(RUNNING, EMPTY, Ordering::AcqRel, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn initialises_once_across_threads() {
        static CELL: ForkOnce<u64> = ForkOnce::new();
        static CALLS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
        let hs: Vec<_> = (0..4)
            .map(|i| {
                std::thread::spawn(move || {
                    *CELL.call_once(|| {
                        CALLS.fetch_add(1, Ordering::Relaxed);
                        i
                    })
                })
            })
            .collect();
        let vals: Vec<u64> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(vals.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(CALLS.load(Ordering::Relaxed), 1);
        assert_eq!(CELL.get(), Some(&vals[0]));
        CELL.reset_after_fork(); // a ready value survives
        assert!(CELL.is_completed());
    }

    /// A child forked while another thread is inside the initialiser can initialise the
    /// value itself (without the reset it would spin forever: the test would time out).
    #[test]
    fn child_forked_during_init_can_initialise() {
        static CELL: ForkOnce<u64> = ForkOnce::new();
        let (inside_tx, inside_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            *CELL.call_once(|| {
                inside_tx.send(()).unwrap();
                done_rx.recv().unwrap();
                1
            })
        });
        inside_rx.recv().unwrap();
        let status = crate::base::fork::test_support::in_child(Duration::from_secs(20), || {
            // What the fork protocol's child hook does (lock_order), done by hand: this test must not
            // depend on the handler's registration.
            CELL.reset_after_fork();
            if *CELL.call_once(|| 2) == 2 {
                0
            } else {
                1
            }
        });
        done_tx.send(()).unwrap();
        assert_eq!(t.join().unwrap(), 1);
        assert_eq!(status, Some(0), "child: {status:?} (None = timed out)");
    }
}

/// A model of the EMPTY → RUNNING → READY protocol under loom (`atomics`): two threads race
/// to initialise while a third reads.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use crate::base::atomics::{self, Loom};
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::Arc;
    use loom::thread;

    /// The initialiser runs once, and both callers get the value it made: the loser reads
    /// it only once published (loom checks every access to the cell).
    #[test]
    fn initialises_once_and_publishes_before_use() {
        let n = atomics::model("once", atomics::builder(None), || {
            let once: Arc<ForkOnce<usize, Loom>> = Arc::new(ForkOnce {
                state: Atomic::new(EMPTY),
                value: loom::cell::UnsafeCell::new(MaybeUninit::uninit()),
            });
            let inits = Arc::new(AtomicUsize::new(0));
            let callers: Vec<_> = (1..=2)
                .map(|i| {
                    let (once, inits) = (once.clone(), inits.clone());
                    thread::spawn(move || {
                        *once.call_once(|| {
                            inits.fetch_add(1, Ordering::Relaxed);
                            i
                        })
                    })
                })
                .collect();
            let got: Vec<usize> = callers.into_iter().map(|t| t.join().unwrap()).collect();
            assert_eq!(inits.load(Ordering::Relaxed), 1);
            assert_eq!(got[0], got[1]);
            assert_eq!(once.get(), Some(&got[0]));
        });
        assert!(n > 1);
    }
}
