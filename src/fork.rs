//! Fork safety: `pthread_atfork` handlers that leave a forked child able to allocate, sample
//! and write profiles whatever the parent's other threads were doing at the instant of
//! `fork`.
//!
//! In the child only the forking thread exists; state held by any other thread stays held
//! forever. What each handler does about it:
//! - prepare (parent, before the fork): takes the custom-profile registry and shard locks
//!   (`custom::fork_prepare`) and the symbolizer lock (`symbolize::fork_prepare`), waiting
//!   for the threads inside them to leave. Those critical sections are short and never wait
//!   for the forking thread, so the wait ends. Holding them means no mutex, and none of
//!   `backtrace`'s state, is copied into the child in the middle of an update.
//! - parent (after the fork): releases them.
//! - child: releases them, and resets the lock-free state a vanished thread may have held:
//!   a table initialisation in progress (`tables`, `threadcreate`: [`crate::once`]), leased
//!   unwinder caches and the module-list builder flag (`unwind::after_fork_child`).
//!
//! Not covered: `fork` called from a signal handler that interrupted heaprof code on the
//! same thread (the interrupted code's state is then the child's own: the prepare handler
//! skips a lock this thread holds, and the child resets nothing that thread still uses);
//! `backtrace`'s lock held at fork by application code using `backtrace` directly.
//!
//! Registration: from an `.init_array` constructor at load time, and, in case the linker
//! dropped it, on first use of each piece of state above ([`ensure_registered`]). The child
//! handler only does atomic stores and mutex unlocks: async-signal-safe enough for the
//! child of a multi-threaded process, which may only call such functions until `exec`.

use core::sync::atomic::{AtomicBool, Ordering};

static REGISTERED: AtomicBool = AtomicBool::new(false);

extern "C" fn prepare() {
    let _guard = crate::tls::ProfilerGuard::enter();
    crate::custom::fork_prepare();
    crate::symbolize::fork_prepare();
    crate::large_region::fork_prepare();
}

extern "C" fn parent() {
    let _guard = crate::tls::ProfilerGuard::enter();
    crate::large_region::fork_release();
    crate::symbolize::fork_release();
    crate::custom::fork_release();
}

extern "C" fn child() {
    let _guard = crate::tls::ProfilerGuard::enter();
    crate::tables::after_fork_child();
    crate::arena::after_fork_child();
    crate::threadcreate::after_fork_child();
    crate::unwind::after_fork_child();
    crate::large_region::fork_release();
    crate::symbolize::fork_release();
    crate::custom::fork_release();
}

/// Registers the handlers once per process. Cheap after the first call (one atomic load).
/// Safe to call from the allocator's sampled path (it runs under the profiler guard there, so
/// the allocation `pthread_atfork` may make goes to the inner allocator).
#[inline]
pub fn ensure_registered() {
    if REGISTERED.load(Ordering::Relaxed) || REGISTERED.swap(true, Ordering::AcqRel) {
        return;
    }
    let _guard = crate::tls::ProfilerGuard::enter();
    // SAFETY: the three handlers are `extern "C" fn()` with no preconditions, valid for the
    // life of the process (they are in this binary or library).
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

extern "C" fn at_load() {
    ensure_registered();
}

/// Runs [`ensure_registered`] when the binary or library is loaded, before `main`.
#[used]
#[link_section = ".init_array"]
static AT_LOAD: extern "C" fn() = at_load;

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
