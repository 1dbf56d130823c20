//! `capture` and `capture_from_ucontext` allocate nothing in steady state (counting allocator;
//! each `tests/*.rs` is its own binary, so this allocator only affects this file).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use heaprof::__private::{capture, capture_from_ucontext, global_init, MAX_DEPTH};

struct Counting;

thread_local! {
    /// Allocations made by this thread. const + no Drop: usable inside the allocator.
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to System unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.set(ALLOCS.get() + 1);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.set(ALLOCS.get() + 1);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// The two tests take turns: a handler that runs while the other test captures may borrow
/// that thread's warm unwinder cache (a handler cannot fill one of its own), and the
/// capturing thread then fills a fresh one (10 allocations, once per pool slot), which is
/// the pool's bounded warm-up, not steady state.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[inline(never)]
fn chain(depth: usize, leaf: &mut dyn FnMut()) -> usize {
    if depth == 0 {
        leaf();
        return 0;
    }
    black_box(chain(black_box(depth - 1), leaf)) + 1
}

#[test]
fn capture_steady_state_allocates_nothing() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut frames = [0usize; MAX_DEPTH];
    let mut total = 0;
    // Warm-up: builds the module list, the thread's bounds and a pooled cache.
    for d in [5, 20, 60] {
        chain(d, &mut || total += capture(&mut frames));
    }
    let before = ALLOCS.get();
    for i in 0..3000 {
        chain(i % 60, &mut || total += capture(&mut frames));
    }
    let allocs = ALLOCS.get() - before;
    assert!(total > 3000 * 3);
    assert_eq!(
        allocs, 0,
        "capture allocated {allocs} times in 3000 warm calls"
    );
}

static HANDLER_ALLOCS: AtomicUsize = AtomicUsize::new(usize::MAX);
static HANDLER_FRAMES: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_sigprof(_sig: libc::c_int, _info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let before = ALLOCS.get();
    let mut frames = [0usize; MAX_DEPTH];
    let mut n = 0;
    for _ in 0..100 {
        // SAFETY: uc is this handler's ucontext argument.
        n = unsafe { capture_from_ucontext(uc, &mut frames) };
    }
    HANDLER_ALLOCS.store(ALLOCS.get() - before, Ordering::Relaxed);
    HANDLER_FRAMES.store(n, Ordering::Relaxed);
}

#[test]
fn capture_from_ucontext_allocates_nothing() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    global_init();
    let fallbacks = heaprof::__private::stats().fp_fallbacks;
    // SAFETY: a plain SA_SIGINFO handler for SIGPROF, used only by this test.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigprof as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGPROF, &sa, std::ptr::null_mut()), 0);
        // Delivered to this thread before pthread_kill returns (not blocked here).
        libc::pthread_kill(libc::pthread_self(), libc::SIGPROF);
    }
    assert_eq!(HANDLER_ALLOCS.load(Ordering::Relaxed), 0);
    assert!(HANDLER_FRAMES.load(Ordering::Relaxed) >= 3);
    // ... and it was the DWARF walk, not the frame-pointer fallback.
    assert_eq!(heaprof::__private::stats().fp_fallbacks, fallbacks);
}
