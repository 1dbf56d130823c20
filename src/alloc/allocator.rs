//! [`ProfilingAllocator`]: the `GlobalAlloc` wrapper. The fast path is a thread-local byte
//! countdown; the slow path samples.
//!
//! # Contract
//! - Unsampled `alloc`: one read-modify-write of a thread-local word (`sub` to memory) and a
//!   branch on its flags, then the inner call.
//! - Unsampled `dealloc`: one test of the pointer's low bits in a register (see `sampled_block`), then
//!   the inner call; about 1 in 64 glibc frees go out of line to compare the address with
//!   heaprof's two reservations (four loads of read-mostly statics). No byte outside the
//!   block is ever read, and nothing of the block unless it lies in those reservations.
//! - Sampled path: capture the stack (before any shared state is touched), intern it,
//!   place the block in heaprof's own memory (an arena slot, or an extent of the large-block
//!   region, whose short spin lock is the one lock here), count it. Never allocates through
//!   the global allocator; allocations the unwinder makes on first use go to the inner
//!   allocator under the thread's reentrancy guard.
//! - Nothing here panics or aborts: a failure (tables refused by the OS, tables full, no
//!   room for the block, inner allocator out of memory) degrades to "not sampled" or to a
//!   counter shown in the profile's comments.

use core::alloc::{GlobalAlloc, Layout};
use std::alloc::System;

use crate::alloc::{block_offset, peak, sampled_block, tables};
use crate::base::sampler::{self, Weight};
use crate::base::tls::{self, ThreadState};
use crate::{base::config, unwind};

/// Countdown used while sampling is off, so threads notice a rate change within this many
/// bytes of allocation.
const OFF_RECHECK_BYTES: u64 = 16 << 20;
/// `drawn_rate` marker: the countdown was set while sampling was off.
const DRAWN_OFF: usize = usize::MAX;

/// A global allocator that samples allocations into heap profiles, forwarding every
/// request to `A`.
///
/// ```no_run
/// #[global_allocator]
/// static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();
///
/// fn main() {
///     let v: Vec<u64> = (0..1_000_000).collect();
///     heaprof::write_heap_profile(std::fs::File::create("heap.pb.gz").unwrap()).unwrap();
///     drop(v);
/// }
/// ```
#[derive(Debug)]
pub struct ProfilingAllocator<A: GlobalAlloc = System> {
    inner: A,
}

impl ProfilingAllocator<System> {
    /// A profiling allocator over the system allocator (glibc `malloc` on Linux).
    pub const fn system() -> Self {
        ProfilingAllocator { inner: System }
    }
}

impl<A: GlobalAlloc> ProfilingAllocator<A> {
    /// A profiling allocator over `inner`; usable in a `static`.
    ///
    /// Every unsampled request goes to `inner` unchanged. Sampled blocks (about one per
    /// 512 KiB allocated at the default rate) live in memory heaprof maps itself instead, so
    /// an `inner` that counts or limits memory does not see those.
    pub const fn new(inner: A) -> Self {
        ProfilingAllocator { inner }
    }

