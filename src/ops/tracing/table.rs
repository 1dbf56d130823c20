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
//!
//! The slot never keeps a span's older sets once a record has changed them (the loom
//! models below), because the span's extensions lock orders every write of its entry:
//! [`put`](SpanTable::put) is called under the write lock, after the record, and
//! [`fill`](SpanTable::fill) under the read lock it read the sets with. A fill that read
//! the sets before a record (and released the lock before its CAS) could otherwise succeed
//! after the record's put, if the slot meanwhile went back to the word the miss saw (the
//! other span's miss evicting the put's entry with its own, which it had before): the slot
//! then held the old sets until the span's next record or close. A closed span's entry is
//! not written again: a fill runs inside an entry, which holds a handle on the span, and
//! the registry closes it only after the last handle is dropped (its reference count
//! orders that fill before the close); a span that gets the id again puts its own sets
//! when it is made.

use super::fields::SpanIds;
use crate::alloc::labels::{Labels, MAX_LABEL_SETS};
use crate::base::atomics::{Atomic, Family, Ordering::Relaxed, Std};

/// Slots: 32 KiB per layer; more live spans than this only makes some entries slower.
const SLOTS: usize = 4096;
/// Bits of a label set id in a slot.
const SET_BITS: u32 = 13;
const SET_MASK: u64 = (1 << SET_BITS) - 1;
const _: () = assert!(MAX_LABEL_SETS < 1 << SET_BITS);

/// One layer's table: `N` slots ([`SLOTS`]; the loom models use one) of `F`'s atomics
/// (core's, or loom's under `--cfg loom`).
pub(super) struct SpanTable<F: Family = Std, const N: usize = SLOTS> {
    slots: Box<[F::U64]>,
}

/// Where span `id` lives in a table of `N` slots, and the tag that tells it from the other
/// ids living there.
fn place<const N: usize>(id: u64) -> (usize, u64) {
    // splitmix64's finaliser: every bit of the id moves both the slot and the tag.
    let mut h = id;
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    // The slot from the low bits, the tag from the 38 high bits: independent of each other.
    (h as usize % N, h >> (2 * SET_BITS))
}

fn pack(tag: u64, ids: SpanIds) -> u64 {
    let set = |l: Labels| u64::from(l.id()) & SET_MASK;
    tag << (2 * SET_BITS) | set(ids.parent) << SET_BITS | set(ids.full)
}

/// An empty table.
impl<F: Family, const N: usize> Default for SpanTable<F, N> {
    fn default() -> Self {
        SpanTable {
            slots: (0..N).map(|_| F::U64::new(0)).collect(),
        }
    }
}

impl<F: Family, const N: usize> SpanTable<F, N> {
    /// The sets of span `id`, if its slot holds them; else `Err` with what the slot holds,
    /// for [`fill`](Self::fill).
    pub fn get(&self, id: u64) -> Result<SpanIds, u64> {
        let (slot, tag) = place::<N>(id);
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

    /// Writes the sets of span `id`, made or changed. Called under the span's extensions
    /// write lock, after writing them there: the lock orders a span's puts as it orders
    /// its records, and after any [`fill`](Self::fill) that read the older sets.
    pub fn put(&self, id: u64, ids: SpanIds) {
        let (slot, tag) = place::<N>(id);
        self.slots[slot].store(pack(tag, ids), Relaxed);
    }

    /// After a miss that saw `seen` in the slot, writes the sets read from the span's
    /// extensions, unless the slot changed meanwhile. Called with the extensions' read lock
    /// still held: a CAS that succeeds on a word that came back (X's miss saw Y's entry, a
    /// record put X's new sets, Y's miss evicted them and wrote Y's entry again) then still
    /// writes X's current sets, and a record after it puts its own afterwards.
    pub fn fill(&self, id: u64, seen: u64, ids: SpanIds) {
        let (slot, tag) = place::<N>(id);
        let _ = self.slots[slot].compare_exchange(seen, pack(tag, ids), Relaxed, Relaxed);
    }

    /// Clears span `id`'s slot if it holds that span (a closed span's id may come back).
    pub fn remove(&self, id: u64) {
        let (slot, tag) = place::<N>(id);
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
        let first = place::<SLOTS>(1).0;
        let other = (2..).find(|&id| place::<SLOTS>(id).0 == first).unwrap();
        (1, other)
    }

    #[test]
    fn put_get_fill_remove() {
        let t: SpanTable = SpanTable::default();
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
        let t: SpanTable = SpanTable::default();
        t.put(3, SpanIds::default());
        assert_eq!(t.get(3), Ok(SpanIds::default()));
    }
}

/// Models of the table beside the span's extensions under loom (`atomics`): the layer's
/// entry miss (get, read the extensions, fill), its record (write the extensions, put) and
/// its close (remove), with another span's entry evicting through the same slot.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use crate::base::atomics::{self, Loom, Ordering};
    use loom::sync::{Arc, RwLock};
    use loom::thread;

    /// One slot: every span shares it.
    type Table = SpanTable<Loom, 1>;
    /// A span's extensions (tracing-subscriber keeps them under a `RwLock`): its sets.
    type Ext = Arc<RwLock<SpanIds>>;

    const X: u64 = 1;
    const Y: u64 = 2;

    fn sets(n: u32) -> SpanIds {
        SpanIds {
            parent: Labels::from_id(n),
            full: Labels::from_id(n + 1),
        }
    }

