//! Writing the `threads` profile from a snapshot: pprof grouped by (stack, thread name),
//! Go's count text, or one block per thread (`debug >= 2`); threads that did not answer
//! under a pseudo-frame naming why.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use super::{capture, snapshot, thread_blocks_signal, thread_did_not_answer, Outcome, ThreadStack};
use crate::base::{sys, tls};
use crate::pprof::builder::{Label, ProfileBuilder};
use crate::pprof::symbolize::Symbolizer;
use crate::pprof::text::{self, CountRecord};
use crate::unwind::MAX_DEPTH;

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
