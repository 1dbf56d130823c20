//! heaprof: Go's `runtime/pprof` for Rust.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod alloc;
mod buckets;
mod config;
mod count;
mod custom;
mod dump;
mod env_init;
mod error;
mod fork;
mod heap;
#[cfg(feature = "http")]
pub mod http;
mod live;
mod once;
mod pprof;
mod profile;
mod report;
mod sampler;
mod stacktab;
mod symbolize;
mod sys;
mod tables;
mod threadcreate;
mod tls;
mod unwind;

pub use alloc::ProfilingAllocator;
pub use config::DEFAULT_SAMPLE_RATE;
pub use custom::ProfileKey;
pub use dump::{dump_on_signal, dump_stats, DumpConfig, DumpHandle, DumpStats};
pub use env_init::{init_from_env, EnvInit};
pub use error::Error;
pub use profile::{lookup, profiles, write_heap_profile, Profile, Tracked};
pub use report::top_table;

/// Sets the mean number of bytes between samples (Go's `MemProfileRate`). `0` turns
/// sampling off, `1` records every allocation. Each thread switches at its next sample;
/// samples already taken keep the weight of the rate they were taken at.
pub fn set_sample_rate(bytes: usize) {
    config::set_sample_rate(bytes)
}

/// The sampling rate in force (`HEAPROF_RATE` or [`DEFAULT_SAMPLE_RATE`] until set).
pub fn sample_rate() -> usize {
    config::sample_rate()
}

/// Fixes the sampler's seed so that a run's sampling decisions are reproducible.
pub fn set_sampler_seed(seed: u64) {
    config::set_sampler_seed(seed)
}

/// Chooses the capacity of the stack table and of the heap bucket table. Only before the
/// first sample; see the crate docs for the memory each slot costs.
pub fn set_table_capacity(stacks: usize, buckets: usize) -> Result<(), Error> {
    tables::set_capacity(stacks, buckets)
}

/// Internals re-exported for the crate's own integration tests (`tests/`). Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::pprof::builder::{Label, ProfileBuilder};
    pub use crate::pprof::text::{write_count_text, write_heap_text, CountRecord, HeapRecord};
    pub use crate::pprof::{elf, maps, proto};
    pub use crate::symbolize::{SymFrame, Symbolizer};
    pub use crate::unwind::{
        capture, capture_from_ucontext, global_init, stats, thread_init, UnwindStats, MAX_DEPTH,
    };
}
