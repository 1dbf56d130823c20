//! The `threadcreate` recorder: an interposed `pthread_create` that records, for every OS
//! thread the process creates, the stack of the code that created it, and gives the new
//! thread its stack bounds for the unwinder before its start routine runs.
//!
//! Called by: every thread creation in the process (std, rayon, C code calling
//! `pthread_create` through the executable's symbol); by the `threadcreate` profile writer
//! ([`snapshot`], [`created`]). Must never: allocate through the Rust global allocator
//! on the creation path (it may run before `main`, from C, or from inside another library),
//! take a lock (the unwinder's first use in the process takes the loader lock once, for
//! `dl_iterate_phdr`), or fail a thread creation that the real `pthread_create` would have done.
//!
//! # How it works
//! The crate exports `#[no_mangle] pthread_create`. Linked into an executable, that
//! definition wins over glibc's for every call from the executable's own code (std's
//! `Thread::new`, rayon, `libc::pthread_create` from Rust or C objects linked in). The linker
//! also exports it dynamically (libc, on the link line, defines the same symbol), so shared
//! libraries, `dlopen`ed ones included, bind their PLT/GOT calls to it too (tested). The
//! interposer
//! 1. resolves glibc's function once with `dlsym(RTLD_NEXT, "pthread_create")` (dlsym may
//!    `calloc` through glibc's malloc, never through ours; the profiler guard is set anyway);
//! 2. captures the creator's stack with [`crate::unwind::capture`] under the profiler guard,
//!    drops its own two frames and interns it in a stack table of its own;
//! 3. wraps the start routine: a `malloc`ed `(start, arg)` pair handed to a trampoline that
//!    frees it in the new thread, runs [`crate::unwind::thread_init`], then calls the user's routine (as `C-unwind`, so `pthread_exit` and cancellation
//!    still unwind through it);
//! 4. counts the stack in a fixed lock-free table once the real call succeeded.
//!
//! Count = threads created (Go's semantics), not threads alive. The main thread, which is not
//! created by `pthread_create`, is not counted.
//!
//! # Limits
//! - glibc Linux only (`target_env = "gnu"`); elsewhere nothing is interposed and the profile
//!   stays empty (static musl has no `RTLD_NEXT`, and its `pthread_create` would clash).
//!   Likewise in a build with a sanitizer (`build.rs` sets `heaprof_sanitizer`): the
//!   sanitizer intercepts `pthread_create` itself and must see every thread.
//! - Not seen: threads made with raw `clone`; threads glibc creates internally (e.g. the
//!   `SIGEV_THREAD` timer helper), since libc calls its own symbol directly; code that
//!   resolves `pthread_create` with `dlsym(RTLD_NEXT, ..)` itself; heaprof built into a
//!   `cdylib` loaded with `RTLD_LOCAL` (then only that library's own calls are seen).
//! - A tail call to `pthread_create` (or to `thread::spawn`) removes the caller's frame from
//!   the recorded stack, as for any return-address stack.
//! - Threads created before `main` (C constructors) are seen.
//! - At most [`TABLE_SLOTS`] distinct creation stacks; more are counted under the overflow
//!   pseudo-frame. Stacks are at most `MAX_DEPTH` frames.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::alloc::stack_table::{StackSlot, StackTable, OVERFLOW_STACK};
use crate::base::sys;
use crate::pprof::trim::path_starts_with_any;

/// Distinct creation stacks the count table holds.
pub const TABLE_SLOTS: usize = 1024;
struct Slot {
    /// Stack id + 1; 0 = empty. Written once (CAS from 0), never cleared.
    key: AtomicU32,
    /// Threads created with this stack.
    count: AtomicU64,
}

static TABLE: [Slot; TABLE_SLOTS] = [const {
    Slot {
        key: AtomicU32::new(0),
        count: AtomicU64::new(0),
    }
}; TABLE_SLOTS];
/// Threads whose stack did not fit in [`TABLE`] (shown as overflow).
static TABLE_OVERFLOWED: AtomicU64 = AtomicU64::new(0);
/// Threads created, in total.
static CREATED: AtomicU64 = AtomicU64::new(0);

/// Creation stacks: a table of their own, so creating a thread (which may happen before
/// `main`, or in a test harness before the test) never fixes the capacity of the shared
/// tables ([`crate::set_table_capacity`] must still work afterwards). `TABLE_SLOTS` slots of
/// `stack_table::SLOT_BYTES` (~540 KB virtual, resident as used), mapped on first thread creation.
static STACKS: crate::base::once::ForkOnce<Option<StackTable>> = crate::base::once::ForkOnce::new();

