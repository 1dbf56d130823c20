//! The stack table: a fixed-capacity, lock-free set of call stacks, each named by a `u32` id.
//!
//! Written from the allocator's sampled path (and later by other recorders); read by profile
//! writers. Allocated once from the OS (never from the global allocator) with a capacity
//! chosen before first use. It never allocates, never blocks, and never grows: when it is
//! full, or a probe run is too long, the stack is counted under [`OVERFLOW_STACK`], a
//! pseudo-stack the profile shows as such.
//!
//! # Protocol
//! A slot's `key` is 0 (empty), [`WRITING`] (claimed, frames being written) or the stack's
//! hash with bit 1 set (ready; frames immutable from then on). A writer claims an empty
//! slot by CAS, writes the frames with relaxed stores, then publishes the key with
//! `Release`; readers load the key with `Acquire` before reading frames. A prober that
//! meets a slot still being written moves on rather than wait, so two threads inserting the
//! same new stack at the same instant can create two ids for it; writers merge identical
//! stacks, so this costs a slot, never correctness.

use crate::base::atomics::{Atomic, AtomicInt, Family, Ordering, Std};

use crate::unwind::MAX_DEPTH;

/// The id under which stacks that did not fit are counted.
pub const OVERFLOW_STACK: u32 = 0;
/// Key of a slot claimed by a writer that has not published it yet.
const WRITING: u64 = 1;
/// Longest probe run before a stack counts as overflow (bounds the sampled path's cost).
const MAX_PROBES: usize = 256;

/// One stored stack (atomics of `F`: see `atomics`).
#[repr(C)]
pub struct StackSlot<F: Family = Std> {
    key: F::U64,
    len: F::U32,
    frames: [F::Usize; MAX_DEPTH],
}

/// Bytes one slot occupies (for the documented memory cost).
#[allow(dead_code)] // quoted in the docs; checked by a test
pub const SLOT_BYTES: usize = core::mem::size_of::<StackSlot>();

/// A fixed table of stacks. See the module documentation for the protocol.
pub struct StackTable<F: Family = Std> {
    slots: &'static [StackSlot<F>],
    /// Stacks that could not be stored and were counted under [`OVERFLOW_STACK`].
    overflowed: F::U64,
}

/// FNV-1a-style mixing of the frame addresses; good enough to spread return addresses.
fn hash_frames(frames: &[usize]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ frames.len() as u64;
    for &f in frames {
        h = (h ^ f as u64).wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
    }
    h | 2
}

impl<F: Family> StackTable<F> {
    /// Builds a table over zeroed slots (`slots[0]` is reserved for overflow).
    pub fn new(slots: &'static [StackSlot<F>]) -> Self {
        assert!(
            slots.len() >= 2,
            "a stack table needs room for the overflow slot and one stack"
        );
        StackTable {
            slots,
            overflowed: F::U64::new(0),
        }
    }

