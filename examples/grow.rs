//! A process that holds memory in steps, on command: try heaprof's automatic dumps on it.
//!
//! ```text
//! HEAPROF_DUMP_ON_GROWTH=16MiB HEAPROF_DUMP_ON_RSS=200MiB HEAPROF_DUMP_MIN_INTERVAL=0 \
//!     cargo run --release --example grow
//! big 20          # holds one 20 MiB block: a growth dump
//! small 8 16      # holds 8 MiB more in 16 KiB blocks
//! big 200         # RSS passes 200 MiB: an RSS dump (and a growth dump)
//! free            # lets everything go
//! ```
//!
//! Commands, one per line on standard input; each answers with one line on stdout,
//! `grow held=<bytes> <counters>` (`dumps=off` when no dumps are on):
//! - `small MIB KIB`: hold MIB more in blocks of KIB, every byte written;
//! - `big MIB`: hold one block of MIB, every byte written;
//! - `half`: let go of every other block (glibc keeps the freed chunks between the live
//!   ones: they show as "allocator free" in the profiles' RSS breakdown);
//! - `free`: let go of everything held;
//! - `stats`: just answer;
//! - `wait FIELD N`: wait until dump counter FIELD (`growth_dumps`, `rss_dumps`,
//!   `held_back`, `signal_dumps`, `dumps_finished`) reaches N, then answer;
//! - `checks N`: wait until the dump thread has read RSS N more times, then answer.
//!
//! Waits give up after 300 s (answering `grow timeout …`). The first line on stdout is
//! `grow pid=<pid> rss_threshold=<bytes|none> growth=<bytes|none>`. The process exits at
//! the end of its input.

use std::hint::black_box;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

const MIB: usize = 1 << 20;
const PATIENCE: Duration = Duration::from_secs(300);

/// What the process holds.
#[derive(Default)]
struct Held {
    blocks: Vec<Vec<u8>>,
    bytes: usize,
}

/// `mib` MiB in blocks of `kib` KiB, written.
#[inline(never)]
fn hold_small(held: &mut Held, mib: usize, kib: usize) {
    let block = kib.max(1) << 10;
    for _ in 0..(mib * MIB).div_ceil(block) {
        held.blocks.push(black_box(vec![1u8; block]));
        held.bytes += block;
    }
}

/// One block of `mib` MiB, written.
#[inline(never)]
fn hold_big(held: &mut Held, mib: usize) {
    held.blocks.push(black_box(vec![1u8; mib * MIB]));
    held.bytes += mib * MIB;
}

fn counter(s: &heaprof::DumpStats, field: &str) -> Option<u64> {
    Some(match field {
        "growth_dumps" => s.growth_dumps,
        "rss_dumps" => s.rss_dumps,
        "held_back" => s.held_back,
        "signal_dumps" => s.signal_dumps,
        "dumps_finished" => s.dumps_finished,
        "rss_checks" => s.rss_checks,
        _ => return None,
    })
}

fn answer(held: &Held) -> String {
    let counters = match heaprof::dump_stats() {
        None => "dumps=off".to_string(),
        Some(s) => format!(
            "dumps={} dumps_finished={} growth_dumps={} rss_dumps={} held_back={} \
             signal_dumps={} rss_checks={} files_written={} write_errors={}",
            s.dumps,
            s.dumps_finished,
            s.growth_dumps,
            s.rss_dumps,
            s.held_back,
            s.signal_dumps,
            s.rss_checks,
            s.files_written,
            s.write_errors
        ),
    };
    format!("grow held={} {counters}", held.bytes)
}

/// Waits until `field` reaches `n` (or, with `more`, grows by `n`).
fn wait_for(field: &str, n: u64, more: bool) -> Result<(), String> {
    let read = || heaprof::dump_stats().and_then(|s| counter(&s, field));
    let start = read().ok_or(format!("no counter {field:?} (or dumps are off)"))?;
    let goal = if more { start + n } else { n };
    let deadline = Instant::now() + PATIENCE;
    while read().unwrap_or(0) < goal {
        if Instant::now() > deadline {
            return Err(format!("{field} stayed below {goal}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn run(line: &str, held: &mut Held) -> Result<(), String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| -> Result<usize, String> {
        words
            .get(i)
            .and_then(|w| w.parse().ok())
            .ok_or(format!("{line:?}: argument {i} must be a number"))
    };
    match words.first().copied() {
        Some("small") => hold_small(held, num(1)?, num(2)?),
        Some("big") => hold_big(held, num(1)?),
        Some("half") => {
            let mut keep = false;
            held.blocks.retain(|b| {
                keep = !keep;
                if !keep {
                    held.bytes -= b.len();
                }
                keep
            });
        }
        Some("free") => *held = Held::default(),
        Some("stats") => {}
        Some("wait") => wait_for(words.get(1).copied().unwrap_or(""), num(2)? as u64, false)?,
        Some("checks") => wait_for("rss_checks", num(1)? as u64, true)?,
        _ => return Err(format!("unknown command {line:?}")),
    }
    Ok(())
}

fn main() {
    let env = heaprof::init_from_env();
    let show = |v: Option<u64>| v.map_or("none".to_string(), |b| b.to_string());
    let dump = env.dump.as_ref();
    println!(
        "grow pid={} rss_threshold={} growth={}",
        std::process::id(),
        show(dump.and_then(|d| d.rss_threshold())),
        show(dump.and_then(|d| d.on_growth()))
    );
    let mut held = Held::default();
    let mut out = std::io::stdout().lock();
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let reply = match run(&line, &mut held) {
            Ok(()) => answer(&held),
            Err(e) => format!("grow timeout or error: {e}"),
        };
        if writeln!(out, "{reply}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
}
