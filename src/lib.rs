//! heaprof: Go's `runtime/pprof` for Rust.
#![deny(unsafe_op_in_unsafe_fn)]
