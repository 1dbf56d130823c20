//! The sampled-block arena: address space reserved once, from which sampled blocks of
//! alignment ≤ 2048 and up to [`MAX_BLOCK`] bytes (a little less for alignments 64 to 2048)
//! are carved. Larger or more aligned sampled blocks live in the large-block region
//! (`large_region`); no sampled block ever enters the inner allocator's heap, so `dealloc`
//! knows them by address (see `sampled_block`).
//!
//! # Why slots
//! A sampled block carries a 32-byte header just below it and must sit at an address that
//! passes `dealloc`'s one-instruction filter (see `sampled_block`). A slot starts at a multiple of
//! [`UNIT`] (2048) from a page-aligned base, so the header fills the slot's first 32 bytes
//! and the user's pointer right after it passes with no padding at all (alignments 64 to
//! 2048 start one unit in); freed slots are reused by the next sample of their class, on
//! pages that stay mapped. (Sampled blocks padded inside glibc's heap, as before this
//! arena, went through its bins at sizes the program never asks for and, on a heap that
//! grows and shrinks, landed on freshly faulted pages: about 1 sample in 10 on a two-thread
//! churn benchmark.)
//!
//! # Layout and cost
//! [`RESERVE_BYTES`] (1 GiB) of address space are reserved `PROT_NONE` when the tables are
//! created and made writable in [`COMMIT_STEP`] (2 MiB) steps as slots are first handed
//! out, so commit charge and resident memory follow use. A block takes its offset (32, or
//! 2048 for alignments 64 to 2048) plus its size, rounded up to a class of 1–8 units, then
//! four classes per doubling up to 40 units (at most 25% over; pages the program never
//! touches stay non-resident). Freed slots go on their class's free list and are never
//! returned to the OS: the arena keeps the peak of the sampled blocks' slots. At the
//! default rate a block of `s` bytes is sampled with odds about `s / 512 KiB`, so that peak
//! is about 12% of a peak heap made of 64 KiB blocks, 1.6% for 4 KiB blocks (two pages of a
//! 6 KiB slot) and under 0.5% for 1 KiB ones. When the arena is full, refused by the OS or
//! busy growing, a sample goes to the large-block region instead. A side table of one
//! `u32` per unit (2 MiB) links the free lists.
//!
//! # Free lists
//! One lock-free LIFO per class: a head word holding a generation (high 32 bits) and the
//! top slot's unit index + 1 (low 32; 0 = empty), links in the side table. Every successful
//! push or pop bumps the generation, so a pop whose head changed under it (even back to
//! the same slot) fails its compare-exchange and retries: no ABA. The memory is never
//! unmapped, so reading a link of a slot another thread just took is harmless (the CAS
//! then fails). Push publishes with release and pop takes with acquire, so a slot's
//! previous owner's writes happen before its next owner's.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};

use crate::base::atomics::{Atomic, Family, Ordering, Std};

use crate::alloc::block_offset::{SMALL_PERIOD, TAG_SMALL};

/// Slot granularity; slots start at multiples of it from the page-aligned base, so the
/// user's pointer [`TAG_SMALL`] bytes in is `TAG_SMALL` modulo `SMALL_PERIOD`.
pub const UNIT: usize = SMALL_PERIOD;
/// Address space reserved for the arena.
pub const RESERVE_BYTES: usize = 1 << 30;
/// How much more of the reservation is made writable at a time.
pub const COMMIT_STEP: usize = 2 << 20;
/// Units in the largest class.
const MAX_UNITS: usize = 40;
/// The most bytes a slot holds (a block, its offset and header included).
pub const MAX_NEED: usize = MAX_UNITS * UNIT;
/// The largest block of alignment ≤ 32 the arena takes.
pub const MAX_BLOCK: usize = MAX_NEED - TAG_SMALL;
/// Number of size classes: 1–8 units, then 10, 12, … four per doubling up to 40.
const CLASSES: usize = 17;
const UNITS_TOTAL: usize = RESERVE_BYTES / UNIT;

/// Units in class `c`.
const fn class_units(c: usize) -> usize {
    if c < 8 {
        c + 1
    } else {
        let k = c / 4 + 1; // classes 8..12 lie in (8, 16], 12..16 in (16, 32], …
        let step = 1 << (k - 2);
        (1 << k) + (c % 4 + 1) * step
    }
}

