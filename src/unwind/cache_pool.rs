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
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64};

use crate::base::atomics::{Atomic, Family, Ordering, Std};

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
/// Holds a `T` (the pool's: [`CacheSet`]) with atomics of `F` (see `atomics`).
struct Slot<T = CacheSet, F: Family = Std> {
    /// True while leased. Acquire on lease / Release on return orders accesses to `cache`.
    busy: F::Bool,
    /// Null until the first leaseholder that may allocate fills it; then fixed forever.
    /// Written and dereferenced only by the current leaseholder.
    cache: F::Ptr<T>,
    /// `capture` walks through this slot that reused a cached tail, and steps they unwound
    /// (see `UnwindStats`); written only by the leaseholder, summed by `counters`.
    suffix_hits: F::U64,
    steps: F::U64,
}

impl<T, F: Family> Slot<T, F> {
    /// Ends a lease of this slot.
    #[inline(always)]
    fn release(&self) {
        self.busy.store(false, Ordering::Release);
    }
}

/// The leasing protocol: claims the first slot of `pool`, from `start` on round the pool,
/// that is free and holds a value, first filling an empty free slot with `make`'s value
/// if `may_fill` (else empty slots are passed over). The slot stays leased until
/// [`Slot::release`]. Never waits.
#[inline(always)]
fn claim<T, F: Family, const N: usize>(
    pool: &[CachePadded<Slot<T, F>>; N],
    start: usize,
    may_fill: bool,
    mut make: impl FnMut() -> *mut T,
) -> Option<(usize, &Slot<T, F>, *mut T)> {
    for i in 0..N {
        let idx = (start + i) % N;
        let slot = &pool[idx];
        if slot
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        let mut value = slot.cache.load(Ordering::Relaxed);
        if value.is_null() {
            if !may_fill {
                slot.release();
                continue;
            }
            value = make();
            slot.cache.store(value, Ordering::Relaxed);
        }
        return Some((idx, slot, value));
    }
    None
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
        self.slot.release();
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
    let (idx, slot, cache) = claim(&POOL, (start - 1) as usize, may_alloc, || {
        crate::base::fork::ensure_registered();
        Box::into_raw(CacheSet::new())
    })?;
    HINT.set(idx as u32 + 1);
    Some(Lease { slot, cache })
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
            crate::base::fork::test_support::in_child(std::time::Duration::from_secs(20), || {
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

/// A model of the leasing protocol under loom (`atomics`): three threads lease from a pool
/// of two slots and use what they leased, one of them without filling empty slots.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use crate::base::atomics::{self, Loom};
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::Arc;
    use loom::thread;

    /// What a slot holds in the model: a use count, in a cell loom watches.
    type Cache = UnsafeCell<usize>;
    type Pool = [CachePadded<Slot<Cache, Loom>>; 2];

    /// Leases from `pool` starting at `start`, filling an empty slot if `may_fill`, and
    /// counts one use in the leased value; whether a lease was had.
    fn lease_and_use(pool: &Pool, start: usize, may_fill: bool, made: &AtomicUsize) -> bool {
        let make = || {
            made.fetch_add(1, Ordering::Relaxed);
            Box::into_raw(Box::new(UnsafeCell::new(0)))
        };
        let Some((_, slot, cache)) = claim(pool, start, may_fill, make) else {
            return false;
        };
        // SAFETY: `cache` came from `Box::into_raw` in `make` and is freed only after
        // every thread is joined; the lease makes this thread its only user (loom checks
        // the cell's accesses).
        unsafe { (*cache).with_mut(|n| *n += 1) };
        slot.release();
        true
    }

    /// No two leases of one slot overlap (loom would see the cell's accesses race), a
    /// slot's value is made once and kept, and every use lands in some slot's value.
    #[test]
    fn leases_are_exclusive_and_values_kept() {
        let n = atomics::model("cache_pool", atomics::builder(Some(3)), || {
            let pool: Arc<Pool> = Arc::new(core::array::from_fn(|_| {
                CachePadded::new(Slot {
                    busy: Atomic::new(false),
                    cache: Atomic::new(ptr::null_mut()),
                    suffix_hits: Atomic::new(0),
                    steps: Atomic::new(0),
                })
            }));
            let made = Arc::new(AtomicUsize::new(0));
            let threads: Vec<_> = [(0, true), (0, true), (1, false)]
                .into_iter()
                .map(|(start, may_fill)| {
                    let (pool, made) = (pool.clone(), made.clone());
                    thread::spawn(move || lease_and_use(&pool, start, may_fill, &made))
                })
                .collect();
            let leased = threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|&ok| ok)
                .count();
            let mut filled = 0;
            let mut uses = 0;
            for slot in pool.iter() {
                assert!(
                    !slot.busy.load(Ordering::Relaxed),
                    "a lease was not returned"
                );
                let cache = slot.cache.load(Ordering::Relaxed);
                if !cache.is_null() {
                    filled += 1;
                    // SAFETY: made by `lease_and_use`, every thread is joined, freed once
                    // here (each slot holds its own).
                    let cache = unsafe { Box::from_raw(cache) };
                    uses += cache.with(|n| unsafe { *n });
                }
            }
            assert_eq!(
                filled,
                made.load(Ordering::Relaxed),
                "a made value was lost"
            );
            assert_eq!(uses, leased, "a use was lost");
            // A lease fails only when every slot was held or empty at its CAS: someone held.
            assert!(leased >= 1);
        });
        assert!(n > 1);
    }
}
