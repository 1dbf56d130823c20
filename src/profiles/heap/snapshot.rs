//! The heap snapshot every heap view is written from: the bucket table read lock-free,
//! each bucket's stack resolved and identical stacks merged (per size class and label set),
//! the peak's counters substituted for `heap_peak`, and the tables' usage counters.

use crate::alloc::buckets::BucketSnapshot;
use crate::base::sampler::OBJECT_WEIGHT_ONE;
use crate::pprof::stack_groups::{merge_by_stack, Frames};
use crate::{alloc::labels, alloc::peak, alloc::sampled_block, alloc::tables, base::config};

use super::HeapView;

/// One record of the snapshot: a stack (`None`: it did not fit), one object size, and its
/// counters merged over duplicate stack ids.
pub(super) struct Record {
    pub stack: Frames,
    pub c: BucketSnapshot,
}

/// Table usage and loss counters, shown in both formats.
pub(super) struct Stats {
    stacks_used: usize,
    stacks_capacity: usize,
    stacks_overflowed: u64,
    buckets_used: usize,
    buckets_capacity: usize,
    buckets_overflowed: u64,
    arena_committed: usize,
    /// (bytes live blocks may have touched, bytes retained, blocks refused).
    large: (usize, usize, u64),
    invalid_frees: u64,
}

impl Stats {
    pub fn lines(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("heaprof.sample_rate", config::sample_rate().to_string()),
            (
                "heaprof.stacks",
                format!("{} of {}", self.stacks_used, self.stacks_capacity),
            ),
            (
                "heaprof.stacks_overflowed",
                self.stacks_overflowed.to_string(),
            ),
            (
                "heaprof.buckets",
                format!("{} of {}", self.buckets_used, self.buckets_capacity),
            ),
            (
                "heaprof.buckets_overflowed",
                self.buckets_overflowed.to_string(),
            ),
            (
                "heaprof.arena_committed",
                format!(
                    "{} of {}",
                    self.arena_committed,
                    crate::alloc::arena::RESERVE_BYTES
                ),
            ),
            (
                "heaprof.large_region",
                format!(
                    "{} live, {} retained, of {} reserved",
                    self.large.0,
                    self.large.1,
                    crate::alloc::large_region::reserved()
                ),
            ),
            ("heaprof.samples_without_room", self.large.2.to_string()),
            ("heaprof.invalid_frees", self.invalid_frees.to_string()),
        ];
        v.extend(labels::stat_lines());
        v
    }
}

impl Stats {
    /// The counters of the reservations, and of the tables `t` when they exist.
    fn read(t: Option<&tables::Tables>) -> Stats {
        Stats {
            stacks_used: t.map_or(0, |t| t.stacks.used()),
            stacks_capacity: t.map_or(0, |t| t.stacks.capacity()),
            stacks_overflowed: t.map_or(0, |t| t.stacks.overflowed()),
            buckets_used: t.map_or(0, |t| t.buckets.used()),
            buckets_capacity: t.map_or(0, |t| t.buckets.capacity()),
            buckets_overflowed: t.map_or(0, |t| t.buckets.overflowed()),
            arena_committed: crate::alloc::arena::committed(),
            large: crate::alloc::large_region::stats(),
            invalid_frees: sampled_block::invalid_frees(),
        }
    }
}

/// The records of `view` and the tables' counters, now.
pub(super) fn snapshot(view: HeapView) -> (Vec<Record>, Stats) {
    let t = tables::get_if_created();
    let stats = Stats::read(t);
    let Some(t) = t else {
        return (Vec::new(), stats);
    };
    let buckets = t
        .buckets
        .snapshot()
        .into_iter()
        .filter_map(|(id, b)| match view {
            HeapView::Peak => at_peak(t, id, b).map(|b| (b.stack, b)),
            _ => Some((b.stack, b)),
        });
    // One record per stack, size class (0 for what did not fit) and label set.
    let merged = merge_by_stack(
        buckets,
        Some(&t.stacks),
        |b, resolved| (if resolved { b.class } else { 0 }, b.labels),
        add_counters,
    );
    let mut records: Vec<Record> = merged
        .into_iter()
        .map(|(stack, (class, labels), mut c)| {
            (c.class, c.labels) = (class, labels);
            Record { stack, c }
        })
        .collect();
    // Deterministic order: largest in-use first, then by stack, size and labels.
    records.sort_by(|a, b| {
        let ia = a.c.alloc_bytes_w.saturating_sub(a.c.free_bytes_w);
        let ib = b.c.alloc_bytes_w.saturating_sub(b.c.free_bytes_w);
        ib.cmp(&ia)
            .then_with(|| a.stack.cmp(&b.stack))
            .then(a.c.class.cmp(&b.c.class))
            .then(a.c.labels.cmp(&b.c.labels))
    });
    (records, stats)
}

/// Bucket `id` as it was at the peak: what was in use then, as if allocated and never
/// freed; `None` if nothing of it was.
fn at_peak(t: &tables::Tables, id: u32, mut b: BucketSnapshot) -> Option<BucketSnapshot> {
    let (objects_w, bytes_w, count, bytes) = peak::read(t.peak, id);
    (
        b.alloc_objects_w,
        b.alloc_bytes_w,
        b.alloc_count,
        b.alloc_bytes,
    ) = (objects_w, bytes_w, count, bytes);
    (b.free_objects_w, b.free_bytes_w, b.free_count, b.free_bytes) = (0, 0, 0, 0);
    (count > 0).then_some(b)
}

/// Adds `b`'s counters into `sum`'s, saturating.
fn add_counters(sum: &mut BucketSnapshot, b: BucketSnapshot) {
    for (s, v) in [
        (&mut sum.alloc_count, b.alloc_count),
        (&mut sum.alloc_bytes, b.alloc_bytes),
        (&mut sum.free_count, b.free_count),
        (&mut sum.free_bytes, b.free_bytes),
        (&mut sum.alloc_objects_w, b.alloc_objects_w),
        (&mut sum.alloc_bytes_w, b.alloc_bytes_w),
        (&mut sum.free_objects_w, b.free_objects_w),
        (&mut sum.free_bytes_w, b.free_bytes_w),
    ] {
        *s = s.saturating_add(v);
    }
}

/// Fixed-point object weights as a count, rounded.
pub(super) fn fixed_to_count(v: u64) -> i64 {
    to_i64(v.saturating_add(OBJECT_WEIGHT_ONE / 2) / OBJECT_WEIGHT_ONE)
}

/// A counter as a profile value: saturated at `i64::MAX` rather than wrapped negative.
pub(super) fn to_i64(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}
