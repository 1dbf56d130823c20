//! Internals re-exported for the crate's own integration tests (`tests/`). Not a stable API.

pub use crate::alloc::arena::{MAX_BLOCK as ARENA_MAX_BLOCK, RESERVE_BYTES as ARENA_BYTES};
pub use crate::alloc::large_region::{
    limit as limit_large_region, RETAIN_BYTES as LARGE_RETAIN_BYTES,
};
pub use crate::base::fork::test_support::{in_child, wait_child};
pub use crate::lock_order::installed as fork_protocol_installed;
pub use crate::lock_order::test_support::{hold as fork_hold, names as fork_protocol};
pub use crate::profiles::cpu::{force_setitimer_fallback, handler_stats, LOST_FRAME};
/// Whether the `HEAPROF_*` environment snapshot was taken (tests of the constructor).
pub fn env_snapshot_taken() -> bool {
    crate::base::env::TAKEN.is_completed()
}
pub use crate::pprof::builder::{Label, ProfileBuilder};
pub use crate::pprof::symbolize::{SymFrame, Symbolizer};
pub use crate::pprof::text::{write_count_text, write_heap_text, CountRecord, HeapRecord};
pub use crate::pprof::{elf, maps, proto};
pub use crate::profiles::threads::capture::set_options as set_threads_capture_options;
/// Forgets the block profile's records (tests).
pub fn reset_block_profile() {
    crate::profiles::block::reset()
}
/// Forgets the mutex profile's records (tests).
pub fn reset_mutex_profile() {
    crate::profiles::mutex::reset()
}
pub use crate::unwind::{
    capture, capture_from_ucontext, global_init, stats, thread_init, UnwindStats, MAX_DEPTH,
};
