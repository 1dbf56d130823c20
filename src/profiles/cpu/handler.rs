//! The SIGPROF handler: on the interrupted thread, capture its stack into a slot of the
//! sample ring (or count a lost sample), and nothing else.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};

use super::{stacks, timers, GENERATION, IN_HANDLER, ITIMER_MODE, RING, RUNNING};
use crate::base::{sys, tls};
use crate::unwind;

/// Handler statistics for the current profile: samples taken, ns spent capturing.
static HANDLER_SAMPLES: AtomicU64 = AtomicU64::new(0);
static HANDLER_NANOS: AtomicU64 = AtomicU64::new(0);

/// Zeroes the handler's statistics (a profile starts).
pub(super) fn reset_stats() {
    HANDLER_SAMPLES.store(0, Relaxed);
    NO_STACK_SAMPLES.store(0, Relaxed);
    HANDLER_NANOS.store(0, Relaxed);
}

/// Samples dropped since the last start for want of stack (see [`lost_without_stack`]).
pub(super) fn no_stack_samples() -> u64 {
    NO_STACK_SAMPLES.load(Relaxed)
}

/// The SIGPROF handler. Async-signal-safe: atomics, TLS loads, `gettid`, `clock_gettime`
/// (vDSO), `mincore`, and the unwinder's signal-safe capture into a preallocated ring slot.
pub(super) extern "C" fn on_sigprof(
    _sig: libc::c_int,
    info: *mut libc::siginfo_t,
    uc: *mut libc::c_void,
) {
    let saved = sys::errno();
    IN_HANDLER.fetch_add(1, SeqCst);
    if RUNNING.load(SeqCst) && !info.is_null() {
        // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
        let code = unsafe { (*info).si_code };
        let tid = if code == libc::SI_TIMER {
            // SAFETY: SI_TIMER signals carry the timer's sigev_value in the _rt/_timer union
            // member (same offset), which libc's si_value reads.
            let v = unsafe { (*info).si_value().sival_ptr } as usize;
            let (generation, tid) = timers::decode_value(v);
            (generation == GENERATION.load(Relaxed)).then_some(tid)
        } else if code == libc::SI_KERNEL && ITIMER_MODE.load(Relaxed) {
            Some(sys::gettid())
        } else {
            None
        };
        match tid {
            Some(_) if sys::altstack_headroom().is_some_and(|r| r < HANDLER_STACK_NEEDED) => {
                lost_without_stack()
            }
            Some(tid) => record(tid, uc),
            None => {}
        }
    }
    IN_HANDLER.fetch_sub(1, SeqCst);
    sys::set_errno(saved);
}

/// The stack [`record`] needs below the handler's frame, at least (the frame-pointer walk;
/// the DWARF walk is used only with more, see `unwind::capture_from_ucontext`). Debug builds
/// take several times the stack of release builds.
const HANDLER_STACK_NEEDED: usize = if cfg!(debug_assertions) { 16 } else { 6 } * 1024;

/// Samples dropped since the last start because the handler ran on an alternate signal stack
/// with less than [`HANDLER_STACK_NEEDED`] left (it interrupted another handler running there).
static NO_STACK_SAMPLES: AtomicU64 = AtomicU64::new(0);

/// A SIGPROF that interrupted a signal handler running on this thread's alternate signal
/// stack, with too little of it left to capture a stack on: counted as a lost sample (the
/// profile's `lost_profile_event`), never a stack overflow.
#[cold]
fn lost_without_stack() {
    NO_STACK_SAMPLES.fetch_add(1, Relaxed);
    let ring = RING.load(Acquire);
    if !ring.is_null() {
        // SAFETY: a non-null RING is a leaked `&'static Ring`.
        unsafe { &*ring }.count_lost();
    }
}

/// Captures one sample for `tid` from the interrupted context `uc`.
fn record(tid: i32, uc: *mut libc::c_void) {
    let t0 = sys::monotonic_nanos();
    let ring = RING.load(Acquire);
    if ring.is_null() || uc.is_null() {
        return;
    }
    // SAFETY: a non-null RING is a leaked `&'static Ring`.
    let ring = unsafe { &*ring };
    // SAFETY: `uc` is the handler's third argument: a valid ucontext_t of this thread.
    let sp =
        unsafe { (*(uc as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RSP as usize] };
    stacks::adopt_for_current_thread(sp as usize);
    // The labels in force on the interrupted thread (a TLS load: async-signal-safe).
    let labels = tls::with(|t| t.labels.get());
    ring.push_with(tid, labels, |frames| {
        // SAFETY: `uc` is this handler's ucontext for this thread (see above).
        unsafe { unwind::capture_from_ucontext(uc, frames) }
    });
    HANDLER_SAMPLES.fetch_add(1, Relaxed);
    HANDLER_NANOS.fetch_add(sys::monotonic_nanos().saturating_sub(t0), Relaxed);
}

/// Statistics of the SIGPROF handler since the last start: `(samples, total ns)`.
#[doc(hidden)]
pub fn handler_stats() -> (u64, u64) {
    (HANDLER_SAMPLES.load(Relaxed), HANDLER_NANOS.load(Relaxed))
}
