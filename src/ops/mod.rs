//! Operations: running heaprof in production. Profile files written on a signal, on heap
//! growth and on RSS ([`dump`]), the `HEAPROF_DUMP_*` environment ([`env_init`]) and, with
//! feature `http`, Go's `/debug/pprof` endpoints (`http`); with feature `tracing`, labels from
//! `tracing` spans (`tracing`). Uses the public API below it.

pub(crate) mod dump;
pub(crate) mod env_init;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "tracing")]
pub mod tracing;
