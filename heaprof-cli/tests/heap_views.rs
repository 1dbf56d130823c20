//! `heaprof top`, `diff`, `top --base` and `flamegraph` on heap profiles this process writes
//! with heaprof as its global allocator at rate 1 (every allocation recorded, so the numbers
//! are exact), and the flame graph rendered by a real browser (headless Chromium).

mod support;

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::hint::black_box;
use std::sync::Mutex;

use support::{chromium, chromium_run, heaprof, heaprof_ok, scratch_dir, write_scratch};

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

/// Tests run one at a time: each compares snapshots, and another test's allocations in
/// between would be growth too.
static SERIAL: Mutex<()> = Mutex::new(());

const MIB: usize = 1 << 20;

/// Blocks allocated straight through `std::alloc`, so the allocating function is the
/// profile's leaf (no `RawVec` frames in between). Freed on drop.
struct Blocks(Vec<*mut u8>);

/// Allocates `$n` MiB blocks into `$blocks`, in the calling function's own frame (a macro,
/// not a method: a helper function, even inlined, would be the profile's leaf).
macro_rules! take {
    ($blocks:expr, $n:expr) => {
        for _ in 0..$n {
            // SAFETY: non-zero size, valid layout; freed in `drop` with the same layout.
            let p = unsafe { alloc_zeroed(Layout::from_size_align(MIB, 8).unwrap()) };
            assert!(!p.is_null());
            $blocks.0.push(black_box(p));
        }
    };
}

impl Drop for Blocks {
    fn drop(&mut self) {
        for &p in &self.0 {
            // SAFETY: allocated in `take` with this layout, freed once.
            unsafe { dealloc(p, Layout::from_size_align(MIB, 8).unwrap()) };
        }
    }
}

#[inline(never)]
fn keep_8mib(b: &mut Blocks) {
    take!(b, 8);
}

#[inline(never)]
fn held_for_rss(b: &mut Blocks) {
    take!(b, 8);
}

#[inline(never)]
fn steady_site(b: &mut Blocks) {
    take!(b, 2);
}

#[inline(never)]
fn growing_site(b: &mut Blocks, mib: usize) {
    take!(b, mib);
}

#[inline(never)]
fn flame_inner(b: &mut Blocks) {
    take!(b, 6);
}

#[inline(never)]
fn flame_outer(b: &mut Blocks) {
    flame_inner(b);
    take!(b, 2);
}

/// Rate 1 from now on, on this thread too: a thread switches rates at its next sample, and
/// a 16 MiB allocation is one (the countdown never exceeds ~18 × 512 KiB).
fn every_allocation() -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    heaprof::set_heap_profile_rate(1);
    drop(black_box(vec![1u8; 16 * MIB]));
    guard
}

fn snapshot(name: &str) -> String {
    let mut pb = Vec::new();
    heaprof::write_heap_profile(&mut pb).unwrap();
    write_scratch(name, &pb)
}

/// The row of `table` whose function name ends with `func`, split into its columns
/// (the function name last, whole).
fn row(table: &str, func: &str) -> Option<Vec<String>> {
    table.lines().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        let name_at = cols
            .iter()
            .position(|c| c.contains("::") || c.starts_with("main."))?;
        let name = cols[name_at..].join(" ");
        (name.ends_with(&format!("::{func}")) || name.ends_with(&format!(".{func}"))).then(|| {
            let mut v: Vec<String> = cols[..name_at].iter().map(|s| s.to_string()).collect();
            v.push(name);
            v
        })
    })
}

#[test]
fn top_prints_the_rss_breakdown_above_the_table() {
    let _serial = every_allocation();
    let mut kept = Blocks(Vec::with_capacity(64));
    held_for_rss(&mut kept);
    let mut pb = Vec::new();
    heaprof::write_heap_profile(&mut pb).unwrap();
    let file = write_scratch("rss.pb.gz", &pb);
    let comments = heaprof::read_profile(&pb).unwrap().comments;
    let summary = comments
        .iter()
        .find_map(|c| c.strip_prefix("heaprof.rss.summary: "))
        .expect("the profile carries the breakdown");

    let out = heaprof_ok(&["top", &file]);
    let head: Vec<&str> = out
        .lines()
        .take_while(|l| !l.starts_with("Showing nodes"))
        .collect();
    assert!(head.contains(&summary), "{out}");
    assert!(
        summary.starts_with("RSS ") && summary.contains("heap 8"),
        "{summary}"
    );
    for part in ["  glibc malloc: in use ", "  heaprof: "] {
        assert!(head.iter().any(|l| l.starts_with(part)), "{part:?}:\n{out}");
    }
    drop(kept);

    // Profiles without it (here threadcreate) print none.
    let mut tc = Vec::new();
    heaprof::lookup("threadcreate")
        .unwrap()
        .write_to(&mut tc, 0)
        .unwrap();
    let out = heaprof_ok(&["top", &write_scratch("tc.pb.gz", &tc)]);
    assert!(!out.contains("RSS "), "{out}");
}

