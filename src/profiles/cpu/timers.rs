//! Per-thread CPU-time timers: one `timer_create` per thread on that thread's CPU clock,
//! delivering SIGPROF to that thread (`SIGEV_THREAD_ID`), kept in step with
//! `/proc/self/task` by rescans from the drain thread.
//!
//! Called by: `cpu.rs` at start (first scan, on the starting thread) and from the drain
//! thread (rescans, stop). Never from a signal handler. Must never: leave a timer armed after
//! [`Timers::delete_all`], or fail a profile because a thread exited mid-scan.
//!
//! Each timer's `si_value` is `(generation << 32) | tid`: the handler drops signals of an
//! older profile (a signal can stay queued after `timer_delete`) and gets the tid free.
//! Expiry: every `interval` ns of *that thread's* CPU time, the first one uniform in
//! `(0, interval]` so threads started together do not fire in lockstep (Go's scheme).
//!
//! Fallback: if `timer_create` fails for a live thread (not one that just exited), the
//! whole profile switches to the process-wide `setitimer(ITIMER_PROF)` (Go before 1.18):
//! all per-thread timers are deleted and the failure is recorded for the profile's comment.

use std::collections::{HashMap, HashSet};

use crate::base::sys;

/// Why per-thread timers were given up, for the profile comment.
#[derive(Clone, Debug)]
pub struct Fallback {
    /// The thread whose timer failed (0 when forced).
    pub tid: i32,
    /// `errno` of the failing call (0 when forced).
    pub errno: i32,
}

/// The timers of one profile.
pub struct Timers {
    interval_ns: u64,
    generation: u32,
    /// tid → kernel timer id (a `timer_t`, stored as an integer so the table is `Send`).
    timers: HashMap<i32, usize>,
    rng: u64,
    /// Per-thread timers created so far (including deleted ones).
    pub created: u64,
    /// Timers deleted because their thread exited.
    pub reaped: u64,
    /// Set once the profile runs on `setitimer(ITIMER_PROF)` instead.
    pub fallback: Option<Fallback>,
}

/// `si_value` for a timer of profile `generation` on thread `tid`.
pub fn encode_value(generation: u32, tid: i32) -> usize {
    ((generation as usize) << 32) | tid as u32 as usize
}

/// Inverse of [`encode_value`]: `(generation, tid)`.
pub fn decode_value(v: usize) -> (u32, i32) {
    ((v >> 32) as u32, v as u32 as i32)
}

/// Thread ids of this process now (`/proc/self/task`).
pub fn list_tids() -> HashSet<i32> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn thread_alive(tid: i32) -> bool {
    std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}

impl Timers {
    /// No timers yet; `interval_ns > 0`.
    pub fn new(interval_ns: u64, generation: u32) -> Self {
        Timers {
            interval_ns,
            generation,
            timers: HashMap::new(),
            rng: sys::monotonic_nanos() | 1,
            created: 0,
            reaped: 0,
            fallback: None,
        }
    }