/// The creation-stack table, created on first call (`None` if the OS refused the memory).
/// Never allocates through the global allocator.
#[cfg_attr(
    not(all(target_os = "linux", target_env = "gnu", not(heaprof_sanitizer))),
    allow(dead_code)
)]
fn stacks() -> Option<&'static StackTable> {
    STACKS
        .call_once(|| {
            crate::base::fork::ensure_registered();
            let n = TABLE_SLOTS + 1;
            let p = sys::map_zeroed(n * core::mem::size_of::<StackSlot>());
            if p.is_null() {
                return None;
            }
            // SAFETY: the mapping is page-aligned, zeroed and large enough for `n` slots;
            // a slot is made of atomics, for which all-zero bytes are valid; it is never
            // unmapped, so 'static holds.
            let slots = unsafe { core::slice::from_raw_parts(p.cast::<StackSlot>(), n) };
            Some(StackTable::new(slots))
        })
        .as_ref()
}

/// In a forked child: forget a table creation the fork interrupted (see `lock_order`).
pub fn after_fork_child() {
    STACKS.reset_after_fork();
}

/// The creation-stack table if any thread was recorded (writers never create it).
pub fn stacks_if_created() -> Option<&'static StackTable> {
    STACKS.get().and_then(|t| t.as_ref())
}

/// Counts one created thread under `stack_id`. Lock-free, allocation-free.
#[cfg_attr(
    not(all(target_os = "linux", target_env = "gnu", not(heaprof_sanitizer))),
    allow(dead_code)
)]
fn record(stack_id: u32) {
    CREATED.fetch_add(1, Ordering::Relaxed);
    let key = stack_id.wrapping_add(1).max(1);
    let start = (key.wrapping_mul(0x9e37_79b9) >> 7) as usize % TABLE_SLOTS;
    for probe in 0..TABLE_SLOTS {
        let slot = &TABLE[(start + probe) % TABLE_SLOTS];
        let k = slot.key.load(Ordering::Acquire);
        let mine = k == key
            || (k == 0
                && match slot
                    .key
                    .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => true,
                    Err(other) => other == key,
                });
        if mine {
            slot.count.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    TABLE_OVERFLOWED.fetch_add(1, Ordering::Relaxed);
}

/// Threads created so far (by `pthread_create` through the interposer).
pub fn created() -> u64 {
    CREATED.load(Ordering::Relaxed)
}

/// (stack id, threads) for every creation stack seen; overflowed threads under
/// [`OVERFLOW_STACK`].
pub fn snapshot() -> Vec<(u32, u64)> {
    let mut out: Vec<(u32, u64)> = TABLE
        .iter()
        .filter_map(|s| {
            let k = s.key.load(Ordering::Acquire);
            let c = s.count.load(Ordering::Relaxed);
            (k != 0 && c != 0).then(|| (k - 1, c))
        })
        .collect();
    let lost = TABLE_OVERFLOWED.load(Ordering::Relaxed);
    if lost > 0 {
        out.push((OVERFLOW_STACK, lost));
    }
    out
}

/// Leading frames of a creation stack that are thread-spawning plumbing rather than the
/// code that asked for a thread (what Go's `runtime.*` frames are to Go): heaprof itself and
/// std's `thread::spawn` machinery. A stack made only of such frames is kept whole.
pub fn is_spawn_frame(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "heaprof::",
        "std::thread::",
        "std::sys::",
        "core::",
        "alloc::",
        "pthread_create",
    ];
    path_starts_with_any(name, PREFIXES)
}

#[cfg(all(target_os = "linux", target_env = "gnu", not(heaprof_sanitizer)))]
mod interpose {
    use core::ffi::{c_int, c_void};
    use core::sync::atomic::{AtomicUsize, Ordering};

    use crate::alloc::stack_table::OVERFLOW_STACK;
    use crate::unwind::{self, MAX_DEPTH};
    use crate::{base::sys, base::tls};

    /// A start routine, called as `C-unwind` so forced unwinding (`pthread_exit`,
    /// cancellation) may pass through our trampoline.
    type StartFn = unsafe extern "C-unwind" fn(*mut c_void) -> *mut c_void;
    type RealCreate = unsafe extern "C" fn(
        *mut libc::pthread_t,
        *const libc::pthread_attr_t,
        StartFn,
        *mut c_void,
    ) -> c_int;

    /// glibc's `pthread_create`, as usize; 0 = not resolved yet.
    static REAL: AtomicUsize = AtomicUsize::new(0);

    /// The routine and argument the new thread must run, handed over in `malloc`ed memory.
    struct StartData {
        start: StartFn,
        arg: *mut c_void,
    }

    fn real_create() -> Option<RealCreate> {
        let mut p = REAL.load(Ordering::Acquire);
        if p == 0 {
            let _guard = tls::ProfilerGuard::enter();
            // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name has no other
            // precondition; it returns null or the next definition of the symbol after this
            // object in the lookup order (glibc's, never ours).
            p = unsafe { libc::dlsym(libc::RTLD_NEXT, c"pthread_create".as_ptr()) } as usize;
            if p == 0 {
                return None;
            }
            REAL.store(p, Ordering::Release);
        }
        // SAFETY: `p` is the address dlsym returned for `pthread_create`, whose C signature
        // is `RealCreate`'s (the start routine type differs only in its unwind ABI, which has
        // the same calling convention).
        Some(unsafe { core::mem::transmute::<usize, RealCreate>(p) })
    }

