//! heaprof: Go's `runtime/pprof` for Rust.
#![deny(unsafe_op_in_unsafe_fn)]

mod unwind;

/// Crate-internal items re-exported for integration tests, examples and benches only.
/// Not a public API: no stability promise.
#[doc(hidden)]
pub mod __private {
    pub use crate::unwind::{
        capture, capture_from_ucontext, global_init, stats, thread_init, UnwindStats, MAX_DEPTH,
    };
}
