//! Fork safety, the mechanism: `pthread_atfork` handlers that run the fork protocol's hooks
//! so a forked child can allocate, sample and write every profile whatever the parent's
//! other threads were doing at the instant of `fork`.
//!
//! In the child only the forking thread exists; a lock or flag held by any other thread stays
//! held forever. Each lock and flag heaprof owns has a [`Hook`] in one ranked list, the fork
//! protocol, which also states the lock order. The list names every layer's locks, so it
//! lives at the top of the crate (`lock_order.rs`) and is handed to this module with
//! [`install`]; this module calls no one by name, it only runs the list:
//! - prepare (parent, before the fork): every hook's `prepare`, in list order (locks are
//!   taken top to bottom, waiting for their holders to leave);
//! - parent (after the fork): every hook's `parent`, in reverse order;
//! - child: every hook's `child`, in reverse order (release what prepare took, reset what a
//!   vanished thread may have left half-done).
//!
//! Not covered: `fork` called from a signal handler that interrupted heaprof code on the
//! same thread, or from code heaprof calls while holding one of its locks (the writer of a
//! CPU profile being stopped): prepare would wait for a lock its own thread holds.
//!
//! Registration: `lock_order`'s `.init_array` constructor installs the list and registers
//! the `pthread_atfork` handlers at load time, before `main`; the state the hooks protect
//! also calls [`ensure_registered`] on first use, so the handlers are registered before any
//! lock of the list can be held whatever the order of constructors. The child hooks only do
//! atomic stores, mutex unlocks and frees: what the child of a multi-threaded process may do
//! (glibc's `fork` has made `malloc` usable in it).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Mutex, MutexGuard};

/// What kind of state a [`Hook`] protects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A lock: taken before the fork, released after it.
    Lock,
    /// A flag or lock-free state: reset in the child.
    Reset,
    /// Nothing to do at fork.
    Nothing,
}

/// What one lock or flag does at `fork`. See `lock_order` for the list.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    /// The lock or flag (its path in the crate), for the list's readers and its tests.
    pub name: &'static str,
    /// Which kind of state it is.
    pub kind: Kind,
    /// Before the fork, on the forking thread, in list order.
    pub prepare: fn(),
    /// After the fork in the parent, in reverse list order.
    pub parent: fn(),
    /// After the fork in the child, in reverse list order.
    pub child: fn(),
}

fn nothing() {}

impl Hook {
    /// A lock: `take` before the fork (waiting for its holder), `release` in the parent and
    /// in the child.
    pub const fn lock(name: &'static str, take: fn(), release: fn()) -> Hook {
        Hook {
            name,
            kind: Kind::Lock,
            prepare: take,
            parent: release,
            child: release,
        }
    }

    /// A lock whose child also has to forget what the parent's other threads were doing
    /// with it: `child` runs instead of `release` there (and must release it).
    pub const fn lock_with_child(
        name: &'static str,
        take: fn(),
        release: fn(),
        child: fn(),
    ) -> Hook {
        Hook {
            name,
            kind: Kind::Lock,
            prepare: take,
            parent: release,
            child,
        }
    }

    /// A flag or lock-free state a thread may leave half-done: nothing before the fork,
    /// `reset` in the child (where no other thread can be using it).
    pub const fn reset_in_child(name: &'static str, reset: fn()) -> Hook {
        Hook {
            name,
            kind: Kind::Reset,
            prepare: nothing,
            parent: nothing,
            child: reset,
        }
    }

    /// State that needs nothing at fork (the list says why), listed so the list is complete.
    pub const fn nothing(name: &'static str) -> Hook {
        Hook {
            name,
            kind: Kind::Nothing,
            prepare: nothing,
            parent: nothing,
            child: nothing,
        }
    }

    /// Whether this is a lock (taken before the fork).
    pub fn is_lock(&self) -> bool {
        self.kind == Kind::Lock
    }
}

static REGISTERED: AtomicBool = AtomicBool::new(false);

/// The fork protocol: the ranked list [`install`] was given (null until then).
static PROTOCOL: AtomicPtr<&'static [Hook]> = AtomicPtr::new(core::ptr::null_mut());

/// Makes `list` the fork protocol the handlers run, and registers them. Called once, by the
/// crate's load-time constructor (`lock_order`); the list is in rank order (see
/// [`prepare`]).
pub fn install(list: &'static &'static [Hook]) {
    PROTOCOL.store(
        (list as *const &'static [Hook]).cast_mut(),
        Ordering::Release,
    );
    ensure_registered();
}

/// The installed fork protocol (empty before [`install`]).
pub fn protocol() -> &'static [Hook] {
    let p = PROTOCOL.load(Ordering::Acquire);
    // SAFETY: a non-null PROTOCOL was stored from a `&'static &'static [Hook]` by `install`.
    unsafe { p.as_ref() }.copied().unwrap_or(&[])
}

