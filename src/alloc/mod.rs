//! The allocator and its stores: [`allocator::ProfilingAllocator`] and everything its
//! sampled path writes to.
//!
//! Where sampled blocks live ([`arena`], [`large_region`], [`sampled_block`]), the call
//! stacks and per-stack counters they are charged to ([`stack_table`], [`buckets`], created
//! together in [`tables`]), the in-use peak ([`peak`]) and the interned label sets samples
//! carry ([`labels`]). Uses the unwinder and the base layer; writes no profile.

pub(crate) mod allocator;
pub(crate) mod arena;
pub(crate) mod block_offset;
pub(crate) mod buckets;
pub(crate) mod labels;
pub(crate) mod large_region;
pub(crate) mod peak;
pub(crate) mod sampled_block;
pub(crate) mod stack_table;
pub(crate) mod tables;