    /// Threads currently holding a timer.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.timers.len()
    }

    fn first_expiry(&mut self) -> u64 {
        // xorshift64: uniform enough for spreading first expiries.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % self.interval_ns + 1
    }

    /// Switch to `setitimer(ITIMER_PROF)`: delete every per-thread timer, arm the process
    /// timer. Returns the `setitimer` error, if any.
    pub fn fall_back(&mut self, why: Fallback) -> Result<(), i32> {
        self.delete_all();
        self.fallback = Some(why);
        sys::set_itimer_prof(self.interval_ns)
    }

    /// Brings the timers in line with `tids` (the live threads): creates and arms one for
    /// each new tid, deletes those of tids that are gone. Returns the new tids. In fallback
    /// mode only reports new tids.
    pub fn sync(&mut self, tids: &HashSet<i32>, known: &mut HashSet<i32>) -> Vec<i32> {
        let new: Vec<i32> = tids
            .iter()
            .copied()
            .filter(|t| !known.contains(t))
            .collect();
        known.retain(|t| tids.contains(t));
        known.extend(&new);
        if self.fallback.is_some() {
            return new;
        }
        let gone: Vec<i32> = self
            .timers
            .keys()
            .copied()
            .filter(|t| !tids.contains(t))
            .collect();
        for tid in gone {
            if let Some(id) = self.timers.remove(&tid) {
                // EINVAL would mean already deleted: nothing to undo either way.
                let _ = sys::timer_delete(id as libc::timer_t);
                self.reaped += 1;
            }
        }
        for &tid in &new {
            if let Err(errno) = self.add(tid) {
                if thread_alive(tid) {
                    // Cannot fail to arm: if setitimer fails too the profile just has no
                    // samples, and the comment says why.
                    let _ = self.fall_back(Fallback { tid, errno });
                    break;
                }
            }
        }
        new
    }

    fn add(&mut self, tid: i32) -> Result<(), i32> {
        let value = encode_value(self.generation, tid);
        let id = sys::thread_cpu_timer_create(tid, libc::SIGPROF, value)?;
        let first = self.first_expiry();
        if let Err(e) = sys::timer_arm(id, first, self.interval_ns) {
            let _ = sys::timer_delete(id);
            return Err(e);
        }
        self.created += 1;
        self.timers.insert(tid, id as usize);
        Ok(())
    }

    /// Deletes every per-thread timer and disarms `ITIMER_PROF` if it was used.
    pub fn delete_all(&mut self) {
        for (_, id) in self.timers.drain() {
            let _ = sys::timer_delete(id as libc::timer_t);
        }
        if self.fallback.is_some() {
            let _ = sys::set_itimer_prof(0);
        }
    }
}

impl Drop for Timers {
    fn drop(&mut self) {
        self.delete_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_round_trips() {
        for (g, t) in [(0u32, 1i32), (7, 123_456), (u32::MAX, i32::MAX)] {
            assert_eq!(decode_value(encode_value(g, t)), (g, t));
        }
    }

    #[test]
    fn clock_id_matches_the_kernel_macro_for_this_thread() {
        // The CPU clock built from our tid must read the same clock as
        // CLOCK_THREAD_CPUTIME_ID: both advance, and ours is never behind an earlier read.
        let tid = sys::gettid();
        let read = |c| {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: valid out-pointer; an invalid clock id only makes the call fail.
            let rc = unsafe { libc::clock_gettime(c, &mut ts) };
            assert_eq!(rc, 0, "clock {c} unreadable");
            ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
        };
        let a = read(libc::CLOCK_THREAD_CPUTIME_ID);
        let b = read(sys::thread_cpu_clock(tid));
        let c = read(libc::CLOCK_THREAD_CPUTIME_ID);
        assert!(a <= b && b <= c, "{a} {b} {c}");
    }

    #[test]
    fn sync_creates_and_reaps() {
        // An interval of ~11 days: the SIGPROF (default action: terminate) never fires here.
        let mut t = Timers::new(1 << 50, 0xfff0);
        let mut known = HashSet::new();
        let me = sys::gettid();
        let new = t.sync(&[me].into_iter().collect(), &mut known);
        assert_eq!(new, vec![me]);
        assert_eq!((t.len(), t.created), (1, 1));
        // A tid that does not exist: creation fails, no fallback since it is not alive.
        let new = t.sync(&[me, i32::MAX - 1].into_iter().collect(), &mut known);
        assert_eq!(new, vec![i32::MAX - 1]);
        assert!(t.fallback.is_none());
        assert_eq!(t.len(), 1);
        // `me` gone from the list: its timer is deleted.
        t.sync(&HashSet::new(), &mut known);
        assert_eq!((t.len(), t.reaped), (0, 1));
        assert!(known.is_empty());
    }
}
