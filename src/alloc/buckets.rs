//! Heap buckets: per (stack, label set, size class) counters of sampled allocations and
//! frees.
//!
//! Go keys its memory profile records by stack and exact size and grows without bound. A
//! fixed table cannot: one call site allocating many distinct sizes (`Vec::with_capacity(n)`
//! for varying `n`) would take a bucket per size and fill the table within seconds on a busy
//! process, after which every sample lands in the overflow bucket. So sizes are grouped into
//! classes ([`size_class`]): exact up to 32 bytes, then eight classes per power of two, so the
//! sizes in one bucket differ by less than 12.5% and a call site takes at most a few hundred
//! buckets however many sizes it asks for (a few dozen in practice). The profile's `bytes`
//! label is the bucket's average sampled size, which is Go's own formula (`AllocBytes /
//! AllocObjects`) and exact for a site with one size. Unbiasing does not depend on it: each
//! bucket also accumulates the per-sample weights (see `sampler`), fixed when each sample
//! was taken, which the protobuf profile reports.
//!
//! Fixed capacity, lock-free, allocation-free, written by the allocator's sampled path
//! (allocs) and by `dealloc` of sampled blocks (frees); read by the heap profile writer. The
//! claim/publish protocol is `stack_table`'s, on the index slot's `id` (0 → [`WRITING`] by CAS,
//! then the key fields, then the id with Release; a prober that meets a slot being written
//! moves on, which can at worst give one key two buckets, and the writer merges records by
//! stack). When no bucket can be had, counts go to [`OVERFLOW_BUCKET`], whose stack is the
//! overflow pseudo-stack.

use crate::base::atomics::{Atomic, AtomicInt, Family, Ordering, Std};

use crate::alloc::stack_table::OVERFLOW_STACK;
use crate::base::sampler::Weight;

/// Bucket that absorbs samples no bucket could be found for.
pub const OVERFLOW_BUCKET: u32 = 0;
/// `IndexSlot::id` of a slot claimed by a writer that has not published it yet.
const WRITING: u32 = u32::MAX;
const MAX_PROBES: usize = 256;

/// One slot of the hash index that maps a bucket's key to its id. Ids are handed out
/// densely in creation order, so a bucket's description, counters and peak snapshot lie
/// in arrays indexed by id that become resident in proportion to the buckets in use (an
/// index keyed by hash position instead scattered the first few hundred buckets over a few
/// hundred pages per array: ~1 ms of page faults at start-up).
///
/// The slot holds the bucket's whole key, so a lookup reads one cache line of the index and
/// nothing else (`id`: 0 empty, [`WRITING`] claimed, else the published id). Atomics of
/// `F`, like the other types here: see `atomics`.
#[repr(C)]
pub struct IndexSlot<F: Family = Std> {
    id: F::U32,
    stack: F::U32,
    labels: F::U32,
    class: F::U32,
}

/// What one bucket counts: written once by its creator, then only read, so descriptions
/// can share cache lines with no cost to anyone.
#[repr(C)]
pub struct Bucket<F: Family = Std> {
    class: F::U32,
    stack: F::U32,
    labels: F::U32,
    /// Non-zero once the fields above are written (Release/Acquire).
    ready: F::U32,
}

/// Counter shards per bucket. A thread adds its samples and frees to its own shard
/// (threads take shards round-robin as they first count), so threads that sample the same
/// stack (a pool of workers running the same code) do not make one line bounce between
/// cores; readers sum the shards. Measured on two threads sampling every allocation at one
/// site: unsharded, the bucket's counters and its key (read by every lookup) were the
/// hottest lines. (A CPU-indexed shard, via `sched_getcpu`, cost three cold cache lines per
/// sample to find the CPU; the thread's own slot is in its hot thread-local state.)
pub const SHARDS: usize = 4;

/// One shard of a bucket's counters, a cache line of its own. All counters only grow;
/// in-use = alloc − free.
#[repr(C, align(64))]
pub struct Counters<F: Family = Std> {
    alloc_count: F::U64,
    alloc_bytes: F::U64,
    free_count: F::U64,
    free_bytes: F::U64,
    alloc_objects_w: F::U64,
    alloc_bytes_w: F::U64,
    free_objects_w: F::U64,
    free_bytes_w: F::U64,
}

