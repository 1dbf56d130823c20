//! [`ProfilingAllocator`]: the `GlobalAlloc` wrapper. The fast path is a thread-local byte
//! countdown; the slow path samples.
//!
//! # Contract
//! - Unsampled `alloc`: one read-modify-write of a thread-local word (`sub` to memory) and a
//!   branch on its flags, then the inner call.
//! - Unsampled `dealloc`: one test of the pointer's low bits in a register (see `live`), then
//!   the inner call; about 1 in 64 glibc frees go out of line to test the layout and the
//!   arena's range too, and, only while a tagged sampled block lives in the inner
//!   allocator, 1 in 128 also read 32 bytes from the same page.
//! - Sampled path: capture the stack (before any shared state is touched), intern it,
//!   allocate a tagged block (an arena slot, or a padded inner block), count it. Lock-free,
//!   never allocates through the global allocator; allocations the unwinder makes on first
//!   use go to the inner allocator under the thread's reentrancy guard.
//! - Nothing here panics or aborts: a failure (tables refused by the OS, tables full,
//!   inner allocator out of memory) degrades to "not sampled" or to an overflow counter.

use core::alloc::{GlobalAlloc, Layout};
use std::alloc::System;

use crate::sampler::{self, Weight};
use crate::tls::{self, ThreadState};
use crate::{arena, config, live, peak, tables, unwind};

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
    /// Every unsampled request goes to `inner` unchanged. Sampled blocks of alignment ≤ 32
    /// and up to 80 KiB (about one per 512 KiB allocated at the default rate) live in
    /// heaprof's own arena of mapped memory instead, so an `inner` that counts or limits
    /// memory does not see those; larger or more aligned sampled blocks come from `inner`
    /// with a little padding.
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
        let (Some(t), Some(inner_layout)) = (tables::get(), live::inner_layout(layout)) else {
            // SAFETY: forwarded with the caller's valid layout.
            return unsafe { self.inner_alloc(layout, zeroed) };
        };
        // No id only if the walk itself failed (a caught panic): an empty stack, as before.
        let stack = stack.unwrap_or_else(|| t.stacks.intern(&[]));
        let over = layout.align() >= live::TAG_PAGE;
        if over && !live::reserve_overaligned() {
            // SAFETY: as above.
            return unsafe { self.inner_alloc(layout, zeroed) };
        }
        // SAFETY: the caller's layout; `inner_layout` is its padded form.
        let base = unsafe { self.sampled_block(layout, inner_layout, zeroed) };
        if base.is_null() {
            if over {
                live::unreserve_overaligned();
            }
            return base; // out of memory: record nothing
        }
        let labels = tls::with(|s| s.labels.get());
        let bucket = t.buckets.find(stack, labels, layout.size() as u64);
        t.buckets.record_alloc(bucket, layout.size() as u64, w);
        peak::on_alloc(&t.buckets, t.peak, w.bytes);
        // SAFETY: `base` is a fresh inner block of `inner_layout`; the reservation for an
        // over-aligned layout was made above.
        unsafe { live::tag(base, layout, bucket, w) }
    }

    /// Memory for a sampled block of `layout`: an arena slot for alignments up to 32 (see
    /// `arena`), else, or when the arena has none, an inner block of `inner_layout`. Null
    /// when out of memory.
    ///
    /// # Safety
    /// `layout` as for `GlobalAlloc::alloc`; `inner_layout` = `live::inner_layout(layout)`.
    unsafe fn sampled_block(&self, layout: Layout, inner_layout: Layout, zeroed: bool) -> *mut u8 {
        if layout.align() <= live::TAG_SMALL {
            if let Some((start, fresh)) = arena::alloc(layout.size()) {
                if zeroed && !fresh {
                    // SAFETY: the slot holds TAG_SMALL + size bytes and is ours until freed.
                    unsafe { start.add(live::TAG_SMALL).write_bytes(0, layout.size()) };
                }
                return start;
            }
        }
        // SAFETY: `inner_layout` has non-zero size (it adds the tag offset).
        unsafe { self.inner_alloc(inner_layout, zeroed) }
    }

    /// If `ptr` is a sampled block, counts its free, releases it and returns true.
    ///
    /// # Safety
    /// `ptr`/`layout` as for `GlobalAlloc::dealloc`.
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_sampled(&self, ptr: *mut u8, layout: Layout) -> bool {
        // SAFETY: the caller's contract: `ptr` is live and was allocated with `layout`.
        let Some((h, base)) = (unsafe { live::lookup(ptr, layout, true) }) else {
            return false;
        };
        let w = Weight {
            objects_fp: h.objects_fp,
            bytes: h.bytes_w,
        };
        if let Some(t) = tables::get_if_created() {
            t.buckets.record_free(h.bucket, layout.size() as u64, w);
            peak::on_free(w.bytes);
        }
        if arena::contains(base) {
            // SAFETY: `base` is the slot `sampled_block` took for this size; its owner is
            // freeing it.
            unsafe { arena::free(base, layout.size()) };
            return true;
        }
        // `inner_layout` succeeded for this layout when the block was allocated, so it does
        // again; were it ever not to, leaking the block beats aborting inside `dealloc`.
        if let Some(inner_layout) = live::inner_layout(layout) {
            // SAFETY: `base` is the inner block `tag` was given, allocated with `inner_layout`.
            unsafe { self.inner.dealloc(base, inner_layout) };
        }
        true
    }

    /// `dealloc` of a block that may be sampled (at the tag offset, or over-aligned).
    ///
    /// # Safety
    /// As for `GlobalAlloc::dealloc`.
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_slow(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded under the caller's contract.
        if Self::needs_lookup(ptr, layout) && unsafe { self.dealloc_sampled(ptr, layout) } {
            return;
        }
        // SAFETY: not a sampled block, so it came from `inner` with this layout.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    /// Whether `dealloc` must look closer at `ptr`.
    #[inline(always)]
    fn needs_lookup(ptr: *mut u8, layout: Layout) -> bool {
        live::may_be_tagged(ptr, layout.align())
            || (layout.align() >= live::TAG_PAGE && live::overaligned_live())
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
        // SAFETY: ptr/layout per the caller's contract.
        let old_sampled = Self::needs_lookup(ptr, layout)
            && unsafe { live::lookup(ptr, layout, false) }.is_some();
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

// SAFETY: every method forwards to `A`'s method of the same contract, either with the
// caller's layout or, for sampled blocks, with `live::inner_layout(layout)` whose block
// contains [base + offset, base + offset + size) at the requested alignment; each sampled
// block is freed with the same inner layout it was allocated with (recomputed from the
// same `layout` the caller passes to dealloc).
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
        // 32 mod 2048 is neither at a tag offset nor aligned to 4096 or more, so it is not
        // a sampled block. (1 in 64 of glibc's 16-aligned blocks pass; `dealloc_slow` then
        // tests the offset for the layout's alignment, and `live::lookup` the arena's range;
        // a header is read only while tagged sampled blocks live in the inner allocator.)
        if live::may_be_sampled(ptr) {
            // SAFETY: forwarded under the caller's contract.
            return unsafe { self.dealloc_slow(ptr, layout) };
        }
        // SAFETY: not a sampled block, so it came from `inner` with this layout.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    #[inline(always)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let expired = !fast_countdown(new_size);
        if !expired && !live::may_be_sampled(ptr) {
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
        let code = crate::fork::test_support::in_child(std::time::Duration::from_secs(30), || {
            config::set_sample_rate(1);
            let a = ProfilingAllocator::system();
            let l = Layout::from_size_align(3000, 8).unwrap();
            // SAFETY: valid layouts; each block is freed with its own below.
            unsafe {
                // Spends any countdown this thread drew at another rate.
                let big = Layout::from_size_align(1 << 20, 8).unwrap();
                a.dealloc(a.alloc(big), big);
                let p = a.alloc(l);
                assert!(arena::contains(p), "sampled at rate 1, so an arena slot");
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
                let p = (0x7f00_0000_0000usize + k * 0x1_0000 + live::offset(align)) as *mut u8;
                assert!(live::may_be_sampled(p), "align {align}");
            }
        }
        let misses = (0..4096usize)
            .step_by(16)
            .filter(|&o| live::may_be_sampled((0x5555_0000_0000usize + o) as *mut u8))
            .count();
        assert_eq!(misses, 4, "one in 64 16-aligned pointers passes");
    }
}
