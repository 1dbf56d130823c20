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

use crate::buckets::BucketSnapshot;
use crate::pprof::builder::{Label, ProfileBuilder};
use crate::pprof::text::{self, HeapRecord};
use crate::sampler::OBJECT_WEIGHT_ONE;
use crate::stacktab::OVERFLOW_STACK;
use crate::symbolize::Symbolizer;
use crate::{config, labels, live, peak, rss, sys, tables, tls};

/// Name of the pseudo-function that stands for samples whose stack or bucket did not fit.
pub const OVERFLOW_FRAME: &str = "heaprof::table_overflow";

/// Stands for overflowed samples in the legacy text, which needs a real address: the
/// text names this function's address (+1, as a return address would be).
#[inline(never)]
pub fn table_overflow() {
    std::hint::black_box(OVERFLOW_FRAME);
}

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

/// One record of the snapshot: a stack (empty for the overflow pseudo-stack), one object
/// size, and its counters merged over duplicate stack ids.
struct Record {
    stack: Vec<usize>,
    overflow: bool,
    c: BucketSnapshot,
}

/// Table usage and loss counters, shown in both formats.
struct Stats {
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
    fn lines(&self) -> Vec<(&'static str, String)> {
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
                    crate::arena::RESERVE_BYTES
                ),
            ),
            (
                "heaprof.large_region",
                format!(
                    "{} live, {} retained, of {} reserved",
                    self.large.0,
                    self.large.1,
                    crate::large_region::reserved()
                ),
            ),
            ("heaprof.samples_without_room", self.large.2.to_string()),
            ("heaprof.invalid_frees", self.invalid_frees.to_string()),
        ];
        v.extend(labels::stat_lines());
        v
    }
}

fn snapshot(view: HeapView) -> (Vec<Record>, Stats) {
    let mut stats = Stats {
        stacks_used: 0,
        stacks_capacity: 0,
        stacks_overflowed: 0,
        buckets_used: 0,
        buckets_capacity: 0,
        buckets_overflowed: 0,
        arena_committed: crate::arena::committed(),
        large: crate::large_region::stats(),
        invalid_frees: live::invalid_frees(),
    };
    let Some(t) = tables::get_if_created() else {
        return (Vec::new(), stats);
    };
    stats.stacks_used = t.stacks.used();
    stats.stacks_capacity = t.stacks.capacity();
    stats.stacks_overflowed = t.stacks.overflowed();
    stats.buckets_used = t.buckets.used();
    stats.buckets_capacity = t.buckets.capacity();
    stats.buckets_overflowed = t.buckets.overflowed();

    // Merge buckets whose stacks are identical (a race can give one stack two ids).
    let mut merged: HashMap<(Vec<usize>, bool, u32, u32), BucketSnapshot> = HashMap::new();
    let mut frames = Vec::new();
    for (id, mut b) in t.buckets.snapshot() {
        if view == HeapView::Peak {
            // At the peak: what was in use then, as if allocated and never freed.
            let (objects_w, bytes_w, count, bytes) = peak::read(t.peak, id);
            b.alloc_objects_w = objects_w;
            b.alloc_bytes_w = bytes_w;
            b.alloc_count = count;
            b.alloc_bytes = bytes;
            (b.free_objects_w, b.free_bytes_w, b.free_count, b.free_bytes) = (0, 0, 0, 0);
            if count == 0 {
                continue;
            }
        }
        let overflow = b.stack == OVERFLOW_STACK || !t.stacks.read(b.stack, &mut frames);
        if overflow {
            frames.clear();
        }
        let class = if overflow { 0 } else { b.class };
        let e = merged
            .entry((frames.clone(), overflow, class, b.labels))
            .or_default();
        e.class = class;
        e.labels = b.labels;
        for (sum, v) in [
            (&mut e.alloc_count, b.alloc_count),
            (&mut e.alloc_bytes, b.alloc_bytes),
            (&mut e.free_count, b.free_count),
            (&mut e.free_bytes, b.free_bytes),
            (&mut e.alloc_objects_w, b.alloc_objects_w),
            (&mut e.alloc_bytes_w, b.alloc_bytes_w),
            (&mut e.free_objects_w, b.free_objects_w),
            (&mut e.free_bytes_w, b.free_bytes_w),
        ] {
            *sum = sum.saturating_add(v);
        }
    }
    let mut records: Vec<Record> = merged
        .into_iter()
        .map(|((stack, overflow, _, _), c)| Record { stack, overflow, c })
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

/// Leading (leaf-side) frames that belong to the allocation machinery rather than to the
/// code that asked for memory: heaprof itself, the `__rust_alloc` shims, and the standard
/// library's collections and allocation plumbing (`alloc::`, `core::`, hashbrown — what
/// Go's `runtime.*` allocation frames are to Go). Stripped so the top frame is the
/// allocating function; a stack made only of such frames is kept whole.
pub fn is_allocator_frame(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "heaprof::",
        "__rustc::",
        "__rust_alloc",
        "__rust_realloc",
        "__rust_alloc_zeroed",
        "__rdl_",
        "__rg_",
        "alloc::",
        "core::",
        "hashbrown::",
        "std::alloc::",
        "std::sys::alloc::",
        "std::collections::",
    ];
    let matches = |n: &str| PREFIXES.iter().any(|p| n.starts_with(p));
    match name.strip_prefix('<') {
        // `<Type as Trait>::method`: machinery if either side is.
        Some(qualified) => {
            let (ty, tr) = qualified.split_once(" as ").unwrap_or((qualified, ""));
            // A generic receiver (`<T as alloc::…>`) is judged by its trait; a concrete
            // type by its own path, so user impls of core traits stay.
            matches(ty) || (!ty.contains("::") && matches(tr))
        }
        None => matches(name),
    }
}