/// Bytes of one bucket's index slot and description (for the documented memory cost).
#[allow(dead_code)] // quoted in the docs; checked by a test
pub const BUCKET_BYTES: usize = core::mem::size_of::<IndexSlot>() + core::mem::size_of::<Bucket>();
/// Bytes of one bucket's counters, all shards (for the documented memory cost).
#[allow(dead_code)] // quoted in the docs; checked by a test
pub const COUNTER_BYTES: usize = SHARDS * core::mem::size_of::<Counters>();

/// The shard the calling thread counts in, chosen on its first call.
#[inline]
fn shard() -> usize {
    use core::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    crate::base::tls::with(|t| {
        let s = t.shard.get();
        if s != 0 {
            return s as usize - 1;
        }
        let s = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
        t.shard.set(s as u8 + 1);
        s
    })
}

/// A consistent-enough copy of one bucket for writers (counters read one by one; a
/// concurrent free can make `free_*` lead `alloc_*` by that free, never more).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketSnapshot {
    /// Stack id in the stack table.
    pub stack: u32,
    /// Label set id (see `labels`; 0 = none).
    pub labels: u32,
    /// Size class ([`size_class`]; 0 for the overflow bucket, which mixes sizes).
    pub class: u32,
    /// Sampled allocations (raw count).
    pub alloc_count: u64,
    /// Bytes of sampled allocations (raw).
    pub alloc_bytes: u64,
    /// Sampled allocations since freed (raw count).
    pub free_count: u64,
    /// Bytes of those frees (raw).
    pub free_bytes: u64,
    /// Estimated allocated objects, fixed point (see `sampler::OBJECT_WEIGHT_ONE`).
    pub alloc_objects_w: u64,
    /// Estimated allocated bytes.
    pub alloc_bytes_w: u64,
    /// Estimated freed objects, fixed point.
    pub free_objects_w: u64,
    /// Estimated freed bytes.
    pub free_bytes_w: u64,
}

/// The fixed bucket table.
pub struct BucketTable<F: Family = Std> {
    /// Hash index: key → id (slot 0 unused).
    index: &'static [IndexSlot<F>],
    /// Bucket descriptions by id (id 0 is the overflow bucket).
    buckets: &'static [Bucket<F>],
    /// Each bucket's `SHARDS` counters, by id.
    counters: &'static [[Counters<F>; SHARDS]],
    /// Ids handed out: buckets 1..=used exist (or are being written).
    used: F::U32,
    overflowed: F::U64,
}

/// Sizes up to this many bytes are each a class of their own.
const EXACT_SIZES: u64 = 32;
/// Classes per power of two above [`EXACT_SIZES`] (a power of two).
const CLASSES_PER_OCTAVE: u64 = 8;

/// The size class of an allocation of `size` bytes: `size` itself up to [`EXACT_SIZES`],
/// above that the class shared by the sizes within the same eighth of their power of two
/// (e.g. 4097–4608 bytes). Classes are numbered increasingly, never 0 for `size > 0`, and
/// below 600 for any `u64` size.
pub fn size_class(size: u64) -> u32 {
    if size <= EXACT_SIZES {
        return size as u32;
    }
    let sub_bits = CLASSES_PER_OCTAVE.trailing_zeros();
    let top = 63 - (size - 1).leading_zeros(); // size - 1 is in [2^top, 2^(top+1))
    let sub = ((size - 1) >> (top - sub_bits)) & (CLASSES_PER_OCTAVE - 1);
    let octave = (top - EXACT_SIZES.trailing_zeros()) as u64;
    (EXACT_SIZES + 1 + octave * CLASSES_PER_OCTAVE + sub) as u32
}

