//! Worker side of the driver/worker protocol.
//!
//! A worker is invoked as
//! `w_<config> --workload NAME [--rate BYTES] [--scale F] [--write-profile PATH]`
//! or `w_<config> --accuracy [--scale F]` (see [`crate::accuracy`])
//! (`--rate` falls back to the `HEAPROF_RATE` environment variable). It times
//! only the workload (not process start-up, argument parsing or profile
//! writing) and prints exactly one line on stdout:
//!
//! ```text
//! alloc-bench-result v1 config=heaprof rate=524288 workload=churn1 scale=1 ops=8000000 elapsed_ns=812345678 cpu_ns=810000000 checksum=123 maxrss_kb=10240
//! ```
//!
//! `elapsed_ns` is wall time, `cpu_ns` the process CPU time (user + sys, all
//! threads, `CLOCK_PROCESS_CPUTIME_ID`; `-` where unavailable) over the same
//! interval. `rate` is the *effective* rate read back from the allocator, `-`
//! for configurations without one. `maxrss_kb` is the process peak RSS
//! (`getrusage(RUSAGE_SELF).ru_maxrss`) at the end of the workload. Errors go to stderr with a non-zero exit code.

use crate::{accuracy, workloads};
use std::time::Instant;

/// Prefix of the result line.
pub const RESULT_TAG: &str = "alloc-bench-result v1";

/// Configuration hooks a worker binary passes to [`worker_main`].
pub struct Hooks {
    /// Configuration family name (`system`, `heaprof`, ...).
    pub config: &'static str,
    /// Sets the sampling rate; `None` if the configuration has no rate.
    pub set_rate: Option<fn(usize)>,
    /// Reads the effective sampling rate back.
    pub get_rate: Option<fn() -> usize>,
    /// Writes a heap profile to the given file (after timing).
    pub write_profile: Option<fn(&std::path::Path) -> std::io::Result<()>>,
    /// Runs after argument parsing and before the workload (starts or checks
    /// the profiler; may abort the worker with a message).
    pub setup: Option<fn()>,
    /// Reads the profiler's per-site estimate back (`--accuracy` mode).
    pub estimate: Option<fn() -> Result<accuracy::Estimate, String>>,
}

impl Hooks {
    /// Hooks of a configuration with no rate, profile or estimate.
    pub const fn plain(config: &'static str) -> Self {
        Hooks {
            config,
            set_rate: None,
            get_rate: None,
            write_profile: None,
            setup: None,
            estimate: None,
        }
    }
}

/// One parsed result line.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultLine {
    /// Configuration family reported by the worker.
    pub config: String,
    /// Effective sampling rate, if any.
    pub rate: Option<usize>,
    /// Workload name.
    pub workload: String,
    /// Work multiplier.
    pub scale: f64,
    /// Logical operations performed.
    pub ops: u64,
    /// Wall time of the workload alone.
    pub elapsed_ns: u64,
    /// Process CPU time (all threads) of the workload alone, if available.
    pub cpu_ns: Option<u64>,
    /// Deterministic checksum of the workload.
    pub checksum: u64,
    /// Peak RSS of the worker process in KiB, if available.
    pub maxrss_kb: Option<u64>,
}

impl ResultLine {
    /// Formats the line exactly as printed by workers.
    pub fn format(&self) -> String {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |r| r.to_string());
        format!(
            "{RESULT_TAG} config={} rate={} workload={} scale={} ops={} elapsed_ns={} cpu_ns={} checksum={} maxrss_kb={}",
            self.config,
            opt(self.rate.map(|r| r as u64)),
            self.workload,
            self.scale,
            self.ops,
            self.elapsed_ns,
            opt(self.cpu_ns),
            self.checksum,
            opt(self.maxrss_kb)
        )
    }

    /// Parses a result line (the first line of `stdout` starting with the tag).
    pub fn parse(stdout: &str) -> Result<Self, String> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(RESULT_TAG))
            .ok_or_else(|| format!("no result line in worker output {stdout:?}"))?;
        let mut r = ResultLine {
            config: String::new(),
            rate: None,
            workload: String::new(),
            scale: 0.0,
            ops: 0,
            elapsed_ns: 0,
            cpu_ns: None,
            checksum: 0,
            maxrss_kb: None,
        };
        let bad = |k: &str, v: &str| format!("bad {k}={v:?} in {line:?}");
        for kv in line[RESULT_TAG.len()..].split_whitespace() {
            let (k, v) = kv.split_once('=').ok_or_else(|| bad("field", kv))?;
            match k {
                "config" => r.config = v.to_string(),
                "rate" => {
                    r.rate = if v == "-" {
                        None
                    } else {
                        Some(v.parse().map_err(|_| bad(k, v))?)
                    }
                }
                "workload" => r.workload = v.to_string(),
                "scale" => r.scale = v.parse().map_err(|_| bad(k, v))?,
                "ops" => r.ops = v.parse().map_err(|_| bad(k, v))?,
                "elapsed_ns" => r.elapsed_ns = v.parse().map_err(|_| bad(k, v))?,
                "cpu_ns" => {
                    r.cpu_ns = if v == "-" {
                        None
                    } else {
                        Some(v.parse().map_err(|_| bad(k, v))?)
                    }
                }
                "checksum" => r.checksum = v.parse().map_err(|_| bad(k, v))?,
                "maxrss_kb" => {
                    r.maxrss_kb = if v == "-" {
                        None
                    } else {
                        Some(v.parse().map_err(|_| bad(k, v))?)
                    }
                }
                _ => {} // forward compatible
            }
        }
        if r.workload.is_empty() || r.elapsed_ns == 0 {
            return Err(format!("incomplete result line {line:?}"));
        }
        Ok(r)
    }
}