    /// The sets' name in a failure: `sets(n)` is `Sn`.
    fn n(ids: SpanIds) -> String {
        format!("S{}", ids.parent.id())
    }

    fn ext(ids: SpanIds) -> Ext {
        Arc::new(RwLock::new(ids))
    }

    /// `on_enter`: the sets from the slot, else from the extensions, filling the slot.
    fn enter(t: &Table, id: u64, ext: &Ext) -> SpanIds {
        match t.get(id) {
            Ok(ids) => ids,
            Err(seen) => {
                let ext = ext.read().unwrap();
                t.fill(id, seen, *ext);
                *ext
            }
        }
    }

    /// `on_record`: new sets into the extensions, then into the slot, under the lock.
    fn record(t: &Table, id: u64, ext: &Ext, ids: SpanIds) {
        let mut ext = ext.write().unwrap();
        *ext = ids;
        t.put(id, ids);
    }

    /// If the slot holds span `id`, it holds the span's sets as its extensions have them.
    fn check_current(t: &Table, id: u64, ext: &Ext) {
        if let Ok(ids) = t.get(id) {
            let now = *ext.read().unwrap();
            assert!(
                ids == now,
                "span {id}: slot {}, extensions {}",
                n(ids),
                n(now)
            );
        }
    }

    /// A miss on X that read X's old sets, a record on X, and a miss on Y (the slot holds
    /// X's new entry) that puts back the very word X's miss saw: X's fill must not leave
    /// X's old sets in the slot (the ABA of a CAS on the word alone).
    #[test]
    fn a_fill_never_leaves_stale_sets() {
        let n = atomics::model("span table fill/record", atomics::builder(Some(3)), || {
            let t = Arc::new(Table::default());
            let (ex, ey) = (ext(sets(1)), ext(sets(5)));
            t.put(Y, sets(5));
            let a = thread::spawn({
                let (t, ex) = (t.clone(), ex.clone());
                move || enter(&t, X, &ex)
            });
            let b = thread::spawn({
                let (t, ex) = (t.clone(), ex.clone());
                move || record(&t, X, &ex, sets(3))
            });
            let c = thread::spawn({
                let (t, ey) = (t.clone(), ey.clone());
                move || enter(&t, Y, &ey)
            });
            let seen = a.join().unwrap();
            assert!(
                seen == sets(1) || seen == sets(3),
                "entered with {}",
                n(seen)
            );
            b.join().unwrap();
            assert_eq!(c.join().unwrap(), sets(5));
            check_current(&t, X, &ex);
            check_current(&t, Y, &ey);
        });
        assert!(n > 1);
    }

    /// Two records of X on two threads while a third enters it: the slot ends with the
    /// sets of the record that wrote the extensions last.
    #[test]
    fn records_put_in_the_order_they_wrote() {
        let n = atomics::model(
            "span table record/record",
            atomics::builder(Some(3)),
            || {
                let t = Arc::new(Table::default());
                let ex = ext(sets(1));
                t.put(X, sets(1));
                let spawn_record = |s| {
                    let (t, ex) = (t.clone(), ex.clone());
                    thread::spawn(move || record(&t, X, &ex, sets(s)))
                };
                let (b, d) = (spawn_record(3), spawn_record(7));
                let a = thread::spawn({
                    let (t, ex) = (t.clone(), ex.clone());
                    move || enter(&t, X, &ex)
                });
                let seen = a.join().unwrap();
                assert!([sets(1), sets(3), sets(7)].contains(&seen));
                b.join().unwrap();
                d.join().unwrap();
                check_current(&t, X, &ex);
            },
        );
        assert!(n > 1);
    }

    /// X is entered on one thread and its two handles dropped on two (the registry's
    /// reference count: the last drop closes it), Y's miss evicts through the slot, and
    /// the closing thread's id comes back at once for a new span Z (the slab reuses it):
    /// X's sets are never read for Z, whatever a fill of X was doing.
    #[test]
    fn a_closed_span_is_not_read_for_its_id_reused() {
        const Z: u64 = X;
        let n = atomics::model("span table fill/close", atomics::builder(Some(3)), || {
            let t = Arc::new(Table::default());
            let (ex, ey, ez) = (ext(sets(1)), ext(sets(5)), ext(SpanIds::default()));
            t.put(X, sets(1));
            let refs = Arc::new(loom::sync::atomic::AtomicUsize::new(2));
            // Registry::try_close, then on_close (remove), the slab's reuse, on_new_span.
            let drop_handle = {
                let (t, ez) = (t.clone(), ez.clone());
                move || {
                    if refs.fetch_sub(1, Ordering::Release) == 1 {
                        loom::sync::atomic::fence(Ordering::Acquire);
                        t.remove(X);
                        record(&t, Z, &ez, sets(7));
                    }
                }
            };
            let a = thread::spawn({
                let (t, ex, drop_handle) = (t.clone(), ex.clone(), drop_handle.clone());
                move || {
                    let seen = enter(&t, X, &ex);
                    drop_handle();
                    seen
                }
            });
            let b = thread::spawn(drop_handle);
            let c = thread::spawn({
                let (t, ey) = (t.clone(), ey.clone());
                move || enter(&t, Y, &ey)
            });
            assert_eq!(a.join().unwrap(), sets(1));
            b.join().unwrap();
            assert_eq!(c.join().unwrap(), sets(5));
            check_current(&t, Z, &ez);
            check_current(&t, Y, &ey);
        });
        assert!(n > 1);
    }
}
