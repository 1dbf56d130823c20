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

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use crate::pprof::builder::{Label, ProfileBuilder};
use crate::pprof::symbolize::Symbolizer;
use crate::pprof::text::{self, CountRecord};
use crate::unwind::{self, MAX_DEPTH};
use crate::{base::sys, base::tls};
use capture::Outcome;

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
    let n = name.strip_prefix('<').unwrap_or(name);
    n.starts_with("heaprof::") || n.starts_with("core::ops::function::")
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

/// Why a thread has no stack, in words, or `None` if it has one.
fn reason(t: &ThreadStack) -> Option<String> {
    match &t.outcome {
        Outcome::Stack => None,
        Outcome::Blocked => Some(format!(
            "blocks the capture signal ({})",
            capture::signal_number()
        )),
        Outcome::StillPending => {
            Some("has not run since an earlier capture signal (still pending)".into())
        }
        Outcome::NoAnswer(d) => Some(format!("did not answer within {} ms", d.as_millis())),
        Outcome::SendFailed(e) => Some(format!("could not be signalled: {e}")),
    }
}

/// The stack written for `t`: its frames, or the pseudo-frame saying why there are none.
fn written_stack(t: &ThreadStack) -> Vec<usize> {
    match t.outcome {
        Outcome::Stack if !t.frames.is_empty() => t.frames.clone(),
        Outcome::Stack => Vec::new(),
        Outcome::Blocked => vec![thread_blocks_signal as fn() as usize + 1],
        _ => vec![thread_did_not_answer as fn() as usize + 1],
    }
}

/// Writes the `threads` profile; see the module docs for the formats.
pub fn write(w: &mut dyn Write, name: &str, debug: u8) -> io::Result<()> {
    let _guard = tls::ProfilerGuard::enter();
    let mut sym = Symbolizer::new();
    let threads = snapshot(&mut sym);
    match debug {
        0 => write_proto(w, name, &threads),
        1 => {
            let stacks: Vec<Vec<usize>> = threads.iter().map(written_stack).collect();
            let records: Vec<CountRecord> = stacks
                .iter()
                .map(|s| CountRecord { count: 1, stack: s })
                .collect();
            text::write_count_text(w, name, &records, &mut sym, None)
        }
        _ => write_dump(w, &threads, &mut sym),
    }
}

fn write_proto(w: &mut dyn Write, name: &str, threads: &[ThreadStack]) -> io::Result<()> {
    let mut groups: HashMap<(Vec<usize>, &str), i64> = HashMap::new();
    for t in threads {
        *groups.entry((written_stack(t), &t.name)).or_insert(0) += 1;
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut b = ProfileBuilder::new(&[(name, "count")], (name, "count"), 1);
    b.set_time_nanos(sys::now_unix_nanos());
    for t in threads {
        if let Some(r) = reason(t) {
            b.add_comment(&format!("thread {} {:?}: {r}", t.tid, t.name));
        }
    }
    for ((stack, tname), count) in &groups {
        let labels = [Label::Str {
            key: "thread".into(),
            value: (*tname).to_string(),
        }];
        if stack.is_empty() {
            b.add_pseudo_sample(
                crate::pprof::stack_groups::EMPTY_STACK_FRAME,
                &[*count],
                &labels,
            );
        } else {
            b.add_sample(stack, false, &[*count], &labels);
        }
    }
    b.write_gzip(w)
}

/// `debug >= 2`: one block per thread, like a Go panic dump.
fn write_dump(w: &mut dyn Write, threads: &[ThreadStack], sym: &mut Symbolizer) -> io::Result<()> {
    let mut out = String::new();
    for t in threads {
        let _ = write!(out, "thread {} {:?}", t.tid, t.name);
        if t.is_writer {
            out.push_str(" (writing this profile)");
        }
        out.push_str(":\n");
        if let Some(r) = reason(t) {
            let _ = writeln!(out, "heaprof: no stack: the thread {r}\n");
            continue;
        }
        for &ra in &t.frames {
            let pc = ra.wrapping_sub(1);
            let frames = sym.resolve(pc);
            if frames.is_empty() {
                let _ = writeln!(out, "{pc:#x}\n\t?");
            }
            for f in frames {
                let _ = writeln!(out, "{}", f.name);
                match &f.file {
                    Some(file) => {
                        let _ = write!(out, "\t{file}:{}", f.line);
                    }
                    None => out.push_str("\t?"),
                }
                if f.sym_addr != 0 && f.sym_addr <= pc {
                    let _ = write!(out, " +{:#x}", pc - f.sym_addr);
                }
                out.push('\n');
            }
        }
        if t.frames.len() >= MAX_DEPTH {
            let _ = writeln!(out, "...additional frames elided...");
        }
        out.push('\n');
    }
    w.write_all(out.as_bytes())?;
    w.flush()
}
