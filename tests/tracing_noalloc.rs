//! Entering and exiting spans under `heaprof::tracing::LabelLayer` allocates nothing once
//! their label sets have been seen: a counting allocator counts the allocations made on the
//! measuring thread while spans are entered and exited, nested, and under labels set by
//! `Labels::enter` (where the layer merges sets).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tracing_subscriber::layer::SubscriberExt;

struct Counting;

static COUNT: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Whether this thread's allocations are counted (const, no destructor: usable in the
    /// allocator).
    static MEASURING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to System; the counter is an atomic and the flag a const thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if MEASURING.with(Cell::get) {
            COUNT.fetch_add(1, Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = COUNT.load(Relaxed);
    MEASURING.with(|m| m.set(true));
    f();
    MEASURING.with(|m| m.set(false));
    COUNT.load(Relaxed) - before
}

/// Nested enters and exits, the same spans over and over.
fn enter_exit(outer: &tracing::Span, inner: &tracing::Span, times: usize) {
    for _ in 0..times {
        let _o = outer.enter();
        for _ in 0..3 {
            let _i = inner.enter();
        }
    }
}

#[test]
fn entering_a_seen_span_allocates_nothing() {
    let subscriber = tracing_subscriber::registry().with(heaprof::tracing::LabelLayer::default());
    tracing::subscriber::with_default(subscriber, || {
        let outer = tracing::info_span!("outer", tenant = "acme", route = "/checkout");
        let inner = outer.in_scope(|| tracing::info_span!("inner", tenant = "other"));
        // (`with_labels` interns its set on each call; an entered `Labels` does not.)
        let job = heaprof::Labels::new(&[("job", "nightly")]);
        let work = || {
            enter_exit(&outer, &inner, 1000);
            let _job = job.enter();
            enter_exit(&outer, &inner, 1000);
        };
        // Nothing counted yet: the sets and merges are interned on this first pass.
        let first = allocations(work);
        let again = allocations(work);
        eprintln!("allocations: {first} on the first pass, {again} after");
        assert!(first > 0, "the counter counts");
        assert_eq!(
            again, 0,
            "allocations per enter/exit once the sets are seen"
        );
    });
}
