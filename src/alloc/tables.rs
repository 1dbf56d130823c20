//! The process-wide recording tables (stacks and heap buckets), created once on the first
//! sample from memory mapped straight from the OS.
//!
//! Capacities are fixed at creation: [`set_table_capacity`](crate::set_table_capacity)
//! before the first sample chooses them, else `HEAPROF_STACKS` and `HEAPROF_BUCKETS`.
//! Costs (virtual; pages become resident as slots are first used): a stack slot is
//! [`stack_table::SLOT_BYTES`](crate::alloc::stack_table::SLOT_BYTES) (528 B), a bucket
//! [`buckets::BUCKET_BYTES`](crate::alloc::buckets::BUCKET_BYTES) (32 B) for its index slot and
//! description, [`buckets::COUNTER_BYTES`](crate::alloc::buckets::COUNTER_BYTES) (256 B) for its
//! counters (one 64-byte line per shard), and 32 B for its counters at the recorded peak
//! (`heap_peak`). Bucket ids are dense, so only the index is touched at random (about one
//! 4 KiB page per call site: a site's size classes share a page); the rest becomes resident
//! in proportion to the buckets in use. Defaults: 16 384 stacks (8.3 MiB) and 65 536
//! buckets (20.0 MiB).

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::alloc::buckets::{Bucket, BucketTable, Counters, IndexSlot, SHARDS};
use crate::alloc::peak::PeakSlot;
use crate::alloc::stack_table::{StackSlot, StackTable};
use crate::base::error::Error;
use crate::base::once::ForkOnce;
use crate::base::sys;

/// Default number of distinct stacks.
pub const DEFAULT_STACKS: usize = 16 * 1024;
/// Default number of (stack, labels, size class) heap buckets.
pub const DEFAULT_BUCKETS: usize = 64 * 1024;
const MAX_CAPACITY: usize = 1 << 26;

/// Capacities chosen in code; 0 = not chosen (then `HEAPROF_STACKS` / `HEAPROF_BUCKETS`,
/// else the defaults).
static STACKS: AtomicUsize = AtomicUsize::new(0);
static BUCKETS: AtomicUsize = AtomicUsize::new(0);

/// The capacity in force for creation: set in code, else from `var`, else `default`.
/// Reads the environment without allocating; an invalid value warns and uses the default.
fn capacity(chosen: &AtomicUsize, var: &core::ffi::CStr, default: usize) -> usize {
    match chosen.load(Ordering::Relaxed) {
        0 => crate::base::config::env_count(var, default, 1, MAX_CAPACITY),
        n => n,
    }
}

/// The recording tables.
pub struct Tables {
    /// Distinct stacks of sampled events.
    pub stacks: StackTable,
    /// Heap counters per (stack, labels, size class).
    pub buckets: BucketTable,
    /// Per-bucket in-use counters at the recorded peak (`heap_peak`).
    pub peak: &'static [PeakSlot],
    /// The five mappings behind the tables, as (address, length in bytes): for measuring
    /// how much of them is resident (`rss::own`).
    pub mappings: [(usize, usize); 5],
}

static TABLES: ForkOnce<Option<Tables>> = ForkOnce::new();

fn map_slice<T>(n: usize) -> Option<&'static [T]> {
    let p = sys::map_zeroed(n.checked_mul(core::mem::size_of::<T>())?);
    if p.is_null() {
        return None;
    }
    // SAFETY: the mapping is page-aligned (enough for T), zeroed and n·size_of::<T>()
    // bytes long; T is a struct of atomics, for which all-zero bytes are valid. The
    // mapping is never unmapped, so 'static holds.
    Some(unsafe { core::slice::from_raw_parts(p.cast::<T>(), n) })
}

/// (address, length in bytes) of a mapped slice.
fn extent<T>(s: &[T]) -> (usize, usize) {
    (s.as_ptr() as usize, core::mem::size_of_val(s))
}

/// The tables, created on first call; `None` if the OS refused the memory (the allocator
/// then stops sampling; nothing else breaks). Never allocates.
pub fn get() -> Option<&'static Tables> {
    TABLES
        .call_once(|| {
            crate::base::fork::ensure_registered();
            let stacks = capacity(&STACKS, c"HEAPROF_STACKS", DEFAULT_STACKS);
            let buckets = capacity(&BUCKETS, c"HEAPROF_BUCKETS", DEFAULT_BUCKETS);
            let stacks = map_slice::<StackSlot>(stacks + 1)?;
            let index = map_slice::<IndexSlot>(buckets + 1)?;
            let peak = map_slice::<PeakSlot>(buckets + 1)?;
            let counters = map_slice::<[Counters; SHARDS]>(buckets + 1)?;
            let buckets = map_slice::<Bucket>(buckets + 1)?;
            crate::alloc::sampled_block::init_secret();
            crate::alloc::arena::init();
            crate::alloc::large_region::init();
            let mappings = [
                extent(stacks),
                extent(index),
                extent(peak),
                extent(counters),
                extent(buckets),
            ];
            Some(Tables {
                stacks: StackTable::new(stacks),
                buckets: BucketTable::new(index, buckets, counters),
                peak,
                mappings,
            })
        })
        .as_ref()
}

/// In a forked child: lets the child create the tables if the fork interrupted their
/// creation on another thread (see `lock_order`).
pub fn after_fork_child() {
    TABLES.reset_after_fork();
}

/// Tests of the fork protocol: see [`ForkOnce::hold_for_test`].
pub fn hold_creation_for_test(held: bool) -> bool {
    TABLES.hold_for_test(held)
}

/// The tables if they exist already (writers never create them).
pub fn get_if_created() -> Option<&'static Tables> {
    TABLES.get().and_then(|t| t.as_ref())
}

/// Chooses table capacities; only before the tables exist (before the first sample).
pub fn set_capacity(stacks: usize, buckets: usize) -> Result<(), Error> {
    for (what, n) in [("stacks", stacks), ("buckets", buckets)] {
        if !(1..=MAX_CAPACITY).contains(&n) {
            return Err(Error::InvalidConfig(format!(
                "table capacity {what} = {n}: must be 1..={MAX_CAPACITY}"
            )));
        }
    }
    if TABLES.is_completed() {
        return Err(Error::InvalidConfig(
            "table capacity can only be set before the first sample; set the rate to 0 until it is configured, or call set_table_capacity first thing in main".into(),
        ));
    }
    STACKS.store(stacks, Ordering::Relaxed);
    BUCKETS.store(buckets, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn documented_slot_sizes_hold() {
        // The README and the module doc quote these figures.
        assert_eq!(crate::alloc::stack_table::SLOT_BYTES, 528);
        assert_eq!(crate::alloc::buckets::BUCKET_BYTES, 32);
        assert_eq!(crate::alloc::buckets::COUNTER_BYTES, 256);
    }
}
