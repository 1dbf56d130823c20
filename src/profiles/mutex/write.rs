//! Writing the `mutex` profile: the records merged by stack, as pprof (values scaled by the
//! fraction) or Go's `--- mutex:` text (raw sampled events), release machinery trimmed.

use std::io::{self, Write};

use super::{fraction, records_lock, Rec};
use crate::alloc::tables;
use crate::base::{sys, tls};
use crate::pprof::builder::ProfileBuilder;
use crate::pprof::stack_groups::{add_group, merge_by_stack, overflow_stack, stack_or, Frames};
use crate::pprof::symbolize::Symbolizer;
use crate::pprof::text::{self, ContentionRecord};
use crate::pprof::trim::path_starts_with_any;
use crate::profiles::block;

/// Leading frames of a recorded stack that are the release machinery: heaprof's, and the drop
/// glue or `drop(guard)` that ran the guard's destructor.
pub fn is_release_frame(name: &str) -> bool {
    block::is_lock_frame(name)
        || path_starts_with_any(name, &["core::ptr::drop_in_place", "core::mem::drop"])
}

/// One record to write: frames (`None`: did not fit the stack table) and its values.
struct Row {
    stack: Frames,
    rec: Rec,
}

fn rows() -> Vec<Row> {
    let copy: Vec<(u32, Rec)> = records_lock().iter().map(|(&k, &v)| (k, v)).collect();
    let stacks = tables::get_if_created().map(|t| &t.stacks);
    let merged = merge_by_stack(
        copy,
        stacks,
        |_, _| (),
        |e: &mut Rec, r| {
            e.samples += r.samples;
            e.sampled_ns = e.sampled_ns.saturating_add(r.sampled_ns);
            e.count = e.count.saturating_add(r.count);
            e.delay_ns = e.delay_ns.saturating_add(r.delay_ns);
        },
    );
    let mut out: Vec<Row> = merged
        .into_iter()
        .map(|(stack, (), rec)| Row { stack, rec })
        .collect();
    // Go sorts by cycles, descending.
    out.sort_by(|a, b| {
        b.rec
            .delay_ns
            .cmp(&a.rec.delay_ns)
            .then_with(|| a.stack.cmp(&b.stack))
    });
    out
}

fn clamp(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// Writes the `mutex` profile (see the module docs for both formats).
pub fn write(w: &mut dyn Write, debug: u8) -> io::Result<()> {
    let _guard = tls::ProfilerGuard::enter();
    let rows = rows();
    let period = fraction().max(1) as i64;
    if debug == 0 {
        let mut b = ProfileBuilder::new(
            &[("contentions", "count"), ("delay", "nanoseconds")],
            ("contentions", "count"),
            period,
        );
        b.set_time_nanos(sys::now_unix_nanos());
        b.set_trim_leading(is_release_frame);
        b.add_comment(&format!("mutex profile fraction = {}", fraction()));
        for r in &rows {
            let values = [clamp(r.rec.count), clamp(r.rec.delay_ns)];
            add_group(&mut b, &r.stack, &values, &[]);
        }
        return b.write_gzip(w);
    }
    let overflow = overflow_stack();
    let text_rows: Vec<ContentionRecord> = rows
        .iter()
        .map(|r| ContentionRecord {
            count: clamp(r.rec.samples),
            delay_ns: clamp(r.rec.sampled_ns),
            stack: stack_or(&r.stack, &overflow),
        })
        .collect();
    text::write_contention_text_with(
        w,
        "mutex",
        &[("sampling period", period.to_string())],
        &text_rows,
        &mut Symbolizer::new(),
        Some(is_release_frame),
    )
}
