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
//! - Heap: [`ProfilingAllocator`], [`set_heap_profile_rate`] (Go's `MemProfileRate`, default
//!   512 KiB), [`write_heap_profile`], [`lookup`]`("heap" | "allocs" | "heap_peak")`.
//! - The Go `Profile` API: [`profiles`], [`lookup`], [`Profile`] (custom count profiles with
//!   `add`/`remove`/`track`), predefined `threadcreate`, `threads` (alias `goroutine`), `block`
//!   and `mutex` (with [`sync`], [`set_block_profile_rate`] and [`set_mutex_profile_fraction`]).
//! - CPU: [`start_cpu_profile`], [`stop_cpu_profile`], [`CpuProfile`].
//! - Rates, one scheme: `set_<kind>_profile_rate` and `<kind>_profile_rate`, in unsigned units
//!   (0 = off): [`set_heap_profile_rate`] (mean bytes between samples),
//!   [`set_cpu_profile_rate`] (Hz), [`set_block_profile_rate`] (nanoseconds blocked per
//!   sample); the mutex profile keeps Go's name, [`set_mutex_profile_fraction`] (1 in `n`).
//! - Labels on heap and CPU samples: [`with_labels`], [`Labels`], [`Labeled`]; with feature
//!   `tracing`, `heaprof::tracing::LabelLayer` takes them from entered `tracing` spans.
//! - Operations: [`dump_on_signal`], [`start_dumps`] (on a signal, on heap growth, on RSS),
//!   [`init_from_env`] (`HEAPROF_*` variables), and with
//!   feature `http`, `heaprof::http` (Go's `/debug/pprof` endpoints).
//! - Reading profiles back: [`read_profile`], [`top_table`]; what changed between two
//!   snapshots: [`profile_delta`] (Go's `seconds=N` delta profiles).
//!
//! # Limits
//! - Linux x86_64 with glibc; elsewhere the crate builds and the allocator passes through.
//! - Stacks are captured to at most 64 frames (the outermost are dropped).
//! - The stack and bucket tables have fixed capacities ([`set_table_capacity`], before the
//!   first sample); what does not fit is counted under the pseudo-frame
//!   `heaprof::table_overflow`, never lost silently.
//! - A sampled block lives in memory heaprof maps itself: a slot of at least 2 KiB in its
//!   arena (1 GiB of address space reserved, committed as used; freed slots are reused, not
//!   returned to the OS), or, when larger than 80 KiB or aligned to 4096 or more, the pages
//!   it touches in the large-block region (freed pages beyond 64 MiB go back to the OS):
//!   well under 1% of the heap at the default rate, a lot at rates of a few KiB.
//! - Rate changes apply at once on the calling thread and at the next sample elsewhere.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![warn(missing_debug_implementations)]

mod alloc;
mod arena;
mod atomics;
mod block;
mod buckets;
mod config;
mod count;
mod cpu;
mod custom;
mod delta;
mod dump;
mod env;
mod env_init;
mod error;
mod fork;
mod heap;
#[cfg(feature = "http")]
pub mod http;
mod labels;
mod large_region;
mod live;
mod lock_order;
mod mutex;
mod once;
mod peak;
mod pprof;
mod profile;
mod report;
mod ring;
mod rss;
mod sampler;
mod stacktab;
mod symbolize;
pub mod sync;
mod sys;
mod tables;
mod threadcreate;
mod threads;
mod tls;
#[cfg(feature = "tracing")]
pub mod tracing;
mod unwind;
mod waiters;

pub use alloc::ProfilingAllocator;
pub use config::{DEFAULT_HEAP_PROFILE_RATE, MAX_HEAP_PROFILE_RATE};
#[allow(deprecated)]
pub use cpu::{
    cpu_profile_rate, set_cpu_profile_rate, start_cpu_profile, stop_cpu_profile,
    stop_cpu_profile_result, CpuProfile, DEFAULT_CPU_HZ, DEFAULT_CPU_PROFILE_RATE,
    MAX_CPU_PROFILE_RATE,
};
pub use custom::ProfileKey;
pub use delta::profile_delta;
pub use dump::{
    dump_on_signal, dump_stats, start_dumps, DumpConfig, DumpHandle, DumpStats, RssThreshold,
};
pub use env_init::{init_from_env, EnvInit};
pub use error::Error;
pub use labels::{with_labels, LabelGuard, Labeled, Labels, MAX_LABEL_SETS};
pub use profile::{lookup, profiles, write_heap_profile, Profile, Tracked};
pub use report::top_table;
pub use report::{read_profile, ProfileData, SampleType, StackSample};

