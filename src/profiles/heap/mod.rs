//! The `heap` and `allocs` profiles: a snapshot of the bucket table turned into pprof
//! samples (`debug = 0`) or Go's legacy heap text (`debug = 1`).
//!
//! Called by profile writers only, under the thread's profiler guard (its allocations are
//! not sampled). It reads the tables lock-free; the allocator keeps running meanwhile.
//!
//! The snapshot is *now*: in-use = sampled allocations − sampled frees, each weighted by
//! the inverse of its sampling probability fixed when it was taken (see `sampler`). Go
//! reports the state at the last GC; we have no GC and see every free. Every view also
//! carries the RSS breakdown taken as it is written (`rss`), after the table statistics.

use std::collections::HashMap;
use std::io::{self, Write};

use crate::pprof::builder::{Label, ProfileBuilder};
use crate::pprof::stack_groups::{add_group, overflow_stack, stack_or};
use crate::pprof::symbolize::Symbolizer;
use crate::pprof::text::{self, HeapRecord};

mod allocator_frames;
mod snapshot;

use crate::{alloc::labels, alloc::peak, base::config, base::sys, base::tls, profiles::rss};
pub use allocator_frames::is_allocator_frame;
use snapshot::{fixed_to_count, snapshot, to_i64, Record};

/// Which view of the heap data to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapView {
    /// Default sample type `inuse_space` (Go's `heap`).
    InUse,
    /// Default sample type `alloc_space` (Go's `allocs`).
    Allocs,
    /// In-use at the recorded peak (`heap_peak`).
    Peak,
}

/// Writes the heap profile as gzip-compressed pprof protobuf.
pub fn write_proto<W: Write>(w: W, view: HeapView) -> io::Result<()> {
    let _guard = tls::ProfilerGuard::enter();
    let (records, stats) = snapshot(view);
    let mut b = builder_for(view);
    for (k, v) in stats
        .lines()
        .into_iter()
        .chain(rss::Breakdown::take().lines())
    {
        b.add_comment(&format!("{k}: {v}"));
    }
    let mut label_sets = LabelSets::default();
    for r in &records {
        add_record(&mut b, view, r, &mut label_sets);
    }
    b.write_gzip(w)
}

/// A profile of `view`'s sample types, period and time (the peak's, for `heap_peak`, with a
/// comment saying how it was recorded), trimming the allocator's frames.
fn builder_for(view: HeapView) -> ProfileBuilder {
    let types: &[(&str, &str)] = if view == HeapView::Peak {
        &[("inuse_objects", "count"), ("inuse_space", "bytes")]
    } else {
        &[
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes"),
        ]
    };
    let mut b = ProfileBuilder::new(types, ("space", "bytes"), config::sample_rate() as i64);
    b.set_trim_leading(is_allocator_frame);
    match view {
        HeapView::InUse => b.set_time_nanos(sys::now_unix_nanos()),
        HeapView::Allocs => {
            b.set_time_nanos(sys::now_unix_nanos());
            b.set_default_sample_type("alloc_space");
        }
        HeapView::Peak => {
            let (peak_bytes, peak_time, snapshots, now_bytes) = peak::stats();
            b.set_time_nanos(peak_time);
            b.add_comment(&format!(
                "heaprof.heap_peak: {peak_bytes} bytes estimated in use at the peak (now {now_bytes}); \
                 {snapshots} peak snapshots, each taken when in-use grew by more than 1/{} and {} sample intervals over the last",
                peak::MARGIN,
                peak::MIN_STEP_SAMPLES
            ));
        }
    }
    b
}

/// Label sets as pprof labels, by id, each converted once per profile.
type LabelSets = HashMap<u32, Vec<Label>>;

/// Adds one record: its values for `view`, its label set and Go's `bytes` label.
fn add_record(b: &mut ProfileBuilder, view: HeapView, r: &Record, label_sets: &mut LabelSets) {
    let c = &r.c;
    let inuse = [
        fixed_to_count(c.alloc_objects_w.saturating_sub(c.free_objects_w)),
        to_i64(c.alloc_bytes_w.saturating_sub(c.free_bytes_w)),
    ];
    let all = [
        fixed_to_count(c.alloc_objects_w),
        to_i64(c.alloc_bytes_w),
        inuse[0],
        inuse[1],
    ];
    let values: &[i64] = if view == HeapView::Peak { &inuse } else { &all };
    let mut labels = label_sets
        .entry(c.labels)
        .or_insert_with(|| {
            labels::pairs(c.labels)
                .iter()
                .map(|(k, v)| Label::Str {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect()
        })
        .clone();
    // Go's `bytes` label: the record's average sampled object size (exact for a site with
    // one size; within its size class, 12.5%, otherwise). Not on what did not fit (size
    // class 0).
    if c.class > 0 && c.alloc_count > 0 {
        labels.push(Label::Num {
            key: "bytes".into(),
            value: to_i64(c.alloc_bytes.saturating_add(c.alloc_count / 2) / c.alloc_count),
            unit: None,
        });
    }
    add_group(b, &r.stack, values, &labels);
}

/// Writes the heap profile as Go's legacy text (`debug = 1`): raw sampled counts, which
/// pprof rescales with the `heap/2R` header by each record's average size (exact for a
/// record of one size; the sizes of a record are within 12.5% of each other, which moves
/// the estimate by far less than the sampling error).
/// Labels have no place in this format; records that differ only by labels are merged.
pub fn write_text<W: Write>(w: W, view: HeapView) -> io::Result<()> {
    let _guard = tls::ProfilerGuard::enter();
    let (records, stats) = snapshot(view);
    let overflow = overflow_stack();
    let rows: Vec<HeapRecord> = records
        .iter()
        .map(|r| HeapRecord {
            inuse_objects: to_i64(r.c.alloc_count.saturating_sub(r.c.free_count)),
            inuse_bytes: to_i64(r.c.alloc_bytes.saturating_sub(r.c.free_bytes)),
            alloc_objects: to_i64(r.c.alloc_count),
            alloc_bytes: to_i64(r.c.alloc_bytes),
            stack: stack_or(&r.stack, &overflow),
        })
        .collect();
    let mut lines = stats.lines();
    lines.extend(rss::Breakdown::take().lines());
    let mut sym = Symbolizer::new();
    text::write_heap_text(
        w,
        config::sample_rate() as u64,
        &rows,
        &lines,
        &mut sym,
        Some(is_allocator_frame),
    )
}

/// Number of heap records (Go's `Count()` for heap and allocs).
pub fn record_count() -> usize {
    let _guard = tls::ProfilerGuard::enter();
    snapshot(HeapView::InUse).0.len()
}

/// Number of records in the `heap_peak` snapshot.
pub fn peak_record_count() -> usize {
    let _guard = tls::ProfilerGuard::enter();
    snapshot(HeapView::Peak).0.len()
}
