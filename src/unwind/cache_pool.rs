//! A fixed global pool of framehop unwind caches, leased without blocking.
//!
//! A [`CacheSet`] of framehop `CacheNative`s (each ~33 KB: a 509-slot rule cache plus gimli scratch) needs
//! exclusive access while unwinding. One cache per thread would leak 33 KB per short-lived
//! thread (TLS with `Drop` is not allowed in the allocator), and a shared lock is not allowed
//! in a signal handler. So: [`POOL_SLOTS`] slots, each an atomic busy flag plus a lazily
//! allocated cache set that is never freed (bounded: `POOL_SLOTS` × `WAYS` × ~33 KB).
//!
//! [`try_lease`] scans the slots once with a compare-and-swap per slot, starting at this
//! thread's preferred slot (the last one it leased, so a thread usually finds its own warm
//! cache). It never waits, so it is async-signal-safe when `may_alloc` is false. A signal that
//! interrupts a leasing thread simply finds that slot busy and takes another.

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use framehop::{CacheNative, MustNotAllocateDuringUnwind};

use super::suffix::SuffixCache;

/// The framehop cache type we use: never allocates while unwinding.
pub(super) type Cache = CacheNative<MustNotAllocateDuringUnwind>;

/// framehop's rule cache is direct-mapped on `address % 509`: two hot addresses that
/// collide (ASLR decides) evict each other on every capture, and each miss re-parses the
/// CFI with gimli (~5k instructions). Measured on an allocation-churn benchmark under
/// callgrind: 10M of 37M added instructions were such re-parses. Spreading frames over
/// [`WAYS`] caches by `(address / 509) % WAYS` separates any two colliding addresses with
/// probability 1 − 1/WAYS, because addresses equal mod 509 differ in `address / 509`.
pub(super) const WAYS: usize = 4;

/// The caches one lease hands out: rule caches picked per frame address, and the lease's
/// suffix cache.
pub(super) struct CacheSet {
    ways: [Cache; WAYS],
    /// The lease's record of its previous walk (`suffix.rs`); boxed on its own (~20 KB) so
    /// it is built on the heap, not on the (possibly small) stack of a first capture.
    pub(super) suffix: Box<SuffixCache>,
}

impl CacheSet {
    /// A fresh set (allocates WAYS framehop caches and a suffix cache).
    pub(super) fn new() -> Box<CacheSet> {
        Box::new(CacheSet {
            ways: core::array::from_fn(|_| Cache::new_in()),
            suffix: SuffixCache::new_boxed(),
        })
    }

    /// The rule cache for frames at `lookup_address`, and the suffix cache beside it.
    #[inline]
    pub(super) fn split(&mut self, lookup_address: u64) -> (&mut Cache, &mut SuffixCache) {
        (
            &mut self.ways[((lookup_address / 509) % WAYS as u64) as usize],
            &mut self.suffix,
        )
    }
}

/// Number of caches in the pool. More threads than this capturing at the same instant fall
/// back (see `capture`): a temporary cache, or a frame-pointer walk in a signal handler.
pub(super) const POOL_SLOTS: usize = 16;

/// One pool entry, on cache lines of its own: threads lease different slots, and slots that
/// shared a line made every lease and return of one thread miss in the other's cache
/// (measured: `try_lease` went from 0.5% to 9% of a two-thread sampling benchmark).
struct Slot {
    /// True while leased. Acquire on lease / Release on return orders accesses to `cache`.
    busy: AtomicBool,
    /// Null until the first leaseholder that may allocate fills it; then fixed forever.
    /// Written and dereferenced only by the current leaseholder.
    cache: AtomicPtr<CacheSet>,
    /// `capture` walks through this slot that reused a cached tail, and steps they unwound
    /// (see `UnwindStats`); written only by the leaseholder, summed by `counters`.
    suffix_hits: AtomicU64,
    steps: AtomicU64,
}

static POOL: [CachePadded<Slot>; POOL_SLOTS] = [const {
    CachePadded::new(Slot {
        busy: AtomicBool::new(false),
        cache: AtomicPtr::new(ptr::null_mut()),
        suffix_hits: AtomicU64::new(0),
        steps: AtomicU64::new(0),
    })
}; POOL_SLOTS];

/// (suffix hits, steps) summed over the pool. Async-signal-safe.
pub(super) fn counters() -> (u64, u64) {
    POOL.iter().fold((0, 0), |(h, s), slot| {
        (
            h + slot.suffix_hits.load(Ordering::Relaxed),
            s + slot.steps.load(Ordering::Relaxed),
        )
    })
}

/// Hands out preferred starting slots round-robin to new threads.
static NEXT_HINT: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// Preferred slot + 1 (0 = not chosen yet). No Drop, const init: see bounds.rs.
    static HINT: Cell<u32> = const { Cell::new(0) };
}

