//! Stack bounds for threads that never ran `unwind::thread_init()`: a snapshot of the
//! writable private mappings from `/proc/self/maps`, which the SIGPROF handler searches for
//! the interrupted `rsp` to hand the unwinder that thread's stack range once.
//!
//! Called by: the CPU drain thread ([`refresh`], allocates, reads /proc) and the SIGPROF
//! handler ([`adopt_for_current_thread`], async-signal-safe: atomics, `mincore(2)`, TLS).
//! Must never: let the handler read memory the snapshot only *claims* is mapped.
//!
//! # Why this is safe
//! A thread's stack is one anonymous `rw-p` mapping (glibc maps it before `clone`, so a
//! snapshot taken after the thread shows up in `/proc/self/task` contains it; the main
//! thread's is `[stack]`). The handler takes the mapping that holds `rsp` as `[lo, hi)`,
//! then checks with `mincore` that `[rsp, hi)` is mapped *now* (a stale snapshot fails the
//! check and the sample keeps only its leaf). A live thread's own stack is not unmapped
//! under it, so the range stays readable for the thread's life. The main thread's `[stack]`
//! grows down: its `lo` is taken as `hi − RLIMIT_STACK` (only used for the unwinder's
//! headroom test; reads never go below `rsp`).
//!
//! # Publication
//! A seqlock over fixed static arrays (single writer: the drain thread). The reader makes at
//! most two attempts and gives up on a concurrent write (the sample is leaf-only and a
//! refresh is requested). Torn reads are harmless: indices are clamped and the result is
//! discarded unless the sequence number is even and unchanged.

use core::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};

use crate::{base::sys, unwind};

/// Mappings kept in the snapshot (writable private ones only; the rest are dropped and
/// counted: a thread whose stack is past the cut gets leaf-only samples).
const MAX_RANGES: usize = 4096;

/// Longest `[rsp, hi)` accepted (sanity bound against a wrong mapping).
const MAX_STACK: usize = 1 << 30;

static SEQ: AtomicUsize = AtomicUsize::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);
/// `[start, end, lo]` per mapping, sorted by `start`; `lo` is the bound given to the
/// unwinder (`start`, or `end − RLIMIT_STACK` for `[stack]`).
static RANGES: [[AtomicUsize; 3]; MAX_RANGES] =
    [const { [const { AtomicUsize::new(0) }; 3] }; MAX_RANGES];
static REFRESH_WANTED: AtomicBool = AtomicBool::new(false);
/// Threads that got bounds from the snapshot (for the profile's comment).
pub static ADOPTED: AtomicUsize = AtomicUsize::new(0);
/// Mappings past [`MAX_RANGES`] in the last refresh.
pub static DROPPED: AtomicUsize = AtomicUsize::new(0);

/// Parses one `/proc/self/maps` line into `(start, end, is_main_stack)` if it is a writable
/// private mapping without a file (anonymous, `[stack]`, `[heap]`...).
fn parse_line(line: &str) -> Option<(usize, usize, bool)> {
    let mut it = line.split_ascii_whitespace();
    let (range, perms) = (it.next()?, it.next()?);
    let (_offset, _dev, inode) = (it.next()?, it.next()?, it.next()?);
    let path = it.next().unwrap_or("");
    if !perms.starts_with("rw") || perms.as_bytes().get(3) != Some(&b'p') || inode != "0" {
        return None;
    }
    let (a, b) = range.split_once('-')?;
    let start = usize::from_str_radix(a, 16).ok()?;
    let end = usize::from_str_radix(b, 16).ok()?;
    (start < end).then_some((start, end, path == "[stack]"))
}

/// Re-reads `/proc/self/maps` and publishes the snapshot. Drain thread only (one writer).
pub fn refresh() {
    REFRESH_WANTED.store(false, Ordering::Relaxed);
    let Ok(text) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let rlimit = sys::stack_rlimit();
    let mut rows: Vec<[usize; 3]> = Vec::with_capacity(256);
    let mut dropped = 0;
    for (start, end, main) in text.lines().filter_map(parse_line) {
        if rows.len() == MAX_RANGES {
            dropped += 1;
            continue;
        }
        let lo = match (main, rlimit) {
            (true, Some(r)) => end.saturating_sub(r).min(start),
            _ => start,
        };
        rows.push([start, end, lo]);
    }
    rows.sort_unstable();
    DROPPED.store(dropped, Ordering::Relaxed);
    let s = SEQ.load(Ordering::Relaxed);
    SEQ.store(s.wrapping_add(1), Ordering::Relaxed);
    fence(Ordering::Release);
    for (slot, row) in RANGES.iter().zip(&rows) {
        for (a, v) in slot.iter().zip(row) {
            a.store(*v, Ordering::Relaxed);
        }
    }
    LEN.store(rows.len(), Ordering::Relaxed);
    SEQ.store(s.wrapping_add(2), Ordering::Release);
}

