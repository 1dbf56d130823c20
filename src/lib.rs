//! heaprof: Go's `runtime/pprof` for Rust.
#![deny(unsafe_op_in_unsafe_fn)]

mod pprof;
mod symbolize;

/// Internals re-exported for the crate's own integration tests (`tests/`). Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::pprof::builder::{Label, ProfileBuilder};
    pub use crate::pprof::text::{write_count_text, write_heap_text, CountRecord, HeapRecord};
    pub use crate::pprof::{elf, maps, proto};
    pub use crate::symbolize::{SymFrame, Symbolizer};
}
