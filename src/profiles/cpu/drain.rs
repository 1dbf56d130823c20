//! The `heaprof-cpu` thread: drains the sample ring every tick into an aggregate (thread
//! name, label set, stack → samples), arms the timers of new threads, and at stop writes
//! the profile (`encode.rs`) and hands the writer back.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Condvar, Mutex};

use super::ring::Ring;
use super::{stacks, timers, Outcome, Sink, DRAIN_TICK, IN_HANDLER, ITIMER_MODE, RUNNING};
use crate::base::{sys, tls};
use crate::unwind;

/// What CPU samples are aggregated by: thread name, label set id, stack.
type SampleKey = (Arc<str>, u32, Box<[usize]>);

pub(super) struct Drain {
    pub(super) ring: &'static Ring,
    pub(super) timers: timers::Timers,
    pub(super) known: HashSet<i32>,
    pub(super) period_ns: i64,
    pub(super) hz: u32,
    pub(super) start_nanos: i64,
    pub(super) start_mono: u64,
    pub(super) adopted_before: usize,
    pub(super) unwind_before: unwind::UnwindStats,
    /// (thread name, label set, stack) → samples.
    pub(super) agg: HashMap<SampleKey, i64>,
    /// tid → thread name, read at the tid's first sample.
    pub(super) names: HashMap<i32, Arc<str>>,
    pub(super) samples_drained: u64,
}

fn read_comm(tid: i32) -> Option<Arc<str>> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
    Some(Arc::from(s.trim_end_matches('\n')))
}

impl Drain {
    pub(super) fn run(mut self, stop: &(Mutex<bool>, Condvar), mut w: Box<dyn Sink>) -> Outcome {
        let _guard = tls::ProfilerGuard::enter();
        let (flag, cv) = stop;
        loop {
            let stopping = {
                let g = flag.lock().unwrap_or_else(|e| e.into_inner());
                let (g, _) = cv
                    .wait_timeout_while(g, DRAIN_TICK, |s| !*s)
                    .unwrap_or_else(|e| e.into_inner());
                *g
            };
            self.drain_ring();
            if stopping {
                break;
            }
            self.rescan();
        }
        self.timers.delete_all();
        RUNNING.store(false, SeqCst);
        while IN_HANDLER.load(SeqCst) != 0 {
            std::thread::yield_now();
        }
        self.drain_ring();
        let duration = sys::monotonic_nanos().saturating_sub(self.start_mono) as i64;
        self.write(&mut w, duration)?;
        Ok(w)
    }

    /// New threads: refresh the stack snapshot first (their stacks must be in it before
    /// their first sample), then arm their timers; exited threads lose theirs.
    fn rescan(&mut self) {
        let tids = timers::list_tids();
        let any_new = tids.iter().any(|t| !self.known.contains(t));
        if any_new || stacks::refresh_wanted() {
            stacks::refresh();
        }
        let was_fallback = self.timers.fallback.is_some();
        for tid in self.timers.sync(&tids, &mut self.known) {
            if let Some(n) = read_comm(tid) {
                self.names.entry(tid).or_insert(n);
            }
        }
        if !was_fallback && self.timers.fallback.is_some() {
            ITIMER_MODE.store(true, SeqCst);
        }
    }

    fn drain_ring(&mut self) {
        let mut batch: Vec<(i32, u32, Box<[usize]>)> = Vec::new();
        while self
            .ring
            .pop_with(|tid, labels, frames| batch.push((tid, labels, frames.into())))
        {}
        for (tid, labels, stack) in batch {
            self.samples_drained += 1;
            let name = self.name_of(tid);
            *self.agg.entry((name, labels, stack)).or_insert(0) += 1;
        }
    }

    /// The name for `tid`: read when its first sample arrives (by then the thread has
    /// usually named itself), else the name seen at the scan, else `tid-N`.
    fn name_of(&mut self, tid: i32) -> Arc<str> {
        if let Some(n) = self.names.get(&tid) {
            return n.clone();
        }
        let n = read_comm(tid).unwrap_or_else(|| Arc::from(format!("tid-{tid}")));
        self.names.insert(tid, n.clone());
        n
    }
}
