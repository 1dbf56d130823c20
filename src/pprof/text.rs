//! The legacy `debug=1` text formats (count profiles and the heap profile) that google/pprof's
//! legacy parser reads (`internal/profile/legacy_profile.go` in google/pprof).
//!
//! Called by the count and heap profile writers with records already copied out of any lock;
//! never by the allocator or a signal handler (it symbolizes and allocates).
//!
//! Both formats end with `--- Memory map: ---` and the executable lines of `/proc/self/maps`:
//! the parser turns them into mappings, so `go tool pprof` can symbolize the addresses of a
//! PIE binary from its file on disk (the text itself carries symbols only in `#` comments,
//! which the parser skips). Output is sorted, hence deterministic.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use super::maps::MapEntry;
use super::trim::{leading_trim, split_trim};
use crate::pprof::symbolize::{SymFrame, Symbolizer};

/// One count-profile entry group: `count` entries with this stack (return addresses, leaf
/// first).
#[derive(Debug)]
pub struct CountRecord<'a> {
    /// Number of entries with this stack.
    pub count: i64,
    /// Return addresses, leaf first.
    pub stack: &'a [usize],
}

/// One heap record with raw (unscaled) sampled counts.
#[derive(Debug)]
pub struct HeapRecord<'a> {
    /// Sampled objects still live.
    pub inuse_objects: i64,
    /// Sampled bytes still live.
    pub inuse_bytes: i64,
    /// Sampled objects allocated.
    pub alloc_objects: i64,
    /// Sampled bytes allocated.
    pub alloc_bytes: i64,
    /// Return addresses, leaf first.
    pub stack: &'a [usize],
}

/// The pseudo frame written for a stack that is empty: the legacy parser rejects sample lines
/// without an address, so, like Go's `lostProfileEvent`, we point at a real function.
#[inline(never)]
pub fn empty_stack_event() {
    std::hint::black_box("heaprof: empty stack");
}

/// `empty_stack_event`'s entry + 1, a "return address" that resolves to it.
fn empty_stack_addr() -> usize {
    empty_stack_event as fn() as usize + 1
}

/// A stack rendered for text: the ` 0x..` address list and the `#` comment block.
struct Rendered {
    addrs: String,
    comments: String,
}

fn render(stack: &[usize], sym: &mut Symbolizer, trim: Option<fn(&str) -> bool>) -> Rendered {
    let pseudo = [empty_stack_addr()];
    let stack = if stack.is_empty() { &pseudo[..] } else { stack };
    let frames: Vec<Vec<SymFrame>> = stack
        .iter()
        .map(|&ra| sym.resolve(ra.wrapping_sub(1)).to_vec())
        .collect();
    let refs: Vec<&[SymFrame]> = frames.iter().map(Vec::as_slice).collect();
    let (drop_pcs, skip) = split_trim(&refs, leading_trim(&refs, trim));
    let mut addrs = String::new();
    let mut comments = String::new();
    for (i, &ra) in stack.iter().enumerate().skip(drop_pcs) {
        let _ = write!(addrs, " {ra:#x}");
        let pc = ra.wrapping_sub(1);
        let fs = &frames[i][if i == drop_pcs { skip } else { 0 }..];
        if fs.is_empty() {
            let _ = writeln!(comments, "#\t{pc:#x}");
        }
        for f in fs {
            let _ = write!(comments, "#\t{pc:#x}\t{}", f.name);
            if f.sym_addr != 0 && f.sym_addr <= pc {
                let _ = write!(comments, "+{:#x}", pc - f.sym_addr);
            }
            if let Some(file) = &f.file {
                let _ = write!(comments, "\t{file}:{}", f.line);
            }
            comments.push('\n');
        }
    }
    Rendered { addrs, comments }
}

fn write_memory_map<W: Write>(w: &mut W, sym: &mut Symbolizer) -> io::Result<()> {
    writeln!(w, "\n--- Memory map: ---")?;
    for m in sym.maps().to_vec() {
        writeln!(w, "{}", map_line(&m, sym))?;
    }
    Ok(())
}

