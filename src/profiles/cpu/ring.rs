//! Preallocated lock-free sample buffer between the SIGPROF handler (many producers) and the
//! CPU profiler's drain thread (one consumer).
//!
//! Called by: the CPU profiler's signal handler (`handler.rs`) ([`Ring::push_with`], async-signal-safe) and its
//! drain thread ([`Ring::pop_with`]). Must never allocate, lock or wait on the producer side.
//!
//! # Algorithm
//! Dmitry Vyukov's bounded MPMC queue (1024cores.net, "Bounded MPMC queue"), used with a
//! single consumer. Each slot carries a sequence stamp `seq`:
//! - `seq == pos`: free for the producer that claims position `pos` (by CAS on `tail`);
//! - `seq == pos + 1`: filled, ready for the consumer at position `pos`;
//! - after consuming, the consumer sets `seq = pos + capacity` (free for the next lap).
//!
//! A producer that finds its slot still holding the previous lap (`seq < pos`) reports the
//! ring full and the sample is counted as lost: it never waits. A producer interrupted
//! between claiming and publishing (by another signal) only delays the consumer, which stops
//! at that slot until the next drain. Capture writes straight into the claimed slot, so a
//! sample is copied once (by the consumer).
//!
//! Memory: `capacity × (16 + 8 × DEPTH)` bytes mapped once from the kernel (`MAP_NORESERVE`,
//! pages cost RSS only once touched); the ring lives for the rest of the process.

use crate::base::atomics::{Atomic, AtomicInt, Family, Ordering, SharedCell, Std};
use crate::base::sys;

/// Frames per sample (the unwinder's maximum depth).
pub const DEPTH: usize = crate::unwind::MAX_DEPTH;

#[repr(C)]
struct Slot<F: Family = Std> {
    seq: F::Usize,
    tid: F::Cell<i32>,
    labels: F::Cell<u32>,
    len: F::Cell<u32>,
    frames: F::Cell<[usize; DEPTH]>,
}

/// A fixed-capacity ring of stack samples (atomics and cells of `F`: see `atomics`). See
/// the module docs for the protocol.
pub struct Ring<F: Family = Std> {
    slots: *mut Slot<F>,
    mask: usize,
    /// Next position a producer claims.
    tail: F::Usize,
    /// Next position the (single) consumer reads. Atomic only so `&self` suffices.
    head: F::Usize,
    /// Samples dropped because the ring was full.
    lost: F::U64,
}

// SAFETY: slot contents are only written by the producer that claimed the slot (CAS on
// `tail`) before it publishes with a Release store of `seq`, and only read by the single
// consumer after an Acquire load of that `seq`; the sequence stamps hand each slot over.
unsafe impl<F: Family> Sync for Ring<F> {}
// SAFETY: as above; the mapping is never freed, so the pointer stays valid on any thread.
unsafe impl<F: Family> Send for Ring<F> {}

impl Ring {
    /// Maps a ring of `capacity` slots (rounded up to a power of two, at least 2) and leaks
    /// it. `None` if the kernel refuses the memory. Not async-signal-safe.
    pub fn new_leaked(capacity: usize) -> Option<&'static Ring> {
        let cap = capacity.max(2).next_power_of_two();
        let slots = sys::map_zeroed(cap.checked_mul(core::mem::size_of::<Slot>())?) as *mut Slot;
        if slots.is_null() {
            return None;
        }
        for i in 0..cap {
            // SAFETY: `slots` points to `cap` zeroed slots (a valid all-zero `Slot`); nobody
            // else knows the mapping yet.
            unsafe { (*slots.add(i)).seq.store(i, Ordering::Relaxed) };
        }
        Some(Box::leak(Box::new(Ring {
            slots,
            mask: cap - 1,
            tail: Atomic::new(0),
            head: Atomic::new(0),
            lost: Atomic::new(0),
        })))
    }
}

