//! Runs `examples/grow.rs` (a process that holds memory in steps on command) as a real
//! process for the automatic-dump tests: commands go to its stdin, each answer is one
//! stdout line of counters, its stderr is collected.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::OnceLock;

use crate::server_proc::{build_example, lines_of, wait_line, PATIENCE};

fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_example("grow"))
}

/// One answer of the process: what it holds and its dump counters.
#[derive(Debug)]
pub struct Reply {
    pub line: String,
    values: HashMap<String, u64>,
}

impl Reply {
    fn parse(line: String) -> Reply {
        assert!(line.starts_with("grow "), "unexpected answer: {line}");
        let values = line
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect();
        Reply { line, values }
    }

    /// A counter (`held`, `dumps`, `growth_dumps`, …); panics if absent.
    pub fn get(&self, key: &str) -> u64 {
        *self
            .values
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {:?}", self.line))
    }

    /// Whether dumps are off in the process.
    pub fn dumps_off(&self) -> bool {
        self.line.contains("dumps=off")
    }
}

/// The running example.
pub struct Grow {
    child: Child,
    stdin: Option<ChildStdin>,
    pub pid: i32,
    /// Its first stdout line (`grow pid=… rss_threshold=… growth=…`).
    pub ready: String,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    pub stderr_lines: Vec<String>,
}

impl Grow {
    /// Starts it in `dir` with `env` (every other `HEAPROF_*` variable removed).
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Grow {
        Grow::start_in_cgroup(dir, env, None)
    }

    /// Like [`Grow::start`], moved into the cgroup whose `cgroup.procs` file is given before
    /// it runs any of its own code.
    pub fn start_in_cgroup(dir: &Path, env: &[(&str, &str)], procs: Option<&Path>) -> Grow {
        let mut cmd = Command::new(binary());
        cmd.current_dir(dir)
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
        if let Some(procs) = procs {
            let path = CString::new(procs.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: the closure runs in the child between fork and exec and only calls
            // async-signal-safe functions (open, write, close) on memory prepared before.
            unsafe {
                cmd.pre_exec(move || {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // "0": the writing process itself.
                    let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                    if n != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                })
            };
        }
        let mut child = cmd.spawn().expect("spawn the grow example");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let ready = stdout
            .recv_timeout(PATIENCE)
            .expect("no ready line from the grow example");
        assert!(ready.starts_with("grow pid="), "{ready}");
        Grow {
            pid: child.id() as i32,
            stdin: child.stdin.take(),
            child,
            ready,
            stdout,
            stderr,
            stderr_lines: Vec::new(),
        }
    }

    /// A `key=value` of the ready line (`rss_threshold`, `growth`), `None` for `none`.
    pub fn ready_value(&self, key: &str) -> Option<u64> {
        let v = self
            .ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {}", self.ready));
        (v != "none").then(|| v.parse().unwrap())
    }

    /// Sends one command and returns its answer.
    pub fn cmd(&mut self, line: &str) -> Reply {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let answer = self.stdout.recv_timeout(PATIENCE).unwrap_or_else(|e| {
            panic!(
                "no answer to {line:?}: {e:?}; stderr {:#?}",
                self.stderr_now()
            )
        });
        Reply::parse(answer)
    }

    /// The stderr lines so far.
    pub fn stderr_now(&mut self) -> &[String] {
        while let Ok(l) = self.stderr.try_recv() {
            self.stderr_lines.push(l);
        }
        &self.stderr_lines
    }

    /// Waits for a stderr line for which `pred` holds; returns it.
    pub fn wait_stderr(&mut self, pred: impl FnMut(&str) -> bool) -> String {
        self.stderr_now();
        wait_line(&self.stderr, &mut self.stderr_lines, pred)
    }

    /// Ends its input, waits for it to exit successfully, and returns its whole stderr.
    pub fn finish(mut self) -> Vec<String> {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        while let Ok(l) = self.stderr.recv_timeout(PATIENCE) {
            self.stderr_lines.push(l);
        }
        assert!(
            status.success(),
            "grow failed: {status}; stderr {:#?}",
            self.stderr_lines
        );
        std::mem::take(&mut self.stderr_lines)
    }
}

impl Drop for Grow {
    fn drop(&mut self) {
        // Only the child we started, by its handle; a no-op once it has exited and been waited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