    /// [`StackTable::intern`] for any atomics family (the program's is the wrapper, so
    /// that callers in generic code call it instead of instantiating this body).
    #[inline(always)]
    fn intern_impl(&self, frames: &[usize]) -> u32 {
        let frames = &frames[..frames.len().min(MAX_DEPTH)];
        let key = hash_frames(frames);
        let usable = self.slots.len() - 1;
        let start = (key as usize >> 2) % usable;
        for probe in 0..MAX_PROBES.min(usable) {
            let idx = 1 + (start + probe) % usable;
            let slot = &self.slots[idx];
            let k = slot.key.load(Ordering::Acquire);
            if k == key && Self::same(slot, frames) {
                return idx as u32;
            }
            if k == 0 {
                if slot
                    .key
                    .compare_exchange(0, WRITING, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
                {
                    // Someone claimed it first: re-check this slot's final content later
                    // is not worth a wait; keep probing.
                    continue;
                }
                for (dst, &f) in slot.frames.iter().zip(frames) {
                    dst.store(f, Ordering::Relaxed);
                }
                slot.len.store(frames.len() as u32, Ordering::Relaxed);
                slot.key.store(key, Ordering::Release);
                return idx as u32;
            }
        }
        self.overflowed.fetch_add(1, Ordering::Relaxed);
        OVERFLOW_STACK
    }

    fn same(slot: &StackSlot<F>, frames: &[usize]) -> bool {
        slot.len.load(Ordering::Relaxed) as usize == frames.len()
            && slot
                .frames
                .iter()
                .zip(frames)
                .all(|(a, &b)| a.load(Ordering::Relaxed) == b)
    }

    /// Copies the frames of stack `id` into `out` (cleared first). Returns false for the
    /// overflow id, an out-of-range id or a slot not yet published.
    pub fn read(&self, id: u32, out: &mut Vec<usize>) -> bool {
        out.clear();
        let Some(slot) = self.slots.get(id as usize) else {
            return false;
        };
        if id == OVERFLOW_STACK {
            return false;
        }
        let k = slot.key.load(Ordering::Acquire);
        if k == 0 || k == WRITING {
            return false;
        }
        let len = slot.len.load(Ordering::Relaxed) as usize;
        out.extend(slot.frames[..len].iter().map(|f| f.load(Ordering::Relaxed)));
        true
    }

    /// Stacks stored (ready slots), for statistics.
    pub fn used(&self) -> usize {
        self.slots[1..]
            .iter()
            .filter(|s| s.key.load(Ordering::Relaxed) > WRITING)
            .count()
    }

    /// Total slots, the overflow slot excluded.
    pub fn capacity(&self) -> usize {
        self.slots.len() - 1
    }

    /// How many stacks were counted under [`OVERFLOW_STACK`].
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }
}

/// The program's entry point, not generic, so the allocator's generic code calls it rather
/// than instantiating it.
impl StackTable {
    /// Returns the id of `frames` (leaf first), storing them if new; [`OVERFLOW_STACK`]
    /// when the table has no room. Lock-free and allocation-free.
    pub fn intern(&self, frames: &[usize]) -> u32 {
        self.intern_impl(frames)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn leak_slots<T>(n: usize) -> &'static [T] {
        let len = n * core::mem::size_of::<T>();
        let p = crate::base::sys::map_zeroed(len);
        assert!(!p.is_null());
        // SAFETY: the mapping is zeroed, large enough and suitably aligned (page-aligned)
        // for `n` values of T; every T used here is made of atomics, for which all-zero
        // bytes are a valid value. The mapping is never unmapped.
        unsafe { core::slice::from_raw_parts(p.cast::<T>(), n) }
    }

    #[test]
    fn interns_and_reads_back() {
        let t: StackTable = StackTable::new(leak_slots(64));
        let a = t.intern(&[1, 2, 3]);
        let b = t.intern(&[1, 2, 4]);
        assert_ne!(a, b);
        assert_eq!(t.intern(&[1, 2, 3]), a);
        let mut out = Vec::new();
        assert!(t.read(a, &mut out));
        assert_eq!(out, vec![1, 2, 3]);
        assert!(!t.read(OVERFLOW_STACK, &mut out));
        assert_eq!(t.used(), 2);
    }

    #[test]
    fn full_table_overflows_without_failing() {
        let t: StackTable = StackTable::new(leak_slots(5));
        let ids: Vec<u32> = (0..10).map(|i| t.intern(&[i, i + 1])).collect();
        assert_eq!(ids.iter().filter(|&&i| i != OVERFLOW_STACK).count(), 4);
        assert_eq!(t.overflowed(), 6);
        // Known stacks are still found when the table is full.
        let first = ids[0];
        assert_eq!(t.intern(&[0, 1]), first);
    }

    #[test]
    fn concurrent_interning_agrees_with_a_model() {
        let t: &'static StackTable = Box::leak(Box::new(StackTable::new(leak_slots(4096))));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..1000usize)
                        .map(|i| (i, t.intern(&[i, i * 3, 7])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            for (i, id) in h.join().unwrap() {
                assert_ne!(id, OVERFLOW_STACK);
                assert!(t.read(id, &mut out));
                assert_eq!(out, vec![i, i * 3, 7]);
            }
        }
    }
}

/// Models of the claim/publish protocol under loom (`atomics`): every interleaving of two
/// writers and a reader, with loom's weak-memory outcomes for the relaxed frame stores.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use crate::base::atomics::{self, Loom};
    use loom::thread;

