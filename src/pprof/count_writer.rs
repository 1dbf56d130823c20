//! Writes count profiles (`threadcreate`, custom profiles): (stack id, count) pairs, already
//! copied out of their recorder, turned into Go's count-profile proto (`debug = 0`) or its
//! legacy count text (`debug >= 1`, Go's `printCountProfile`).
//!
//! Called by profile writers only, under the profiler guard; never by the allocator or a
//! signal handler (it symbolizes and allocates). Holds no recorder lock.

use std::io::{self, Write};

use crate::alloc::stack_table::StackTable;
use crate::pprof::builder::ProfileBuilder;
use crate::pprof::stack_groups::{add_group, merge_by_stack, overflow_stack, stack_or, Frames};
use crate::pprof::symbolize::Symbolizer;
use crate::pprof::text::{self, CountRecord};
use crate::{base::sys, base::tls};

/// One group to write: a stack (`None` = did not fit in the stack table) and its count.
struct Group {
    stack: Frames,
    count: i64,
}

/// The pairs merged by stack, sorted by count desc, then stack, so output is deterministic.
fn groups(ids: &[(u32, u64)], stacks: Option<&StackTable>) -> Vec<Group> {
    let merged = merge_by_stack(
        ids.iter().copied(),
        stacks,
        |_, _| (),
        |n: &mut i64, c| *n = n.saturating_add(c.min(i64::MAX as u64) as i64),
    );
    let mut out: Vec<Group> = merged
        .into_iter()
        .map(|(stack, (), count)| Group { stack, count })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.stack.cmp(&b.stack)));
    out
}

/// Writes the count profile `name` from `(stack id, count)` pairs, ids of `stacks`
/// (`None`: no stack was ever stored, every id counts as overflow). `debug = 0`: gzip pprof
/// with `sample_type` = [{name, count}], `period_type` = {name, count}, `period` = 1, one
/// sample per distinct stack. Any other `debug`: Go's legacy count text. `trim` hides leading
/// plumbing frames (unless none would remain).
pub fn write(
    w: &mut dyn Write,
    name: &str,
    ids: &[(u32, u64)],
    stacks: Option<&StackTable>,
    debug: u8,
    trim: Option<fn(&str) -> bool>,
) -> io::Result<()> {
    let _guard = tls::ProfilerGuard::enter();
    let groups = groups(ids, stacks);
    if debug == 0 {
        let mut b = ProfileBuilder::new(&[(name, "count")], (name, "count"), 1);
        b.set_time_nanos(sys::now_unix_nanos());
        if let Some(t) = trim {
            b.set_trim_leading(t);
        }
        for g in &groups {
            add_group(&mut b, &g.stack, &[g.count], &[]);
        }
        return b.write_gzip(w);
    }
    // The text needs real addresses (see `overflow_stack`); the text writer itself
    // substitutes a pseudo-frame for empty stacks.
    let overflow = overflow_stack();
    let records: Vec<CountRecord> = groups
        .iter()
        .map(|g| CountRecord {
            count: g.count,
            stack: stack_or(&g.stack, &overflow),
        })
        .collect();
    text::write_count_text(w, name, &records, &mut Symbolizer::new(), trim)
}