/// CPU time of the whole process (all threads, including exited ones), ns.
#[cfg(target_os = "linux")]
pub fn process_cpu_ns() -> Option<u64> {
    #[repr(C)]
    struct Timespec {
        tv_sec: std::ffi::c_long,
        tv_nsec: std::ffi::c_long,
    }
    extern "C" {
        // Provided by the C library std already links against.
        fn clock_gettime(clk: std::ffi::c_int, ts: *mut Timespec) -> std::ffi::c_int;
    }
    const CLOCK_PROCESS_CPUTIME_ID: std::ffi::c_int = 2;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// CPU time of the whole process: unavailable on this platform.
#[cfg(not(target_os = "linux"))]
pub fn process_cpu_ns() -> Option<u64> {
    None
}

/// Peak resident set size of this process in KiB (`ru_maxrss`).
#[cfg(target_os = "linux")]
pub fn maxrss_kb() -> Option<u64> {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    (rc == 0).then_some(ru.ru_maxrss as u64)
}

/// Peak RSS: unavailable on this platform.
#[cfg(not(target_os = "linux"))]
pub fn maxrss_kb() -> Option<u64> {
    None
}

/// Prints `msg` and exits the worker with status 2.
pub fn die(msg: &str) -> ! {
    eprintln!("alloc-bench worker: {msg}");
    std::process::exit(2)
}

/// Entry point of every worker binary.
pub fn worker_main(hooks: Hooks) {
    let mut args = std::env::args().skip(1);
    let mut workload = None;
    let mut rate: Option<usize> = None;
    let mut scale = 1.0f64;
    let mut profile = None;
    let mut acc = false;
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| die(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--workload" => workload = Some(val()),
            "--rate" => rate = Some(val().parse().unwrap_or_else(|_| die("bad --rate"))),
            "--scale" => scale = val().parse().unwrap_or_else(|_| die("bad --scale")),
            "--write-profile" => profile = Some(std::path::PathBuf::from(val())),
            "--accuracy" => acc = true,
            _ => die(&format!("unknown argument {a:?}")),
        }
    }
    if rate.is_none() {
        if let Ok(v) = std::env::var("HEAPROF_RATE") {
            rate = Some(v.parse().unwrap_or_else(|_| die("bad HEAPROF_RATE")));
        }
    }
    if let Some(r) = rate {
        match hooks.set_rate {
            Some(set) => set(r),
            None => die(&format!("config {} takes no --rate", hooks.config)),
        }
    }
    if !scale.is_finite() || scale <= 0.0 {
        die("--scale must be > 0");
    }
    if let Some(setup) = hooks.setup {
        setup();
    }
    if acc {
        let est = hooks
            .estimate
            .unwrap_or_else(|| die(&format!("config {} has no accuracy reader", hooks.config)));
        accuracy::run(hooks.config, scale, est);
        return;
    }
    let workload = workload.unwrap_or_else(|| die("--workload NAME is required"));

    let cpu_start = process_cpu_ns();
    let start = Instant::now();
    let outcome = workloads::run(&workload, scale)
        .unwrap_or_else(|| die(&format!("unknown workload {workload:?}")));
    let elapsed = start.elapsed();
    let rss = maxrss_kb();
    let cpu_ns = match (cpu_start, process_cpu_ns()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).max(1)),
        _ => None,
    };

    if let Some(path) = profile {
        match hooks.write_profile {
            Some(w) => {
                if let Err(e) = w(&path) {
                    die(&format!("writing profile to {}: {e}", path.display()))
                }
            }
            None => die(&format!("config {} cannot write a profile", hooks.config)),
        }
    }
    let line = ResultLine {
        config: hooks.config.to_string(),
        rate: hooks.get_rate.map(|g| g()),
        workload,
        scale,
        ops: outcome.ops,
        elapsed_ns: (elapsed.as_nanos() as u64).max(1),
        cpu_ns,
        checksum: outcome.checksum,
        maxrss_kb: rss,
    };
    println!("{}", line.format());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_roundtrip() {
        let r = ResultLine {
            config: "heaprof".into(),
            rate: Some(4096),
            workload: "churn1".into(),
            scale: 0.125,
            ops: 10,
            elapsed_ns: 123,
            cpu_ns: Some(120),
            checksum: 99,
            maxrss_kb: Some(5),
        };
        assert_eq!(ResultLine::parse(&r.format()).unwrap(), r);
        let s = ResultLine {
            rate: None,
            cpu_ns: None,
            maxrss_kb: None,
            ..r
        };
        assert_eq!(
            ResultLine::parse(&format!("noise\n{}\n", s.format())).unwrap(),
            s
        );
    }

    #[test]
    fn cpu_clock_advances() {
        if let Some(a) = process_cpu_ns() {
            let mut x = 0u64;
            for i in 0..20_000_000u64 {
                x = std::hint::black_box(x.wrapping_add(i));
            }
            assert!(process_cpu_ns().unwrap() > a);
        }
    }
}