impl<F: Family> Ring<F> {
    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    fn slot(&self, pos: usize) -> &Slot<F> {
        // SAFETY: `pos & mask < capacity`, and the mapping holds `capacity` slots for ever.
        unsafe { &*self.slots.add(pos & self.mask) }
    }

    /// Claims a slot, lets `fill` write up to [`DEPTH`] frames into it (returning how many)
    /// and publishes it under `tid` with label set `labels`. Returns false, and counts a lost
    /// sample, if the ring is full (`fill` is then not called). Async-signal-safe, lock-free,
    /// never waits.
    pub fn push_with(
        &self,
        tid: i32,
        labels: u32,
        fill: impl FnOnce(&mut [usize; DEPTH]) -> usize,
    ) -> bool {
        let mut pos = self.tail.load(Ordering::Relaxed);
        let slot = loop {
            let slot = self.slot(pos);
            let seq = slot.seq.load(Ordering::Acquire);
            match seq as isize - pos as isize {
                // Free for this lap: try to claim it.
                0 => match self.tail.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break slot,
                    Err(now) => pos = now,
                },
                // Still holds last lap's sample: full.
                d if d < 0 => {
                    self.lost.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                // Another producer claimed `pos` meanwhile: reload.
                _ => pos = self.tail.load(Ordering::Relaxed),
            }
        };
        // SAFETY: the CAS above made this producer the only writer of the slot until its
        // Release store below; the consumer reads it only after seeing `pos + 1`.
        let n = slot
            .frames
            .with_mut(|f| fill(unsafe { &mut *f }))
            .min(DEPTH);
        // SAFETY: as above.
        unsafe {
            slot.tid.with_mut(|p| *p = tid);
            slot.labels.with_mut(|p| *p = labels);
            slot.len.with_mut(|p| *p = n as u32);
        }
        slot.seq.store(pos + 1, Ordering::Release);
        true
    }

    /// In a forked child, where no producer or consumer runs: empties the ring, including
    /// slots that producers of the parent claimed and never published (the consumer would
    /// stop at the first of them for good). Touches only the slots between head and tail.
    pub fn reset_after_fork(&self) {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        for pos in head..tail {
            // As if consumed: free for the producer of the next lap at this index.
            self.slot(pos)
                .seq
                .store(pos + self.capacity(), Ordering::Relaxed);
        }
        self.head.store(tail, Ordering::Release);
    }

    /// Takes the oldest published sample, if any, passing `(tid, labels, frames)` to `f`.
    /// Only one thread may consume (the drain thread; the session lock in `cpu.rs` keeps it one).
    pub fn pop_with(&self, f: impl FnOnce(i32, u32, &[usize])) -> bool {
        let pos = self.head.load(Ordering::Relaxed);
        let slot = self.slot(pos);
        if slot.seq.load(Ordering::Acquire) != pos + 1 {
            return false;
        }
        // SAFETY: the Acquire load saw the producer's Release store of `pos + 1`, so the slot
        // is fully written, and no producer touches it until we store `pos + capacity`.
        unsafe {
            let n = (slot.len.with(|p| *p) as usize).min(DEPTH);
            let (tid, labels) = (slot.tid.with(|p| *p), slot.labels.with(|p| *p));
            slot.frames.with(|p| f(tid, labels, &(&*p)[..n]));
        }
        self.head.store(pos + 1, Ordering::Relaxed);
        slot.seq.store(pos + self.capacity(), Ordering::Release);
        true
    }

    /// Counts a sample the producer could not take (no stack left to capture it on), as a
    /// lost one. Async-signal-safe.
    pub fn count_lost(&self) {
        self.lost.fetch_add(1, Ordering::Relaxed);
    }

