//! heaprof: Go's `runtime/pprof` for Rust.
//!
//! Set [`ProfilingAllocator`] as the global allocator and get heap profiles — allocated and
//! in-use objects and bytes per call stack — plus CPU, `threadcreate`, `threads`, `block`,
//! `heap_peak` and custom profiles, in the pprof format that `go tool pprof`, Parca,
//! Pyroscope and Grafana read.
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();
//!
//! fn main() -> std::io::Result<()> {
//!     let names: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
//!     heaprof::write_heap_profile(std::fs::File::create("heap.pb.gz")?)?;
//!     drop(names);
//!     Ok(()) // then: go tool pprof -top heap.pb.gz
//! }
//! ```
//!
//! # The pieces
//! - Heap: [`ProfilingAllocator`], [`set_sample_rate`] (Go's `MemProfileRate`, default
//!   512 KiB), [`write_heap_profile`], [`lookup`]`("heap" | "allocs" | "heap_peak")`.
//! - The Go `Profile` API: [`profiles`], [`lookup`], [`Profile`] (custom count profiles with
//!   `add`/`remove`/`track`), predefined `threadcreate`, `threads` (alias `goroutine`), `block`
//!   (with [`sync`] and [`set_block_profile_rate`]).
//! - CPU: [`start_cpu_profile`], [`stop_cpu_profile`], [`CpuProfile`].
//! - Labels on heap and CPU samples: [`with_labels`], [`Labels`], [`Labeled`].
//! - Operations: [`dump_on_signal`], [`init_from_env`] (`HEAPROF_*` variables), and with
//!   feature `http`, `heaprof::http` (Go's `/debug/pprof` endpoints).
//! - Reading profiles back: [`read_profile`], [`top_table`].
//!
//! # Limits
//! - Linux x86_64 with glibc; elsewhere the crate builds and the allocator passes through.
//! - Stacks are captured to at most 64 frames (the outermost are dropped).
//! - The stack and bucket tables have fixed capacities ([`set_table_capacity`], before the
//!   first sample); what does not fit is counted under the pseudo-frame
//!   `heaprof::table_overflow`, never lost silently.
//! - A sampled block takes a slot of at least 2 KiB in heaprof's own arena (1 GiB of
//!   address space reserved, committed as used; freed slots are reused, not returned to the
//!   OS), or, when larger than 80 KiB or aligned to 64 or more, up to 2112 extra bytes (4160)
//!   in the inner allocator: well under 1% of the heap at the default rate, a lot at rates
//!   of a few KiB.
//! - Rate changes apply at once on the calling thread and at the next sample elsewhere.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod alloc;
mod arena;
mod atomics;
mod block;
mod buckets;
mod config;
mod count;
mod cpu;
mod custom;
mod dump;
mod env_init;
mod error;
mod fork;
mod heap;
#[cfg(feature = "http")]
pub mod http;
mod labels;
mod live;
mod once;
mod peak;
mod pprof;
mod profile;
mod report;
mod ring;
mod sampler;
mod stacktab;
mod symbolize;
pub mod sync;
mod sys;
mod tables;
mod threadcreate;
mod threads;
mod tls;
mod unwind;

pub use alloc::ProfilingAllocator;
pub use config::DEFAULT_SAMPLE_RATE;
pub use cpu::{
    cpu_profile_rate, set_cpu_profile_rate, start_cpu_profile, stop_cpu_profile,
    stop_cpu_profile_result, CpuProfile, DEFAULT_CPU_HZ,
};
pub use custom::ProfileKey;
pub use dump::{dump_on_signal, dump_stats, DumpConfig, DumpHandle, DumpStats};
pub use env_init::{init_from_env, EnvInit};
pub use error::Error;
pub use labels::{with_labels, LabelGuard, Labeled, Labels};
pub use profile::{lookup, profiles, write_heap_profile, Profile, Tracked};
pub use report::top_table;
pub use report::{read_profile, ProfileData, SampleType, StackSample};

/// Sets the mean number of bytes between samples (Go's `MemProfileRate`). `0` turns
/// sampling off, `1` records every allocation. The calling thread switches at once (its
/// countdown is redrawn at its next allocation); every other thread at its next sample.
/// Samples already taken keep the weight of the rate they were taken at.
pub fn set_sample_rate(bytes: usize) {
    config::set_sample_rate(bytes);
    tls::with(|t| {
        t.countdown.set(0);
        t.drawn_rate.set(0);
    });
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

/// Sets the block profile rate in nanoseconds (Go's `runtime.SetBlockProfileRate`): `0` (the
/// default) records nothing, `1` records every blocking event of the [`sync`] wrappers, `R`
/// records an event that blocked `d` ns with probability `min(1, d / R)`, scaled so the
/// `block` profile's totals are unbiased. Takes effect for waits that end after the call.
///
/// ```
/// heaprof::set_block_profile_rate(1);
/// assert_eq!(heaprof::block_profile_rate(), 1);
/// heaprof::set_block_profile_rate(0);
/// ```
pub fn set_block_profile_rate(rate_ns: u64) {
    block::set_rate(rate_ns)
}

/// The block profile rate in force, in nanoseconds (0 = off).
pub fn block_profile_rate() -> u64 {
    block::rate()
}

/// Internals re-exported for the crate's own integration tests (`tests/`). Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::arena::{MAX_BLOCK as ARENA_MAX_BLOCK, RESERVE_BYTES as ARENA_BYTES};
    pub use crate::cpu::{force_setitimer_fallback, handler_stats, LOST_FRAME};
    pub use crate::fork::test_support::{in_child, wait_child};
    pub use crate::pprof::builder::{Label, ProfileBuilder};
    pub use crate::pprof::text::{write_count_text, write_heap_text, CountRecord, HeapRecord};
    pub use crate::pprof::{elf, maps, proto};
    pub use crate::symbolize::{SymFrame, Symbolizer};
    pub use crate::threads::capture::set_options as set_threads_capture_options;
    /// Forgets the block profile's records (tests).
    pub fn reset_block_profile() {
        crate::block::reset()
    }
    pub use crate::unwind::{
        capture, capture_from_ucontext, global_init, stats, thread_init, UnwindStats, MAX_DEPTH,
    };
}
