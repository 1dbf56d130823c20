//! The `threads` capture on targets without `rt_tgsigqueueinfo` and `/proc/self/task`
//! (anything but Linux glibc): no other thread can be reached, so the profile holds the
//! writing thread only. Same API as `capture.rs`.

use core::ffi::c_int;
use std::time::Duration;

/// What became of one thread (see the Linux implementation).
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(dead_code)]
pub enum Outcome {
    /// Its stack was captured.
    Stack,
    /// It blocks the capture signal.
    Blocked,
    /// A signal from an earlier round is still pending.
    StillPending,
    /// No answer before the deadline.
    NoAnswer(Duration),
    /// The signal could not be sent.
    SendFailed(String),
}

/// One thread's result.
pub struct Captured {
    /// Kernel thread id.
    pub tid: i32,
    /// Return addresses, leaf first.
    pub frames: Vec<usize>,
    /// What happened.
    pub outcome: Outcome,
}

/// No capture signal on this target.
pub fn signal_number() -> c_int {
    0
}

/// No options to set on this target.
pub fn set_options(_timeout: Duration, _precheck: bool) {}

/// Nothing to hold across a fork on this target.
pub fn fork_prepare() {}

/// Nothing to release after a fork on this target.
pub fn fork_release() {}

/// Nothing to reset in a forked child on this target.
pub fn after_fork_child() {}

/// No slots on this target.
pub fn hold_slots_for_test(_held: bool) {}

/// Only the calling thread is known.
pub fn list_tids() -> Vec<i32> {
    vec![gettid()]
}

/// A stand-in id for the calling thread.
pub fn gettid() -> i32 {
    0
}

/// Other threads cannot be reached: every one is reported as not signalled.
pub fn capture_others(tids: &[i32]) -> Vec<Captured> {
    tids.iter()
        .map(|&tid| Captured {
            tid,
            frames: Vec::new(),
            outcome: Outcome::SendFailed("not supported on this platform".into()),
        })
        .collect()
}