/// Exclusive use of one pooled cache until dropped.
pub(super) struct Lease {
    slot: &'static Slot,
    cache: *mut CacheSet,
}

impl Lease {
    /// Adds one walk's suffix hits and steps to this slot's counters. The leaseholder is
    /// the only writer, so a load and a store suffice (no read-modify-write).
    pub(super) fn count(&self, suffix_hits: u64, steps: u64) {
        let s = &self.slot;
        s.suffix_hits.store(
            s.suffix_hits.load(Ordering::Relaxed) + suffix_hits,
            Ordering::Relaxed,
        );
        s.steps
            .store(s.steps.load(Ordering::Relaxed) + steps, Ordering::Relaxed);
    }

    /// The leased cache.
    pub(super) fn cache(&mut self) -> &mut CacheSet {
        // SAFETY: `cache` is non-null (checked in try_lease), points to a leaked Box that is
        // never freed, and `slot.busy` is held by this Lease, so no one else has a reference.
        // The returned borrow is tied to `&mut self`, so it cannot outlive the lease.
        unsafe { &mut *self.cache }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.slot.busy.store(false, Ordering::Release);
    }
}

/// Lease a free pooled cache, or `None` if every slot is busy (or, with `may_alloc == false`,
/// every free slot is still empty). Never blocks. With `may_alloc == false` it is
/// async-signal-safe; with `may_alloc == true` it may allocate one cache (first use of a slot).
pub(super) fn try_lease(may_alloc: bool) -> Option<Lease> {
    let mut start = HINT.get();
    if start == 0 {
        start = NEXT_HINT.fetch_add(1, Ordering::Relaxed) % POOL_SLOTS as u32 + 1;
        HINT.set(start);
    }
    let start = (start - 1) as usize;
    for i in 0..POOL_SLOTS {
        let idx = (start + i) % POOL_SLOTS;
        let slot = &POOL[idx];
        if slot
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        let mut cache = slot.cache.load(Ordering::Relaxed);
        if cache.is_null() {
            if !may_alloc {
                slot.busy.store(false, Ordering::Release);
                continue;
            }
            crate::fork::ensure_registered();
            cache = Box::into_raw(CacheSet::new());
            slot.cache.store(cache, Ordering::Relaxed);
        }
        HINT.set(idx as u32 + 1);
        return Some(Lease { slot, cache });
    }
    None
}

/// In a forked child, before any other thread exists: every busy slot was leased by a
/// thread of the parent that does not exist here, so it would stay busy forever. Free them;
/// their caches may have been mid-update, so they are dropped (leaked) and refilled on next
/// use rather than trusted.
pub(super) fn after_fork_child() {
    for slot in &POOL {
        if slot.busy.load(Ordering::Relaxed) {
            slot.cache.store(ptr::null_mut(), Ordering::Relaxed);
            slot.busy.store(false, Ordering::Release);
        }
    }
}

/// Allocate the cache of every empty slot that is free now, so signal handlers (which cannot
/// allocate) find filled slots. Not async-signal-safe.
pub(super) fn prefill() {
    let mut held = Vec::with_capacity(POOL_SLOTS);
    while let Some(lease) = try_lease(true) {
        held.push(lease);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_exclusive_and_returned() {
        let mut leases = Vec::new();
        while let Some(l) = try_lease(true) {
            leases.push(l);
            assert!(leases.len() <= POOL_SLOTS);
        }
        // Other tests may hold slots concurrently, so only an upper bound is certain.
        let mut ptrs: Vec<_> = leases.iter().map(|l| l.cache as usize).collect();
        ptrs.sort_unstable();
        ptrs.dedup();
        assert_eq!(ptrs.len(), leases.len(), "two leases share a cache");
        drop(leases);
        assert!(try_lease(false).is_some(), "slots returned and caches kept");
    }

    /// A child forked while other threads hold leases can lease every slot (without the
    /// reset, the held slots would stay busy forever in the child).
    #[test]
    fn child_gets_back_slots_leased_by_vanished_threads() {
        use std::sync::mpsc;
        let (held_tx, held_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let mut leases = Vec::new();
            for _ in 0..3 {
                leases.extend(try_lease(true));
            }
            held_tx.send(leases.len()).unwrap();
            done_rx.recv().unwrap();
        });
        assert!(held_rx.recv().unwrap() > 0);
        let status =
            crate::fork::test_support::in_child(std::time::Duration::from_secs(20), || {
                after_fork_child(); // what the atfork child handler does
                let mut all = Vec::new();
                while let Some(l) = try_lease(true) {
                    all.push(l);
                }
                let busy_left = POOL
                    .iter()
                    .filter(|s| s.busy.load(Ordering::Relaxed))
                    .count();
                if all.len() == POOL_SLOTS && busy_left == POOL_SLOTS {
                    0
                } else {
                    1
                }
            });
        done_tx.send(()).unwrap();
        holder.join().unwrap();
        assert_eq!(status, Some(0));
    }
}
