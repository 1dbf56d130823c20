//! Writes count profiles (`threadcreate`, custom profiles): (stack id, count) pairs, already
//! copied out of their recorder, turned into Go's count-profile proto (`debug = 0`) or its
//! legacy count text (`debug >= 1`, Go's `printCountProfile`).
//!
//! Called by profile writers only, under the profiler guard; never by the allocator or a
//! signal handler (it symbolizes and allocates). Holds no recorder lock.

use std::collections::HashMap;
use std::io::{self, Write};

use crate::alloc::stack_table::{StackTable, OVERFLOW_STACK};
use crate::pprof::builder::ProfileBuilder;
use crate::pprof::symbolize::Symbolizer;
use crate::pprof::text::{self, CountRecord};
use crate::profiles::heap::{table_overflow, OVERFLOW_FRAME};
use crate::{base::sys, base::tls};

/// Name of the pseudo-function of entries whose recorded stack is empty (a `skip` larger than
/// the stack), like Go's `runtime/pprof.lostProfileEvent`.
pub const EMPTY_STACK_FRAME: &str = "heaprof::empty_stack";

/// One group to write: a stack (`None` = did not fit in the stack table) and its count.
struct Group {
    stack: Option<Vec<usize>>,
    count: i64,
}

/// Resolves ids to frames and merges ids with identical frames (a race in the stack table
/// can give one stack two ids). Sorted by count desc, then stack, so output is deterministic.
fn groups(ids: &[(u32, u64)], stacks: Option<&StackTable>) -> Vec<Group> {
    let mut merged: HashMap<Option<Vec<usize>>, i64> = HashMap::new();
    let mut frames = Vec::new();
    for &(id, count) in ids {
        let ok = id != OVERFLOW_STACK && stacks.is_some_and(|t| t.read(id, &mut frames));
        let key = ok.then(|| frames.clone());
        *merged.entry(key).or_insert(0) += count as i64;
    }
    let mut out: Vec<Group> = merged
        .into_iter()
        .map(|(stack, count)| Group { stack, count })
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
            match &g.stack {
                None => b.add_pseudo_sample(OVERFLOW_FRAME, &[g.count], &[]),
                Some(s) if s.is_empty() => b.add_pseudo_sample(EMPTY_STACK_FRAME, &[g.count], &[]),
                Some(s) => b.add_sample(s, false, &[g.count], &[]),
            }
        }
        return b.write_gzip(w);
    }
    // The text needs real addresses: overflow points at `heap::table_overflow` (+1, as a
    // return address); the text writer itself substitutes a pseudo-frame for empty stacks.
    let overflow = [table_overflow as fn() as usize + 1];
    let records: Vec<CountRecord> = groups
        .iter()
        .map(|g| CountRecord {
            count: g.count,
            stack: g.stack.as_deref().unwrap_or(&overflow),
        })
        .collect();
    text::write_count_text(w, name, &records, &mut Symbolizer::new(), trim)
}
