//! The `heap_peak` profile: the sampled in-use heap at the moment the process's sampled
//! in-use total was highest.
//!
//! The allocator's fast path is untouched. The sampled paths keep one shared total of
//! estimated in-use bytes (`+w` on a sampled allocation, `−w` on its free). When a sampled
//! allocation lifts the total above the last recorded peak by more than 1/[`MARGIN`]
//! (1/64 ≈ 1.6%) and by more than [`MIN_STEP_SAMPLES`] sample intervals (4 × the rate:
//! a smaller rise is within the sampling error of the estimate), that thread copies every
//! bucket's in-use counters into a preallocated array beside the bucket table — no
//! allocation, no lock (a thread that finds another snapshot in progress skips; the next
//! crossing records). Cost in accuracy: the recorded peak can trail the true sampled peak
//! by up to 1/64 of it or 4 × the rate, whichever is more, on top of the sampling error;
//! a snapshot taken while other threads allocate is not atomic across buckets. Cost in time:
//! one pass over the buckets in use per 1.6% of growth of the peak, i.e. about 64·ln(peak /
//! (256 × rate)) passes over a process's life, plus one per 4 × rate of growth below that.
//! (Without the second bound a heap growing from its first sample to 22 MB took ~240 passes
//! in its first milliseconds: 2.4 ms of the first 10 ms of an allocation benchmark.)
//!
//! Growth dumps (`HEAPROF_DUMP_ON_GROWTH`) read the same total: the dump thread arms a level,
//! and the sampled allocation that lifts the total to it wakes the dump thread (one load and
//! compare per sampled allocation; nothing on the unsampled path).

use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::alloc::buckets::BucketTable;

/// A new peak is recorded when in-use exceeds the last one by more than 1/MARGIN of it.
pub const MARGIN: u64 = 64;
/// ... and by more than this many sample intervals (the rate in bytes).
pub const MIN_STEP_SAMPLES: u64 = 4;

/// Per-bucket in-use counters at the recorded peak (same indices as the bucket table).
#[repr(C)]
#[derive(Default)]
pub struct PeakSlot {
    objects_w: AtomicU64,
    bytes_w: AtomicU64,
    count: AtomicU64,
    bytes: AtomicU64,
}

/// Estimated in-use bytes of sampled blocks, process-wide. Written by every sampled
/// allocation and free on every thread, so it has cache lines of its own: beside the
/// read-mostly statics (the tables, the header secret) it made every sample of one thread
/// miss on them in another's.
static INUSE_BYTES_W: CachePadded<AtomicI64> = CachePadded::new(AtomicI64::new(0));
/// The recorded peak (estimated bytes) and when it was taken.
static PEAK_BYTES_W: AtomicU64 = AtomicU64::new(0);
static PEAK_TIME_NANOS: AtomicI64 = AtomicI64::new(0);
static SNAPSHOTS: AtomicU64 = AtomicU64::new(0);
static SNAPSHOTTING: AtomicBool = AtomicBool::new(false);
/// Growth dumps: the in-use level at which a sampled allocation wakes the dump thread
/// (`u64::MAX`: not armed). Set by the dump thread, cleared by the first allocation that
/// reaches it, so each arming wakes the dump thread once.
static GROWTH_WAKE_AT: AtomicU64 = AtomicU64::new(u64::MAX);

