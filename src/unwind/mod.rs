//! Stack unwinder: return addresses of the current thread, for the allocator's sampled path
//! and the SIGPROF handler.
//!
//! Called by: `alloc/allocator.rs` ([`capture`], with the allocator's reentrancy guard set, so the
//! allocations of first use go to the inner allocator), the CPU profiler's signal handler
//! ([`capture_from_ucontext`]), thread-start hooks ([`thread_init`]) and profiler start
//! ([`global_init`]). Must never: allocate in steady state, wait for a lock another thread can
//! hold, crash on a bad stack, or (from a handler) call anything not async-signal-safe.
//!
//! # Model
//! Code built by plain `cargo build --release` has no frame pointers, so the walk ([`walk`]) uses
//! DWARF CFI: framehop over the in-memory `.eh_frame_hdr`/`.eh_frame` of every module listed by
//! `dl_iterate_phdr` ([`modules`]). Per step framehop looks up the PC's rule in a 509-entry
//! direct-mapped cache and, on a miss, binary-searches `.eh_frame_hdr` and evaluates the FDE, with
//! gimli scratch space on the cache, so no step allocates. The cache needs exclusive use; caches
//! come from a fixed global pool leased without blocking ([`cache_pool`]).
//!
//! Every stack read is bounds-checked against `[sp, stack top)` of the stack the walk is on
//! (this thread's stack, from `pthread_getattr_np` once per thread, or the active
//! `sigaltstack`) — see [`bounds`]. Code bytes are read only inside readable module segments.
//!
//! Starting registers: [`capture`] reads its own `rip`/`rsp`/`rbp` with inline asm and unwinds
//! its own frame first (not recorded), so `frames[0]` is exactly `capture`'s return address.
//! [`capture_from_ucontext`] starts from the ucontext's RIP/RSP/RBP, and treats RIP as an exact
//! PC (no "minus one" for the rule lookup).
//!
//! Signal frames: a return address equal to glibc's `__restore_rt` trampoline (recognised by
//! its code bytes, `mov $15,%rax; syscall`) marks a kernel signal frame. The walk then reads the
//! saved `ucontext_t` on the stack (bounds-checked), records the interrupted RIP (an exact PC,
//! not a return address) and continues from it; the trampoline itself is not recorded.
//!
//! Unknown PCs (not in any module): from [`capture`], the module list is refreshed once per
//! capture (cheap if nothing was `dlopen`ed, see [`modules`]); if still unknown, or from a
//! signal handler, the stack ends at that PC (JIT code is not walked).
//!
//! # Limits
//! - Depth: at most `frames.len()` frames (callers use [`MAX_DEPTH`]). Deeper stacks are
//!   truncated at the root end: the leaf-most frames are kept, the outermost dropped. A return
//!   value equal to `frames.len()` means "possibly truncated".
//! - A stack also ends early at: an unknown PC, a failed or out-of-bounds read, a PC with no
//!   CFI in a module built without frame pointers (framehop falls back to the `rbp` chain).
//! - x86_64 Linux glibc only. Not handled: `dlclose` + address reuse before a refresh (see
//!   [`modules`]); more than `POOL_SLOTS` threads unwinding at the same instant in a signal
//!   handler (those fall back to a validated frame-pointer walk, [`fp`]).
//! - TLS: the thread-locals are `const`-initialised `Cell`s without `Drop`; async-signal-safe
//!   when heaprof is linked into the executable (static TLS), not necessarily in a `dlopen`ed
//!   cdylib (first TLS access there can go through `__tls_get_addr`).

mod bounds;
mod cache_pool;
mod fp;
mod modules;
mod suffix;
mod walk;

use core::sync::atomic::{AtomicU64, Ordering};

use framehop::FrameAddress;

use cache_pool::CacheSet;
use modules::State;
use walk::Walk;

/// Maximum frames captured; deeper stacks are truncated (the outermost frames are dropped,
/// see the module docs).
pub const MAX_DEPTH: usize = 64;

/// Stack the DWARF walk may need below the caller's stack pointer (measured: ~16 KB in a
/// release build, ~55 KB in a debug build, mostly gimli's on-stack CFI rows). With less left
/// (a small `sigaltstack`: std's is ~8 KB), the frame-pointer fallback is used instead.
const DWARF_STACK_NEEDED: usize = if cfg!(debug_assertions) {
    96 << 10
} else {
    32 << 10
};

