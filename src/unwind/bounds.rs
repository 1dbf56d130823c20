//! Per-thread stack bounds: the only memory the unwinder reads (besides module sections).
//!
//! Owns the thread-local stack range, filled once per thread by [`thread_init`] (which calls
//! `pthread_getattr_np`: it allocates and, on the main thread, reads `/proc/self/maps`, so it
//! is never called from a signal handler). Called by `capture` (lazily) and by
//! `capture_from_ucontext` (read-only, async-signal-safe).
//!
//! The thread-locals are `Cell<usize>` with `const` initialisers and no `Drop`, so they stay
//! usable while the allocator runs during and after TLS teardown (rust-lang/rust#116390), and
//! reading them is a plain TLS load (async-signal-safe for the executable's static TLS).

use core::cell::Cell;
use core::mem::MaybeUninit;

/// `STACK_HI` value meaning "pthread_getattr_np failed on this thread; don't retry".
const FAILED: usize = 1;

thread_local! {
    /// Lowest address of this thread's stack (0 until [`thread_init`] ran).
    static STACK_LO: Cell<usize> = const { Cell::new(0) };
    /// One past the highest address of this thread's stack; 0 = not initialised,
    /// [`FAILED`] = could not be determined.
    static STACK_HI: Cell<usize> = const { Cell::new(0) };
}

/// Fill this thread's stack bounds if not done yet. Not async-signal-safe (allocates).
pub(super) fn thread_init() {
    if STACK_HI.get() != 0 {
        return;
    }
    let (lo, hi) = query_pthread_stack().unwrap_or((0, FAILED));
    STACK_LO.set(lo);
    STACK_HI.set(hi);
}

/// Whether this thread's stack bounds are set (by [`thread_init`] or [`adopt`]).
/// Async-signal-safe (two TLS loads).
pub(super) fn known() -> bool {
    STACK_HI.get() > FAILED || STACK_LO.get() != 0
}

/// Take `[lo, hi)` as this thread's stack if nothing is known yet (never overrides
/// [`thread_init`], nor a half-finished one interrupted by a signal: it sets `STACK_LO`
/// first). Async-signal-safe. The caller vouches that `[sp, hi)` is mapped stack memory of
/// this thread for as long as the thread runs (the CPU profiler checks it against
/// `/proc/self/maps` and `mincore`).
pub(super) fn adopt(lo: usize, hi: usize) -> bool {
    if known() || lo >= hi || hi <= FAILED {
        return false;
    }
    STACK_LO.set(lo);
    STACK_HI.set(hi);
    true
}

fn query_pthread_stack() -> Option<(usize, usize)> {
    let mut attr = MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: pthread_self() is always valid for the calling thread; attr is an out-parameter
    // that pthread_getattr_np initialises on success (return 0).
    if unsafe { libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) } != 0 {
        return None;
    }
    let mut addr: *mut libc::c_void = core::ptr::null_mut();
    let mut size: libc::size_t = 0;
    // SAFETY: attr was initialised by the successful pthread_getattr_np above; addr and size
    // are valid out-pointers.
    let rc = unsafe { libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size) };
    // SAFETY: attr is initialised and destroyed exactly once.
    unsafe { libc::pthread_attr_destroy(attr.as_mut_ptr()) };
    if rc != 0 || addr.is_null() || size == 0 {
        return None;
    }
    let lo = addr as usize;
    Some((lo, lo.checked_add(size)?))
}

/// The readable range `[sp, hi)` for a walk starting at stack pointer `sp`, if `sp` lies on
/// this thread's stack or on its active alternate signal stack. `None` if unknown (the caller
/// must then not read stack memory). Async-signal-safe: TLS loads and `sigaltstack(2)`.
pub(super) fn readable_from(sp: usize) -> Option<(usize, usize)> {
    stack_containing(sp).map(|(_, hi)| (sp, hi))
}

/// Bytes of stack left below `sp` (the stack pointer of the running code), if `sp` is on a
/// known stack. Used to refuse the DWARF walk (~16 KB of stack in release builds, ~55 KB in
/// debug builds, measured) on a small alternate signal stack. Async-signal-safe.
pub(super) fn headroom(sp: usize) -> Option<usize> {
    stack_containing(sp).map(|(lo, _)| sp - lo)
}

/// `[lo, hi)` of this thread's stack or of its alternate signal stack, whichever holds `sp`.
fn stack_containing(sp: usize) -> Option<(usize, usize)> {
    let (lo, hi) = (STACK_LO.get(), STACK_HI.get());
    if hi > FAILED && lo <= sp && sp < hi {
        return Some((lo, hi));
    }
    // Not on the thread's stack: maybe on the alternate signal stack (SA_ONSTACK handler).
    let ss = crate::base::sys::alt_signal_stack()?;
    let (alo, ahi) = (
        ss.ss_sp as usize,
        (ss.ss_sp as usize).checked_add(ss.ss_size)?,
    );
    (alo <= sp && sp < ahi).then_some((alo, ahi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_stack_is_readable() {
        thread_init();
        let local = 0u64;
        let sp = core::ptr::addr_of!(local) as usize;
        let (lo, hi) = readable_from(sp).expect("bounds known after thread_init");
        assert_eq!(lo, sp);
        assert!(hi > sp && hi - sp < (1 << 30));
        assert!(readable_from(0x1000).is_none());
        let room = headroom(sp).unwrap();
        assert!(room > 0 && room < (1 << 30));
    }

    #[test]
    fn thread_init_is_idempotent_on_fresh_threads() {
        std::thread::spawn(|| {
            thread_init();
            let hi = STACK_HI.get();
            thread_init();
            assert_eq!(hi, STACK_HI.get());
            assert!(hi > FAILED);
        })
        .join()
        .unwrap();
    }
}