/// Counts a sampled allocation of estimated `bytes_w`; records a snapshot if it makes a
/// new peak. Called on the sampled path (inside the allocator): never allocates.
///
/// The arithmetic saturates: weights and the rate are bounded (`config::MAX_HEAP_PROFILE_RATE`),
/// but a wrong total must never become a panic inside the allocator.
pub fn on_alloc(buckets: &BucketTable, slots: &[PeakSlot], bytes_w: u64) {
    let w = i64::try_from(bytes_w).unwrap_or(i64::MAX);
    let total = INUSE_BYTES_W
        .fetch_add(w, Ordering::Relaxed)
        .saturating_add(w);
    let total = total.max(0) as u64;
    if total >= GROWTH_WAKE_AT.load(Ordering::Relaxed) {
        growth_reached();
    }
    let peak = PEAK_BYTES_W.load(Ordering::Relaxed);
    let min_step = MIN_STEP_SAMPLES.saturating_mul(crate::base::config::sample_rate() as u64);
    if total <= peak.saturating_add((peak / MARGIN).max(min_step)) {
        return;
    }
    if SNAPSHOTTING.swap(true, Ordering::Acquire) {
        return; // another thread is recording; the next crossing records again
    }
    buckets.for_each_used(|id, b| {
        if let Some(s) = slots.get(id as usize) {
            s.objects_w.store(
                b.alloc_objects_w.saturating_sub(b.free_objects_w),
                Ordering::Relaxed,
            );
            s.bytes_w.store(
                b.alloc_bytes_w.saturating_sub(b.free_bytes_w),
                Ordering::Relaxed,
            );
            s.count.store(
                b.alloc_count.saturating_sub(b.free_count),
                Ordering::Relaxed,
            );
            s.bytes.store(
                b.alloc_bytes.saturating_sub(b.free_bytes),
                Ordering::Relaxed,
            );
        }
    });
    PEAK_BYTES_W.store(total, Ordering::Relaxed);
    PEAK_TIME_NANOS.store(crate::base::sys::now_unix_nanos(), Ordering::Relaxed);
    SNAPSHOTS.fetch_add(1, Ordering::Relaxed);
    SNAPSHOTTING.store(false, Ordering::Release);
}

/// In a forked child: a snapshot the fork interrupted on another thread never finishes, and
/// its flag would stop every later one (`heap_peak` frozen). The half-written snapshot is
/// overwritten by the child's next one.
pub fn after_fork_child() {
    SNAPSHOTTING.store(false, Ordering::Relaxed);
}

/// Tests of the fork protocol: raises or lowers the flag as a snapshotting thread would.
pub fn hold_for_test(held: bool) {
    SNAPSHOTTING.store(held, Ordering::Release);
}

/// The armed growth level was reached: disarm it, and wake the dump thread if this thread
/// is the one that disarmed it. A `write(2)` of one byte; no lock, no allocation.
#[cold]
#[inline(never)]
fn growth_reached() {
    if GROWTH_WAKE_AT.swap(u64::MAX, Ordering::Relaxed) != u64::MAX {
        crate::base::wake_pipe::wake();
    }
}

/// Arms the growth wake-up at `level` estimated in-use bytes (`u64::MAX` disarms). Called by
/// the dump thread.
pub fn arm_growth_wake(level: u64) {
    GROWTH_WAKE_AT.store(level, Ordering::Relaxed);
}

/// The sampled in-use estimate now (bytes; 0 if frees briefly ran ahead).
pub fn in_use() -> u64 {
    INUSE_BYTES_W.load(Ordering::Relaxed).max(0) as u64
}

/// Counts the free of a sampled block of estimated `bytes_w`.
pub fn on_free(bytes_w: u64) {
    let w = i64::try_from(bytes_w).unwrap_or(i64::MAX);
    INUSE_BYTES_W.fetch_sub(w, Ordering::Relaxed);
}

/// The recorded peak's counters for bucket `id`: (objects_w, bytes_w, count, bytes).
pub fn read(slots: &[PeakSlot], id: u32) -> (u64, u64, u64, u64) {
    slots.get(id as usize).map_or((0, 0, 0, 0), |s| {
        (
            s.objects_w.load(Ordering::Relaxed),
            s.bytes_w.load(Ordering::Relaxed),
            s.count.load(Ordering::Relaxed),
            s.bytes.load(Ordering::Relaxed),
        )
    })
}

/// (peak estimated bytes, its time in Unix ns, snapshots taken, current in-use estimate).
pub fn stats() -> (u64, i64, u64, i64) {
    (
        PEAK_BYTES_W.load(Ordering::Relaxed),
        PEAK_TIME_NANOS.load(Ordering::Relaxed),
        SNAPSHOTS.load(Ordering::Relaxed),
        INUSE_BYTES_W.load(Ordering::Relaxed),
    )
}
