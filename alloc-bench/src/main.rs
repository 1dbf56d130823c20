//! alloc-bench driver.
//!
//! ```text
//! cargo run -p alloc-bench --release -- [--quick] [--workload NAME[,NAME..]]
//!     [--config NAME[,NAME..]] [--runs N] [--scale F] [--write-results [--note TEXT]]
//!     [--no-build] [--list]
//! ```
//!
//! `cargo run` only builds the selected binary, so unless `--no-build` is
//! given the driver first runs `cargo build --release -p alloc-bench --bins`
//! itself (same cargo, same target directory as its own executable; a no-op
//! when up to date), then runs each configuration x workload as a subprocess
//! of the sibling worker executables. Configurations are alternated within
//! every round (order rotated by one each round) and each run is compared with
//! the System run of the same round and workload; the table shows the median
//! (and min/max) of these per-round ratios.

use alloc_bench::harness::ResultLine;
use alloc_bench::report::{self, Row, Series};
use alloc_bench::workloads;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// One allocator configuration = a worker binary + optional sampling rate.
struct Config {
    name: &'static str,
    bin: &'static str,
    rate: Option<usize>,
}

/// The baseline must be first.
const CONFIGS: &[Config] = &[
    Config {
        name: "system",
        bin: "w_system",
        rate: None,
    },
    // Same binary as the baseline: its ratio is the noise floor of the run.
    Config {
        name: "system/again",
        bin: "w_system",
        rate: None,
    },
    Config {
        name: "heaprof/off",
        bin: "w_heaprof",
        rate: Some(0),
    },
    Config {
        name: "heaprof/4M",
        bin: "w_heaprof",
        rate: Some(4 << 20),
    },
    Config {
        name: "heaprof/512K",
        bin: "w_heaprof",
        rate: Some(512 << 10),
    },
    Config {
        name: "heaprof/64K",
        bin: "w_heaprof",
        rate: Some(64 << 10),
    },
    Config {
        name: "heaprof/4K",
        bin: "w_heaprof",
        rate: Some(4 << 10),
    },
];

const QUICK_SCALE: f64 = 0.125;
const DEFAULT_RUNS: usize = 5;

struct Opts {
    runs: usize,
    scale: f64,
    quick: bool,
    workloads: Vec<String>,
    configs: Vec<&'static Config>,
    write_results: bool,
    note: Option<String>,
    build: bool,
}

fn usage() -> String {
    let cfgs: Vec<_> = CONFIGS.iter().map(|c| c.name).collect();
    format!(
        "usage: cargo run -p alloc-bench --release -- [--quick] [--workload NAME[,NAME..]] \
         [--config NAME[,NAME..]] [--runs N] [--scale F] [--write-results [--note TEXT]] [--no-build] [--list]\n\
         workloads: {}\nconfigs:   {} (system is always run as the baseline)",
        workloads::ALL.join(", "),
        cfgs.join(", ")
    )
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        runs: DEFAULT_RUNS,
        scale: 1.0,
        quick: false,
        workloads: Vec::new(),
        configs: Vec::new(),
        write_results: false,
        note: None,
        build: true,
    };
    let mut scale = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => o.quick = true,
            "--runs" => o.runs = val()?.parse().map_err(|_| "bad --runs")?,
            "--scale" => scale = Some(val()?.parse::<f64>().map_err(|_| "bad --scale")?),
            "--workload" => {
                for w in val()?.split(',') {
                    if !workloads::ALL.contains(&w) {
                        return Err(format!("unknown workload {w:?}\n{}", usage()));
                    }
                    o.workloads.push(w.to_string());
                }
            }
            "--config" => {
                for c in val()?.split(',') {
                    let cfg = CONFIGS
                        .iter()
                        .find(|k| k.name == c)
                        .ok_or_else(|| format!("unknown config {c:?}\n{}", usage()))?;
                    o.configs.push(cfg);
                }
            }
            "--write-results" => o.write_results = true,
            "--note" => o.note = Some(val()?),
            "--no-build" => o.build = false,
            "--list" | "--help" | "-h" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {a:?}\n{}", usage())),
        }
    }
    if o.runs == 0 {
        return Err("--runs must be >= 1".into());
    }
    o.scale = scale.unwrap_or(if o.quick { QUICK_SCALE } else { 1.0 });
    if !o.scale.is_finite() || o.scale <= 0.0 {
        return Err("--scale must be > 0".into());
    }
    if o.workloads.is_empty() {
        o.workloads = workloads::ALL.iter().map(|s| s.to_string()).collect();
    }
    // Baseline first, then the requested configs in table order, no duplicates.
    let wanted = std::mem::take(&mut o.configs);
    o.configs = CONFIGS
        .iter()
        .enumerate()
        .filter(|(i, c)| *i == 0 || wanted.is_empty() || wanted.iter().any(|w| w.name == c.name))
        .map(|(_, c)| c)
        .collect();
    Ok(o)
}

/// Directory holding this executable, i.e. `<target-dir>/release`.
fn exe_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    Ok(exe
        .parent()
        .ok_or("current_exe has no parent")?
        .to_path_buf())
}

