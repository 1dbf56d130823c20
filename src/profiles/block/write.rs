//! Writing the `block` profile: the records merged by stack, as pprof or Go's contention
//! text, with the lock wrappers' frames trimmed.

use std::io::{self, Write};

use super::{rate, RECORDS};
use crate::alloc::tables;
use crate::base::{sys, tls};
use crate::pprof::builder::ProfileBuilder;
use crate::pprof::stack_groups::{add_group, merge_by_stack, overflow_stack, stack_or, Frames};
use crate::pprof::symbolize::Symbolizer;
use crate::pprof::text::{self, ContentionRecord};
use crate::pprof::trim::path_starts_with_any;

/// Leading frames of a recorded stack that are heaprof's locking machinery.
pub fn is_lock_frame(name: &str) -> bool {
    path_starts_with_any(name, &["heaprof::", "core::ops::function::"])
}

/// One record to write: frames (`None`: did not fit the stack table), count, delay.
struct Rec {
    stack: Frames,
    count: i64,
    delay: i64,
}

fn records() -> Vec<Rec> {
    let copy: Vec<(u32, (f64, u64))> = RECORDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(&k, &v)| (k, v))
        .collect();
    let stacks = tables::get_if_created().map(|t| &t.stacks);
    let merged = merge_by_stack(
        copy,
        stacks,
        |_, _| (),
        |e: &mut (f64, u64), (c, d)| {
            e.0 += c;
            e.1 = e.1.saturating_add(d);
        },
    );
    let mut out: Vec<Rec> = merged
        .into_iter()
        .map(|(stack, (), (c, d))| Rec {
            stack,
            count: c.round() as i64,
            delay: d.min(i64::MAX as u64) as i64,
        })
        .collect();
    // Go sorts by cycles, descending.
    out.sort_by(|a, b| b.delay.cmp(&a.delay).then_with(|| a.stack.cmp(&b.stack)));
    out
}

/// Writes the `block` profile. `debug = 0`: gzip pprof with `sample_type` =
/// [`contentions`/`count`, `delay`/`nanoseconds`], `period_type` = `contentions`/`count`,
/// `period` = 1 (as Go's `printCountCycleProfile` writes it; the rate is in a comment).
/// Otherwise Go's contention text (`--- contention:`, `cycles/second=1000000000`,
/// `DELAY COUNT @ addrs` lines), with symbol comments and the memory map.
pub fn write(w: &mut dyn Write, debug: u8) -> io::Result<()> {
    let _guard = tls::ProfilerGuard::enter();
    let recs = records();
    let trim = Some(is_lock_frame as fn(&str) -> bool);
    if debug == 0 {
        let mut b = ProfileBuilder::new(
            &[("contentions", "count"), ("delay", "nanoseconds")],
            ("contentions", "count"),
            1,
        );
        b.set_time_nanos(sys::now_unix_nanos());
        b.set_trim_leading(is_lock_frame);
        b.add_comment(&format!("block profile rate = {} ns", rate()));
        for r in &recs {
            add_group(&mut b, &r.stack, &[r.count, r.delay], &[]);
        }
        return b.write_gzip(w);
    }
    let overflow = overflow_stack();
    let rows: Vec<ContentionRecord> = recs
        .iter()
        .map(|r| ContentionRecord {
            count: r.count,
            delay_ns: r.delay,
            stack: stack_or(&r.stack, &overflow),
        })
        .collect();
    text::write_contention_text(w, "contention", &rows, &mut Symbolizer::new(), trim)
}
