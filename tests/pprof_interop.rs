//! Interop with the reference reader: profiles written by our pprof machinery are read back by
//! `go tool pprof` (google/pprof vendored in Go), and the function names and values it reports
//! are checked.
//!
//! Needs `go` on PATH. Without it the tests fail when `CI` is set, else print why and skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use heaprof::__private::{
    write_count_text, write_heap_text, CountRecord, HeapRecord, Label, ProfileBuilder, Symbolizer,
};

/// Return addresses of the current stack, leaf first, without backtrace's own frames.
#[inline(never)]
fn capture() -> Vec<usize> {
    let mut v = Vec::new();
    backtrace::trace(|f| {
        v.push(f.ip() as usize);
        true
    });
    v.retain(|&ip| ip != 0);
    std::hint::black_box(v)
}

#[inline(never)]
fn interop_alpha() -> Vec<usize> {
    // Distinct bodies, so release builds cannot fold the two functions into one.
    let mut v = capture();
    v.push(std::hint::black_box(0xa1));
    v.pop();
    v
}

#[inline(never)]
fn interop_beta() -> Vec<usize> {
    let mut v = capture();
    v.push(std::hint::black_box(0xb2));
    v.pop();
    v
}

/// Hide backtrace's frames and our `capture` helper, as the profile writers hide allocator
/// internals.
fn trim(name: &str) -> bool {
    name.starts_with("backtrace::") || name.ends_with("pprof_interop::capture")
}

/// `go`, or `None` (after printing why) when it is missing and `CI` is unset.
fn go() -> Option<PathBuf> {
    let go = std::env::var_os("GO")
        .map(PathBuf::from)
        .unwrap_or_else(|| "go".into());
    match Command::new(&go).arg("version").output() {
        Ok(o) if o.status.success() => Some(go),
        r => {
            assert!(
                std::env::var_os("CI").is_none(),
                "go is needed in CI for pprof interop: {r:?}"
            );
            eprintln!("skipping: `go` not runnable ({r:?}); set GO=/path/to/go");
            None
        }
    }
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("heaprof-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs `go tool pprof ARGS FILE` with no binary and an empty binary search path, so only the
/// symbols in the profile (proto) or the memory map's files (text) can name frames.
fn pprof(go: &Path, args: &[&str], file: &Path) -> String {
    let empty = tmp("no-binaries");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(go)
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("PPROF_BINARY_PATH", &empty)
        .env("PPROF_TMPDIR", &empty)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed:\n{stderr}\n{stdout}"
    );
    eprintln!(
        "--- go tool pprof {args:?} {}:\n{stderr}{stdout}",
        file.display()
    );
    stdout
}

/// One row of `-top`: (flat value text, function name).
fn top_rows(out: &str) -> Vec<(String, String)> {
    out.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let flat = f.next()?.to_string();
            let name = f.skip(4).collect::<Vec<_>>().join(" ");
            Some((flat, name))
        })
        .collect()
}

/// The flat value `-top` shows for function `name` (or a name ending in `::name`).
fn flat_of(out: &str, name: &str) -> String {
    let rows = top_rows(out);
    let qualified = format!("::{name}");
    rows.iter()
        .find(|(_, n)| n == name || n.ends_with(&qualified))
        .map(|(f, _)| f.clone())
        .unwrap_or_else(|| panic!("{name} not in -top output:\n{out}"))
}

/// Value vectors of the `Samples:` section of `-raw`.
fn raw_samples(out: &str) -> Vec<Vec<i64>> {
    out.lines()
        .skip_while(|l| *l != "Samples:")
        .skip(2)
        .take_while(|l| !l.starts_with("Locations"))
        .filter_map(|l| {
            let (vals, _) = l.split_once(':')?;
            vals.split_whitespace().map(|v| v.parse().ok()).collect()
        })
        .collect()
}

/// google/pprof's `scaleHeapSample`.
fn scale(count: i64, size: i64, rate: i64) -> (i64, i64) {
    if count == 0 || size == 0 {
        return (0, 0);
    }
    if rate <= 1 {
        return (count, size);
    }
    let k = 1.0 / (1.0 - (-(size as f64 / count as f64) / rate as f64).exp());
    ((count as f64 * k) as i64, (size as f64 * k) as i64)
}