    /// The creating code's stack, interned; `frames[0]` (this function) and `frames[1]` (the
    /// interposer) are dropped, so the stack starts in the function that called
    /// `pthread_create`.
    #[inline(never)]
    fn creator_stack() -> u32 {
        let _guard = tls::ProfilerGuard::enter();
        let mut frames = [0usize; MAX_DEPTH + 2];
        let n = unwind::capture(&mut frames);
        let stack = &frames[n.min(2)..n];
        super::stacks().map_or(OVERFLOW_STACK, |t| t.intern(stack))
    }

    /// Runs in the new thread before its start routine.
    #[inline(never)]
    fn thread_start() {
        let _guard = tls::ProfilerGuard::enter();
        // Nothing may unwind into glibc's thread start.
        if std::panic::catch_unwind(unwind::thread_init).is_err() {
            sys::write_stderr(&[b"heaprof: setting up a new thread's stack bounds panicked\n"]);
        }
    }

    unsafe extern "C-unwind" fn trampoline(p: *mut c_void) -> *mut c_void {
        // SAFETY: `p` is the `StartData` the interposer malloc'ed and initialised for this
        // thread only; it is read once and freed here, never touched again.
        let StartData { start, arg } = unsafe { p.cast::<StartData>().read() };
        // SAFETY: `p` came from `libc::malloc` and is not used after this.
        unsafe { libc::free(p) };
        thread_start();
        // SAFETY: `start` and `arg` are what the caller passed to `pthread_create`, which
        // promised that `start(arg)` is a valid call in a new thread.
        unsafe { start(arg) }
    }

    /// Interposes glibc's `pthread_create`: records the creator's stack for the
    /// `threadcreate` profile and gives the new thread its stack bounds. Same
    /// contract and return values as glibc's; see the module docs.
    ///
    /// # Safety
    /// As for `pthread_create(3)`: `thread` must be writable, `attr` null or initialised,
    /// and `start(arg)` valid to run on a new thread.
    #[no_mangle]
    #[inline(never)]
    pub unsafe extern "C" fn pthread_create(
        thread: *mut libc::pthread_t,
        attr: *const libc::pthread_attr_t,
        start: extern "C" fn(*mut c_void) -> *mut c_void,
        arg: *mut c_void,
    ) -> c_int {
        let Some(real) = real_create() else {
            sys::write_stderr(&[b"heaprof: cannot find the real pthread_create\n"]);
            return libc::EAGAIN;
        };
        // SAFETY: same calling convention; only the unwind ABI differs (see `StartFn`).
        let start = unsafe { core::mem::transmute::<extern "C" fn(_) -> _, StartFn>(start) };
        let stack_id = creator_stack();
        // SAFETY: malloc has no preconditions; the result is checked for null.
        let data = unsafe { libc::malloc(core::mem::size_of::<StartData>()) }.cast::<StartData>();
        if data.is_null() {
            // No room for the wrapper: create the thread unhooked rather than fail it.
            // SAFETY: the caller's arguments, passed through unchanged.
            let rc = unsafe { real(thread, attr, start, arg) };
            if rc == 0 {
                super::record(stack_id);
            }
            return rc;
        }
        // SAFETY: `data` is a fresh, suitably aligned (malloc) allocation of the right size.
        unsafe { data.write(StartData { start, arg }) };
        // SAFETY: the caller's `thread` and `attr`; `trampoline(data)` is valid in the new
        // thread (it owns `data` from then on).
        let rc = unsafe { real(thread, attr, trampoline, data.cast()) };
        if rc == 0 {
            super::record(stack_id);
        } else {
            // SAFETY: no thread was created, so nobody else holds `data`.
            unsafe { libc::free(data.cast()) };
        }
        rc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The interposer's trampoline gives a new thread its stack bounds before its closure
    /// runs (the unwinder needs them in signal handlers, where it cannot find them itself).
    #[cfg(all(target_os = "linux", target_env = "gnu", not(heaprof_sanitizer)))]
    #[test]
    fn a_new_thread_has_its_stack_bounds_before_its_closure_runs() {
        let known = std::thread::spawn(crate::unwind::thread_stack_known)
            .join()
            .unwrap();
        assert!(known);
    }

    #[test]
    fn record_counts_per_stack_and_snapshot_reads_back() {
        let before = created();
        for _ in 0..3 {
            record(u32::MAX - 7);
        }
        record(u32::MAX - 8);
        assert!(created() >= before + 4);
        let snap = snapshot();
        assert!(snap.contains(&(u32::MAX - 7, 3)), "{snap:?}");
        assert!(snap.contains(&(u32::MAX - 8, 1)), "{snap:?}");
    }

    #[test]
    fn spawn_frames_are_recognised() {
        assert!(is_spawn_frame("std::thread::Builder::spawn_unchecked_"));
        assert!(is_spawn_frame("std::sys::pal::unix::thread::Thread::new"));
        assert!(is_spawn_frame("<std::thread::Builder>::spawn"));
        assert!(!is_spawn_frame("rayon_core::registry::Registry::new"));
        assert!(!is_spawn_frame("my_app::start_workers"));
    }
}
