//! The base layer: what every other layer stands on, and which uses none of them.
//!
//! libc wrappers that never allocate ([`sys`]), the allocator's per-thread state ([`tls`]),
//! the sampling maths ([`sampler`]), fork-safe once-cells ([`once`]) and the `fork` mechanism
//! ([`fork`]), the atomics the lock-free protocols are written against ([`atomics`]), the
//! environment snapshot and the run-time configuration ([`env`](mod@env), [`config`]), the error type
//! ([`error`]) and the wake-up pipe a signal handler or the sampled path writes to
//! ([`wake_pipe`]).

pub(crate) mod atomics;
pub(crate) mod config;
pub(crate) mod env;
pub(crate) mod error;
pub(crate) mod fork;
pub(crate) mod once;
pub(crate) mod sampler;
pub(crate) mod sys;
pub(crate) mod tls;
pub(crate) mod wake_pipe;