fn fixed_to_count(v: u64) -> i64 {
    to_i64(v.saturating_add(OBJECT_WEIGHT_ONE / 2) / OBJECT_WEIGHT_ONE)
}

/// A counter as a profile value: saturated at `i64::MAX` rather than wrapped negative.
fn to_i64(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// Writes the heap profile as gzip-compressed pprof protobuf.
pub fn write_proto<W: Write>(w: W, view: HeapView) -> io::Result<()> {
    let _guard = tls::ProfilerGuard::enter();
    let (records, stats) = snapshot(view);
    let rate = config::sample_rate();
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
    let mut b = ProfileBuilder::new(types, ("space", "bytes"), rate as i64);
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
    for (k, v) in stats
        .lines()
        .into_iter()
        .chain(rss::Breakdown::take().lines())
    {
        b.add_comment(&format!("{k}: {v}"));
    }
    let mut label_sets: HashMap<u32, Vec<Label>> = HashMap::new();
    for r in &records {
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
        if r.overflow {
            b.add_pseudo_sample(OVERFLOW_FRAME, values, &labels);
            continue;
        }
        // Go's `bytes` label: the record's average sampled object size (exact for a site
        // with one size; within its size class, 12.5%, otherwise).
        if c.class > 0 && c.alloc_count > 0 {
            labels.push(Label::Num {
                key: "bytes".into(),
                value: to_i64(c.alloc_bytes.saturating_add(c.alloc_count / 2) / c.alloc_count),
                unit: None,
            });
        }
        b.add_sample(&r.stack, false, values, &labels);
    }
    b.write_gzip(w)
}

/// Writes the heap profile as Go's legacy text (`debug = 1`): raw sampled counts, which
/// pprof rescales with the `heap/2R` header by each record's average size (exact for a
/// record of one size; the sizes of a record are within 12.5% of each other, which moves
/// the estimate by far less than the sampling error).
/// Labels have no place in this format; records that differ only by labels are merged.
pub fn write_text<W: Write>(w: W, view: HeapView) -> io::Result<()> {
    let _guard = tls::ProfilerGuard::enter();
    let (records, stats) = snapshot(view);
    let overflow_stack = [table_overflow as fn() as usize + 1];
    let rows: Vec<HeapRecord> = records
        .iter()
        .map(|r| HeapRecord {
            inuse_objects: to_i64(r.c.alloc_count.saturating_sub(r.c.free_count)),
            inuse_bytes: to_i64(r.c.alloc_bytes.saturating_sub(r.c.free_bytes)),
            alloc_objects: to_i64(r.c.alloc_count),
            alloc_bytes: to_i64(r.c.alloc_bytes),
            stack: if r.overflow {
                &overflow_stack
            } else {
                &r.stack
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_frames_are_recognised() {
        for n in [
            "heaprof::alloc::ProfilingAllocator<A>::alloc_sampled",
            "<heaprof::alloc::ProfilingAllocator<A> as core::alloc::global::GlobalAlloc>::alloc",
            "__rustc::__rust_alloc",
            "__rust_alloc",
            "alloc::raw_vec::RawVecInner<A>::finish_grow",
            "alloc::alloc::exchange_malloc",
            "alloc::string::String::push_str",
            "<T as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
            "hashbrown::raw::RawTable<T,A>::reserve_rehash",
        ] {
            assert!(is_allocator_frame(n), "{n}");
        }
        for n in [
            "quickstart::make_strings",
            "<quickstart::Cache as core::default::Default>::default",
            "main",
        ] {
            assert!(!is_allocator_frame(n), "{n}");
        }
    }
}
