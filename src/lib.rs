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
//! - The Go `Profile` API: [`profiles()`], [`lookup`], [`Profile`] (custom count profiles with
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
mod api;
mod base;
mod lock_order;
mod ops;
mod pprof;
mod profiles;
mod unwind;

#[doc(hidden)]
pub mod __private;

#[cfg(feature = "http")]
pub use ops::http;
#[cfg(feature = "tracing")]
pub use ops::tracing;
pub use profiles::sync;

pub use alloc::allocator::ProfilingAllocator;
pub use alloc::labels::{with_labels, LabelGuard, Labeled, Labels, MAX_LABEL_SETS};
#[allow(deprecated)]
pub use api::profile::{lookup, profiles, write_heap_profile, Profile, Tracked};
#[allow(deprecated)]
pub use api::rates::{
    block_profile_rate, heap_profile_rate, mutex_profile_fraction, sample_rate,
    set_block_profile_rate, set_heap_profile_rate, set_mutex_profile_fraction, set_sample_rate,
    set_sampler_seed, set_table_capacity, DEFAULT_SAMPLE_RATE, MAX_SAMPLE_RATE,
};
pub use base::config::{DEFAULT_HEAP_PROFILE_RATE, MAX_HEAP_PROFILE_RATE};
pub use base::error::Error;
pub use ops::dump::{
    dump_on_signal, dump_stats, start_dumps, DumpConfig, DumpHandle, DumpStats, RssThreshold,
};
pub use ops::env_init::{init_from_env, EnvInit};
pub use pprof::delta::profile_delta;
pub use pprof::read::{read_profile, ProfileData, SampleType, StackSample};
pub use pprof::top::top_table;
#[allow(deprecated)]
pub use profiles::cpu::{
    cpu_profile_rate, set_cpu_profile_rate, start_cpu_profile, stop_cpu_profile,
    stop_cpu_profile_result, CpuProfile, DEFAULT_CPU_HZ, DEFAULT_CPU_PROFILE_RATE,
    MAX_CPU_PROFILE_RATE,
};
pub use profiles::custom::ProfileKey;
