//! The `threads` profile (alias `goroutine`): the current stack of every thread of the
//! process at the moment it is written — Go's goroutine profile for OS threads, an in-process
//! `pstack`.
//!
//! Called by the profile registry's writer ([`write()`], [`count()`]); never by the allocator or
//! a signal handler (it reads `/proc`, symbolizes and allocates). The signal machinery that
//! reaches the other threads is in [`capture`]; the writing thread captures itself with
//! [`crate::unwind::capture`].
//!
//! Output (`debug`):
//! - `0`: gzip pprof, `sample_type` = `[threads/count]`, `period_type` the same, period
//!   one. One sample per (stack, thread name), value = threads with both, string label
//!   `thread` = the name (`/proc/self/task/TID/comm`). Grouping by stack alone (as Go does)
//!   would lose the names; one sample per thread would lose the grouping: (stack, name) keeps
//!   both for pools of identically named workers.
//! - `1`: Go's count text `threads profile: total N` (grouped by stack only; names are not in
//!   that grammar).
//! - `2` and more: one block per thread, like a Go panic dump: `thread TID "name":`, then per
//!   frame (inlined frames included) `function` and `\tfile:line`.
//!
//! Threads that do not answer are not waited for past the timeout: they appear with a single
//! pseudo-frame naming why ([`thread_blocks_signal`], [`thread_did_not_answer`]), in every
//! format, and in a `comment` of the proto.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub mod capture;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
#[path = "capture_none.rs"]
pub mod capture;

use crate::base::tls;
use crate::pprof::symbolize::Symbolizer;
use crate::pprof::trim::path_starts_with_any;
use crate::unwind::{self, MAX_DEPTH};
use capture::Outcome;

mod write;

pub use write::write;

/// One thread in a snapshot.
pub struct ThreadStack {
    /// Kernel thread id.
    pub tid: i32,
    /// `/proc/self/task/TID/comm` (empty if unreadable).
    pub name: String,
    /// Return addresses, leaf first (see [`capture::Captured::frames`]).
    pub frames: Vec<usize>,
    /// Whether and how the stack was obtained.
    pub outcome: Outcome,
    /// The thread that wrote the profile.
    pub is_writer: bool,
}

/// Pseudo-frame of a thread that blocks the capture signal.
#[inline(never)]
pub fn thread_blocks_signal() {
    std::hint::black_box("heaprof: the thread blocks the capture signal");
}

/// Pseudo-frame of a thread that did not answer the capture signal in time (or could not be
/// signalled).
#[inline(never)]
pub fn thread_did_not_answer() {
    std::hint::black_box("heaprof: the thread did not answer the capture signal");
}

/// Number of threads of the process now.
pub fn count() -> usize {
    capture::list_tids().len()
}

fn thread_name(tid: i32) -> String {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_default()
}

/// Leading frames of the writing thread's own stack that are heaprof's writing machinery.
fn is_writer_frame(name: &str) -> bool {
    path_starts_with_any(name, &["heaprof::", "core::ops::function::"])
}

/// The writer's own stack, without the heaprof frames on top.
#[inline(never)]
fn own_stack(sym: &mut Symbolizer) -> Vec<usize> {
    let mut frames = [0usize; MAX_DEPTH];
    let n = unwind::capture(&mut frames);
    let stack = &frames[..n];
    let drop = stack
        .iter()
        .take_while(|&&ra| {
            let fs = sym.resolve(ra.wrapping_sub(1));
            !fs.is_empty() && fs.iter().all(|f| is_writer_frame(&f.name))
        })
        .count();
    let drop = if drop == n { 0 } else { drop };
    stack[drop..].to_vec()
}

/// Captures every thread now, sorted by thread id.
pub fn snapshot(sym: &mut Symbolizer) -> Vec<ThreadStack> {
    let _guard = tls::ProfilerGuard::enter();
    let me = capture::gettid();
    let others: Vec<i32> = capture::list_tids()
        .into_iter()
        .filter(|&t| t != me)
        .collect();
    let mut out: Vec<ThreadStack> = capture::capture_others(&others)
        .into_iter()
        .map(|c| ThreadStack {
            tid: c.tid,
            name: String::new(),
            frames: c.frames,
            outcome: c.outcome,
            is_writer: false,
        })
        .collect();
    out.push(ThreadStack {
        tid: me,
        name: String::new(),
        frames: own_stack(sym),
        outcome: Outcome::Stack,
        is_writer: true,
    });
    for t in &mut out {
        t.name = thread_name(t.tid);
    }
    out.sort_by_key(|t| t.tid);
    out
}