#[test]
fn top_shows_flat_and_cum_per_function() {
    let _serial = every_allocation();
    let mut kept = Blocks(Vec::with_capacity(64));
    keep_8mib(&mut kept);
    let file = snapshot("top.pb.gz");

    let out = heaprof_ok(&["top", &file, "-n", "0"]);
    println!("{out}");
    assert!(out.contains("Type: inuse_space"), "{out}");
    let r = row(&out, "keep_8mib").unwrap_or_else(|| panic!("no keep_8mib row:\n{out}"));
    // flat, flat%, sum%, cum, cum%, name
    assert_eq!(r[0], "8MiB", "{out}");
    assert_eq!(r[3], "8MiB", "{out}");
    // All rows (-n 0): the flat values partition the total.
    let header = out
        .lines()
        .find(|l| l.starts_with("Showing nodes"))
        .unwrap();
    assert!(header.contains(", 100.00% of "), "{header}");
    // The test function calls keep_8mib: its cum includes those 8 MiB, its flat does not.
    let caller = row(&out, "top_shows_flat_and_cum_per_function").expect("caller row");
    let cum_mib: f64 = caller[3].trim_end_matches("MiB").parse().unwrap_or(0.0);
    assert!(cum_mib >= 8.0, "caller cum {:?}:\n{out}", caller);

    let objects = heaprof_ok(&["top", &file, "--sample-index", "inuse_objects", "-n", "0"]);
    assert!(objects.contains("Type: inuse_objects"), "{objects}");
    assert_eq!(
        row(&objects, "keep_8mib").expect("row")[0],
        "8",
        "{objects}"
    );

    // -n limits the rows and says so.
    let short = heaprof_ok(&["top", &file, "-n", "2"]);
    assert!(short.contains("Showing top 2 nodes out of "), "{short}");
    let rows = short
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .count()
        - 1;
    assert_eq!(rows, 2, "{short}");

    // Freed: gone from in-use, still in alloc_space.
    drop(kept);
    let freed = snapshot("freed.pb.gz");
    let out = heaprof_ok(&["top", &freed, "-n", "0"]);
    assert!(row(&out, "keep_8mib").is_none(), "{out}");
    let alloc = heaprof_ok(&["top", &freed, "--sample-index", "alloc_space", "-n", "0"]);
    assert_eq!(row(&alloc, "keep_8mib").expect("row")[0], "8MiB", "{alloc}");
    // By number too (1 = alloc_space in heap profiles).
    let by_number = heaprof_ok(&["top", &freed, "--sample-index", "1", "-n", "0"]);
    assert!(by_number.contains("Type: alloc_space"), "{by_number}");

    let bad = heaprof(&["top", &freed, "--sample-index", "cpu"]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("sample index \"cpu\" not in this profile") && err.contains("3 inuse_space"),
        "{err}"
    );
}