    /// Samples lost (ring full, or [`Ring::count_lost`]) since the last [`Ring::take_lost`].
    pub fn take_lost(&self) -> u64 {
        self.lost.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn reset_after_fork_frees_a_slot_claimed_and_never_published() {
        let r = Ring::new_leaked(4).unwrap();
        assert!(r.push_with(1, 0, |f| {
            f[0] = 10;
            1
        }));
        // A producer of the parent claimed the next position, then vanished (fork).
        r.tail.fetch_add(1, Ordering::Relaxed);
        assert!(r.push_with(2, 0, |_| 0));
        let mut seen = Vec::new();
        while r.pop_with(|tid, _, _| seen.push(tid)) {}
        assert_eq!(seen, [1], "the consumer stops at the claimed slot");
        assert!(!r.pop_with(|_, _, _| {}));
        r.reset_after_fork();
        for lap in 0..3 {
            for tid in 0..4 {
                assert!(r.push_with(tid, 0, |_| 0), "lap {lap}");
            }
            let mut n = 0;
            while r.pop_with(|_, _, _| n += 1) {}
            assert_eq!(n, 4, "lap {lap}");
        }
    }

    #[test]
    fn fifo_full_and_wraparound() {
        let r = Ring::new_leaked(3).unwrap();
        assert_eq!(r.capacity(), 4);
        for lap in 0..5usize {
            for i in 0..4 {
                assert!(r.push_with(i as i32, 7, |f| {
                    f[0] = lap * 10 + i;
                    f[1] = 7;
                    2
                }));
            }
            assert!(!r.push_with(9, 0, |_| unreachable!("full ring must not call fill")));
            for i in 0..4 {
                assert!(r.pop_with(|tid, labels, fr| {
                    assert_eq!(tid, i as i32);
                    assert_eq!(labels, 7);
                    assert_eq!(fr, &[lap * 10 + i, 7]);
                }));
            }
            assert!(!r.pop_with(|_, _, _| unreachable!()));
        }
        assert_eq!(r.take_lost(), 5);
        assert_eq!(r.take_lost(), 0);
    }

    #[test]
    fn fill_length_is_clamped() {
        let r = Ring::new_leaked(2).unwrap();
        assert!(r.push_with(1, 0, |_| DEPTH + 100));
        assert!(r.pop_with(|_, _, fr| assert_eq!(fr.len(), DEPTH)));
    }

    /// Many producers, one consumer: every pushed sample arrives exactly once or is counted
    /// lost; checked against a model of what each producer pushed.
    #[test]
    fn concurrent_producers_against_model() {
        let r = Ring::new_leaked(64).unwrap();
        let producers = 4;
        let per = 20_000usize;
        let done = std::sync::atomic::AtomicUsize::new(0);
        let mut got: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        let mut pushed = [0usize; 4];
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..producers)
                .map(|p| {
                    let done = &done;
                    s.spawn(move || {
                        let mut ok = 0;
                        for i in 0..per {
                            if r.push_with(p as i32, 0, |f| {
                                f[0] = i;
                                f[1] = i ^ 0x5555;
                                2
                            }) {
                                ok += 1;
                            }
                        }
                        done.fetch_add(1, Ordering::Release);
                        ok
                    })
                })
                .collect();
            loop {
                let finished = done.load(Ordering::Acquire) == producers;
                while r.pop_with(|tid, _, fr| {
                    assert_eq!(fr.len(), 2);
                    assert_eq!(fr[1], fr[0] ^ 0x5555, "torn sample");
                    got.entry(tid).or_default().push(fr[0]);
                }) {}
                if finished {
                    break;
                }
                std::thread::yield_now();
            }
            for (p, h) in hs.into_iter().enumerate() {
                pushed[p] = h.join().unwrap();
            }
        });
        let lost = r.take_lost() as usize;
        let received: usize = got.values().map(Vec::len).sum();
        assert_eq!(received + lost, producers * per);
        for (p, v) in &got {
            assert_eq!(v.len(), pushed[*p as usize]);
            assert!(v.windows(2).all(|w| w[0] < w[1]), "per-producer order kept");
        }
    }
}