/// The smallest class of at least `units` units (≥ 1), if any.
fn class_of(units: usize) -> Option<usize> {
    let c = if units <= 8 {
        units.checked_sub(1)?
    } else {
        let k = (usize::BITS - 1 - (units - 1).leading_zeros()) as usize; // units ∈ (2^k, 2^(k+1)]
        let step = 1 << (k - 2);
        (k - 1) * 4 + (units - (1 << k)).div_ceil(step) - 1
    };
    (c < CLASSES).then_some(c)
}

/// The class of a slot of at least `need` bytes (≥ 1).
fn class_of_need(need: usize) -> Option<usize> {
    if need > MAX_NEED {
        return None;
    }
    class_of(need.div_ceil(UNIT))
}

#[repr(align(64))]
struct Head(AtomicU64);

static HEADS: [Head; CLASSES] = [const { Head(AtomicU64::new(0)) }; CLASSES];
static BASE: AtomicUsize = AtomicUsize::new(0);
/// Bytes reserved at `BASE`; 0 until the reservation succeeded.
static LEN: AtomicUsize = AtomicUsize::new(0);
static LINKS: AtomicUsize = AtomicUsize::new(0);
/// Bytes from `BASE` handed out to slots so far.
static CURSOR: AtomicUsize = AtomicUsize::new(0);
/// Bytes from `BASE` that are writable.
static COMMITTED: AtomicUsize = AtomicUsize::new(0);
static GROWING: AtomicBool = AtomicBool::new(false);

/// Reserves the arena; called once when the tables are created. If the OS refuses, the
/// arena stays empty and every sample uses the inner allocator.
pub fn init() {
    let links = crate::base::sys::map_zeroed(UNITS_TOTAL * core::mem::size_of::<AtomicU32>());
    let base = crate::base::sys::reserve(RESERVE_BYTES);
    if links.is_null() || base.is_null() {
        return;
    }
    LINKS.store(links as usize, Ordering::Relaxed);
    BASE.store(base as usize, Ordering::Relaxed);
    LEN.store(RESERVE_BYTES, Ordering::Release);
}

/// Whether `p` lies in the arena.
#[inline]
pub fn contains(p: *const u8) -> bool {
    // LEN first, with acquire: non-zero means BASE (stored before it) is visible too, so a
    // thread that never synchronised with `init` cannot pair a length with a stale base.
    let len = LEN.load(Ordering::Acquire);
    (p as usize).wrapping_sub(BASE.load(Ordering::Relaxed)) < len
}

/// Bytes of the arena made writable so far.
pub fn committed() -> usize {
    COMMITTED.load(Ordering::Relaxed)
}

fn link(unit: usize) -> &'static AtomicU32 {
    let links = LINKS.load(Ordering::Relaxed) as *const AtomicU32;
    // SAFETY: `unit` < UNITS_TOTAL (it indexes a slot inside the reservation), and `links`
    // is a live, never-unmapped, zero-initialised mapping of UNITS_TOTAL atomics (`init`
    // stored it before LEN, which every caller's slot came through).
    unsafe { &*links.add(unit) }
}

fn pop(class: usize) -> Option<usize> {
    pop_from::<Std>(&HEADS[class].0, link)
}

fn push(class: usize, unit: usize) {
    push_to::<Std>(&HEADS[class].0, link, unit)
}

/// Pops the top slot of the free list at `head`, whose links `link` gives (see "Free
/// lists" above; atomics of `F`: see `atomics`).
#[inline(always)]
fn pop_from<'a, F: Family>(head: &F::U64, link: impl Fn(usize) -> &'a F::U32) -> Option<usize> {
    let mut h = head.load(Ordering::Acquire);
    loop {
        let top = h as u32;
        if top == 0 {
            return None;
        }
        let next = link(top as usize - 1).load(Ordering::Relaxed);
        let new = ((h >> 32).wrapping_add(1) << 32) | next as u64;
        match head.compare_exchange_weak(h, new, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => return Some(top as usize - 1),
            Err(cur) => h = cur,
        }
    }
}