/// Index slots per group: one 4 KiB page of [`IndexSlot`]s. All buckets of one (stack,
/// labels) start their probe in the same group, so a site that allocates many sizes makes
/// one or two pages of the index resident, not one page per size class (a bucket per page
/// cost ~160 page faults, ~0.3 ms, in the first second of an allocation-churn benchmark).
const GROUP: usize = 4096 / core::mem::size_of::<IndexSlot>();
/// Odd, so `class * CLASS_STRIDE mod GROUP` differs for up to [`GROUP`] consecutive classes.
const CLASS_STRIDE: usize = 0x9e5;

fn hash_site(stack: u32, labels: u32) -> u64 {
    let mut h = ((stack as u64) << 32 | labels as u64) ^ 0x9e37_79b9_7f4a_7c15;
    h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Where the probe for (stack, labels, class) starts among `usable` slots: a group chosen
/// by the site, a place in it chosen by the class.
fn probe_start(stack: u32, labels: u32, class: u32, usable: usize) -> usize {
    let site = hash_site(stack, labels) as usize;
    let within = (class as usize).wrapping_mul(CLASS_STRIDE) % GROUP;
    let groups = usable / GROUP;
    if groups <= 1 {
        site.wrapping_add(within) % usable
    } else {
        (site % groups) * GROUP + within
    }
}

impl<F: Family> BucketTable<F> {
    /// Builds a table over zeroed memory: an index, descriptions and counters of the same
    /// length (capacity + 1; id 0 is the overflow bucket).
    pub fn new(
        index: &'static [IndexSlot<F>],
        buckets: &'static [Bucket<F>],
        counters: &'static [[Counters<F>; SHARDS]],
    ) -> Self {
        assert!(
            buckets.len() >= 2,
            "a bucket table needs the overflow bucket and one more"
        );
        assert!(index.len() == buckets.len() && counters.len() == buckets.len());
        let o = &buckets[OVERFLOW_BUCKET as usize];
        o.stack.store(OVERFLOW_STACK, Ordering::Relaxed);
        o.ready.store(1, Ordering::Release);
        BucketTable {
            index,
            buckets,
            counters,
            used: Atomic::new(0),
            overflowed: Atomic::new(0),
        }
    }

    /// [`BucketTable::find`] for any atomics family (the program's is the wrapper, so
    /// that callers in generic code call it instead of instantiating this body).
    #[inline(always)]
    fn find_impl(&self, stack: u32, labels: u32, size: u64) -> u32 {
        let class = size_class(size);
        let usable = self.index.len() - 1;
        let start = probe_start(stack, labels, class, usable);
        for probe in 0..MAX_PROBES.min(usable) {
            let slot = &self.index[1 + (start + probe) % usable];
            let id = slot.id.load(Ordering::Acquire);
            if id != 0
                && id != WRITING
                && slot.stack.load(Ordering::Relaxed) == stack
                && slot.labels.load(Ordering::Relaxed) == labels
                && slot.class.load(Ordering::Relaxed) == class
            {
                return id;
            }
            if id == 0
                && slot
                    .id
                    .compare_exchange(0, WRITING, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                // Each claimed slot takes one id, and there are as many ids as slots.
                let id = self.used.fetch_add(1, Ordering::Relaxed) + 1;
                let b = &self.buckets[id as usize];
                b.stack.store(stack, Ordering::Relaxed);
                b.labels.store(labels, Ordering::Relaxed);
                b.class.store(class, Ordering::Relaxed);
                b.ready.store(1, Ordering::Release);
                slot.stack.store(stack, Ordering::Relaxed);
                slot.labels.store(labels, Ordering::Relaxed);
                slot.class.store(class, Ordering::Relaxed);
                slot.id.store(id, Ordering::Release);
                return id;
            }
        }
        self.overflowed.fetch_add(1, Ordering::Relaxed);
        OVERFLOW_BUCKET
    }

    /// Reads bucket `idx`'s counters, summed over the shards (allocation-free).
    fn read(&self, idx: usize) -> BucketSnapshot {
        let b = &self.buckets[idx];
        let mut s = BucketSnapshot {
            stack: b.stack.load(Ordering::Relaxed),
            labels: b.labels.load(Ordering::Relaxed),
            class: b.class.load(Ordering::Relaxed),
            ..BucketSnapshot::default()
        };
        // Saturating: shards each near u64::MAX (heavily weighted samples over a long life)
        // must not panic here, inside the allocator's peak snapshot.
        let add = |sum: &mut u64, a: &F::U64| *sum = sum.saturating_add(a.load(Ordering::Relaxed));
        for c in &self.counters[idx] {
            add(&mut s.alloc_count, &c.alloc_count);
            add(&mut s.alloc_bytes, &c.alloc_bytes);
            add(&mut s.free_count, &c.free_count);
            add(&mut s.free_bytes, &c.free_bytes);
            add(&mut s.alloc_objects_w, &c.alloc_objects_w);
            add(&mut s.alloc_bytes_w, &c.alloc_bytes_w);
            add(&mut s.free_objects_w, &c.free_objects_w);
            add(&mut s.free_bytes_w, &c.free_bytes_w);
        }
        s
    }

    /// Calls `f(id, counters)` for the overflow bucket and every bucket in use, without
    /// allocating (the peak snapshot runs inside the allocator).
    pub fn for_each_used(&self, mut f: impl FnMut(u32, &BucketSnapshot)) {
        let used = (self.used.load(Ordering::Relaxed) as usize).min(self.buckets.len() - 1);
        for id in 0..=used {
            // Not ready = its creator is still writing it; the next snapshot will see it.
            if self.buckets[id].ready.load(Ordering::Acquire) != 0 {
                f(id as u32, &self.read(id));
            }
        }
    }

    /// Copies every bucket that has counted anything, overflow bucket included, with its id.
    pub fn snapshot(&self) -> Vec<(u32, BucketSnapshot)> {
        let mut out = Vec::new();
        self.for_each_used(|id, s| {
            if s.alloc_count > 0 || s.free_count > 0 {
                out.push((id, *s));
            }
        });
        out
    }

    /// Buckets in use (overflow excluded).
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed) as usize
    }

    /// Total buckets, the overflow bucket excluded.
    pub fn capacity(&self) -> usize {
        self.buckets.len() - 1
    }

    /// Samples that found no bucket and were counted in [`OVERFLOW_BUCKET`].
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }
}