/// In a forked child: a refresh the fork interrupted on the drain thread left the sequence
/// odd, which readers take as "being written" for ever (and the next refresh would publish
/// with an odd number). Publishes an empty snapshot instead; the child's next profile
/// refreshes it at start.
pub fn after_fork_child() {
    let s = SEQ.load(Ordering::Relaxed);
    if s & 1 == 1 {
        LEN.store(0, Ordering::Relaxed);
        SEQ.store(s.wrapping_add(1), Ordering::Release);
    }
}

/// Tests of the fork protocol: makes the sequence odd (a refresh in progress) or even again.
pub fn hold_for_test(held: bool) {
    let s = SEQ.load(Ordering::Relaxed);
    if (s & 1 == 1) != held {
        SEQ.store(s.wrapping_add(1), Ordering::Release);
    }
}

/// Whether the handler asked for a fresh snapshot since the last [`refresh`].
pub fn refresh_wanted() -> bool {
    REFRESH_WANTED.load(Ordering::Relaxed)
}

/// `(lo, hi)` of the snapshot mapping that holds `sp`. Async-signal-safe.
fn lookup(sp: usize) -> Option<(usize, usize)> {
    for _ in 0..2 {
        let s1 = SEQ.load(Ordering::Acquire);
        if s1 & 1 == 1 {
            continue;
        }
        let len = LEN.load(Ordering::Relaxed).min(MAX_RANGES);
        // Last mapping with start <= sp (binary search over possibly torn data: bounded).
        let (mut l, mut r) = (0usize, len);
        while l < r {
            let m = (l + r) / 2;
            if RANGES[m][0].load(Ordering::Relaxed) <= sp {
                l = m + 1;
            } else {
                r = m;
            }
        }
        let found = l.checked_sub(1).map(|i| {
            let row = &RANGES[i];
            (
                row[1].load(Ordering::Relaxed),
                row[2].load(Ordering::Relaxed),
            )
        });
        fence(Ordering::Acquire);
        if SEQ.load(Ordering::Relaxed) != s1 {
            continue;
        }
        return found
            .filter(|&(end, _)| sp < end)
            .map(|(end, lo)| (lo, end));
    }
    None
}

/// If the calling thread has no stack bounds yet, find them from the snapshot for `sp` (the
/// interrupted stack pointer), verify `[sp, hi)` is mapped now, and give them to the
/// unwinder. On failure a refresh is requested and the sample stays leaf-only.
/// Async-signal-safe.
pub fn adopt_for_current_thread(sp: usize) {
    if unwind::thread_stack_known() {
        return;
    }
    let ok = lookup(sp).is_some_and(|(lo, hi)| {
        hi - sp <= MAX_STACK && sys::range_is_mapped(sp, hi) && unwind::adopt_thread_stack(lo, hi)
    });
    if ok {
        ADOPTED.fetch_add(1, Ordering::Relaxed);
    } else {
        REFRESH_WANTED.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_writable_private_anonymous_only() {
        let l = "7f0000000000-7f0000021000 rw-p 00000000 00:00 0 ";
        assert_eq!(parse_line(l), Some((0x7f0000000000, 0x7f0000021000, false)));
        let s = "7ffd0000000-7ffd0021000 rw-p 00000000 00:00 0                          [stack]";
        assert_eq!(parse_line(s), Some((0x7ffd0000000, 0x7ffd0021000, true)));
        assert_eq!(
            parse_line("55d0-55e0 r-xp 00000000 08:01 1234 /usr/bin/x"),
            None
        );
        assert_eq!(
            parse_line("55d0-55e0 rw-p 00001000 08:01 1234 /usr/bin/x"),
            None
        );
        assert_eq!(
            parse_line("55d0-55e0 rw-s 00000000 00:05 0 /dev/zero"),
            None
        );
        assert_eq!(parse_line("7f00-7e00 rw-p 00000000 00:00 0"), None);
        assert_eq!(parse_line("garbage"), None);
    }

    #[test]
    fn lookup_finds_this_threads_stack() {
        refresh();
        let local = 0u64;
        let sp = &local as *const u64 as usize;
        let (lo, hi) = lookup(sp).expect("this thread's stack is in the snapshot");
        assert!(lo <= sp && sp < hi);
        assert!(sys::range_is_mapped(sp, hi));
        // Code (an r-xp file mapping) and address 0 are in no writable anonymous mapping.
        let code = lookup_finds_this_threads_stack as *const () as usize;
        assert_eq!(lookup(code), None);
        assert_eq!(lookup(0), None);
    }
}