/// The `/proc/self/maps` line written for `m`.
///
/// If the mapping starts before its file's first executable `PT_LOAD` segment (lld, Rust's
/// default linker, puts that segment at a file offset that is not page aligned, and the
/// kernel maps from the page boundary below it), the line is started at the segment's first
/// byte instead: same file, same address ↔ offset correspondence, a sub-range that still holds
/// all the code. Reason: Go's `go tool pprof` (cmd/pprof's own object reader) symbolizes with
/// base = start − vaddr of the first executable `PT_LOAD`, ignoring the offset, and would be
/// off by (segment offset mod page size); google/pprof derives the same base from either line.
fn map_line(m: &MapEntry, sym: &mut Symbolizer) -> String {
    let seg = if m.is_file() {
        sym.elf(&m.path).and_then(|e| e.first_exec_segment_offset())
    } else {
        None
    };
    match seg {
        Some(seg) if m.offset < seg && seg - m.offset < m.limit - m.start => format!(
            "{:x}-{:x} {} {:08x} {} {} {}",
            m.start + (seg - m.offset),
            m.limit,
            m.perms,
            seg,
            m.dev,
            m.inode,
            m.path
        ),
        _ => m.raw.clone(),
    }
}

/// Writes a count profile (threadcreate, custom) as `debug=1` text:
///
/// ```text
/// NAME profile: total N
/// C @ 0xra1 0xra2 ...
/// #<TAB>0xpc<TAB>func+0xoff<TAB>file:line
/// ```
///
/// Records with the same (trimmed) stack are merged; groups are sorted by count desc, then
/// address text. `trim` hides leading frames like Go hides `runtime.*`, unless none would
/// remain; it trims the address list too, so pprof sees the same stacks as the proto.
pub fn write_count_text<W: Write>(
    mut w: W,
    profile_name: &str,
    records: &[CountRecord],
    sym: &mut Symbolizer,
    trim: Option<fn(&str) -> bool>,
) -> io::Result<()> {
    let mut groups: HashMap<(String, String), i64> = HashMap::new();
    let mut total = 0i64;
    for r in records {
        let Rendered { addrs, comments } = render(r.stack, sym, trim);
        *groups.entry((addrs, comments)).or_insert(0) += r.count;
        total += r.count;
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

    let mut out = String::new();
    let _ = writeln!(out, "{profile_name} profile: total {total}");
    for ((addrs, comments), count) in &groups {
        let _ = writeln!(out, "{count} @{addrs}");
        out.push_str(comments);
        out.push('\n');
    }
    w.write_all(out.as_bytes())?;
    write_memory_map(&mut w, sym)?;
    w.flush()
}

/// One record of a contention (block) profile: `count` events that waited `delay_ns` in all.
pub struct ContentionRecord<'a> {
    /// Contentions (already unbiased for sampling).
    pub count: i64,
    /// Total delay, nanoseconds.
    pub delay_ns: i64,
    /// Return addresses, leaf first.
    pub stack: &'a [usize],
}

/// Writes a contention profile (`block`) as Go's legacy text (`runtime/pprof`
/// `writeProfileInternal`), which google/pprof's `parseContention` reads:
///
/// ```text
/// --- NAME:
/// cycles/second=1000000000
/// DELAY COUNT @ 0xra1 0xra2 ...
/// #<TAB>0xpc<TAB>func+0xoff<TAB>file:line
/// ```
///
/// Delays are nanoseconds, written as "cycles" of a 1 GHz clock so the parser's
/// cycles → ns conversion is the identity. Records with the same (trimmed) stack are merged;
/// sorted by delay desc, then address text. Ends with the memory map, as the count text.
pub fn write_contention_text<W: Write>(
    w: W,
    profile_name: &str,
    records: &[ContentionRecord],
    sym: &mut Symbolizer,
    trim: Option<fn(&str) -> bool>,
) -> io::Result<()> {
    write_contention_text_with(w, profile_name, &[], records, sym, trim)
}