/// The program's entry points, not generic, so the allocator's generic code calls them
/// rather than instantiating them.
impl BucketTable {
    /// Finds or creates the bucket of (`stack`, `labels`, `size_class(size)`);
    /// [`OVERFLOW_BUCKET`] when full.
    pub fn find(&self, stack: u32, labels: u32, size: u64) -> u32 {
        self.find_impl(stack, labels, size)
    }

    /// Counts one sampled allocation of `size` bytes with weight `w` in bucket `id`.
    pub fn record_alloc(&self, id: u32, size: u64, w: Weight) {
        let b = &self.counters[id as usize][shard()];
        b.alloc_count.fetch_add(1, Ordering::Relaxed);
        b.alloc_bytes.fetch_add(size, Ordering::Relaxed);
        b.alloc_objects_w.fetch_add(w.objects_fp, Ordering::Relaxed);
        b.alloc_bytes_w.fetch_add(w.bytes, Ordering::Relaxed);
    }

    /// Counts the free of a block recorded by [`record_alloc`](Self::record_alloc) with the
    /// same `id`, `size` and `w`. Ids come from block headers; an out-of-range id (a header
    /// that cannot be ours) is ignored.
    pub fn record_free(&self, id: u32, size: u64, w: Weight) {
        let Some(shards) = self.counters.get(id as usize) else {
            return;
        };
        let b = &shards[shard()];
        b.free_count.fetch_add(1, Ordering::Relaxed);
        b.free_bytes.fetch_add(size, Ordering::Relaxed);
        b.free_objects_w.fetch_add(w.objects_fp, Ordering::Relaxed);
        b.free_bytes_w.fetch_add(w.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::stack_table::tests::leak_slots;
    use crate::base::sampler::OBJECT_WEIGHT_ONE;

    const W: Weight = Weight {
        objects_fp: OBJECT_WEIGHT_ONE,
        bytes: 100,
    };

    #[test]
    fn a_sites_size_classes_share_a_page_of_the_index() {
        let n = 1 << 14;
        let t: BucketTable = BucketTable::new(leak_slots(n), leak_slots(n), leak_slots(n));
        // Two sites, each allocating every size from 1 byte to 1 MiB (~140 classes).
        let mut sizes: Vec<u64> = (1..=32).collect();
        sizes.extend((6..=20).flat_map(|p| (1..=8).map(move |k| (1u64 << p) + k * (1 << (p - 3)))));
        let classes: std::collections::BTreeSet<u32> =
            sizes.iter().map(|&s| size_class(s)).collect();
        let mut first = Vec::new();
        for (stack, labels) in [(7, 0), (8, 2)] {
            for &s in &sizes {
                first.push(t.find(stack, labels, s));
            }
            let pages: std::collections::BTreeSet<usize> = t
                .index
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    s.id.load(Ordering::Relaxed) != 0
                        && s.stack.load(Ordering::Relaxed) == stack
                        && s.labels.load(Ordering::Relaxed) == labels
                })
                .map(|(i, _)| i * core::mem::size_of::<IndexSlot>() / 4096)
                .collect();
            assert!(
                pages.len() <= 2,
                "{} classes on pages {pages:?}",
                classes.len()
            );
        }
        assert_eq!(t.used(), 2 * classes.len());
        // Every bucket is found again, by key.
        let again: Vec<u32> = [(7, 0), (8, 2)]
            .iter()
            .flat_map(|&(st, l)| sizes.iter().map(move |&s| (st, l, s)))
            .map(|(st, l, s)| t.find(st, l, s))
            .collect();
        assert_eq!(again, first);
        assert!(first.iter().all(|&id| id != OVERFLOW_BUCKET));
        assert_eq!(t.used(), 2 * classes.len());
    }