/// Counters for the rare paths, shown by the profile writer. Written with relaxed atomics on
/// the rare paths only (never per frame or per ordinary capture).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindStats {
    /// Module-list snapshots published so far (1 after init; +1 per observed dlopen/dlclose).
    pub states_published: usize,
    /// Modules (with executable code) in the current module list.
    pub modules: usize,
    /// `capture` found every pooled cache busy and used a temporary (allocated) cache.
    pub pool_exhausted: u64,
    /// Walks done by the frame-pointer fallback (no unwinder yet, or no free cache in a handler).
    pub fp_fallbacks: u64,
    /// Captures that returned at most the leaf because the stack bounds were unknown.
    pub no_stack_bounds: u64,
    /// `capture` walks that reused the previous walk's tail (`suffix.rs`), and the steps
    /// those walks still unwound before the match.
    pub suffix_hits: u64,
    /// Steps unwound by `capture` walks in all (with the above: steps saved by the cache).
    pub steps: u64,
}

static POOL_EXHAUSTED: AtomicU64 = AtomicU64::new(0);
static FP_FALLBACKS: AtomicU64 = AtomicU64::new(0);
static NO_STACK_BOUNDS: AtomicU64 = AtomicU64::new(0);
/// Suffix hits and steps of walks with a temporary cache (the pool was exhausted); pooled
/// walks count in their pool slot (`cache_pool::counters`), so the common case writes no
/// shared line.
static SUFFIX_HITS: AtomicU64 = AtomicU64::new(0);
static STEPS: AtomicU64 = AtomicU64::new(0);

/// Snapshot of the unwinder's rare-path counters. Async-signal-safe.
pub fn stats() -> UnwindStats {
    let (pooled_hits, pooled_steps) = cache_pool::counters();
    UnwindStats {
        states_published: modules::published(),
        modules: modules::current().map_or(0, |s| s.module_count()),
        pool_exhausted: POOL_EXHAUSTED.load(Ordering::Relaxed),
        fp_fallbacks: FP_FALLBACKS.load(Ordering::Relaxed),
        no_stack_bounds: NO_STACK_BOUNDS.load(Ordering::Relaxed),
        suffix_hits: SUFFIX_HITS.load(Ordering::Relaxed) + pooled_hits,
        steps: STEPS.load(Ordering::Relaxed) + pooled_steps,
    }
}

/// Initialise anything per-thread that is not async-signal-safe (the thread's stack bounds
/// via `pthread_getattr_np`). Called at thread start by a thread-creation hook, and lazily by
/// [`capture`]. Idempotent; after the first call it is one thread-local load.
pub fn thread_init() {
    bounds::thread_init();
}

/// Whether the calling thread's stack bounds are known (else [`capture_from_ucontext`]
/// returns only the leaf). Async-signal-safe.
pub fn thread_stack_known() -> bool {
    bounds::known()
}

/// Supply the calling thread's stack range `[lo, hi)` from outside, for threads that never
/// ran [`thread_init`] (the CPU profiler finds it from the interrupted `rsp` and a
/// `/proc/self/maps` snapshot). Ignored (returns false) if bounds are already known.
/// Async-signal-safe. The caller must make sure `[rsp, hi)` is readable for as long as the
/// thread lives.
pub fn adopt_thread_stack(lo: usize, hi: usize) -> bool {
    bounds::adopt(lo, hi)
}

/// In a forked child, before other threads exist: releases what the parent's other threads
/// held (leased caches, the module-list builder flag). In the fork protocol (`lock_order`).
pub fn after_fork_child() {
    cache_pool::after_fork_child();
    modules::after_fork_child();
}

/// Build the global state (module list from `dl_iterate_phdr`) and fill the cache pool, so
/// that [`capture_from_ucontext`] can use the DWARF unwinder. Call once before signal-based
/// profiling starts, not from a handler. Also runs [`thread_init`] for the calling thread.
/// Idempotent. Memory: the module list (a few KB) plus `POOL_SLOTS` caches (~33 KB each).
pub fn global_init() {
    bounds::thread_init();
    modules::get_or_build(true);
    cache_pool::prefill();
}

/// Capture the calling thread's stack as return addresses, leaf first.
///
/// `frames[0]` is the return address into the function that called `capture`, `frames[1]` the
/// return address into that function's caller, and so on. Returns the number of frames written
/// (`<= frames.len()`); see the module docs for truncation.
///
/// Meant to be called from `GlobalAlloc::alloc` with the reentrancy guard set: the first call
/// in the process builds the module list, the first call on a thread reads its stack bounds,
/// and the first use of a pool slot allocates its cache. After that it does not allocate and
/// takes no lock (module-list refresh on an unknown PC aside, which takes the loader lock for
/// one short `dl_iterate_phdr`). Never waits for another thread except while the very first
/// module list is being built (bounded).
///
/// ```ignore
/// let mut frames = [0usize; MAX_DEPTH];
/// let n = capture(&mut frames);
/// let stack = &frames[..n];
/// ```
#[inline(never)]
pub fn capture(frames: &mut [usize]) -> usize {
    capture_from(current_regs(), frames, None).0
}