    /// The wrapped allocator.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

/// What the slow path decided about one allocation.
enum Decision {
    /// Not sampled: forward to the inner allocator.
    Skip,
    /// Sampled with this weight.
    Sample(Weight),
}

/// The countdown expired (or was never set) for an allocation of `size` bytes: decide,
/// and redraw. Pure thread-local work.
fn decide(t: &ThreadState, size: usize) -> Decision {
    let rate = config::sample_rate();
    let mut drawn = t.drawn_rate.get();
    let countdown = t.countdown.get();
    // First visit on this thread, or sampling was off when the countdown was set: start a
    // fresh interval at the current rate and test this allocation against it.
    if drawn == 0 || drawn == DRAWN_OFF || rate == 0 {
        if rate == 0 {
            t.countdown.set(OFF_RECHECK_BYTES);
            t.drawn_rate.set(DRAWN_OFF);
            return Decision::Skip;
        }
        let fresh = draw(t, rate);
        if (size as u64) < fresh {
            t.countdown.set(fresh - size as u64);
            t.drawn_rate.set(rate);
            return Decision::Skip;
        }
        drawn = rate;
    } else if (size as u64) < countdown {
        // Callers come here only once the countdown ran out; should one not, the
        // allocation must not be sampled (that would bias the estimate), only counted down.
        t.countdown.set(countdown - size as u64);
        return Decision::Skip;
    }
    // A sample point falls in this allocation. Its weight uses the rate the interval was
    // drawn with; the next interval uses the current rate.
    let w = sampler::weight(size, drawn);
    t.countdown.set(draw(t, rate));
    t.drawn_rate.set(rate);
    Decision::Sample(w)
}

fn draw(t: &ThreadState, rate: usize) -> u64 {
    if rate <= 1 {
        return 0; // every allocation takes the slow path and is sampled
    }
    t.with_rng(
        || {
            use core::sync::atomic::{AtomicU64, Ordering};
            static THREADS: AtomicU64 = AtomicU64::new(0);
            sampler::thread_seed(
                config::process_seed(),
                THREADS.fetch_add(1, Ordering::Relaxed),
            )
        },
        |rng| sampler::draw_countdown(rng, rate),
    )
}

/// The countdown fast path: true when `size` bytes do not reach the next sample.
///
/// The countdown is decremented unconditionally (one read-modify-write on the thread-local
/// word whose flags give the answer); when the answer is false the slow path undoes it with
/// [`restore_countdown`] before deciding.
#[inline(always)]
fn fast_countdown(size: usize) -> bool {
    tls::with(|t| {
        let n = t.countdown.get();
        t.countdown.set(n.wrapping_sub(size as u64));
        n > size as u64
    })
}

/// Undoes the decrement of a [`fast_countdown`] that returned false.
fn restore_countdown(t: &ThreadState, size: usize) {
    t.countdown.set(t.countdown.get().wrapping_add(size as u64));
}

impl<A: GlobalAlloc> ProfilingAllocator<A> {
    /// Slow path of `alloc`/`alloc_zeroed`: decide, and record when sampled.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_slow(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        let decision = tls::with(|t| {
            restore_countdown(t, layout.size());
            if t.in_profiler.get() {
                Decision::Skip
            } else {
                decide(t, layout.size())
            }
        });
        match decision {
            // SAFETY: forwarded with the caller's valid layout.
            Decision::Skip => unsafe { self.inner_alloc(layout, zeroed) },
            // SAFETY: as above; `alloc_sampled` upholds the GlobalAlloc contract itself.
            Decision::Sample(w) => unsafe { self.alloc_sampled(layout, zeroed, w) },
        }
    }

    /// # Safety
    /// `layout` as for `GlobalAlloc::alloc`.
    #[inline(always)]
    unsafe fn inner_alloc(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        // SAFETY: the caller passes a layout valid for GlobalAlloc.
        unsafe {
            if zeroed {
                self.inner.alloc_zeroed(layout)
            } else {
                self.inner.alloc(layout)
            }
        }
    }

    /// Allocates a sampled block and counts it. Falls back to an unsampled block whenever
    /// the sample cannot be recorded.
    ///
    /// # Safety
    /// `layout` as for `GlobalAlloc::alloc`.
    #[inline(never)]
    unsafe fn alloc_sampled(&self, layout: Layout, zeroed: bool, w: Weight) -> *mut u8 {
        let _guard = tls::ProfilerGuard::enter();
        let mut frames = [0usize; unwind::MAX_DEPTH];
        // Captured first: no shared state is touched yet, so nothing can deadlock here (the
        // stack table is lock-free; a repeated stack is not even looked up).
        let (_, stack) = unwind::capture_interned(&mut frames, &mut |f| {
            tables::get().map(|t| t.stacks.intern(f))
        });
        let Some(t) = tables::get() else {
            // SAFETY: forwarded with the caller's valid layout.
            return unsafe { self.inner_alloc(layout, zeroed) };
        };
        // No id only if the walk itself failed (a caught panic): an empty stack, as before.
        let stack = stack.unwrap_or_else(|| t.stacks.intern(&[]));
        let labels = tls::with(|s| s.labels.get());
        let size = layout.size() as u64;
        let Some(placed) = sampled_block::place(layout) else {
            // Neither the arena nor the large-block region has room: the block goes to the
            // inner allocator unsampled, and the sample counts as allocated and freed at
            // once, so the allocated totals stay unbiased (in use misses it; counted).
            // SAFETY: forwarded with the caller's valid layout.
            let p = unsafe { self.inner_alloc(layout, zeroed) };
            if !p.is_null() {
                let bucket = t.buckets.find(stack, labels, size);
                t.buckets.record_alloc(bucket, size, w);
                t.buckets.record_free(bucket, size, w);
            }
            return p;
        };
        if zeroed && placed.dirty > 0 {
            // SAFETY: the block's first `dirty` (≤ size) bytes are ours: `place` gave them.
            unsafe { placed.ptr().write_bytes(0, placed.dirty) };
        }
        let bucket = t.buckets.find(stack, labels, size);
        t.buckets.record_alloc(bucket, size, w);
        peak::on_alloc(&t.buckets, t.peak, w.bytes);
        // SAFETY: `placed` is fresh from `place(layout)`.
        unsafe { sampled_block::tag(placed, bucket, w) }
    }

    /// Counts the free of the sampled block `ptr` and gives its memory back to heaprof's
    /// reservation it lives in.
    ///
    /// # Safety
    /// `ptr`/`layout` as for `GlobalAlloc::dealloc`, and `sampled_block::is_sampled(ptr)`.
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_sampled(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract: `ptr` is a live sampled block of `layout`.
        let Some(h) = (unsafe { sampled_block::free(ptr, layout) }) else {
            return; // freed twice: ignored (and counted)
        };
        let w = Weight {
            objects_fp: h.objects_fp,
            bytes: h.bytes_w,
        };
        if let Some(t) = tables::get_if_created() {
            t.buckets.record_free(h.bucket, layout.size() as u64, w);
            peak::on_free(w.bytes);
        }
    }

    /// `dealloc` of a block whose address may be a sampled block's: decides by the address
    /// range, reading nothing of the block unless it is ours.
    ///
    /// # Safety
    /// As for `GlobalAlloc::dealloc`.
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_slow(&self, ptr: *mut u8, layout: Layout) {
        if sampled_block::is_sampled(ptr) {
            // SAFETY: forwarded under the caller's contract; the block is ours.
            return unsafe { self.dealloc_sampled(ptr, layout) };
        }
        // SAFETY: not a sampled block, so it came from `inner` with this layout.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    /// realloc's slow path: a sampled block is involved (old, new or both), so move.
    ///
    /// # Safety
    /// As for `GlobalAlloc::realloc`.
    #[cold]
    #[inline(never)]
    unsafe fn realloc_slow(
        &self,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        decide_new: bool,
    ) -> *mut u8 {
        // SAFETY: the caller guarantees a valid (size, align) pair for new_size.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let decision = if decide_new {
            tls::with(|t| {
                restore_countdown(t, new_size);
                if t.in_profiler.get() {
                    Decision::Skip
                } else {
                    decide(t, new_size)
                }
            })
        } else {
            Decision::Skip
        };
        let old_sampled = block_offset::may_be_sampled(ptr) && sampled_block::is_sampled(ptr);
        let new = match decision {
            // SAFETY: the caller's contract; realloc keeps the block on failure.
            Decision::Skip if !old_sampled => {
                return unsafe { self.inner.realloc(ptr, layout, new_size) }
            }
            // SAFETY: new_layout is valid and non-zero-sized per realloc's contract.
            Decision::Skip => unsafe { self.inner.alloc(new_layout) },
            // SAFETY: as above.
            Decision::Sample(w) => unsafe { self.alloc_sampled(new_layout, false, w) },
        };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least min(old, new) bytes long.
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            // SAFETY: `ptr` is live with `layout` and no longer used.
            unsafe { self.dealloc(ptr, layout) };
        }
        new
    }
}

