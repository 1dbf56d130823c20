//! The legacy `debug=1` text formats (count profiles and the heap profile) that google/pprof's
//! legacy parser reads (reference §5).
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

use super::builder::{leading_trim, split_trim};
use crate::symbolize::{SymFrame, Symbolizer};

/// One count-profile entry group: `count` entries with this stack (return addresses, leaf
/// first).
pub struct CountRecord<'a> {
    /// Number of entries with this stack.
    pub count: i64,
    /// Return addresses, leaf first.
    pub stack: &'a [usize],
}

/// One heap record with raw (unscaled) sampled counts.
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
    for m in sym.maps() {
        writeln!(w, "{}", m.raw)?;
    }
    Ok(())
}

/// Writes a count profile (threadcreate, custom) as `debug=1` text:
///
/// ```text
/// NAME profile: total N
/// C @ 0xra1 0xra2 ...
/// #	0xpc	func+0xoff	file:line
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

/// Writes the heap profile as `debug=1` text:
///
/// ```text
/// heap profile: I: IB [A: AB] @ heap/2R
/// i: ib [a: ab] @ 0xra1 0xra2 ...
/// #	0xpc	func+0xoff	file:line
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
    let (mut i, mut ib, mut a, mut ab) = (0i64, 0i64, 0i64, 0i64);
    for r in records {
        i += r.inuse_objects;
        ib += r.inuse_bytes;
        a += r.alloc_objects;
        ab += r.alloc_bytes;
    }
    if ib == ab {
        ab += 1;
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "heap profile: {i}: {ib} [{a}: {ab}] @ heap/{}",
        rate.saturating_mul(2)
    );
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
