//! The SIGPROF handler never allocates: a counting allocator records allocations made
//! while SIGPROF is blocked on the allocating thread, which is exactly while our handler
//! runs (the kernel blocks the signal during its handler; nothing else here blocks it).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static IN_SIGPROF: AtomicU64 = AtomicU64::new(0);
static ALL: AtomicU64 = AtomicU64::new(0);

fn sigprof_blocked() -> bool {
    // SAFETY: sigset_t zeroed is valid; querying the mask with a null new set is safe.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut old) == 0
            && libc::sigismember(&old, libc::SIGPROF) == 1
    }
}

// SAFETY: forwards to System; the counters are atomics and the mask query allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALL.fetch_add(1, Ordering::Relaxed);
        if sigprof_blocked() {
            IN_SIGPROF.fetch_add(1, Ordering::Relaxed);
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

#[inline(never)]
fn busy_allocating(n: usize) -> usize {
    (0..n).map(|i| black_box(vec![i as u8; 64]).len()).sum()
}

#[test]
fn handler_makes_no_allocation() {
    heaprof::set_cpu_profile_rate(1000);
    let buf = common::SharedBuf::default();
    let guard = heaprof::CpuProfile::start(buf.clone()).unwrap();
    let hs: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(|| black_box(busy_allocating(3_000_000))))
        .collect();
    black_box(busy_allocating(3_000_000));
    for h in hs {
        h.join().unwrap();
    }
    guard.stop().unwrap();
    heaprof::set_cpu_profile_rate(100);
    let (samples, _) = heaprof::__private::handler_stats();
    assert!(
        samples > 50,
        "only {samples} samples: the test proved nothing"
    );
    assert!(ALL.load(Ordering::Relaxed) > 100_000);
    assert_eq!(
        IN_SIGPROF.load(Ordering::Relaxed),
        0,
        "allocations inside the handler"
    );
    let p = common::decode(&buf.bytes());
    assert!(!p.sample.is_empty());
}