    #[test]
    fn keyed_by_stack_labels_and_size_class() {
        let t: BucketTable = BucketTable::new(leak_slots(16), leak_slots(16), leak_slots(16));
        let a = t.find(3, 0, 100);
        assert_eq!(t.find(3, 0, 100), a);
        assert_eq!(t.find(3, 0, 97), a, "97..=104 share a class");
        assert_ne!(t.find(3, 0, 105), a);
        assert_ne!(t.find(4, 0, 100), a);
        assert_ne!(t.find(3, 1, 100), a);
        assert_eq!(t.used(), 4);
        assert_eq!(t.find(3, 0, 104), a); // an existing class: no new bucket
        assert_eq!(t.used(), 4);
        t.record_alloc(a, 100, W);
        t.record_alloc(a, 100, W);
        t.record_free(a, 100, W);
        let s: Vec<_> = t
            .snapshot()
            .into_iter()
            .filter(|(id, _)| *id == a)
            .map(|(_, s)| s)
            .collect();
        assert_eq!(s.len(), 1);
        let c = (
            s[0].alloc_count,
            s[0].alloc_bytes,
            s[0].free_count,
            s[0].free_bytes,
        );
        assert_eq!(c, (2, 200, 1, 100));
        assert_eq!((s[0].stack, s[0].labels), (3, 0));
        assert_eq!(s[0].class, size_class(100));
        assert_eq!(s[0].alloc_objects_w, 2 * OBJECT_WEIGHT_ONE);
        assert_eq!(s[0].free_bytes_w, 100);
        // Buckets that counted nothing are left out of the snapshot.
        assert_eq!(t.snapshot().len(), 1);
    }