/// Pushes slot `unit` on the free list at `head`, whose links `link` gives.
#[inline(always)]
fn push_to<'a, F: Family>(head: &F::U64, link: impl Fn(usize) -> &'a F::U32, unit: usize) {
    let mut h = head.load(Ordering::Relaxed);
    loop {
        link(unit).store(h as u32, Ordering::Relaxed);
        let new = ((h >> 32).wrapping_add(1) << 32) | (unit as u64 + 1);
        match head.compare_exchange_weak(h, new, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(cur) => h = cur,
        }
    }
}

/// Makes the reservation writable up to at least `end`; false if another thread is doing
/// so right now (the caller does not wait) or the OS refused.
fn grow(end: usize) -> bool {
    if GROWING.swap(true, Ordering::Acquire) {
        return false;
    }
    let committed = COMMITTED.load(Ordering::Relaxed);
    let target = end
        .next_multiple_of(COMMIT_STEP)
        .min(LEN.load(Ordering::Relaxed));
    // SAFETY: [base + committed, base + target) is page-aligned (both are multiples of
    // COMMIT_STEP, or target is the reservation's end) and inside the reservation.
    let ok = committed >= end
        || unsafe {
            crate::base::sys::commit(
                (BASE.load(Ordering::Relaxed) + committed) as *mut u8,
                target - committed,
            )
        };
    if ok && target > committed {
        COMMITTED.store(target, Ordering::Release);
    }
    GROWING.store(false, Ordering::Release);
    ok
}

/// A never-used slot of `units` units, as a unit index.
fn bump(units: usize) -> Option<usize> {
    let bytes = units * UNIT;
    let len = LEN.load(Ordering::Acquire);
    let mut cur = CURSOR.load(Ordering::Relaxed);
    loop {
        let end = cur + bytes;
        if end > len {
            return None;
        }
        if end > COMMITTED.load(Ordering::Acquire) {
            if !grow(end) {
                return None;
            }
            continue;
        }
        match CURSOR.compare_exchange_weak(cur, end, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Some(cur / UNIT),
            Err(c) => cur = c,
        }
    }
}

/// A slot of at least `need` bytes (a sampled block, its offset and header: see
/// [`block_offset::offset`](crate::alloc::block_offset::offset)): its start and whether it is fresh (all zero).
/// `None` when `need` is too large or the arena cannot supply one.
#[inline]
pub fn alloc(need: usize) -> Option<(*mut u8, bool)> {
    let class = class_of_need(need)?;
    if LEN.load(Ordering::Acquire) == 0 {
        return None;
    }
    let (unit, fresh) = match pop(class) {
        Some(u) => (u, false),
        None => (bump(class_units(class))?, true),
    };
    Some((
        (BASE.load(Ordering::Relaxed) + unit * UNIT) as *mut u8,
        fresh,
    ))
}

/// Returns the slot at `start`, taken for `need` bytes, to its class.
///
/// # Safety
/// `start` must be a slot [`alloc`]`(need)` returned, not freed since, that no one uses.
pub unsafe fn free(start: *mut u8, need: usize) {
    let Some(class) = class_of_need(need) else {
        return; // unreachable: `alloc` gave this slot for this need
    };
    push(
        class,
        (start as usize - BASE.load(Ordering::Relaxed)) / UNIT,
    );
}

