//! The span sets read on every entry, from a table of atomic words instead of the span's
//! extensions: reading those takes a registry lookup (a reference count taken and given
//! back), a read lock and a map probe, about 45 ns of the ~60 ns the layer cost per
//! enter + exit without this table (alloc-bench `span_bench`), where one atomic load does.
//!
//! Direct-mapped, one `AtomicU64` per slot holding a tag of the span id and both sets
//! (label set ids are below [`MAX_LABEL_SETS`] < 2^13), so a load is always one consistent
//! entry. A span's slot is written when its sets are made or change, and cleared when it
//! closes; a miss (the slot holds another span, or nothing) falls back to the extensions
//! and fills the slot. Two live spans with the same slot and the same 38-bit tag would
//! read each other's sets: about 2^-38 per entry of a span whose slot holds another.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::fields::SpanIds;
use crate::alloc::labels::{Labels, MAX_LABEL_SETS};

/// Slots: 32 KiB per layer; more live spans than this only makes some entries slower.
const SLOTS: usize = 4096;
/// Bits of a label set id in a slot.
const SET_BITS: u32 = 13;
const SET_MASK: u64 = (1 << SET_BITS) - 1;
const _: () = assert!(MAX_LABEL_SETS < 1 << SET_BITS);

/// One layer's table.
pub(super) struct SpanTable {
    slots: Box<[AtomicU64]>,
}

/// Where span `id` lives, and the tag that tells it from the other ids living there.
fn place(id: u64) -> (usize, u64) {
    // splitmix64's finaliser: every bit of the id moves both the slot and the tag.
    let mut h = id;
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    // The slot from the low bits, the tag from the 38 high bits: independent of each other.
    (h as usize % SLOTS, h >> (2 * SET_BITS))
}

fn pack(tag: u64, ids: SpanIds) -> u64 {
    let set = |l: Labels| u64::from(l.id()) & SET_MASK;
    tag << (2 * SET_BITS) | set(ids.parent) << SET_BITS | set(ids.full)
}

/// An empty table.
impl Default for SpanTable {
    fn default() -> Self {
        SpanTable {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl SpanTable {
    /// The sets of span `id`, if its slot holds them; else `Err` with what the slot holds,
    /// for [`fill`](Self::fill).
    pub fn get(&self, id: u64) -> Result<SpanIds, u64> {
        let (slot, tag) = place(id);
        let w = self.slots[slot].load(Relaxed);
        if w != 0 && w >> (2 * SET_BITS) == tag {
            let set = |v: u64| Labels::from_id((v & SET_MASK) as u32);
            Ok(SpanIds {
                parent: set(w >> SET_BITS),
                full: set(w),
            })
        } else {
            Err(w)
        }
    }

    /// Writes the sets of span `id` (made or changed: written after the extensions).
    pub fn put(&self, id: u64, ids: SpanIds) {
        let (slot, tag) = place(id);
        self.slots[slot].store(pack(tag, ids), Relaxed);
    }

    /// After a miss that saw `seen` in the slot, writes the sets read from the span's
    /// extensions, unless the slot changed meanwhile: a `put` of newer sets wins.
    pub fn fill(&self, id: u64, seen: u64, ids: SpanIds) {
        let (slot, tag) = place(id);
        let _ = self.slots[slot].compare_exchange(seen, pack(tag, ids), Relaxed, Relaxed);
    }

    /// Clears span `id`'s slot if it holds that span (a closed span's id may come back).
    pub fn remove(&self, id: u64) {
        let (slot, tag) = place(id);
        let w = self.slots[slot].load(Relaxed);
        if w != 0 && w >> (2 * SET_BITS) == tag {
            let _ = self.slots[slot].compare_exchange(w, 0, Relaxed, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(parent: &str, full: &str) -> SpanIds {
        SpanIds {
            parent: Labels::new(&[("t", parent)]),
            full: Labels::new(&[("t", full)]),
        }
    }

    /// Two ids that share a slot.
    fn same_slot() -> (u64, u64) {
        let first = place(1).0;
        let other = (2..).find(|&id| place(id).0 == first).unwrap();
        (1, other)
    }

    #[test]
    fn put_get_fill_remove() {
        let t = SpanTable::default();
        assert_eq!(t.get(7), Err(0));
        t.put(7, ids("a", "b"));
        assert_eq!(t.get(7), Ok(ids("a", "b")));
        t.put(7, ids("a", "c"));
        assert_eq!(t.get(7), Ok(ids("a", "c")), "a record rewrites");

        let (x, y) = same_slot();
        t.put(x, ids("x", "x"));
        let seen = t.get(y).unwrap_err();
        t.fill(y, seen, ids("y", "y"));
        assert_eq!(t.get(y), Ok(ids("y", "y")), "a miss fills");
        assert!(t.get(x).is_err(), "and evicts what was there");

        // A fill that saw the slot before a put leaves the put's sets.
        let seen = t.get(x).unwrap_err();
        t.put(x, ids("x", "new"));
        t.fill(x, seen, ids("x", "old"));
        assert_eq!(t.get(x), Ok(ids("x", "new")));

        t.remove(y);
        assert_eq!(
            t.get(x),
            Ok(ids("x", "new")),
            "only the span's own slot is cleared"
        );
        t.remove(x);
        assert_eq!(t.get(x), Err(0));
    }

    #[test]
    fn the_empty_set_round_trips() {
        let t = SpanTable::default();
        t.put(3, SpanIds::default());
        assert_eq!(t.get(3), Ok(SpanIds::default()));
    }
}
