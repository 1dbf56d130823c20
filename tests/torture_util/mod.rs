//! Shared by the `torture_*` tests: run one case in a child process (the test binary itself,
//! with `TORTURE_CASE` naming the case) under a timeout, so a deadlock or a crash becomes a
//! test failure instead of a hung run; plus fork and RSS helpers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a child case printed and how it ended.
pub struct CaseOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// The case this process must run, when it was started by [`run_case`].
pub fn case() -> Option<String> {
    std::env::var("TORTURE_CASE").ok()
}

/// Runs test `runner` of this binary in a child with `TORTURE_CASE=case` and `env`; kills it
/// and fails after `timeout`. Returns its output (the caller checks the exit status).
pub fn run_case(runner: &str, case: &str, env: &[(&str, &str)], timeout: Duration) -> CaseOutput {
    let dir = std::env::temp_dir().join(format!("heaprof-torture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out_path = dir.join(format!("{case}.{n}.out"));
    let err_path = dir.join(format!("{case}.{n}.err"));
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([runner, "--exact", "--nocapture", "--test-threads=1"])
        .env("TORTURE_CASE", case)
        .env_remove("HEAPROF_RATE")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn the test binary");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let out = CaseOutput {
        code: status.and_then(|s| s.code()),
        stdout: read(&out_path),
        stderr: read(&err_path),
    };
    assert!(
        status.is_some(),
        "case {case} did not finish within {timeout:?} (deadlock?)\nstderr:\n{}",
        out.stderr
    );
    out
}

/// Like [`run_case`], and asserts the child passed.
pub fn run_case_ok(
    runner: &str,
    case: &str,
    env: &[(&str, &str)],
    timeout: Duration,
) -> CaseOutput {
    let out = run_case(runner, case, env, timeout);
    assert_eq!(
        out.code,
        Some(0),
        "case {case} failed\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    out
}

/// Forks; the child runs `f` and `_exit`s with its result (101 on panic); `None` when the
/// child had not exited after the timeout (it is then killed). The crate's own helper.
#[allow(unused_imports)] // not every test binary forks
pub use heaprof::__private::in_child as fork_and_wait;
/// Waits for a child up to a timeout; kills it and returns `None` when still running.
#[allow(unused_imports)]
pub use heaprof::__private::wait_child as wait_pid;

/// This process's resident set size in KiB (`VmRSS` in /proc/self/status).
pub fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}