/// In a forked child: a grow interrupted by the fork on another thread never finishes.
pub fn after_fork_child() {
    GROWING.store(false, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Runs `f` in a forked child with the arena reserved; the parent's arena is untouched.
    fn in_child(f: impl FnOnce()) {
        crate::base::fork::test_support::with_tables_in_child(|| {
            assert_ne!(LEN.load(Ordering::Relaxed), 0, "the arena was reserved");
            f();
        });
    }

    #[test]
    fn child_forked_while_another_thread_grows_can_grow() {
        in_child(|| {
            crate::base::fork::ensure_registered();
            // As a thread inside `grow` leaves it when the process forks.
            GROWING.store(true, Ordering::Release);
            let code = crate::base::fork::test_support::in_child(Duration::from_secs(20), || {
                let end = COMMITTED.load(Ordering::Relaxed) + COMMIT_STEP;
                if grow(end) && COMMITTED.load(Ordering::Relaxed) >= end {
                    0
                } else {
                    1
                }
            });
            assert_eq!(code, Some(0), "the child could not grow the arena");
            GROWING.store(false, Ordering::Release);
        });
    }

    #[test]
    fn slots_are_tagged_fresh_zero_and_reused_last_in_first_out() {
        in_child(|| {
            let (a, fresh) = alloc(3032).unwrap();
            assert!(fresh && contains(a));
            let p = a.wrapping_add(TAG_SMALL);
            assert!(crate::alloc::block_offset::may_be_sampled(p));
            // SAFETY: the slot is ours: 32 + 3000 bytes, fresh, hence zero and writable.
            unsafe {
                assert!(core::slice::from_raw_parts(a, 3032).iter().all(|&b| b == 0));
                a.write_bytes(0xab, 3032);
            }
            let (b, _) = alloc(3032).unwrap();
            assert_ne!(a, b);
            // SAFETY: `a` and `b` came from `alloc(3032)` and are not used any more.
            unsafe { free(a, 3032) };
            unsafe { free(b, 3032) };
            // Same class (2 units), so the last freed comes back first, not zeroed.
            assert_eq!(alloc(4000), Some((b, false)));
            assert_eq!(alloc(2100 + TAG_SMALL), Some((a, false)));
            // Another class has its own list.
            let (c, fresh) = alloc(132).unwrap();
            assert!(fresh && c != a && c != b);
            assert!(alloc(MAX_NEED).is_some());
            assert_eq!(alloc(MAX_NEED + 1), None);
            assert!(!contains(core::ptr::null_mut()));
            assert!(!contains(
                (BASE.load(Ordering::Relaxed) + RESERVE_BYTES) as *mut u8
            ));
        });
    }

    #[test]
    fn a_full_arena_says_so_and_takes_freed_slots_again() {
        in_child(|| {
            let mut n = 0;
            let mut last = None;
            while let Some((s, _)) = alloc(MAX_NEED) {
                n += 1;
                last = Some(s);
            }
            assert_eq!(n, RESERVE_BYTES / (MAX_UNITS * UNIT));
            assert_eq!(committed(), RESERVE_BYTES);
            let rest = RESERVE_BYTES - n * MAX_UNITS * UNIT;
            let mut small = 0;
            while alloc(1).is_some() {
                small += 1;
            }
            assert_eq!(small * UNIT, rest, "the remainder, in one-unit slots");
            // SAFETY: `last` is a slot of this size, not used.
            unsafe { free(last.unwrap(), MAX_NEED) };
            assert_eq!(alloc(MAX_NEED - 1), Some((last.unwrap(), false)));
        });
    }

    #[test]
    fn threads_never_share_a_slot() {
        in_child(|| {
            let threads: Vec<_> = (0..4u8)
                .map(|t| {
                    std::thread::spawn(move || {
                        let mut rng = crate::base::sampler::thread_seed(99, t as u64) | 1;
                        let mut held: Vec<(usize, usize)> = Vec::new();
                        let mut refused = 0u32;
                        for i in 0..20_000u32 {
                            rng ^= rng << 13;
                            rng ^= rng >> 7;
                            rng ^= rng << 17;
                            if held.len() > 64 || (rng & 1 == 0 && !held.is_empty()) {
                                let (s, size) = held.swap_remove((rng >> 8) as usize % held.len());
                                // SAFETY: each slot was filled with this thread's mark.
                                let ok = unsafe {
                                    core::slice::from_raw_parts(s as *const u8, size + TAG_SMALL)
                                        .iter()
                                        .all(|&b| b == t + 1)
                                };
                                if !ok {
                                    // The child's captured output is lost: say it directly.
                                    crate::base::sys::write_stderr(&[
                                        b"arena test: a slot was written by another thread\n",
                                    ]);
                                    panic!("slot {s:#x} was written by another thread");
                                }
                                // SAFETY: ours, no longer used.
                                unsafe { free(s as *mut u8, size + TAG_SMALL) };
                            } else {
                                let size = (rng >> 16) as usize
                                    % (if i % 8 == 0 { MAX_BLOCK } else { 6000 });
                                // None only while another thread is making more of the
                                // arena writable (`grow` does not wait): a sample would go
                                // to the inner allocator then.
                                let Some((s, _)) = alloc(size + TAG_SMALL) else {
                                    refused += 1;
                                    continue;
                                };
                                // SAFETY: a slot of 32 + size bytes, ours until freed.
                                unsafe { s.write_bytes(t + 1, size + TAG_SMALL) };
                                held.push((s as usize, size));
                            }
                        }
                        refused
                    })
                })
                .collect();
            // Refusals happen only while another thread grows the arena; how many depends on
            // the scheduler (a grower preempted mid-`mprotect` lets the others retry for a
            // whole time slice), so only progress is checked: every thread got slots.
            for t in threads {
                let refused = t.join().unwrap();
                assert!(refused < 19_000, "{refused} of 20 000 allocations refused");
            }
        });
    }

    #[test]
    fn classes_are_the_smallest_that_fit_and_waste_at_most_a_quarter() {
        assert_eq!(class_units(CLASSES - 1), MAX_UNITS);
        assert_eq!(
            (0..CLASSES).map(class_units).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40]
        );
        for units in 1..=MAX_UNITS {
            let c = class_of(units).unwrap();
            assert!(class_units(c) >= units, "{units}");
            assert!(c == 0 || class_units(c - 1) < units, "{units}");
            assert!(class_units(c) * 4 <= units * 5, "{units}");
        }
        assert_eq!(class_of(0), None);
        assert_eq!(class_of(MAX_UNITS + 1), None);
        assert_eq!(class_of_need(1), Some(0));
        assert_eq!(class_of_need(UNIT), Some(0));
        assert_eq!(class_of_need(UNIT + 1), Some(1));
        assert_eq!(class_of_need(MAX_NEED), Some(CLASSES - 1));
        assert_eq!(class_of_need(MAX_NEED + 1), None);
    }
}