/// [`capture`], then `intern(frames)`: the id the process's stack table gives the frames
/// (`None` if it has none). The id is kept with the walk in the unwinder's suffix cache, so
/// a capture that repeats the previous walk on its cache from the first step returns the
/// id kept for it without calling `intern` (stack-table ids never change). For the
/// allocator's sampled path, which interns every stack it captures into the one shared
/// table; `intern` runs while the cache is leased and must not capture.
#[inline(never)]
pub fn capture_interned(frames: &mut [usize], intern: Intern<'_>) -> (usize, Option<u32>) {
    capture_from(current_regs(), frames, Some(intern))
}

/// What [`capture_interned`] calls with the frames: the stack table's id for them.
pub type Intern<'a> = &'a mut dyn FnMut(&[usize]) -> Option<u32>;

/// The body of [`capture`] and [`capture_interned`], from their own registers `start`.
#[inline(always)]
fn capture_from(
    start: Regs,
    frames: &mut [usize],
    mut intern: Option<Intern<'_>>,
) -> (usize, Option<u32>) {
    let wants_id = intern.is_some();
    let mut interned = |frames: &[usize]| intern.as_mut().and_then(|f| f(frames));
    if frames.is_empty() {
        return (0, interned(&[]));
    }
    bounds::thread_init();
    let Some((lo, hi)) = bounds::readable_from(start.sp) else {
        NO_STACK_BOUNDS.fetch_add(1, Ordering::Relaxed);
        return (0, interned(&[]));
    };
    let state = match modules::get_or_build(true) {
        Some(s) if bounds::headroom(start.sp).unwrap_or(0) >= DWARF_STACK_NEEDED => s,
        _ => {
            FP_FALLBACKS.fetch_add(1, Ordering::Relaxed);
            let n = fp::walk(start.bp, lo, hi, frames, 0);
            return (n, interned(&frames[..n]));
        }
    };
    let walk = Walk {
        first: FrameAddress::from_instruction_pointer(start.pc as u64),
        regs: start,
        lo,
        hi,
        record_first: false,
        may_refresh: true,
    };
    // framehop is not expected to panic, but a panic must not unwind out of the allocator.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        walk_with_cache(walk, state, frames, wants_id, &mut interned)
    }))
    .unwrap_or((0, None))
}

/// [`capture_from`]'s DWARF walk, on a pooled cache (one retry if all are busy), else on a
/// temporary one; counts the walk's suffix statistics and returns what `interned` (or the
/// suffix cache's memo, [`kept_or_interned`]) gives as the frames' id.
#[inline(always)]
fn walk_with_cache(
    walk: Walk,
    state: &'static State,
    frames: &mut [usize],
    wants_id: bool,
    interned: &mut impl FnMut(&[usize]) -> Option<u32>,
) -> (usize, Option<u32>) {
    let Some(mut lease) = cache_pool::try_lease(true).or_else(|| {
        core::hint::spin_loop();
        cache_pool::try_lease(true)
    }) else {
        POOL_EXHAUSTED.fetch_add(1, Ordering::Relaxed);
        let mut tmp = CacheSet::new();
        let w = walk.run(state, &mut tmp, frames);
        SUFFIX_HITS.fetch_add(w.suffix_hit as u64, Ordering::Relaxed);
        STEPS.fetch_add(w.steps, Ordering::Relaxed);
        return (w.frames, interned(&frames[..w.frames]));
    };
    let w = walk.run(state, lease.cache(), frames);
    lease.count(w.suffix_hit as u64, w.steps);
    let n = w.frames;
    if !wants_id {
        return (n, None);
    }
    let id = kept_or_interned(lease.cache().suffix.memo(), &frames[..n], interned);
    (n, id)
}

/// The stack-table id of `frames`, the walk just done on a leased cache: the one kept in the
/// suffix cache's `memo` for its record, else `interned`'s (kept there for the next walk
/// that repeats this one).
#[inline(always)]
fn kept_or_interned(
    memo: Option<&mut u32>,
    frames: &[usize],
    interned: &mut impl FnMut(&[usize]) -> Option<u32>,
) -> Option<u32> {
    match memo {
        Some(&mut kept) if kept != 0 => Some(kept),
        Some(keep) => {
            let id = interned(frames);
            *keep = id.unwrap_or(0);
            id
        }
        None => interned(frames),
    }
}