/// [`write_contention_text`] with more `key=value` header lines after `cycles/second` (Go's
/// mutex profile writes `sampling period=N`, which the parser multiplies every value by).
pub fn write_contention_text_with<W: Write>(
    mut w: W,
    profile_name: &str,
    header: &[(&str, String)],
    records: &[ContentionRecord],
    sym: &mut Symbolizer,
    trim: Option<fn(&str) -> bool>,
) -> io::Result<()> {
    let mut groups: HashMap<(String, String), (i64, i64)> = HashMap::new();
    for r in records {
        let Rendered { addrs, comments } = render(r.stack, sym, trim);
        let e = groups.entry((addrs, comments)).or_insert((0, 0));
        e.0 += r.count;
        e.1 = e.1.saturating_add(r.delay_ns);
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then_with(|| a.0.cmp(&b.0)));
    let mut out = String::new();
    let _ = writeln!(out, "--- {profile_name}:");
    let _ = writeln!(out, "cycles/second=1000000000");
    for (k, v) in header {
        let _ = writeln!(out, "{k}={v}");
    }
    for ((addrs, comments), (count, delay)) in &groups {
        let _ = writeln!(out, "{delay} {count} @{addrs}");
        out.push_str(comments);
    }
    w.write_all(out.as_bytes())?;
    write_memory_map(&mut w, sym)?;
    w.flush()
}

/// Writes the heap profile as `debug=1` text:
///
/// ```text
/// heap profile: I: IB [A: AB] @ heap/2R
/// i: ib [a: ab] @ 0xra1 0xra2 ...
/// #<TAB>0xpc<TAB>func+0xoff<TAB>file:line
///
/// # heaprof.MemStats
/// # key = value
/// ```
///
/// Raw sampled values (pprof rescales them with the rate); `2R` = 2 × `rate` (the old C++
/// habit pprof expects); if the in-use and alloc byte totals are equal, AB + 1 is written so
/// pprof never reads a 2-column profile (Go's quirk). Records are sorted by in-use bytes desc
/// (ties: alloc bytes desc, then address text); they are not merged (one per stack and size,
/// like Go). `stats` become `# key = value` lines, which pprof skips.
pub fn write_heap_text<W: Write>(
    mut w: W,
    rate: u64,
    records: &[HeapRecord],
    stats: &[(&str, String)],
    sym: &mut Symbolizer,
    trim: Option<fn(&str) -> bool>,
) -> io::Result<()> {
    let rows = sorted_heap_rows(records, sym, trim);
    let mut out = heap_header(rate, records);
    for (r, Rendered { addrs, comments }) in &rows {
        let _ = writeln!(
            out,
            "{}: {} [{}: {}] @{addrs}",
            r.inuse_objects, r.inuse_bytes, r.alloc_objects, r.alloc_bytes
        );
        out.push_str(comments);
        out.push('\n');
    }
    if !stats.is_empty() {
        out.push_str("# heaprof.MemStats\n");
        for (k, v) in stats {
            let _ = writeln!(out, "# {k} = {v}");
        }
    }
    w.write_all(out.as_bytes())?;
    write_memory_map(&mut w, sym)?;
    w.flush()
}

/// Each record with its stack rendered, sorted by in-use bytes desc (ties: alloc bytes desc,
/// in-use then alloc objects desc, then address text).
fn sorted_heap_rows<'r>(
    records: &'r [HeapRecord<'r>],
    sym: &mut Symbolizer,
    trim: Option<fn(&str) -> bool>,
) -> Vec<(&'r HeapRecord<'r>, Rendered)> {
    let mut rows: Vec<(&HeapRecord, Rendered)> = records
        .iter()
        .map(|r| (r, render(r.stack, sym, trim)))
        .collect();
    rows.sort_by(|(a, ra), (b, rb)| {
        b.inuse_bytes
            .cmp(&a.inuse_bytes)
            .then(b.alloc_bytes.cmp(&a.alloc_bytes))
            .then(b.inuse_objects.cmp(&a.inuse_objects))
            .then(b.alloc_objects.cmp(&a.alloc_objects))
            .then_with(|| ra.addrs.cmp(&rb.addrs))
    });
    rows
}