/// A model of the free lists' push/pop under loom (`atomics`): one thread takes a slot and
/// gives it back while another takes two and gives them back in the other order, the
/// sequence that turns the first thread's pop into ABA without the generation.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use crate::base::atomics::{self, Loom};
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    const SLOTS: usize = 3;

    /// A free list of [`SLOTS`] slots, each with a cell standing for its memory.
    struct List {
        head: <Loom as Family>::U64,
        links: Vec<<Loom as Family>::U32>,
        memory: Vec<UnsafeCell<usize>>,
    }

    impl List {
        fn pop(&self) -> Option<usize> {
            pop_from::<Loom>(&self.head, |u| &self.links[u])
        }

        fn push(&self, unit: usize) {
            push_to::<Loom>(&self.head, |u| &self.links[u], unit)
        }

        /// Takes a slot and writes its memory as owner `who` would (loom checks that the
        /// previous owner's accesses happen before).
        fn take(&self, who: usize) -> Option<usize> {
            let unit = self.pop()?;
            // SAFETY: a popped slot is this thread's alone until pushed (the protocol under
            // test; loom reports any overlap).
            self.memory[unit].with_mut(|m| unsafe { *m = who });
            Some(unit)
        }
    }

    /// No slot is handed to two owners at once (loom sees the memory accesses race), and
    /// when all is given back every slot is on the list exactly once.
    #[test]
    fn no_slot_twice_and_none_lost() {
        let n = atomics::model("arena free list", atomics::builder(None), || {
            let list = Arc::new(List {
                head: Atomic::new(0),
                links: (0..SLOTS).map(|_| Atomic::new(0)).collect(),
                memory: (0..SLOTS).map(|_| UnsafeCell::new(0)).collect(),
            });
            for unit in (0..SLOTS).rev() {
                list.push(unit);
            }
            let l = list.clone();
            let one = thread::spawn(move || {
                if let Some(a) = l.take(1) {
                    l.push(a);
                }
            });
            let l = list.clone();
            let two = thread::spawn(move || {
                let a = l.take(2);
                let b = l.take(2);
                for unit in [a, b].into_iter().flatten() {
                    l.push(unit);
                }
            });
            one.join().unwrap();
            two.join().unwrap();
            let mut all: Vec<usize> = (0..=SLOTS).map_while(|_| list.pop()).collect();
            all.sort_unstable();
            assert_eq!(all, [0, 1, 2], "free list after the threads");
        });
        assert!(n > 1);
    }
}