/// Sets the heap profile rate: the mean number of bytes allocated between samples (Go's
/// `MemProfileRate`). `0` turns sampling off, `1` records every allocation; rates above
/// [`MAX_HEAP_PROFILE_RATE`] (16 GiB) are clamped to it. The calling thread switches at once
/// (its countdown is redrawn at its next allocation); every other thread at its next sample.
/// Samples already taken keep the weight of the rate they were taken at.
///
/// ```
/// heaprof::set_heap_profile_rate(64 * 1024);
/// assert_eq!(heaprof::heap_profile_rate(), 64 * 1024);
/// heaprof::set_heap_profile_rate(usize::MAX);
/// assert_eq!(heaprof::heap_profile_rate(), heaprof::MAX_HEAP_PROFILE_RATE);
/// heaprof::set_heap_profile_rate(heaprof::DEFAULT_HEAP_PROFILE_RATE);
/// ```
pub fn set_heap_profile_rate(bytes: usize) {
    config::set_sample_rate(bytes);
    tls::with(|t| {
        t.countdown.set(0);
        t.drawn_rate.set(0);
    });
}

/// The heap profile rate in force, in bytes (`HEAPROF_RATE` or
/// [`DEFAULT_HEAP_PROFILE_RATE`] until set; 0 = off).
///
/// ```
/// assert!(heaprof::heap_profile_rate() <= heaprof::MAX_HEAP_PROFILE_RATE);
/// ```
pub fn heap_profile_rate() -> usize {
    config::sample_rate()
}

/// The old name of [`set_heap_profile_rate`].
#[deprecated(note = "renamed `set_heap_profile_rate` (same argument); removed in the next release")]
pub fn set_sample_rate(bytes: usize) {
    set_heap_profile_rate(bytes)
}

/// The old name of [`heap_profile_rate`].
#[deprecated(note = "renamed `heap_profile_rate`; removed in the next release")]
pub fn sample_rate() -> usize {
    heap_profile_rate()
}

/// The old name of [`DEFAULT_HEAP_PROFILE_RATE`].
#[deprecated(note = "renamed `DEFAULT_HEAP_PROFILE_RATE`; removed in the next release")]
pub const DEFAULT_SAMPLE_RATE: usize = DEFAULT_HEAP_PROFILE_RATE;

/// The old name of [`MAX_HEAP_PROFILE_RATE`].
#[deprecated(note = "renamed `MAX_HEAP_PROFILE_RATE`; removed in the next release")]
pub const MAX_SAMPLE_RATE: usize = MAX_HEAP_PROFILE_RATE;

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

/// Sets the mutex profile fraction (Go's `runtime.SetMutexProfileFraction`) and returns the
/// previous one: `0` (the default) records nothing; `rate` records on average 1 in `rate`
/// releases of a contended [`sync`] lock, each weighted by `rate` so the `mutex` profile's
/// totals stay unbiased. As in Go, the time others waited is charged to the stack that
/// released the lock (the end of the critical section that made them wait); the `block`
/// profile charges the waiters.
///
/// ```
/// assert_eq!(heaprof::set_mutex_profile_fraction(5), 0);
/// assert_eq!(heaprof::mutex_profile_fraction(), 5);
/// assert_eq!(heaprof::set_mutex_profile_fraction(0), 5);
/// ```
pub fn set_mutex_profile_fraction(rate: usize) -> usize {
    mutex::set_fraction(rate)
}

/// The mutex profile fraction in force (0 = off); Go's `SetMutexProfileFraction(-1)`.
pub fn mutex_profile_fraction() -> usize {
    mutex::fraction()
}

/// Internals re-exported for the crate's own integration tests (`tests/`). Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::arena::{MAX_BLOCK as ARENA_MAX_BLOCK, RESERVE_BYTES as ARENA_BYTES};
    pub use crate::cpu::{force_setitimer_fallback, handler_stats, LOST_FRAME};
    pub use crate::fork::test_support::{in_child, wait_child};
    pub use crate::large_region::{
        limit as limit_large_region, RETAIN_BYTES as LARGE_RETAIN_BYTES,
    };
    pub use crate::lock_order::test_support::{hold as fork_hold, names as fork_protocol};
    /// Whether the `HEAPROF_*` environment snapshot was taken (tests of the constructor).
    pub fn env_snapshot_taken() -> bool {
        crate::env::TAKEN.is_completed()
    }
    pub use crate::pprof::builder::{Label, ProfileBuilder};
    pub use crate::pprof::text::{write_count_text, write_heap_text, CountRecord, HeapRecord};
    pub use crate::pprof::{elf, maps, proto};
    pub use crate::symbolize::{SymFrame, Symbolizer};
    pub use crate::threads::capture::set_options as set_threads_capture_options;
    /// Forgets the block profile's records (tests).
    pub fn reset_block_profile() {
        crate::block::reset()
    }
    /// Forgets the mutex profile's records (tests).
    pub fn reset_mutex_profile() {
        crate::mutex::reset()
    }
    pub use crate::unwind::{
        capture, capture_from_ucontext, global_init, stats, thread_init, UnwindStats, MAX_DEPTH,
    };
}
