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

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering};

const EMPTY: u8 = 0;
const RUNNING: u8 = 1;
const READY: u8 = 2;

/// A value initialised once, by the first caller of [`ForkOnce::call_once`].
pub struct ForkOnce<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written once, by the one thread that moved `state` EMPTY → RUNNING,
// before the Release store of READY; it is read only after an Acquire load of READY and never
// written again, so shared access is to an immutable `T` (hence `T: Sync`), and the value may
// be created on one thread and used on others (`T: Send`).
unsafe impl<T: Send + Sync> Sync for ForkOnce<T> {}

impl<T> ForkOnce<T> {
    /// An empty cell.
    pub const fn new() -> Self {
        ForkOnce {
            state: AtomicU8::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

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
                    unsafe { (*self.value.get()).write(v) };
                    self.state.store(READY, Ordering::Release);
                    break;
                }
                Err(READY) => break,
                Err(_) => core::hint::spin_loop(),
            }
        }
        // SAFETY: READY was observed with Acquire (or stored by this thread): the value is
        // initialised and never written again.
        unsafe { (*self.value.get()).assume_init_ref() }
    }

    /// The value if it is initialised.
    pub fn get(&self) -> Option<&T> {
        if self.state.load(Ordering::Acquire) == READY {
            // SAFETY: as in `call_once`.
            Some(unsafe { (*self.value.get()).assume_init_ref() })
        } else {
            None
        }
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
        let status = crate::fork::test_support::in_child(Duration::from_secs(20), || {
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