    #[test]
    fn counts_from_many_threads_are_summed_over_shards() {
        let t: &'static BucketTable = Box::leak(Box::new(BucketTable::new(
            leak_slots(16),
            leak_slots(16),
            leak_slots(16),
        )));
        let id = t.find(5, 0, 64);
        let threads: Vec<_> = (0..2 * SHARDS)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        t.record_alloc(id, 64, W);
                    }
                    for _ in 0..400 {
                        t.record_free(id, 64, W);
                    }
                    shard()
                })
            })
            .collect();
        let mut shards: Vec<usize> = threads.into_iter().map(|h| h.join().unwrap()).collect();
        shards.sort();
        shards.dedup();
        // Round-robin: eight threads take at least two shards (all four unless another
        // test thread took a turn in between).
        assert!(shards.len() >= 2, "threads spread over shards: {shards:?}");
        let s = t.read(id as usize);
        let n = 2 * SHARDS as u64;
        assert_eq!((s.alloc_count, s.free_count), (1000 * n, 400 * n));
        assert_eq!(s.alloc_bytes_w, 1000 * n * W.bytes);
        assert_eq!(s.free_objects_w, 400 * n * W.objects_fp);
    }

    #[test]
    fn size_classes_are_exact_then_eight_per_octave() {
        for s in 0..=32 {
            assert_eq!(size_class(s), s as u32);
        }
        // Monotonic, and the sizes of one class differ by less than 1/8 of the smallest.
        let mut first_of_class = 1u64;
        for s in 2..100_000u64 {
            assert!(size_class(s) >= size_class(s - 1));
            if size_class(s) != size_class(s - 1) {
                first_of_class = s;
            } else {
                assert!(
                    (s - first_of_class) * 8 < first_of_class,
                    "{s} {first_of_class}"
                );
            }
        }
        assert_eq!(size_class(33), 33);
        assert_eq!(size_class(36), 33);
        assert_eq!(size_class(37), 34);
        assert_eq!(size_class(64), 40);
        assert_eq!(size_class(65), 41);
        assert_eq!(size_class(4097), size_class(4608));
        assert_ne!(size_class(4608), size_class(4609));
        // Every size class of every possible size is distinct from the overflow's 0.
        assert!(size_class(u64::MAX) > size_class(u64::MAX / 2));
        // Churn of all sizes from 1 byte to 1 GiB at one site needs a few hundred buckets.
        assert!(size_class(1 << 30) < 300);
    }

    #[test]
    fn counters_near_u64_max_saturate_when_summed() {
        let t = BucketTable::new(leak_slots(4), leak_slots(4), leak_slots(4));
        let id = t.find(1, 0, 8);
        for shard in &t.counters[id as usize][..2] {
            shard.alloc_bytes_w.store(u64::MAX - 1, Ordering::Relaxed);
            shard
                .alloc_objects_w
                .store(u64::MAX / 2 + 1, Ordering::Relaxed);
        }
        let s = t.read(id as usize);
        assert_eq!((s.alloc_bytes_w, s.alloc_objects_w), (u64::MAX, u64::MAX));
    }

    #[test]
    fn full_table_uses_overflow_bucket() {
        let t: BucketTable = BucketTable::new(leak_slots(3), leak_slots(3), leak_slots(3));
        let ids: Vec<u32> = (0..5).map(|i| t.find(1, 0, i)).collect();
        assert_eq!(ids.iter().filter(|&&i| i == OVERFLOW_BUCKET).count(), 3);
        assert_eq!(t.overflowed(), 3);
        t.record_alloc(OVERFLOW_BUCKET, 7, W);
        let snap = t.snapshot();
        assert!(snap.iter().any(|(id, s)| *id == OVERFLOW_BUCKET
            && s.stack == OVERFLOW_STACK
            && s.alloc_count == 1));
        t.record_free(9999, 1, W); // ignored, no panic
    }
}