/// A model of the sequence-stamp protocol under loom (`atomics`): two producers and the
/// consumer on a ring of two slots, so producers contend for a slot, find the ring full,
/// and write a slot again after the consumer freed it (the next lap).
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use crate::base::atomics::{self, Loom};
    use loom::thread;

    const CAP: usize = 2;

    /// A ring of [`CAP`] slots, leaked for one iteration.
    fn ring() -> &'static Ring<Loom> {
        let slots: Box<[Slot<Loom>]> = (0..CAP)
            .map(|i| Slot {
                seq: Atomic::new(i),
                tid: loom::cell::UnsafeCell::new(0),
                labels: loom::cell::UnsafeCell::new(0),
                len: loom::cell::UnsafeCell::new(0),
                frames: loom::cell::UnsafeCell::new([0; DEPTH]),
            })
            .collect();
        Box::leak(Box::new(Ring {
            slots: Box::into_raw(slots).cast::<Slot<Loom>>(),
            mask: CAP - 1,
            tail: Atomic::new(0),
            head: Atomic::new(0),
            lost: Atomic::new(0),
        }))
    }

    /// Frees what `ring` leaked.
    ///
    /// # Safety
    /// Every thread that used `r` has been joined; `r` is not used again.
    unsafe fn free(r: &'static Ring<Loom>) {
        let slots = core::ptr::slice_from_raw_parts_mut(r.slots, CAP);
        // SAFETY: both came from `Box::leak`/`Box::into_raw` in `ring`, and are unused now.
        unsafe {
            drop(Box::from_raw(slots));
            drop(Box::from_raw(r as *const Ring<Loom> as *mut Ring<Loom>));
        }
    }

    /// Producer `p`'s sample `i`: tid `p`, labels `p + 100`, two frames that tell whether
    /// the copy is whole.
    fn push(r: &Ring<Loom>, p: i32, i: usize) -> bool {
        r.push_with(p, p as u32 + 100, |f| {
            f[0] = i;
            f[1] = i ^ 0x55;
            2
        })
    }

    /// Pops one sample if there is one, checking it is whole; `(producer, index)`.
    fn pop(r: &Ring<Loom>) -> Option<(i32, usize)> {
        let mut got = None;
        r.pop_with(|tid, labels, frames| {
            assert_eq!(labels, tid as u32 + 100, "labels of another sample");
            assert_eq!(frames.len(), 2);
            assert_eq!(frames[1], frames[0] ^ 0x55, "torn frames");
            got = Some((tid, frames[0]));
        });
        got
    }

    /// Every sample a producer pushed (push returned true) arrives exactly once, whole and
    /// in the producer's order; every refused one is counted lost.
    #[test]
    fn every_sample_arrives_once_whole_or_is_counted_lost() {
        let n = atomics::model("ring", atomics::builder(Some(3)), || {
            let r = ring();
            let p1 = thread::spawn(move || [push(r, 1, 0), push(r, 1, 1)]);
            let p2 = thread::spawn(move || [push(r, 2, 0)]);
            let consumer = thread::spawn(move || [pop(r), pop(r)]);
            let mut got: Vec<(i32, usize)> =
                consumer.join().unwrap().into_iter().flatten().collect();
            let pushed1 = p1.join().unwrap();
            let pushed2 = p2.join().unwrap();
            while let Some(s) = pop(r) {
                got.push(s);
            }
            let mut want: Vec<(i32, usize)> = Vec::new();
            want.extend((0..2).filter(|&i| pushed1[i]).map(|i| (1, i)));
            want.extend(pushed2[0].then_some((2, 0)));
            let mine = |p: i32, v: &[(i32, usize)]| {
                v.iter().filter(|s| s.0 == p).copied().collect::<Vec<_>>()
            };
            for p in [1, 2] {
                assert_eq!(mine(p, &got), mine(p, &want), "producer {p}: {got:?}");
            }
            let refused = 3 - want.len() as u64;
            assert_eq!(r.take_lost(), refused);
            // SAFETY: every thread is joined; `r` is not used again.
            unsafe { free(r) };
        });
        assert!(n > 1);
    }
}