    const A: [usize; 2] = [11, 12];
    const B: [usize; 2] = [21, 22];

    /// A table of `usable` stack slots (plus the overflow slot), leaked for one iteration.
    fn table(usable: usize) -> &'static StackTable<Loom> {
        let slots = (0..=usable)
            .map(|_| StackSlot {
                key: Atomic::new(0),
                len: Atomic::new(0),
                frames: core::array::from_fn(|_| Atomic::new(0)),
            })
            .collect();
        Box::leak(Box::new(StackTable::new(atomics::leak(slots))))
    }

    /// Frees what `table` leaked.
    ///
    /// # Safety
    /// Every thread that used `t` has been joined; `t` is not used again.
    unsafe fn free(t: &'static StackTable<Loom>) {
        let slots = t.slots;
        // SAFETY: `t` came from `Box::leak` in `table` and is not used again.
        drop(unsafe { Box::from_raw(t as *const StackTable<Loom> as *mut StackTable<Loom>) });
        // SAFETY: as above; the table that held the slots is gone.
        unsafe { atomics::unleak(slots) };
    }

    /// What `read(id)` gives, if anything.
    fn read(t: &StackTable<Loom>, id: u32) -> Option<Vec<usize>> {
        let mut out = Vec::new();
        t.read(id, &mut out).then_some(out)
    }

    /// Two threads store different stacks in a table with one slot while a third reads it:
    /// exactly one claims the slot (the other overflows), and a reader never sees a
    /// published slot whose frames are not the winner's, complete.
    #[test]
    fn one_writer_claims_a_slot_and_readers_see_it_whole() {
        let n = atomics::model("stacktab claim", atomics::builder(None), || {
            let t = table(1);
            let ta = thread::spawn(move || t.intern_impl(&A));
            let tb = thread::spawn(move || t.intern_impl(&B));
            let reader = thread::spawn(move || read(t, 1));
            let seen = reader.join().unwrap();
            assert!(seen.is_none() || seen == Some(A.to_vec()) || seen == Some(B.to_vec()));
            let (a, b) = (ta.join().unwrap(), tb.join().unwrap());
            let winner = match (a, b) {
                (1, OVERFLOW_STACK) => A,
                (OVERFLOW_STACK, 1) => B,
                other => panic!("ids {other:?}: one slot, two stacks"),
            };
            assert_eq!(read(t, 1), Some(winner.to_vec()));
            assert_eq!(t.overflowed(), 1);
            // SAFETY: every thread is joined; `t` is not used again.
            unsafe { free(t) };
        });
        assert!(n > 1);
    }

    /// Two threads intern the same stack while a third reads every slot: both get an id
    /// whose frames are the stack (two ids at worst, by design), and a reader sees only
    /// complete copies.
    #[test]
    fn the_same_stack_from_two_threads_reads_back_whole() {
        let n = atomics::model("stacktab publish", atomics::builder(None), || {
            let t = table(2);
            let t1 = thread::spawn(move || t.intern_impl(&A));
            let t2 = thread::spawn(move || t.intern_impl(&A));
            let reader = thread::spawn(move || [read(t, 1), read(t, 2)]);
            for seen in reader.join().unwrap() {
                assert!(seen.is_none() || seen == Some(A.to_vec()), "read {seen:?}");
            }
            let (a, b) = (t1.join().unwrap(), t2.join().unwrap());
            for id in [a, b] {
                assert_ne!(id, OVERFLOW_STACK);
                assert_eq!(read(t, id), Some(A.to_vec()));
            }
            assert!([a, b].contains(&t.intern_impl(&A)));
            // SAFETY: every thread is joined; `t` is not used again.
            unsafe { free(t) };
        });
        assert!(n > 1);
    }
}