#[test]
fn diff_shows_what_grew_and_not_what_stayed() {
    let _serial = every_allocation();
    let mut steady = Blocks(Vec::with_capacity(64));
    let mut growing = Blocks(Vec::with_capacity(64));
    steady_site(&mut steady);
    growing_site(&mut growing, 1);
    let base = snapshot("base.pb.gz");
    growing_site(&mut growing, 4);
    let new = snapshot("new.pb.gz");

    let out = heaprof_ok(&["diff", &base, &new]);
    println!("{out}");
    let r = row(&out, "growing_site").unwrap_or_else(|| panic!("no growing_site row:\n{out}"));
    // flat Δ, flat Δ%, base flat, new flat, cum Δ, cum Δ%, name
    assert_eq!(&r[0], "+4MiB", "{out}");
    assert_eq!(&r[2], "1MiB", "{out}");
    assert_eq!(&r[3], "5MiB", "{out}");
    assert_eq!(&r[4], "+4MiB", "{out}");
    assert!(
        row(&out, "steady_site").is_none(),
        "unchanged site listed:\n{out}"
    );
    // Largest growth first.
    let first = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat Δ"))
        .nth(1)
        .unwrap();
    assert!(first.ends_with("::growing_site"), "{out}");

    // pprof's -base: NEW minus BASE in the top table.
    let top = heaprof_ok(&["top", &new, "--base", &base, "-n", "0"]);
    assert!(top.contains("(subtracted)"), "{top}");
    assert_eq!(row(&top, "growing_site").expect("row")[0], "4MiB", "{top}");
    assert!(row(&top, "steady_site").is_none(), "{top}");
    // Without the base both sites are there.
    let plain = heaprof_ok(&["top", &new, "-n", "0"]);
    assert_eq!(
        row(&plain, "steady_site").expect("row")[0],
        "2MiB",
        "{plain}"
    );
    assert_eq!(
        row(&plain, "growing_site").expect("row")[0],
        "5MiB",
        "{plain}"
    );

    // Shrinking is negative growth, listed after the growth.
    drop(growing);
    let shrunk = snapshot("shrunk.pb.gz");
    let out = heaprof_ok(&["diff", &new, &shrunk, "-n", "0"]);
    assert_eq!(row(&out, "growing_site").expect("row")[0], "-5MiB", "{out}");
    assert!(row(&out, "steady_site").is_none(), "{out}");

    // A differential flame graph of the same pair.
    let svg = scratch_dir("svg").join("diff.svg");
    heaprof_ok(&[
        "flamegraph",
        &new,
        "--base",
        &base,
        "-o",
        svg.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.contains("growing_site") && text.contains("differential against"),
        "{text}"
    );
    drop(steady);
}

/// The `<g>` element of the frame whose title starts with `func` (a name ending in `::func`).
fn frame<'a>(dom: &'a str, func: &str) -> Option<&'a str> {
    let at = dom.find(&format!("::{func} ("))?;
    let start = dom[..at].rfind("<g")?;
    let end = at + dom[at..].find("</g>")?;
    Some(&dom[start..end])
}

/// An attribute's value inside an element's text.
fn attr(element: &str, name: &str) -> Option<f64> {
    let key = format!(" {name}=\"");
    let at = element.find(&key)? + key.len();
    let v = &element[at..at + element[at..].find('"')?];
    v.trim_end_matches('%').parse().ok()
}

#[test]
fn flamegraph_renders_in_a_browser() {
    let _serial = every_allocation();
    let mut kept = Blocks(Vec::with_capacity(64));
    flame_outer(&mut kept);
    let file = snapshot("flame.pb.gz");
    let dir = scratch_dir("flame");
    let svg = dir.join("heap.svg");
    heaprof_ok(&["flamegraph", &file, "-o", svg.to_str().unwrap()]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<?xml") && text.contains("<svg"),
        "not an SVG"
    );
    assert!(text.contains("inuse_space"), "title");
    // Six of flame_outer's eight MiB are in flame_inner; the tooltips say so in bytes.
    assert!(
        text.contains(&format!("::flame_inner ({} bytes", group(6 * MIB))),
        "inner tooltip"
    );
    assert!(
        text.contains(&format!("::flame_outer ({} bytes", group(8 * MIB))),
        "outer tooltip"
    );

    let Some(chromium) = chromium() else { return };
    let dom = chromium_run(&chromium, &svg, &["--dump-dom"]);
    let inner = frame(&dom, "flame_inner")
        .unwrap_or_else(|| panic!("no flame_inner frame in the DOM:\n{dom}"));
    let outer = frame(&dom, "flame_outer").expect("no flame_outer frame in the rendered DOM");
    // The page's script ran: on load it rewrites every frame's label to fit its width, so
    // the rendered label differs from the one in the file.
    let label = |g: &str| g[g.find("<text").unwrap()..].to_string();
    let in_file = frame(&text, "flame_inner").expect("flame_inner frame in the file");
    assert_ne!(label(inner), label(in_file), "the SVG's script did not run");
    assert!(label(inner).contains("flame_inner"), "{inner}");
    // Callee above caller, 6/8 of its width.
    let (iy, oy) = (attr(inner, "y").unwrap(), attr(outer, "y").unwrap());
    assert!(iy < oy, "inner y {iy} not above outer y {oy}");
    let (iw, ow) = (attr(inner, "width").unwrap(), attr(outer, "width").unwrap());
    assert!((iw / ow - 0.75).abs() < 0.01, "widths {iw} / {ow}");

    let png = dir.join("heap.png");
    chromium_run(
        &chromium,
        &svg,
        &[
            "--window-size=1200,900",
            &format!("--screenshot={}", png.display()),
        ],
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(bytes.starts_with(b"\x89PNG"), "screenshot is not a PNG");
    eprintln!(
        "flame graph: {} screenshot: {}",
        svg.display(),
        png.display()
    );
    drop(kept);
}

/// `n` with `,` thousands separators, as inferno writes counts.
fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