/// The `heap profile: I: IB [A: AB] @ heap/2R` line: the totals of the records (AB + 1 if it
/// equals IB) and twice the rate.
fn heap_header(rate: u64, records: &[HeapRecord]) -> String {
    let (mut i, mut ib, mut a, mut ab) = (0i64, 0i64, 0i64, 0i64);
    for r in records {
        i = i.saturating_add(r.inuse_objects);
        ib = ib.saturating_add(r.inuse_bytes);
        a = a.saturating_add(r.alloc_objects);
        ab = ab.saturating_add(r.alloc_bytes);
    }
    if ib == ab {
        ab = ab.saturating_add(1);
    }
    format!(
        "heap profile: {i}: {ib} [{a}: {ab}] @ heap/{}\n",
        rate.saturating_mul(2)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn text_test_leaf() -> Vec<usize> {
        let mut v = Vec::new();
        let _sym = crate::pprof::symbolize::sym_lock(); // no fork while backtrace's lock is held
        backtrace::trace(|f| {
            v.push(f.ip() as usize);
            true
        });
        v.retain(|&ip| ip != 0);
        std::hint::black_box(v)
    }

    fn is_bt(n: &str) -> bool {
        n.starts_with("backtrace::")
    }

    /// `^(\d+) @( 0x[0-9a-f]+)+$`, the legacy parser's count sample line.
    fn is_count_line(l: &str) -> bool {
        let Some((n, rest)) = l.split_once(" @") else {
            return false;
        };
        !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && rest.starts_with(' ')
            && rest[1..].split(' ').all(|a| {
                a.strip_prefix("0x").is_some_and(|h| {
                    !h.is_empty()
                        && h.bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                })
            })
    }

    #[test]
    fn count_text_groups_sorts_and_comments() {
        let a = text_test_leaf();
        let b = &text_test_leaf(); // another call site: a different stack
        let recs = [
            CountRecord { count: 1, stack: b },
            CountRecord {
                count: 2,
                stack: &a,
            },
            CountRecord {
                count: 3,
                stack: &a,
            },
            CountRecord {
                count: 4,
                stack: &[],
            },
        ];
        let mut out = Vec::new();
        write_count_text(
            &mut out,
            "threadcreate",
            &recs,
            &mut Symbolizer::new(),
            Some(is_bt),
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "threadcreate profile: total 10");
        let samples: Vec<&str> = lines.iter().copied().filter(|l| is_count_line(l)).collect();
        assert_eq!(samples.len(), 3, "{text}");
        assert!(
            samples[0].starts_with("5 @ "),
            "merged and sorted by count: {samples:?}"
        );
        assert!(samples[1].starts_with("4 @ "));
        assert!(samples[2].starts_with("1 @ "));
        // The empty stack got the pseudo frame.
        assert_eq!(samples[1], format!("4 @ {:#x}", empty_stack_addr()));
        assert!(text.contains("\theaprof::pprof::text::empty_stack_event+0x"));
        check_trimmed_to_our_leaf(&text, samples[0]);
        check_count_body_then_memory_map(&text);
    }

    /// Trimmed: the first address of `sample` is in our function, not in backtrace's.
    fn check_trimmed_to_our_leaf(text: &str, sample: &str) {
        let first = sample.split(' ').nth(2).unwrap();
        let pc = format!("{:#x}", usize::from_str_radix(&first[2..], 16).unwrap() - 1);
        let block: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("#\t{pc}\t")))
            .collect();
        assert!(
            block
                .last()
                .unwrap()
                .contains("text::tests::text_test_leaf+0x"),
            "{block:?}"
        );
        assert!(block.last().unwrap().contains("text.rs:"));
        assert!(!text.contains("\tbacktrace::"));
    }

    /// Every non-sample line before the map is a comment or blank; the map has this
    /// executable's code.
    fn check_count_body_then_memory_map(text: &str) {
        let body = text.split("--- Memory map: ---").next().unwrap();
        for l in body.lines().skip(1) {
            assert!(
                l.is_empty() || l.starts_with('#') || is_count_line(l),
                "{l:?}"
            );
        }
        let map = text.split("--- Memory map: ---\n").nth(1).unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert!(map
            .lines()
            .any(|l| l.ends_with(exe.to_str().unwrap()) && l.contains(" r-xp ")));
    }

    fn heap_text(
        rate: u64,
        recs: &[HeapRecord],
        stats: &[(&str, String)],
        trim: Option<fn(&str) -> bool>,
    ) -> String {
        let mut out = Vec::new();
        write_heap_text(&mut out, rate, recs, stats, &mut Symbolizer::new(), trim).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn heap_text_header_quirk_sort_and_stats() {
        let a = text_test_leaf();
        let recs = [
            HeapRecord {
                inuse_objects: 1,
                inuse_bytes: 10,
                alloc_objects: 1,
                alloc_bytes: 10,
                stack: &a[1..],
            },
            HeapRecord {
                inuse_objects: 2,
                inuse_bytes: 64,
                alloc_objects: 2,
                alloc_bytes: 64,
                stack: &a,
            },
        ];
        let stats = [("Alloc", "123".to_string()), ("Sys", "456".to_string())];
        let text = heap_text(524288, &recs, &stats, Some(is_bt));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0], "heap profile: 3: 74 [3: 75] @ heap/1048576",
            "AB+1 when IB = AB"
        );
        assert!(
            lines[1].starts_with("2: 64 [2: 64] @ 0x"),
            "sorted by in-use bytes"
        );
        let second = lines
            .iter()
            .position(|l| l.starts_with("1: 10 [1: 10] @ 0x"))
            .unwrap();
        assert!(second > 1);
        assert!(text.contains("\n# heaprof.MemStats\n# Alloc = 123\n# Sys = 456\n"));
        assert!(text.contains("\n--- Memory map: ---\n"));
    }

    #[test]
    fn heap_text_without_stats_or_trim() {
        let a = text_test_leaf();
        let recs = [HeapRecord {
            inuse_objects: 1,
            inuse_bytes: 8,
            alloc_objects: 3,
            alloc_bytes: 24,
            stack: &a,
        }];
        let text = heap_text(1, &recs, &[], None);
        assert!(text.starts_with("heap profile: 1: 8 [3: 24] @ heap/2\n"));
        assert!(!text.contains("MemStats"));
        assert!(
            text.contains("\tbacktrace::"),
            "no trim without a predicate"
        );
    }
}

#[cfg(test)]
mod map_tests {
    use super::*;

    #[test]
    fn exe_map_line_starts_at_first_exec_segment_and_keeps_the_correspondence() {
        let mut sym = Symbolizer::new();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_str().unwrap();
        let m = sym.maps().iter().find(|m| m.path == exe).unwrap().clone();
        let seg = sym.elf(exe).unwrap().first_exec_segment_offset().unwrap();
        let line = map_line(&m, &mut sym);
        let parsed = crate::pprof::maps::parse_maps(&line);
        let p = &parsed[0];
        assert_eq!((p.limit, &p.path, p.inode), (m.limit, &m.path, m.inode));
        assert_eq!(
            p.start.wrapping_sub(p.offset),
            m.start.wrapping_sub(m.offset),
            "same address ↔ offset"
        );
        if m.offset < seg {
            assert_eq!(p.offset, seg);
        } else {
            assert_eq!(line, m.raw);
        }
    }
}