/// Async-signal-safe capture from a signal handler's `ucontext_t`.
///
/// `frames[0]` is the interrupted PC exactly (not a return address); the rest are return
/// addresses (or, past a nested signal frame, that frame's interrupted PC). Does not allocate,
/// lock or wait. Uses the DWARF unwinder with any free pooled cache (a signal that interrupted
/// a [`capture`] on this thread finds that thread's slot busy and takes another one); if the
/// unwinder is not built ([`global_init`]), or no filled slot is free, it falls back to the
/// validated frame-pointer walk. If this thread's stack bounds are unknown (no [`thread_init`]
/// on it), only the leaf PC is returned. The DWARF walk needs ~16 KB of stack below the
/// handler's frame (release; ~55 KB in debug builds): on a smaller alternate signal stack
/// (`SA_ONSTACK` with std's default ~8 KB one) the frame-pointer fallback is used.
///
/// # Safety
/// `ucontext` must be null or the third argument of an `SA_SIGINFO` handler running on this
/// thread (a valid `ucontext_t` for the interrupted context of this thread).
pub unsafe fn capture_from_ucontext(ucontext: *const libc::c_void, frames: &mut [usize]) -> usize {
    if frames.is_empty() || ucontext.is_null() {
        return 0;
    }
    // SAFETY: the caller guarantees a valid ucontext_t for this thread's interrupted context.
    let gregs = unsafe { &(*(ucontext as *const libc::ucontext_t)).uc_mcontext.gregs };
    let regs = Regs {
        pc: gregs[libc::REG_RIP as usize] as usize,
        sp: gregs[libc::REG_RSP as usize] as usize,
        bp: gregs[libc::REG_RBP as usize] as usize,
    };
    frames[0] = regs.pc;
    let Some((lo, hi)) = bounds::readable_from(regs.sp) else {
        NO_STACK_BOUNDS.fetch_add(1, Ordering::Relaxed);
        return 1;
    };
    let here = current_regs().sp;
    let room = bounds::headroom(here).unwrap_or(0) >= DWARF_STACK_NEEDED;
    match (
        modules::current(),
        room.then(|| cache_pool::try_lease(false)).flatten(),
    ) {
        (Some(state), Some(mut lease)) => {
            Walk {
                first: FrameAddress::from_instruction_pointer(regs.pc as u64),
                regs,
                lo,
                hi,
                record_first: true,
                may_refresh: false,
            }
            .run(state, lease.cache(), frames)
            .frames
        }
        _ => {
            FP_FALLBACKS.fetch_add(1, Ordering::Relaxed);
            fp::walk(regs.bp, lo, hi, frames, 1)
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Regs {
    pc: usize,
    sp: usize,
    bp: usize,
}

/// This instruction's address and the current `rsp`/`rbp`. Inlined into [`capture`], so the
/// PC and SP describe `capture`'s own frame consistently (both read by one asm block, where
/// the compiler emits no stack adjustment and no CFI change).
#[inline(always)]
fn current_regs() -> Regs {
    let (pc, sp, bp): (usize, usize, usize);
    // SAFETY: reads three registers into outputs; touches no memory, stack or flags.
    unsafe {
        core::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags),
        );
    }
    Regs { pc, sp, bp }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hint::black_box;

    /// A recursive chain of `depth` frames of `chain`, then `leaf` runs.
    #[inline(never)]
    fn chain(depth: usize, leaf: &mut dyn FnMut()) -> usize {
        if depth == 0 {
            leaf();
            return 0;
        }
        // The work after the call keeps it from being a tail call.
        black_box(chain(black_box(depth - 1), leaf)) + 1
    }

    /// Capture with both unwinders from one leaf function; returns (ours, backtrace's).
    #[inline(never)]
    fn both(out: &mut (Vec<usize>, Vec<usize>)) {
        let mut frames = [0usize; 256];
        let n = capture(&mut frames);
        let mut bt = Vec::new();
        let _sym = crate::pprof::symbolize::sym_lock(); // no fork while backtrace's lock is held
        backtrace::trace(|f| {
            bt.push(f.ip() as usize);
            true
        });
        *out = (frames[..n].to_vec(), bt);
    }

    /// `ours[1..]` must equal the backtrace frames after `both`'s own frame, and `ours[0]`
    /// must be a return address inside `both` (backtrace saw a different call site there).
    fn check_against_backtrace(depth: usize) {
        let mut out = (Vec::new(), Vec::new());
        chain(depth, &mut || both(&mut out));
        let (ours, bt) = out;
        assert!(
            ours.len() > depth + 2,
            "too short: {} for depth {depth}",
            ours.len()
        );
        let j = bt
            .iter()
            .position(|&a| a == ours[1])
            .expect("ours[1] not in backtrace");
        let common = (bt.len() - j).min(ours.len() - 1);
        assert_eq!(&ours[1..1 + common], &bt[j..j + common], "stacks differ");
        // backtrace may stop a frame earlier or later at the root; allow one frame of slack.
        assert!(
            (bt.len() - j).abs_diff(ours.len() - 1) <= 1,
            "ours {} bt {}",
            ours.len() - 1,
            bt.len() - j
        );
        // ours[0] and bt[j-1] are both return addresses into `both`.
        assert!(
            ours[0].abs_diff(bt[j - 1]) < 512,
            "{:#x} vs {:#x}",
            ours[0],
            bt[j - 1]
        );
        // ours[1]: closure, ours[2]: chain(0) calling leaf, ours[3]: a recursive call site.
        let chain_ra = ours[3];
        assert!(ours.iter().filter(|&&a| a == chain_ra).count() >= depth);
    }

    /// Captures with `capture_interned` from one call site; the fake table numbers stacks
    /// by first sight and counts its lookups.
    #[inline(never)]
    fn interned_here(table: &mut Vec<Vec<usize>>, lookups: &mut usize) -> (Vec<usize>, u32) {
        let mut frames = [0usize; MAX_DEPTH];
        let (n, id) = capture_interned(&mut frames, &mut |f| {
            *lookups += 1;
            let i = table.iter().position(|s| s == f).unwrap_or_else(|| {
                table.push(f.to_vec());
                table.len() - 1
            });
            Some(i as u32 + 1)
        });
        (frames[..n].to_vec(), id.unwrap())
    }

    #[test]
    fn a_repeated_stack_keeps_its_id_without_a_lookup() {
        // A thread of its own, so no other capture uses its pool slot in between.
        std::thread::spawn(|| {
            let (mut table, mut lookups) = (Vec::new(), 0);
            let mut runs = Vec::new();
            // A slice of unknown length, so a release build does not unroll the loop into six
            // call sites (six different stacks).
            for &depth in std::hint::black_box(&[3, 3, 3, 5, 5, 3][..]) {
                chain(depth, &mut || {
                    runs.push(interned_here(&mut table, &mut lookups))
                });
            }
            for (frames, id) in &runs {
                assert_eq!(
                    &table[*id as usize - 1],
                    frames,
                    "every id names its own frames"
                );
            }
            let ids: Vec<u32> = runs.iter().map(|r| r.1).collect();
            assert_eq!((ids[0], ids[1], ids[2]), (ids[0], ids[0], ids[0]));
            assert_eq!(ids[3], ids[4]);
            assert_ne!(ids[0], ids[3]);
            assert_eq!(ids[5], ids[0]);
            // Looked up: the first of each run of equal stacks (3, 5, 3 again); the repeats
            // came from the suffix cache's memo.
            assert_eq!(lookups, 3, "{ids:?}");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn matches_backtrace_depth_10() {
        check_against_backtrace(10);
    }

    #[test]
    fn matches_backtrace_depth_40() {
        check_against_backtrace(40);
    }

    #[test]
    fn truncates_to_buffer_and_handles_empty() {
        let mut small = [0usize; 5];
        let n = chain(20, &mut || {
            black_box(capture(&mut small));
        });
        black_box(n);
        assert!(small.iter().all(|&a| a != 0));
        assert_eq!(capture(&mut []), 0);
        let mut one = [0usize; MAX_DEPTH];
        let n = capture(&mut one);
        assert!(n > 2 && n <= MAX_DEPTH);
    }

    #[test]
    fn fp_walk_stays_in_bounds() {
        let mut frames = [0usize; 8];
        let word = [0usize; 4];
        let lo = word.as_ptr() as usize;
        // bp outside, misaligned, or rising past hi: nothing read.
        assert_eq!(fp::walk(lo - 8, lo, lo + 32, &mut frames, 0), 0);
        assert_eq!(fp::walk(lo + 1, lo, lo + 32, &mut frames, 0), 0);
        assert_eq!(fp::walk(lo + 24, lo, lo + 32, &mut frames, 0), 0);
        // A zero return address ends the walk.
        assert_eq!(fp::walk(lo, lo, lo + 32, &mut frames, 0), 0);
    }
}