#[test]
fn proto_count_profile_uses_our_symbols() {
    let Some(go) = go() else { return };
    let (a, b) = (interop_alpha(), interop_beta());
    let mut pb = ProfileBuilder::new(&[("threadcreate", "count")], ("threadcreate", "count"), 1);
    pb.set_trim_leading(trim);
    pb.add_sample(&a, false, &[3], &[]);
    pb.add_sample(
        &b,
        false,
        &[5],
        &[Label::Str {
            key: "phase".into(),
            value: "warm".into(),
        }],
    );
    pb.add_pseudo_sample("heaprof::stack_table_overflow", &[2], &[]);
    let file = tmp("count.pb.gz");
    pb.write_gzip(std::fs::File::create(&file).unwrap())
        .unwrap();

    let top = pprof(&go, &["-top", "-nodecount=1000", "-nodefraction=0"], &file);
    assert!(top.contains("Type: threadcreate"), "{top}");
    assert!(top.contains("of 10 total"), "{top}");
    // Fully qualified, demangled names: ours. (Go's own DWARF reader would give `interop_beta`.)
    assert_eq!(flat_of(&top, "pprof_interop::interop_beta"), "5");
    assert_eq!(flat_of(&top, "pprof_interop::interop_alpha"), "3");
    assert_eq!(flat_of(&top, "heaprof::stack_table_overflow"), "2");
    let names: Vec<String> = top_rows(&top).into_iter().map(|(_, n)| n).collect();
    assert!(
        names.iter().any(|n| n == "pprof_interop::interop_beta"),
        "{top}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("backtrace::") || n == "pprof_interop::capture"),
        "trimmed frames must not show:\n{top}"
    );

    let raw = pprof(&go, &["-raw"], &file);
    let mut values = raw_samples(&raw);
    values.sort();
    assert_eq!(values, [[2], [3], [5]]);
    assert!(raw.contains("phase:[warm]"), "{raw}");
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let exe = exe.to_str().unwrap();
    let id = heaprof::__private::elf::build_id(Path::new(exe));
    let m1 = raw
        .lines()
        .find(|l| l.starts_with("1: "))
        .expect("mapping 1");
    assert!(
        m1.contains(exe) && m1.contains(&id) && m1.contains("[FN]"),
        "{m1}"
    );
}

#[test]
fn count_text_reads_back() {
    let Some(go) = go() else { return };
    let (a, b) = (interop_alpha(), interop_beta());
    let recs = [
        CountRecord {
            count: 3,
            stack: &a,
        },
        CountRecord {
            count: 4,
            stack: &b,
        },
        CountRecord {
            count: 1,
            stack: &b,
        },
        CountRecord {
            count: 1,
            stack: &[],
        },
    ];
    let file = tmp("count.txt");
    let f = std::fs::File::create(&file).unwrap();
    write_count_text(f, "threadcreate", &recs, &mut Symbolizer::new(), Some(trim)).unwrap();

    // The text has no symbols pprof reads: it maps the addresses through our memory map to
    // this test binary on disk and symbolizes that itself (Go's reader: short DWARF names).
    let top = pprof(&go, &["-top", "-nodecount=1000", "-nodefraction=0"], &file);
    assert!(top.contains("Type: threadcreate"), "{top}");
    assert!(top.contains("of 9 total"), "{top}");
    assert_eq!(flat_of(&top, "interop_beta"), "5");
    assert_eq!(flat_of(&top, "interop_alpha"), "3");
    assert_eq!(flat_of(&top, "empty_stack_event"), "1");

    let raw = pprof(&go, &["-raw"], &file);
    let mut values = raw_samples(&raw);
    values.sort();
    assert_eq!(values, [[1], [3], [5]]);
}

#[test]
fn heap_text_reads_back_scaled() {
    let Some(go) = go() else { return };
    let (a, b) = (interop_alpha(), interop_beta());
    let rate = 524288;
    let recs = [
        HeapRecord {
            inuse_objects: 2,
            inuse_bytes: 2048,
            alloc_objects: 4,
            alloc_bytes: 4096,
            stack: &a,
        },
        HeapRecord {
            inuse_objects: 1,
            inuse_bytes: 600000,
            alloc_objects: 1,
            alloc_bytes: 600000,
            stack: &b,
        },
    ];
    let stats = [
        ("Alloc", "602048".to_string()),
        ("Sampled", "2".to_string()),
    ];
    let file = tmp("heap.txt");
    let f = std::fs::File::create(&file).unwrap();
    write_heap_text(
        f,
        rate as u64,
        &recs,
        &stats,
        &mut Symbolizer::new(),
        Some(trim),
    )
    .unwrap();

    let raw = pprof(&go, &["-raw"], &file);
    assert!(raw.contains("PeriodType: space bytes"), "{raw}");
    assert!(raw.contains(&format!("Period: {rate}")), "{raw}");
    assert!(
        raw.contains("alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes")
    );
    assert!(
        raw.contains("bytes:[600000]") && raw.contains("bytes:[1024]"),
        "{raw}"
    );
    let mut got = raw_samples(&raw);
    got.sort();
    let mut want: Vec<Vec<i64>> = recs
        .iter()
        .map(|r| {
            let (ao, ab) = scale(r.alloc_objects, r.alloc_bytes, rate);
            let (io, ib) = scale(r.inuse_objects, r.inuse_bytes, rate);
            vec![ao, ab, io, ib]
        })
        .collect();
    want.sort();
    assert_eq!(got.len(), want.len(), "{raw}");
    for (g, w) in got.iter().zip(&want) {
        // Go's and Rust's exp may differ in the last bit: allow 1 after truncation.
        assert!(
            g.iter().zip(w).all(|(x, y)| (x - y).abs() <= 1),
            "got {g:?}, want {w:?}"
        );
    }

    let top = pprof(
        &go,
        &[
            "-top",
            "-nodecount=1000",
            "-nodefraction=0",
            "-sample_index=inuse_objects",
        ],
        &file,
    );
    assert_eq!(flat_of(&top, "interop_alpha"), want[1][2].to_string());
    assert_eq!(flat_of(&top, "interop_beta"), want[0][2].to_string());
}