// SAFETY: every unsampled request is forwarded to `A`'s method of the same contract with the
// caller's layout; a sampled block is `layout.size()` bytes at `layout.align()` inside a slot
// or extent of heaprof's own reservations (`sampled_block::place`), which `A` never hands out, so a
// pointer in them is known to be ours, and every other pointer goes back to `A`.
unsafe impl<A: GlobalAlloc> GlobalAlloc for ProfilingAllocator<A> {
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if fast_countdown(layout.size()) {
            // SAFETY: forwarded unchanged.
            return unsafe { self.inner.alloc(layout) };
        }
        // SAFETY: forwarded unchanged.
        unsafe { self.alloc_slow(layout, false) }
    }

    #[inline(always)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if fast_countdown(layout.size()) {
            // SAFETY: forwarded unchanged.
            return unsafe { self.inner.alloc_zeroed(layout) };
        }
        // SAFETY: forwarded unchanged.
        unsafe { self.alloc_slow(layout, true) }
    }

    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // The common case in one test on a register: a pointer whose address is not 0 or
        // 32 mod 2048 is not a sampled block. (1 in 64 of glibc's 16-aligned blocks pass;
        // `dealloc_slow` then checks the address against heaprof's reservations, and reads
        // nothing of a block that is not in them.)
        if block_offset::may_be_sampled(ptr) {
            // SAFETY: forwarded under the caller's contract.
            return unsafe { self.dealloc_slow(ptr, layout) };
        }
        // SAFETY: not a sampled block, so it came from `inner` with this layout.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    #[inline(always)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let expired = !fast_countdown(new_size);
        if !expired && !block_offset::may_be_sampled(ptr) {
            // SAFETY: neither block is sampled: forwarded unchanged.
            return unsafe { self.inner.realloc(ptr, layout, new_size) };
        }
        // SAFETY: forwarded under the caller's contract.
        unsafe { self.realloc_slow(ptr, layout, new_size, expired) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countdown_is_exact_and_a_slow_visit_is_undone() {
        // A fresh thread: its countdown is 0 until the first slow-path visit.
        std::thread::spawn(|| {
            let get = || tls::with(|t| t.countdown.get());
            tls::with(|t| t.countdown.set(100));
            assert!(
                fast_countdown(99),
                "99 bytes do not reach a sample 100 bytes away"
            );
            assert_eq!(get(), 1);
            assert!(
                !fast_countdown(1),
                "the allocation that reaches the sample point"
            );
            tls::with(|t| restore_countdown(t, 1));
            assert_eq!(
                get(),
                1,
                "the slow path sees the countdown the fast path saw"
            );
            assert!(!fast_countdown(5000));
            tls::with(|t| restore_countdown(t, 5000));
            assert_eq!(get(), 1);
            // A zero-size request never reaches a pending sample; an exhausted countdown
            // (0: rate 1, or not yet seeded) sends every request to the slow path.
            assert!(fast_countdown(0));
            tls::with(|t| t.countdown.set(0));
            assert!(!fast_countdown(0));
            tls::with(|t| restore_countdown(t, 0));
            assert!(!fast_countdown(8));
            tls::with(|t| restore_countdown(t, 8));
            assert_eq!(get(), 0);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_reused_arena_slot_is_zeroed_for_alloc_zeroed() {
        // In a child: the rate is process-wide, and the child's arena is its own.
        let code =
            crate::base::fork::test_support::in_child(std::time::Duration::from_secs(30), || {
                config::set_sample_rate(1);
                let a = ProfilingAllocator::system();
                let l = Layout::from_size_align(3000, 8).unwrap();
                // SAFETY: valid layouts; each block is freed with its own below.
                unsafe {
                    // Spends any countdown this thread drew at another rate.
                    let big = Layout::from_size_align(1 << 20, 8).unwrap();
                    a.dealloc(a.alloc(big), big);
                    let p = a.alloc(l);
                    assert!(
                        crate::alloc::arena::contains(p),
                        "sampled at rate 1, so an arena slot"
                    );
                    p.write_bytes(0xab, l.size());
                    a.dealloc(p, l);
                    let z = a.alloc_zeroed(l);
                    assert_eq!(z, p, "the slot just freed comes back");
                    assert!(core::slice::from_raw_parts(z, l.size())
                        .iter()
                        .all(|&b| b == 0));
                    a.dealloc(z, l);
                }
                0
            });
        assert_eq!(
            code,
            Some(0),
            "the child failed (101: a panic; None: a hang)"
        );
    }

    #[test]
    fn every_sampled_address_passes_the_pointer_test() {
        for align in [1usize, 8, 16, 64, 2048, 4096, 65536] {
            for k in 0..4usize {
                let p =
                    (0x7f00_0000_0000usize + k * 0x1_0000 + block_offset::offset(align)) as *mut u8;
                assert!(block_offset::may_be_sampled(p), "align {align}");
            }
        }
        let misses = (0..4096usize)
            .step_by(16)
            .filter(|&o| block_offset::may_be_sampled((0x5555_0000_0000usize + o) as *mut u8))
            .count();
        assert_eq!(misses, 4, "one in 64 16-aligned pointers passes");
    }
}
