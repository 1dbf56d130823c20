//! Encoding a CPU profile: the drain thread's aggregate written as pprof samples (`samples`
//! and `cpu` nanoseconds per thread, label set and stack), with comments on how it was
//! sampled and what was lost.

use std::io::{self, Write};
use std::sync::atomic::Ordering::Relaxed;

use super::drain::Drain;
use super::{handler, stacks, LOST_FRAME};
use crate::alloc::labels;
use crate::pprof::builder::{Label, ProfileBuilder};
use crate::unwind;

impl Drain {
    /// Writes the profile of `duration` nanoseconds to `w`.
    pub(super) fn write(self, w: &mut dyn Write, duration: i64) -> io::Result<()> {
        let lost = self.ring.take_lost() as i64;
        let mut b = ProfileBuilder::new(
            &[("samples", "count"), ("cpu", "nanoseconds")],
            ("cpu", "nanoseconds"),
            self.period_ns,
        );
        b.set_time_nanos(self.start_nanos);
        b.set_duration_nanos(duration);
        match &self.timers.fallback {
            None => b.add_comment(&format!(
                "heaprof cpu: {} Hz per-thread CPU-time timers (timer_create, SIGEV_THREAD_ID); {} threads covered",
                self.hz, self.timers.created
            )),
            Some(f) if f.tid == 0 => b.add_comment(&format!(
                "heaprof cpu: {} Hz setitimer(ITIMER_PROF) (forced): busy threads may be under-sampled",
                self.hz
            )),
            Some(f) => b.add_comment(&format!(
                "heaprof cpu: {} Hz setitimer(ITIMER_PROF) fallback: timer_create failed for thread {} (errno {}); busy threads may be under-sampled",
                self.hz, f.tid, f.errno
            )),
        }
        let (taken, nanos) = handler::handler_stats();
        let after = unwind::stats();
        b.add_comment(&format!(
            "heaprof cpu: {} samples taken, {} drained, {} lost ({} of them interrupting a handler on a nearly full alternate signal stack, the others to a full ring), handler mean {} ns/sample, {} threads given stack bounds from /proc/self/maps, {} leaf-only (no stack bounds), {} frame-pointer walks",
            taken,
            self.samples_drained,
            lost,
            handler::no_stack_samples(),
            nanos.checked_div(taken).unwrap_or(0),
            stacks::ADOPTED.load(Relaxed) - self.adopted_before,
            after.no_stack_bounds - self.unwind_before.no_stack_bounds,
            after.fp_fallbacks - self.unwind_before.fp_fallbacks,
        ));
        for (k, v) in labels::stat_lines() {
            b.add_comment(&format!("{k}: {v}"));
        }
        let mut rows: Vec<_> = self.agg.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for ((name, label_set, stack), n) in rows {
            let mut labels = vec![Label::Str {
                key: "thread".into(),
                value: name.to_string(),
            }];
            labels.extend(labels::pairs(label_set).iter().map(|(k, v)| Label::Str {
                key: k.clone(),
                value: v.clone(),
            }));
            b.add_sample(&stack, true, &[n, n * self.period_ns], &labels);
        }
        if lost > 0 {
            b.add_pseudo_sample(LOST_FRAME, &[lost, lost * self.period_ns], &[]);
        }
        b.write_gzip(&mut *w)?;
        w.flush()
    }
}