/// A model of the index's claim/publish protocol under loom (`atomics`): two writers
/// creating and finding buckets in a table of two while a reader walks the buckets.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use crate::base::atomics::{self, Loom};
    use loom::thread;

    const USABLE: usize = 2;
    type Key = (u32, u32, u64);

    /// A table of [`USABLE`] buckets, leaked for one iteration.
    fn table() -> &'static BucketTable<Loom> {
        let n = USABLE + 1;
        let index = (0..n)
            .map(|_| IndexSlot {
                id: Atomic::new(0),
                stack: Atomic::new(0),
                labels: Atomic::new(0),
                class: Atomic::new(0),
            })
            .collect();
        let buckets = (0..n)
            .map(|_| Bucket {
                class: Atomic::new(0),
                stack: Atomic::new(0),
                labels: Atomic::new(0),
                ready: Atomic::new(0),
            })
            .collect();
        let counters = (0..n)
            .map(|_| {
                core::array::from_fn(|_| Counters {
                    alloc_count: Atomic::new(0),
                    alloc_bytes: Atomic::new(0),
                    free_count: Atomic::new(0),
                    free_bytes: Atomic::new(0),
                    alloc_objects_w: Atomic::new(0),
                    alloc_bytes_w: Atomic::new(0),
                    free_objects_w: Atomic::new(0),
                    free_bytes_w: Atomic::new(0),
                })
            })
            .collect();
        let t = BucketTable::new(
            atomics::leak(index),
            atomics::leak(buckets),
            atomics::leak(counters),
        );
        Box::leak(Box::new(t))
    }

    /// Frees what `table` leaked.
    ///
    /// # Safety
    /// Every thread that used `t` has been joined; `t` is not used again.
    unsafe fn free(t: &'static BucketTable<Loom>) {
        let (index, buckets, counters) = (t.index, t.buckets, t.counters);
        // SAFETY: `t` came from `Box::leak` in `table` and is not used again; then the
        // slices it held are not used either.
        unsafe {
            drop(Box::from_raw(
                t as *const BucketTable<Loom> as *mut BucketTable<Loom>,
            ));
            atomics::unleak(index);
            atomics::unleak(buckets);
            atomics::unleak(counters);
        }
    }

    /// Bucket `id`'s description, read as its finder may (relaxed, no `ready` check).
    fn describe(t: &BucketTable<Loom>, id: u32) -> Key {
        let b = &t.buckets[id as usize];
        (
            b.stack.load(Ordering::Relaxed),
            b.labels.load(Ordering::Relaxed),
            b.class.load(Ordering::Relaxed) as u64,
        )
    }

    /// `find`, checking that the id it gives names a bucket its caller sees as the key.
    fn find(t: &BucketTable<Loom>, key: Key) -> u32 {
        let id = t.find_impl(key.0, key.1, key.2);
        if id != OVERFLOW_BUCKET {
            assert_eq!(describe(t, id), key, "bucket {id} seen unwritten");
        }
        id
    }

    /// Distinct keys never share a bucket, a key gets at most one, every id handed out
    /// names a bucket whose description its finder and any reader see whole, and buckets
    /// are found again afterwards.
    #[test]
    fn keys_get_one_bucket_each_published_before_use() {
        // Sizes up to 32 bytes are their own class, so the key's class is its size. Two
        // keys whose probes start at the same slot, so the writers contend for it.
        let k1: Key = (1, 0, 8);
        let start = |k: Key| probe_start(k.0, k.1, size_class(k.2), USABLE);
        let k2: Key = (1..)
            .map(|labels| (2, labels, 8))
            .find(|&k| start(k) == start(k1))
            .unwrap();
        let n = atomics::model("buckets", atomics::builder(Some(3)), move || {
            let t = table();
            let w1 = thread::spawn(move || vec![(k1, find(t, k1))]);
            let w2 = thread::spawn(move || vec![(k2, find(t, k2)), (k1, find(t, k1))]);
            let reader = thread::spawn(move || {
                t.for_each_used(|id, s| {
                    let key = (s.stack, s.labels, s.class as u64);
                    assert!(
                        id == OVERFLOW_BUCKET || key == k1 || key == k2,
                        "{id}: {key:?}"
                    );
                })
            });
            reader.join().unwrap();
            let mut found = w1.join().unwrap();
            found.extend(w2.join().unwrap());
            found.retain(|&(_, id)| id != OVERFLOW_BUCKET);
            let mut ids: Vec<u32> = found.iter().map(|&(_, id)| id).collect();
            ids.sort_unstable();
            ids.dedup();
            // One id per key: as many distinct ids as distinct keys that got one.
            let mut keys: Vec<Key> = found.iter().map(|&(k, _)| k).collect();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(ids.len(), keys.len(), "{found:?}");
            assert_eq!(t.used(), ids.len(), "{found:?}");
            for (k, id) in found {
                assert_eq!(t.find_impl(k.0, k.1, k.2), id, "{k:?} not found again");
            }
            // SAFETY: every thread is joined; `t` is not used again.
            unsafe { free(t) };
        });
        assert!(n > 1);
    }
}
