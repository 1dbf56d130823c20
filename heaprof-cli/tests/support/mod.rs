//! Helpers shared by the CLI's integration tests: run the `heaprof` binary, scratch files,
//! and find the external tools (Go, Chromium) — missing tools fail in CI (env `CI` set) and
//! skip with a message locally.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `heaprof` binary with `args`.
pub fn heaprof(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_heaprof"))
        .args(args)
        .output()
        .expect("run the heaprof binary")
}

/// Runs `heaprof ARGS`, asserts success and returns its standard output.
pub fn heaprof_ok(args: &[&str]) -> String {
    let out = heaprof(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "heaprof {args:?} failed ({:?}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A scratch directory unique to this test process and `name`.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("heaprof-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes bytes to a scratch file and returns its path.
pub fn write_scratch(name: &str, bytes: &[u8]) -> String {
    let p = scratch_dir("files").join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

/// The first of `candidates` that runs with `probe_arg` successfully. `None` (after
/// printing why) when none does and we are not in CI; in CI it fails the test.
pub fn find_tool(
    what: &str,
    candidates: &[&str],
    probe_arg: &str,
    install: &str,
) -> Option<String> {
    let found = candidates.iter().find(|c| {
        Command::new(c)
            .arg(probe_arg)
            .output()
            .is_ok_and(|o| o.status.success())
    });
    match found {
        Some(c) => Some(c.to_string()),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{what} is required in CI ({install})"
            );
            eprintln!("skipping: {what} is not installed ({install})");
            None
        }
    }
}

/// The Go toolchain, if installed.
pub fn go() -> Option<String> {
    find_tool(
        "go",
        &["go", "/usr/lib/go/bin/go", "/usr/bin/go"],
        "version",
        "Debian package golang-go",
    )
}

/// Headless Chromium, if installed.
pub fn chromium() -> Option<String> {
    find_tool(
        "chromium",
        &["chromium", "chromium-browser", "/usr/bin/chromium"],
        "--version",
        "Debian package chromium",
    )
}

/// Runs headless Chromium on `file` with `mode` (`--dump-dom` or `--screenshot=PNG`) and
/// returns its standard output. Its own profile directory, no network, no GPU.
pub fn chromium_run(chromium: &str, file: &Path, mode: &[&str]) -> String {
    let profile = scratch_dir("chromium-profile");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(mode)
        .arg(format!("file://{}", file.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium {mode:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
