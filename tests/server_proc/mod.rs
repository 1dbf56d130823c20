//! Runs `examples/server.rs` as a real process for the end-to-end tests (`dump_*`, `http_*`).
//!
//! Cargo exposes `CARGO_BIN_EXE_*` only for `[[bin]]` targets, and a test-only binary would
//! ship in the crate; so the test builds the example itself with the `cargo` that runs the
//! tests (`env!("CARGO")`), same profile and target directory, which is a no-op when
//! `cargo test` has built the examples already. The crate's self dev-dependency turns on
//! feature `http` for that build too.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Hang guard only (never a performance assertion): the first dump of a debug build
/// loads DWARF, which takes seconds on a busy machine.
pub const PATIENCE: Duration = Duration::from_secs(300);

/// Path of the built `server` example.
pub fn example_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_example("server"))
}

/// Builds the example `name` (same profile and target directory as the tests) and returns
/// its path.
pub fn build_example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap(); // target/<profile>/deps/..
    let target_dir = profile_dir.parent().unwrap();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "--example", name, "--target-dir"])
        .arg(target_dir)
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build --example");
    assert!(status.success(), "cargo build --example {name} failed");
    let bin = profile_dir.join("examples").join(name);
    assert!(bin.exists(), "{} missing after the build", bin.display());
    bin
}

/// A fresh, empty directory for one test.
pub fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("heaprof-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running example process.
pub struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its pid.
    pub pid: i32,
    /// `host:port` of its HTTP server, if it has one.
    pub http: Option<String>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    /// Every stderr line seen so far.
    pub stderr_lines: Vec<String>,
}

/// The lines `r` yields, read on a thread of their own.
pub fn lines_of(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Server {
    /// Starts the example in `dir` with `env` and `args` (`--until-eof` is always added),
    /// and waits for its ready line.
    pub fn start(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
        let mut cmd = Command::new(example_binary());
        cmd.current_dir(dir)
            .args(args)
            .arg("--until-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("HEAPROF_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn the server example");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let mut s = Server {
            pid: child.id() as i32,
            stdin: child.stdin.take(),
            child,
            http: None,
            stdout,
            stderr,
            stderr_lines: Vec::new(),
        };
        let ready = s
            .next_stdout()
            .expect("server exited before its ready line");
        assert!(ready.starts_with("heaprof-server pid="), "{ready}");
        let http = ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http="))
            .unwrap();
        s.http = (http != "off").then(|| http.to_string());
        s
    }

    /// The next stdout line (`None` at exit).
    pub fn next_stdout(&mut self) -> Option<String> {
        match self.stdout.recv_timeout(PATIENCE) {
            Ok(l) => Some(l),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => panic!("no stdout line from the server"),
        }
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(self.pid, sig) }, 0, "kill failed");
    }

    /// Waits for a stderr line for which `pred` holds; returns it.
    pub fn wait_stderr(&mut self, pred: impl FnMut(&str) -> bool) -> String {
        wait_line(&self.stderr, &mut self.stderr_lines, pred)
    }

    /// Closes stdin (the example exits), returns its `stats` line, waits for the exit and
    /// collects the rest of stderr.
    pub fn finish(mut self) -> Stats {
        drop(self.stdin.take());
        let mut stats = None;
        while let Some(l) = self.next_stdout() {
            if l.starts_with("heaprof-server stats ") {
                stats = Some(Stats::parse(&l));
            }
        }
        let status = self.child.wait().unwrap();
        while let Ok(l) = self.stderr.recv_timeout(PATIENCE) {
            self.stderr_lines.push(l);
        }
        assert!(
            status.success(),
            "server failed: {status}; stderr {:#?}",
            self.stderr_lines
        );
        let mut s = stats.expect("no stats line");
        s.stderr = std::mem::take(&mut self.stderr_lines);
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only the child we started, by its handle; a no-op once it has exited and been waited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example's final counters, and its whole stderr.
#[derive(Debug, Default)]
pub struct Stats {
    pub signals_received: u64,
    pub signals_served: u64,
    pub dumps: u64,
    pub dumps_finished: u64,
    pub files_written: u64,
    pub write_errors: u64,
    pub coalesced: u64,
    pub stderr: Vec<String>,
}

impl Stats {
    fn parse(line: &str) -> Stats {
        let mut s = Stats::default();
        for w in line.split_whitespace() {
            let Some((k, v)) = w.split_once('=') else {
                continue;
            };
            let v: u64 = v.parse().unwrap();
            match k {
                "signals_received" => s.signals_received = v,
                "signals_served" => s.signals_served = v,
                "dumps" => s.dumps = v,
                "dumps_finished" => s.dumps_finished = v,
                "files_written" => s.files_written = v,
                "write_errors" => s.write_errors = v,
                "coalesced" => s.coalesced = v,
                _ => panic!("unknown stat {k} in {line}"),
            }
        }
        s
    }
}

/// The first line for which `pred` holds: among `seen`, else the next ones from `rx` (each
/// added to `seen`); panics, showing what was seen, after [`PATIENCE`].
pub fn wait_line(
    rx: &Receiver<String>,
    seen: &mut Vec<String>,
    mut pred: impl FnMut(&str) -> bool,
) -> String {
    if let Some(l) = seen.iter().find(|l| pred(l)) {
        return l.clone();
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                seen.push(l.clone());
                if pred(&l) {
                    return l;
                }
            }
            Err(e) => panic!("waiting for a stderr line: {e:?}; seen: {seen:#?}"),
        }
    }
}
