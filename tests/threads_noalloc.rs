//! The `threads` capture handler does not allocate: a parked thread counts its own
//! allocations (a thread-local counter in the global allocator) across several captures.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to System; the counter is a const, drop-free thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `alloc` above with this layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[inline(never)]
fn park_counting(stop: &AtomicBool, seen: &AtomicU64) {
    let before = ALLOCS.with(|c| c.get());
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    seen.store(ALLOCS.with(|c| c.get()) - before, Ordering::SeqCst);
}

#[test]
fn the_capture_handler_does_not_allocate() {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicU64::new(u64::MAX));
    let (s, n) = (stop.clone(), seen.clone());
    let h = std::thread::Builder::new()
        .name("counted".into())
        .spawn(move || park_counting(&s, &n))
        .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let mut captured = 0;
    for _ in 0..5 {
        let mut out = Vec::new();
        heaprof::lookup("threads")
            .unwrap()
            .write_to(&mut out, 0)
            .unwrap();
        let p = common::decode(&out);
        captured += p
            .sample
            .iter()
            .filter(|s| {
                common::stack_names(&p, s)
                    .iter()
                    .any(|f| f.ends_with("park_counting"))
            })
            .count();
    }
    stop.store(true, Ordering::SeqCst);
    h.join().unwrap();
    assert_eq!(captured, 5, "the parked thread was captured each time");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "allocations on the captured thread"
    );
}
