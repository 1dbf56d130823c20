//! The viewer on a heap profile written by Go itself (`runtime/pprof.WriteHeapProfile`):
//! a tiny Go program keeps 64 MiB allocated in `main.allocSomething`, and `heaprof top`,
//! `diff` and `flamegraph` must show that function. Needs Go (stdlib only, no network):
//! in CI a missing Go fails, locally the test is skipped with a message.

mod support;

use std::process::Command;

use support::{go, heaprof_ok, scratch_dir};

const PROGRAM: &str = r#"package main

import (
	"os"
	"runtime"
	"runtime/pprof"
)

var kept [][]byte

//go:noinline
func allocSomething(n int) {
	for i := 0; i < n; i++ {
		kept = append(kept, make([]byte, 1<<20))
	}
}

func write(path string) {
	runtime.GC() // the heap profile shows the state as of the last GC
	f, err := os.Create(path)
	if err != nil {
		panic(err)
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		panic(err)
	}
	f.Close()
}

func main() {
	runtime.MemProfileRate = 512 * 1024
	allocSomething(16)
	write(os.Args[1])
	allocSomething(48)
	write(os.Args[2])
}
"#;

/// Builds and runs the Go program; returns the paths of its two heap profiles (16 MiB kept,
/// then 64 MiB kept).
fn go_heap_profiles() -> Option<(String, String)> {
    let go = go()?;
    let dir = scratch_dir("go");
    std::fs::write(dir.join("main.go"), PROGRAM).unwrap();
    let home = dir.join("home");
    let (first, second) = (dir.join("heap1.pb.gz"), dir.join("heap2.pb.gz"));
    let out = Command::new(go)
        .current_dir(&dir)
        .args(["run", "main.go"])
        .arg(&first)
        .arg(&second)
        .env("GOFLAGS", "-mod=mod")
        .env("GO111MODULE", "off")
        .env("HOME", &home)
        .env("GOPATH", home.join("go"))
        .env(
            "GOCACHE",
            std::env::temp_dir().join("heaprof-go-home").join("cache"),
        )
        .env("GOPROXY", "off")
        .output()
        .expect("run go");
    assert!(
        out.status.success(),
        "go run failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((
        first.to_string_lossy().into_owned(),
        second.to_string_lossy().into_owned(),
    ))
}

/// `go tool pprof -top FILE` (Go is known to be installed here).
fn go_pprof_top(file: &str) -> String {
    go_pprof_top_with(file, &[])
}

fn go_pprof_top_with(file: &str, extra: &[&str]) -> String {
    let home = std::env::temp_dir().join("heaprof-go-home");
    let out = Command::new(go().unwrap())
        .args(["tool", "pprof", "-top"])
        .args(extra)
        .arg(file)
        .env("HOME", &home)
        .env("GOCACHE", home.join("cache"))
        .env("PPROF_TMPDIR", &home)
        .output()
        .expect("run go tool pprof");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value (in MiB) of the first column of `main.allocSomething`'s row.
fn mib_of_alloc_something(table: &str) -> f64 {
    let line = table
        .lines()
        .find(|l| l.ends_with(" main.allocSomething"))
        .unwrap_or_else(|| panic!("no main.allocSomething row:\n{table}"));
    let first = line.split_whitespace().next().unwrap();
    let first = first.trim_start_matches('+');
    first
        .strip_suffix("MiB")
        .unwrap_or_else(|| panic!("not in MiB: {line}"))
        .parse()
        .unwrap()
}

#[test]
fn reads_go_heap_profiles() {
    let Some((first, second)) = go_heap_profiles() else {
        return;
    };
    let top = heaprof_ok(&["top", &second]);
    println!("{top}");
    assert!(top.contains("Type: inuse_space"), "{top}");
    // Go's default heap view is inuse_space (no default_sample_type, the last type).
    // 64 blocks of 1 MiB at a 512 KiB rate: each sampled with p = 1 − e^−2, scaled by 1/p;
    // the estimate's σ is ≈ 3 MiB, so ±24 MiB is a > 6σ band.
    let kept = mib_of_alloc_something(&top);
    assert!((40.0..=88.0).contains(&kept), "{kept} MiB:\n{top}");
    // main.allocSomething is the leaf (Go trims runtime.* frames) and main.main its caller.
    assert!(
        top.lines()
            .skip_while(|l| !l.trim_start().starts_with("flat"))
            .nth(1)
            .is_some_and(|l| l.ends_with(" main.allocSomething")),
        "not the largest:\n{top}"
    );
    assert!(top.contains(" main.main"), "{top}");

    // The same number as the reference reader (pprof's "MB" is 2^20 bytes).
    let go_top = go_pprof_top(&second);
    let line = go_top
        .lines()
        .find(|l| l.ends_with(" main.allocSomething"))
        .unwrap_or_else(|| panic!("go tool pprof: no main.allocSomething:\n{go_top}"));
    let go_mib: f64 = line
        .split_whitespace()
        .next()
        .and_then(|v| v.strip_suffix("MB"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("go tool pprof row: {line}"));
    assert!(
        (go_mib - kept).abs() < 0.01,
        "go tool pprof {go_mib} vs heaprof {kept}"
    );

    let objects = heaprof_ok(&["top", &second, "--sample-index", "inuse_objects"]);
    let line = objects
        .lines()
        .find(|l| l.ends_with(" main.allocSomething"))
        .expect("row");
    let count: i64 = line.split_whitespace().next().unwrap().parse().unwrap();
    // At least the 1 MiB blocks (≈ 64, sampled with p ≈ 0.86); Go's sampler may also have
    // caught one of the small slice-header arrays, which its scaling counts as hundreds of
    // objects — so compare with the reference reader on the same file, not with a range.
    assert!(count >= 40, "{line}");
    let go_objects =
        go_pprof_top_with(&second, &["-sample_index=inuse_objects", "-nodefraction=0"]);
    let go_line = go_objects
        .lines()
        .find(|l| l.ends_with(" main.allocSomething"))
        .unwrap_or_else(|| panic!("go tool pprof: no main.allocSomething:\n{go_objects}"));
    let go_count: i64 = go_line.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(count, go_count, "heaprof {line} vs go tool pprof {go_line}");

    // What grew between Go's two snapshots: 48 more MiB in main.allocSomething.
    let diff = heaprof_ok(&["diff", &first, &second]);
    println!("{diff}");
    let grew = mib_of_alloc_something(&diff);
    assert!((24.0..=72.0).contains(&grew), "{grew} MiB:\n{diff}");

    let svg = scratch_dir("go").join("go-heap.svg");
    heaprof_ok(&["flamegraph", &second, "-o", svg.to_str().unwrap()]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.contains("<title>main.allocSomething ("),
        "no frame for main.allocSomething"
    );
    assert!(
        text.contains("<title>main.main ("),
        "no frame for main.main"
    );
}