/// Before the fork: every hook's `prepare`, top to bottom (locks in rank order).
extern "C" fn prepare() {
    let _guard = crate::base::tls::ProfilerGuard::enter();
    for h in protocol() {
        (h.prepare)();
    }
}

/// After the fork, in the parent: every hook's `parent`, bottom to top.
extern "C" fn parent() {
    let _guard = crate::base::tls::ProfilerGuard::enter();
    for h in protocol().iter().rev() {
        (h.parent)();
    }
}

/// After the fork, in the child: every hook's `child`, bottom to top.
extern "C" fn child() {
    let _guard = crate::base::tls::ProfilerGuard::enter();
    for h in protocol().iter().rev() {
        (h.child)();
    }
}

/// Registers the handlers once per process. Cheap after the first call (one atomic load).
/// Safe to call from the allocator's sampled path (it runs under the profiler guard there, so
/// the allocation `pthread_atfork` may make goes to the inner allocator).
#[inline]
pub fn ensure_registered() {
    if REGISTERED.load(Ordering::Relaxed) || REGISTERED.swap(true, Ordering::AcqRel) {
        return;
    }
    let _guard = crate::base::tls::ProfilerGuard::enter();
    // SAFETY: the three handlers are `extern "C" fn()` with no preconditions, valid for the
    // life of the process (they are in this binary or library).
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// A `std::sync::Mutex` the fork protocol holds across `fork`: [`hold`](Self::hold) locks it
/// in the prepare hook, [`release`](Self::release) unlocks it in the parent and child hooks,
/// on the same (forking) thread. A poisoned mutex is held all the same (its users recover
/// the data; the protocol only needs the lock).
pub struct HeldAcrossFork<T: 'static> {
    guard: UnsafeCell<Option<MutexGuard<'static, T>>>,
}

// SAFETY: `guard` is only touched by the thread that holds the mutex it guards: `hold`
// stores the guard after locking, `with_data`/`release` use it before unlocking. A second
// thread forking at the same time blocks in `lock` until the first has released, and the
// mutex orders their accesses (as it orders accesses to `T`, hence `T: Send`).
unsafe impl<T: Send> Sync for HeldAcrossFork<T> {}

impl<T> HeldAcrossFork<T> {
    /// Nothing held.
    pub const fn new() -> Self {
        HeldAcrossFork {
            guard: UnsafeCell::new(None),
        }
    }

    /// Prepare hook: waits for `m` and keeps it locked.
    pub fn hold(&self, m: &'static Mutex<T>) {
        let g = m.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: this thread holds `m` now (see the Sync impl).
        unsafe { *self.guard.get() = Some(g) };
    }

    /// Child hook, before [`release`](Self::release): the locked data, to forget what the
    /// parent's other threads were doing. `None` if nothing is held.
    pub fn with_data<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        // SAFETY: only the holder calls this, between `hold` and `release`.
        let g = unsafe { &mut *self.guard.get() };
        g.as_mut().map(|g| f(g))
    }

    /// Parent and child hooks: unlocks what [`hold`](Self::hold) locked (no-op if nothing).
    pub fn release(&self) {
        // SAFETY: only the holder calls this; the guard is taken out before it unlocks.
        let g = unsafe { (*self.guard.get()).take() };
        drop(g);
    }
}

/// Fork-and-wait helpers for the crate's own tests (unit tests here, integration tests through
/// `__private`): a deadlock in a forked child becomes a test failure, not a hang.
pub mod test_support {
    use std::time::{Duration, Instant};

    /// Forks; the child runs `f` and `_exit`s with its result (101 if it panicked). Returns
    /// the child's exit code, or `None` if it had not exited after `timeout` (then it is
    /// killed): a deadlock in the child becomes a test failure, not a hang.
    pub fn in_child(timeout: Duration, f: impl FnOnce() -> i32) -> Option<i32> {
        // SAFETY: fork has no preconditions; the child only runs `f` and `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
            // SAFETY: ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        wait_child(pid, timeout)
    }

    /// Runs `f` in a forked child once the tables exist (and with them the arena and the
    /// large-block region), and asserts it passed within 60 s: tests of those reservations
    /// change them freely without touching the parent's.
    #[cfg(test)]
    pub fn with_tables_in_child(f: impl FnOnce()) {
        let code = in_child(Duration::from_secs(60), || {
            let _ = crate::alloc::tables::get();
            f();
            0
        });
        assert_eq!(
            code,
            Some(0),
            "the child failed (101: a panic; None: a hang)"
        );
    }

    /// Waits for `pid` up to `timeout`; kills it and returns `None` when it is still running.
    pub fn wait_child(pid: libc::pid_t, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut status = 0;
            // SAFETY: `pid` is our child; `status` is a valid out-pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                return Some(if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                });
            }
            if Instant::now() > deadline {
                // SAFETY: killing and reaping our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
