//! Shared code of the `alloc-bench` harness.
//!
//! Every configuration is its own worker binary (`src/bin/w_*.rs`) because
//! `#[global_allocator]` is per binary. All workers share the workloads in
//! [`workloads`] and the command-line / result-line protocol in [`harness`].
//! The driver (`src/main.rs`) runs the workers as subprocesses and aggregates
//! their result lines (see [`report`]).

pub mod accuracy;
pub mod harness;
pub mod peers;
pub mod report;
pub mod svg;
pub mod workloads;