/// Builds all worker binaries into the directory of this executable.
fn build_workers(dir: &Path) -> Result<(), String> {
    if cfg!(debug_assertions) {
        return Err("the driver must be built with --release \
                    (cargo run -p alloc-bench --release -- ...)"
            .into());
    }
    if dir.file_name().and_then(|n| n.to_str()) != Some("release") {
        return Err(format!(
            "driver is not in a `release` directory ({}); build the workers yourself \
             (cargo build -p alloc-bench --release --bins) and pass --no-build",
            dir.display()
        ));
    }
    let target_dir = dir.parent().ok_or("no target dir")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    eprintln!("alloc-bench: cargo build --release -p alloc-bench --bins");
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "alloc-bench",
            "--bins",
        ])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of the workers failed: {status}"));
    }
    Ok(())
}

fn run_worker(dir: &Path, cfg: &Config, workload: &str, scale: f64) -> Result<ResultLine, String> {
    let exe = dir.join(format!("{}{}", cfg.bin, std::env::consts::EXE_SUFFIX));
    let mut cmd = Command::new(&exe);
    cmd.args(["--workload", workload, "--scale", &scale.to_string()]);
    cmd.env_remove("HEAPROF_RATE");
    if let Some(r) = cfg.rate {
        cmd.args(["--rate", &r.to_string()]);
    }
    let out = cmd.output().map_err(|e| {
        format!(
            "running {}: {e} (build the workers or drop --no-build)",
            exe.display()
        )
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{} {workload} failed ({}): {}{}",
            cfg.name,
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let r = ResultLine::parse(&stdout)?;
    if r.workload != workload {
        return Err(format!(
            "{}: worker ran {:?}, asked {workload:?}",
            cfg.name, r.workload
        ));
    }
    if r.rate != cfg.rate {
        return Err(format!(
            "{}: effective sample rate {:?} != requested {:?}",
            cfg.name, r.rate, cfg.rate
        ));
    }
    Ok(r)
}

fn command_line() -> String {
    let quote = |a: String| {
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./,=:@%+".contains(c))
        {
            a
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    let args: Vec<String> = std::env::args().skip(1).map(quote).collect();
    let mut s = "cargo run -p alloc-bench --release".to_string();
    if !args.is_empty() {
        s.push_str(" -- ");
        s.push_str(&args.join(" "));
    }
    s
}

fn git_rev() -> String {
    Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn real_main() -> Result<(), String> {
    let o = parse_args()?;
    let dir = exe_dir()?;
    if o.build {
        build_workers(&dir)?;
    }
    let t0 = Instant::now();
    let n = o.configs.len();
    // (workload, config index) -> series
    let mut series: HashMap<(String, usize), Series> = HashMap::new();
    let mut checksums: HashMap<String, u64> = HashMap::new();
    let tty = std::io::stderr().is_terminal();
    for round in 0..o.runs {
        if !tty {
            eprintln!("round {}/{}", round + 1, o.runs);
        }
        for w in &o.workloads {
            if tty {
                eprint!("\rround {}/{} {:<15}", round + 1, o.runs, w);
            }
            let mut got: Vec<Option<ResultLine>> = vec![None; n];
            for k in 0..n {
                let ci = (k + round) % n; // rotate the order every round
                let r = run_worker(&dir, o.configs[ci], w, o.scale)?;
                let ck = *checksums.entry(w.clone()).or_insert(r.checksum);
                if ck != r.checksum {
                    return Err(format!(
                        "{} {w}: checksum {} differs from {ck} (non-deterministic workload?)",
                        o.configs[ci].name, r.checksum
                    ));
                }
                got[ci] = Some(r);
            }
            let got: Vec<ResultLine> = got.into_iter().map(|r| r.expect("ran")).collect();
            for (ci, r) in got.iter().enumerate() {
                let s = series.entry((w.clone(), ci)).or_default();
                s.wall_ns.push(r.elapsed_ns as f64);
                s.cpu_ns.push(r.cpu_ns.map_or(f64::NAN, |c| c as f64));
                s.ops.push(r.ops as f64);
            }
        }
    }
    let wall = t0.elapsed();
    eprintln!(
        "\rdone: {} rounds in {:.1} s{:20}",
        o.runs,
        wall.as_secs_f64(),
        ""
    );

    let mut rows = Vec::new();
    for w in &o.workloads {
        let baseline = &series[&(w.clone(), 0)];
        for (ci, c) in o.configs.iter().enumerate().skip(1) {
            rows.push(Row {
                workload: w,
                config: c.name,
                series: &series[&(w.clone(), ci)],
                baseline,
            });
        }
    }
    let table = report::render(&rows, o.runs);
    println!("{table}");

    if o.write_results {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/RESULTS.md");
        let md = format!(
            "# alloc-bench results\n\n\
             - machine: {} CPUs (`nproc`), {}\n\
             - date: {}\n\
             - revision: {}\n\
             - command: `{}`\n\
             - scale: {} (workers timed in-process; ratios are per-round vs system, \
             configurations alternated with rotated order)\n\
             - wall time of the measurement loop: {:.1} s\n\
             {}\n\
             ```text\n{}```\n",
            report::nproc(),
            report::cpu_model(),
            report::utc_now(),
            git_rev(),
            command_line(),
            o.scale,
            wall.as_secs_f64(),
            o.note
                .as_deref()
                .map_or_else(String::new, |n| format!("- note: {n}\n")),
            table
        );
        std::fs::write(path, md).map_err(|e| format!("writing {path}: {e}"))?;
        eprintln!("wrote {path}");
    }
    Ok(())
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alloc-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
