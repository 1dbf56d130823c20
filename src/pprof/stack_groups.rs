//! From a recorder's `(stack id, value)` pairs to what the encoder writes: every id resolved
//! in the stack table and the values of identical stacks merged, in one place for every
//! writer; and the pseudo-frames that stand for stacks that are not there.
//!
//! A race in the stack table can give one stack two ids, so writers merge by frames, never
//! by id. A stack that did not fit in the table (the overflow id, or an id it cannot read)
//! is `None` and is written under [`OVERFLOW_FRAME`]; an empty stack (a `skip` deeper than
//! the stack) under [`EMPTY_STACK_FRAME`]. Samples the CPU profiler could not take are
//! written under [`LOST_FRAME`].

use std::collections::HashMap;
use std::hash::Hash;

use crate::alloc::stack_table::{StackTable, OVERFLOW_STACK};
use crate::pprof::builder::{Label, ProfileBuilder};

/// The pseudo-function of samples whose stack or bucket did not fit in the tables.
pub const OVERFLOW_FRAME: &str = "heaprof::table_overflow";

/// The pseudo-function of entries whose recorded stack is empty (a `skip` larger than the
/// stack), like Go's `runtime/pprof.lostProfileEvent`.
pub const EMPTY_STACK_FRAME: &str = "heaprof::empty_stack";

/// The pseudo-function of CPU samples that were lost (Go's
/// `runtime/pprof.lostProfileEvent`).
pub const LOST_FRAME: &str = "heaprof::lost_profile_event";

/// Frames of a resolved stack, leaf first; `None` when the stack did not fit in the table.
pub type Frames = Option<Vec<usize>>;

/// Stands for overflowed samples in the legacy text formats, which need a real address:
/// they name this function's address (+1, as a return address would be).
#[inline(never)]
pub fn table_overflow() {
    std::hint::black_box(OVERFLOW_FRAME);
}

/// The one-frame stack the legacy text formats write for an overflowed sample.
pub fn overflow_stack() -> [usize; 1] {
    [table_overflow as fn() as usize + 1]
}

/// The stack a legacy text writer gives for `frames`: the frames, or `overflow` (from
/// [`overflow_stack`]) for a stack that did not fit.
pub fn stack_or<'a>(frames: &'a Frames, overflow: &'a [usize; 1]) -> &'a [usize] {
    frames.as_deref().unwrap_or(overflow)
}

/// Resolves each item's stack id in `stacks` (`None`: no stack was ever stored, every id
/// counts as overflow) and merges the items whose frames and `key` are equal, folding each
/// item's value into its group's with `fold`. `key` sees the item and whether its stack was
/// resolved. Groups come out unordered: each writer sorts them its own way.
pub fn merge_by_stack<T, K: Eq + Hash, V: Default>(
    items: impl IntoIterator<Item = (u32, T)>,
    stacks: Option<&StackTable>,
    key: impl Fn(&T, bool) -> K,
    mut fold: impl FnMut(&mut V, T),
) -> Vec<(Frames, K, V)> {
    let mut merged: HashMap<(Frames, K), V> = HashMap::new();
    let mut frames = Vec::new();
    for (id, item) in items {
        let resolved = id != OVERFLOW_STACK && stacks.is_some_and(|t| t.read(id, &mut frames));
        let k = key(&item, resolved);
        let group = merged
            .entry((resolved.then(|| frames.clone()), k))
            .or_default();
        fold(group, item);
    }
    merged.into_iter().map(|((f, k), v)| (f, k, v)).collect()
}

/// Adds one group to a profile: a sample on `frames`, or a pseudo-sample under
/// [`OVERFLOW_FRAME`] or [`EMPTY_STACK_FRAME`].
pub fn add_group(b: &mut ProfileBuilder, frames: &Frames, values: &[i64], labels: &[Label]) {
    match frames {
        None => b.add_pseudo_sample(OVERFLOW_FRAME, values, labels),
        Some(s) if s.is_empty() => b.add_pseudo_sample(EMPTY_STACK_FRAME, values, labels),
        Some(s) => b.add_sample(s, false, values, labels),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_stacks_merge_and_what_did_not_fit_is_one_group() {
        let t: StackTable = StackTable::new(crate::alloc::stack_table::tests::leak_slots(16));
        let a = t.intern(&[1, 2, 3]);
        let b = t.intern(&[4, 5]);
        let items = [
            (a, 1u64),
            (b, 10),
            (a, 100),
            (OVERFLOW_STACK, 1000),
            (OVERFLOW_STACK, 1),
        ];
        let mut g = merge_by_stack(items, Some(&t), |_, _| (), |v: &mut u64, x| *v += x);
        g.sort();
        assert_eq!(
            g,
            [
                (None, (), 1001),
                (Some(vec![1, 2, 3]), (), 101),
                (Some(vec![4, 5]), (), 10)
            ]
        );
        let none = merge_by_stack(items, None, |_, ok| ok, |v: &mut u64, x| *v += x);
        assert_eq!(none, [(None, false, 1112)]);
    }

    #[test]
    fn keys_split_groups_of_one_stack() {
        let t: StackTable = StackTable::new(crate::alloc::stack_table::tests::leak_slots(16));
        let a = t.intern(&[7]);
        let mut g = merge_by_stack(
            [(a, (1u8, 5u64)), (a, (2, 6)), (a, (1, 7))],
            Some(&t),
            |x, _| x.0,
            |v: &mut u64, x| *v += x.1,
        );
        g.sort();
        assert_eq!(g, [(Some(vec![7]), 1, 12), (Some(vec![7]), 2, 6)]);
    }
}
