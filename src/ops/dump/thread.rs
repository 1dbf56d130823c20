//! The `heaprof-dump` thread: waits on the wake-up pipe (with a timeout while it polls RSS
//! or holds a dump back), serves pending signals, feeds the automatic triggers their
//! readings, and writes the dumps.
//!
//! Runs under the thread's profiler guard: its allocations (profile writing, file names,
//! `/proc` reads) are the profiler's, not the application's. A write error is reported once
//! per kind of error and profile, and never stops the thread.

use std::collections::HashSet;
use std::io::{self, Write};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::triggers::{Fire, Reason, Triggers};
use super::{signal, DumpHandle, Profile};
use super::{
    stats_now, DUMPS, DUMPS_FINISHED, DUMPS_WRITTEN, FILES_WRITTEN, GROWTH_DUMPS, HELD_BACK,
    RSS_CHECKS, RSS_DUMPS, SERVED, SIGNAL_DUMPS, WRITE_ERRORS,
};
use crate::base::wake_pipe::PipeReader;
use crate::profiles::rss::{self, fmt_bytes};
use crate::{alloc::peak, base::sys, base::tls};

/// Starts the dump thread.
pub fn spawn(
    reader: PipeReader,
    handle: DumpHandle,
    profiles: Vec<Profile>,
    triggers: Option<Triggers>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name("heaprof-dump".into())
        .spawn(move || {
            Dumper {
                handle,
                profiles,
                reported: HashSet::new(),
                held_back_reported: 0,
            }
            .run(reader, triggers)
        })
        .map(drop)
}

/// Why a dump is written.
enum Kind {
    /// Signals received up to this count are served.
    Signal(u64),
    /// An automatic trigger.
    Auto(Fire),
}

struct Dumper {
    handle: DumpHandle,
    profiles: Vec<Profile>,
    /// (profile, error kind) pairs already reported on stderr.
    reported: HashSet<(String, io::ErrorKind)>,
    /// Held-back triggers already mentioned on a dump line.
    held_back_reported: u64,
}

impl Dumper {
    fn run(mut self, reader: PipeReader, mut triggers: Option<Triggers>) {
        // The dump thread's own allocations are the profiler's, not the application's.
        let _guard = tls::ProfilerGuard::enter();
        if triggers.is_some() {
            self.announce();
        }
        // The first pass looks at the triggers at once (the heap may be past a step already).
        let mut timeout = Some(Duration::ZERO);
        loop {
            if let Err(e) = reader.wait(timeout) {
                sys::write_stderr(&[format!(
                    "heaprof: dumps stop: reading the wake-up pipe failed: {e}\n"
                )
                .as_bytes()]);
                peak::arm_growth_wake(u64::MAX);
                return;
            }
            let received = signal::RECEIVED.load(Ordering::Acquire);
            if received != SERVED.load(Ordering::Acquire) {
                self.dump(Kind::Signal(received));
            }
            timeout = triggers.as_mut().and_then(|t| self.check(t));
        }
    }

    /// One line on stderr saying what the automatic triggers are, in bytes.
    fn announce(&self) {
        let mut parts = Vec::new();
        if let Some(step) = self.handle.on_growth {
            parts.push(format!("every {} of heap growth", fmt_bytes(step as i64)));
        }
        if let Some((_, how)) = &self.handle.rss_threshold {
            parts.push(format!("when RSS reaches {how}"));
        }
        let limit = match self.handle.min_interval {
            Duration::ZERO => "no minimum interval".to_string(),
            d => format!("at most one per {d:?}"),
        };
        sys::write_stderr(&[format!(
            "heaprof: automatic dumps {}, {limit}, into {}\n",
            parts.join(" and "),
            self.handle.dir.display()
        )
        .as_bytes()]);
    }

    /// Feeds the triggers a reading and writes the dump they ask for; re-arms the growth
    /// wake-up. Returns how long the thread may wait before looking again.
    fn check(&mut self, t: &mut Triggers) -> Option<Duration> {
        let rss = if t.polls_rss() {
            rss::statm_rss()
        } else {
            None
        };
        let fire = t.observe(Instant::now(), peak::in_use(), rss);
        HELD_BACK.store(t.held_back_total(), Ordering::Release);
        if let Some(f) = fire {
            self.dump(Kind::Auto(f));
        }
        if t.polls_rss() {
            // Counted after the dump the reading caused was written: a reader that sees this
            // count sees that dump finished.
            RSS_CHECKS.fetch_add(1, Ordering::AcqRel);
        }
        if let Some(at) = t.growth_wake_at() {
            peak::arm_growth_wake(at);
            if peak::in_use() >= at {
                return Some(Duration::ZERO); // reached while we were not armed
            }
        }
        t.next_check(Instant::now())
    }

    fn dump(&mut self, kind: Kind) {
        let seq = DUMPS.fetch_add(1, Ordering::AcqRel) + 1;
        if let Kind::Auto(f) = &kind {
            if f.reason.growth.is_some() {
                GROWTH_DUMPS.fetch_add(1, Ordering::AcqRel);
            }
            if f.reason.rss.is_some() {
                RSS_DUMPS.fetch_add(1, Ordering::AcqRel);
            }
        }
        let mut written = Vec::new();
        let mut failed = 0;
        for p in &self.profiles {
            let path = self.handle.path_for(seq, p.name());
            match write_profile_file(&path, p) {
                Ok(()) => {
                    FILES_WRITTEN.fetch_add(1, Ordering::AcqRel);
                    written.push(path.display().to_string());
                }
                Err(e) => {
                    failed += 1;
                    WRITE_ERRORS.fetch_add(1, Ordering::AcqRel);
                    report_error(&mut self.reported, seq, &path, p, &e);
                }
            }
        }
        if failed == 0 {
            DUMPS_WRITTEN.fetch_add(1, Ordering::AcqRel);
        }
        let what = match kind {
            Kind::Signal(covered) => {
                // Served before finished: a reader that sees the finished count sees these
                // signals served.
                SERVED.store(covered, Ordering::Release);
                let signal_dumps = SIGNAL_DUMPS.fetch_add(1, Ordering::AcqRel) + 1;
                format!(
                    "{covered} signals received, {} coalesced",
                    covered.saturating_sub(signal_dumps)
                )
            }
            Kind::Auto(f) => describe(&f),
        };
        DUMPS_FINISHED.fetch_add(1, Ordering::AcqRel);
        let held = self.held_back_note();
        if !written.is_empty() {
            sys::write_stderr(&[format!(
                "heaprof: dump {seq} ({what}{held}): wrote {}\n",
                written.join(", ")
            )
            .as_bytes()]);
        }
    }

    /// `; N automatic dumps held back by the minimum interval` for the triggers held back
    /// since the last line that said so; empty when none.
    fn held_back_note(&mut self) -> String {
        let total = HELD_BACK.load(Ordering::Acquire);
        let new = total - self.held_back_reported;
        self.held_back_reported = total;
        if new == 0 {
            return String::new();
        }
        format!(
            "; {new} automatic dumps held back by the minimum interval of {:?}",
            self.handle.min_interval
        )
    }
}

/// Prints a write error the first time its (profile, kind) pair occurs.
fn report_error(
    reported: &mut HashSet<(String, io::ErrorKind)>,
    seq: u64,
    path: &Path,
    p: &Profile,
    e: &io::Error,
) {
    if reported.insert((p.name().to_string(), e.kind())) {
        let s = stats_now();
        sys::write_stderr(&[format!(
            "heaprof: dump {seq}: cannot write {}: {e} ({} signals received, {} dumps; \
             later errors of this kind are counted, not printed)\n",
            path.display(),
            s.signals_received,
            s.dumps
        )
        .as_bytes()]);
    }
}

/// What made an automatic dump, for its stderr line.
fn describe(f: &Fire) -> String {
    let Reason { growth, rss } = f.reason;
    let mut parts = Vec::new();
    if let Some((now, before)) = growth {
        parts.push(format!(
            "heap grew to {} in use from {}",
            fmt_bytes(now as i64),
            fmt_bytes(before as i64)
        ));
    }
    if let Some((now, threshold)) = rss {
        parts.push(format!(
            "RSS {} reached {}",
            fmt_bytes(now as i64),
            fmt_bytes(threshold as i64)
        ));
    }
    let when = if f.deferred {
        ", written when the minimum interval had passed"
    } else {
        ""
    };
    format!("automatic: {}{when}", parts.join(", "))
}

/// Writes `profile` (gzip protobuf) to `path` atomically; a panic in the writer becomes an
/// error.
pub fn write_profile_file(path: &Path, profile: &Profile) -> io::Result<()> {
    super::write_atomic(path, |w: &mut dyn Write| {
        panic::catch_unwind(AssertUnwindSafe(|| profile.write_to(w, 0))).unwrap_or_else(|_| {
            Err(io::Error::other(format!(
                "the {} profile writer panicked",
                profile.name()
            )))
        })
    })
}
