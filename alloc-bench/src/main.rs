//! alloc-bench driver.
//!
//! ```text
//! cargo run -p alloc-bench --release --features peers -- --all   # everything, writes RESULTS.md + overhead.svg
//! (without `--features peers`: System and heaprof only; the peers' workers are not built)
//! cargo run -p alloc-bench --release -- [--quick] [--workload NAME[,NAME..]]
//!     [--config NAME[,NAME..]] [--runs N] [--scale F] [--write-results [--note TEXT]]
//!     [--sampled] [--accuracy] [--callgrind] [--spans] [--no-build] [--list]
//! ```
//!
//! `cargo run` only builds the selected binary, so unless `--no-build` is
//! given the driver first runs `cargo build --release -p alloc-bench --bins`
//! itself (same cargo, same target directory as its own executable; a no-op
//! when up to date), then runs each configuration x workload as a subprocess
//! of the sibling worker executables. Configurations are alternated within
//! every round (order rotated by one each round) and each run is compared with
//! the run of its base configuration (its own inner allocator: System,
//! jemalloc or mimalloc) of the same round and workload; the table shows the
//! median (and min/max) of these per-round ratios.

use alloc_bench::accuracy::{Estimate, CHURN_SIZE, KEEP_SIZE};
use alloc_bench::harness::ResultLine;
use alloc_bench::report::{self, Row, Series};
use alloc_bench::svg::{self, Bar};
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
    /// Name of the configuration this one is divided by (its inner allocator).
    base: &'static str,
    /// Multiplies the run's scale (dhat runs at a reduced scale).
    scale_mul: f64,
    /// Extra environment of the worker.
    env: &'static [(&'static str, &'static str)],
}

const fn cfg(
    name: &'static str,
    bin: &'static str,
    rate: Option<usize>,
    base: &'static str,
) -> Config {
    Config {
        name,
        bin,
        rate,
        base,
        scale_mul: 1.0,
        env: &[],
    }
}

/// dhat records a backtrace for every allocation: it runs at this fraction
/// of the scale, against a System run at the same reduced scale.
const DHAT_SCALE: f64 = 0.05;
const JE_512K: Option<usize> = Some(512 << 10);

/// Whether this build has the worker of `c`: the peers' workers need `--features peers`.
fn available(c: &Config) -> bool {
    cfg!(feature = "peers") || matches!(c.bin, "w_system" | "w_heaprof")
}

/// Overhead configurations. The baseline (`system`) must be first; every
/// `base` must name a configuration earlier in the table.
const CONFIGS: &[Config] = &[
    cfg("system", "w_system", None, "system"),
    // Same binary as the baseline: its ratio is the noise floor of the run.
    cfg("system/again", "w_system", None, "system"),
    cfg("heaprof/off", "w_heaprof", Some(0), "system"),
    cfg("heaprof/4M", "w_heaprof", Some(4 << 20), "system"),
    cfg("heaprof/512K", "w_heaprof", Some(512 << 10), "system"),
    cfg("heaprof/64K", "w_heaprof", Some(64 << 10), "system"),
    cfg("heaprof/4K", "w_heaprof", Some(4 << 10), "system"),
    cfg("pprof-alloc", "w_pprof_alloc", None, "system"),
    cfg("re_memory", "w_re_memory", None, "system"),
    cfg("jemalloc", "w_jemalloc", None, "system"),
    cfg(
        "heaprof-je/512K",
        "w_heaprof_je",
        Some(512 << 10),
        "jemalloc",
    ),
    cfg("jemalloc-prof", "w_jemalloc_prof", JE_512K, "jemalloc"),
    cfg("mimalloc", "w_mimalloc", None, "system"),
    cfg("mimalloc-pprof", "w_mimalloc_pprof", None, "mimalloc"),
    Config {
        scale_mul: DHAT_SCALE,
        ..cfg("system@dhat", "w_system", None, "system@dhat")
    },
    Config {
        scale_mul: DHAT_SCALE,
        ..cfg("dhat", "w_dhat", None, "system@dhat")
    },
];

/// Sampled-path microbenchmark configurations (workloads::SAMPLED).
const SAMPLED_CONFIGS: &[Config] = &[
    cfg("heaprof/off", "w_heaprof", Some(0), "heaprof/off"),
    cfg("heaprof/every", "w_heaprof", Some(1), "heaprof/off"),
    cfg("jemalloc", "w_jemalloc", None, "jemalloc"),
    Config {
        env: &[("_RJEM_MALLOC_CONF", "lg_prof_sample:0")],
        ..cfg(
            "jemalloc-prof/every",
            "w_jemalloc_prof",
            Some(1),
            "jemalloc",
        )
    },
];

/// Accuracy readers (`--accuracy` mode of the workers), one run each.
const ACCURACY_CONFIGS: &[Config] = &[
    cfg("heaprof/512K", "w_heaprof", Some(512 << 10), "-"),
    cfg("heaprof/64K", "w_heaprof", Some(64 << 10), "-"),
    cfg("heaprof-je/512K", "w_heaprof_je", Some(512 << 10), "-"),
    Config {
        env: &[("_RJEM_MALLOC_CONF", "prof_accum:true")],
        ..cfg("jemalloc-prof", "w_jemalloc_prof", None, "-")
    },
    cfg("pprof-alloc", "w_pprof_alloc", None, "-"),
    cfg("re_memory", "w_re_memory", None, "-"),
    cfg("mimalloc-pprof", "w_mimalloc_pprof", None, "-"),
    Config {
        scale_mul: DHAT_SCALE,
        ..cfg("dhat", "w_dhat", None, "-")
    },
];

/// Callgrind instruction counts: churn1 at this scale, these configs.
const CALLGRIND_SCALE: f64 = 0.02;
const CALLGRIND_CONFIGS: &[&str] = &[
    "system",
    "heaprof/off",
    "heaprof/4M",
    "heaprof/512K",
    "heaprof/64K",
    "heaprof/4K",
    "jemalloc",
    "heaprof-je/512K",
    "jemalloc-prof",
];

/// `--all`: rounds and scale chosen so the whole run fits in ~10 minutes on
/// the 2-core reference machine.
const ALL_RUNS: usize = 7;
const ALL_SCALE: f64 = 0.25;

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
    overhead: bool,
    sampled: bool,
    accuracy: bool,
    callgrind: bool,
    spans: bool,
    acc_scale: f64,
}

fn usage() -> String {
    let cfgs: Vec<_> = CONFIGS.iter().map(|c| c.name).collect();
    format!(
        "usage: cargo run -p alloc-bench --release -- [--all] [--quick] [--workload NAME[,NAME..]] \
         [--config NAME[,NAME..]] [--runs N] [--scale F] [--sampled] [--accuracy [--acc-scale F]] \
         [--callgrind] [--spans] [--write-results [--note TEXT]] [--no-build] [--list]\n\
         --all = overhead + --sampled + --accuracy + --callgrind + --spans, {ALL_RUNS} rounds, scale {ALL_SCALE}, \
         writes RESULTS.md and overhead.svg\n\
         workloads: {}\nconfigs:   {} (bases are added automatically)",
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
        overhead: true,
        sampled: false,
        accuracy: false,
        callgrind: false,
        spans: false,
        acc_scale: 1.0,
    };
    let (mut scale, mut runs, mut all, mut only_extra) = (None, None, false, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--all" => all = true,
            "--quick" => o.quick = true,
            "--runs" => runs = Some(val()?.parse().map_err(|_| "bad --runs")?),
            "--scale" => scale = Some(val()?.parse::<f64>().map_err(|_| "bad --scale")?),
            "--acc-scale" => o.acc_scale = val()?.parse::<f64>().map_err(|_| "bad --acc-scale")?,
            "--sampled" => (o.sampled, only_extra) = (true, true),
            "--accuracy" => (o.accuracy, only_extra) = (true, true),
            "--callgrind" => (o.callgrind, only_extra) = (true, true),
            "--spans" => (o.spans, only_extra) = (true, true),
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
    if all {
        (o.overhead, o.sampled, o.accuracy, o.callgrind, o.spans) = (true, true, true, true, true);
        o.write_results = true;
    } else if only_extra {
        // --sampled / --accuracy / --callgrind / --spans alone run just those parts,
        // unless a workload or config selection asks for the overhead table.
        o.overhead = !o.workloads.is_empty() || !o.configs.is_empty();
    }
    o.runs = runs.unwrap_or(if all { ALL_RUNS } else { DEFAULT_RUNS });
    if o.runs == 0 {
        return Err("--runs must be >= 1".into());
    }
    o.scale = scale.unwrap_or(if o.quick {
        QUICK_SCALE
    } else if all {
        ALL_SCALE
    } else {
        1.0
    });
    if !o.scale.is_finite() || o.scale <= 0.0 || !o.acc_scale.is_finite() || o.acc_scale <= 0.0 {
        return Err("--scale and --acc-scale must be > 0".into());
    }
    if o.workloads.is_empty() {
        o.workloads = workloads::ALL.iter().map(|s| s.to_string()).collect();
    }
    // Requested configs plus their bases (transitively), in table order.
    let mut wanted: Vec<&str> = o.configs.iter().map(|c| c.name).collect();
    if wanted.is_empty() {
        wanted = CONFIGS.iter().map(|c| c.name).collect();
    }
    wanted.push("system");
    loop {
        let extra: Vec<&str> = CONFIGS
            .iter()
            .filter(|c| wanted.contains(&c.name) && !wanted.contains(&c.base))
            .map(|c| c.base)
            .collect();
        if extra.is_empty() {
            break;
        }
        wanted.extend(extra);
    }
    o.configs = CONFIGS
        .iter()
        .filter(|c| wanted.contains(&c.name) && available(c))
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
        .args(cfg!(feature = "peers").then_some("--features=peers"))
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

fn worker_cmd(dir: &Path, cfg: &Config) -> (PathBuf, Command) {
    let exe = dir.join(format!("{}{}", cfg.bin, std::env::consts::EXE_SUFFIX));
    let mut cmd = Command::new(&exe);
    cmd.env_remove("HEAPROF_RATE")
        .env_remove("_RJEM_MALLOC_CONF")
        .env_remove("MALLOC_CONF");
    for (k, v) in cfg.env {
        cmd.env(k, v);
    }
    if let Some(r) = cfg.rate {
        // Only heaprof takes --rate; other configs report a fixed rate.
        if cfg.bin.starts_with("w_heaprof") {
            cmd.args(["--rate", &r.to_string()]);
        }
    }
    (exe, cmd)
}

fn output_of(exe: &Path, name: &str, what: &str, mut cmd: Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| {
        format!(
            "running {}: {e} (build the workers or drop --no-build)",
            exe.display()
        )
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{name} {what} failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(stdout)
}

fn run_worker(dir: &Path, cfg: &Config, workload: &str, scale: f64) -> Result<ResultLine, String> {
    let (exe, mut cmd) = worker_cmd(dir, cfg);
    cmd.args(["--workload", workload, "--scale", &scale.to_string()]);
    let stdout = output_of(&exe, cfg.name, workload, cmd)?;
    let r = ResultLine::parse(&stdout)?;
    if r.workload != workload {
        return Err(format!(
            "{}: worker ran {:?}, asked {workload:?}",
            cfg.name, r.workload
        ));
    }
    if cfg.rate.is_some() && r.rate != cfg.rate {
        return Err(format!(
            "{}: effective sample rate {:?} != requested {:?}",
            cfg.name, r.rate, cfg.rate
        ));
    }
    Ok(r)
}

type SeriesMap = HashMap<(String, usize), Series>;

/// Runs `rounds` rounds of every config on every workload, configs
/// alternated with the order rotated by one per round.
fn run_phase(
    dir: &Path,
    label: &str,
    configs: &[&Config],
    wls: &[String],
    rounds: usize,
    scale: f64,
) -> Result<SeriesMap, String> {
    let n = configs.len();
    let mut series = SeriesMap::new();
    let mut checksums: HashMap<(String, u64), u64> = HashMap::new();
    let tty = std::io::stderr().is_terminal();
    for round in 0..rounds {
        if !tty {
            eprintln!("{label}: round {}/{rounds}", round + 1);
        }
        for w in wls {
            if tty {
                eprint!("\r{label}: round {}/{rounds} {:<15}", round + 1, w);
            }
            let mut got: Vec<Option<ResultLine>> = vec![None; n];
            for k in 0..n {
                let ci = (k + round) % n; // rotate the order every round
                let c = configs[ci];
                let sc = scale * c.scale_mul;
                let r = run_worker(dir, c, w, sc)?;
                let ck = *checksums
                    .entry((w.clone(), sc.to_bits()))
                    .or_insert(r.checksum);
                if ck != r.checksum {
                    return Err(format!(
                        "{} {w}: checksum {} differs from {ck} (non-deterministic workload?)",
                        c.name, r.checksum
                    ));
                }
                got[ci] = Some(r);
            }
            for (ci, r) in got.into_iter().enumerate() {
                let r = r.expect("ran");
                let s = series.entry((w.clone(), ci)).or_default();
                s.wall_ns.push(r.elapsed_ns as f64);
                s.cpu_ns.push(r.cpu_ns.map_or(f64::NAN, |c| c as f64));
                s.ops.push(r.ops as f64);
                s.maxrss_kb.push(r.maxrss_kb.map_or(f64::NAN, |k| k as f64));
            }
        }
    }
    if tty {
        eprintln!();
    }
    Ok(series)
}

/// Rows of every non-self-based config against its base.
fn rows_of<'a>(configs: &[&'a Config], wls: &'a [String], series: &'a SeriesMap) -> Vec<Row<'a>> {
    let mut rows = Vec::new();
    for w in wls {
        for (ci, c) in configs.iter().enumerate() {
            if c.base == c.name {
                continue;
            }
            let Some(bi) = configs.iter().position(|b| b.name == c.base) else {
                continue;
            };
            rows.push(Row {
                workload: w,
                config: c.name,
                base: c.base,
                series: &series[&(w.clone(), ci)],
                baseline: &series[&(w.clone(), bi)],
            });
        }
    }
    rows
}

fn pct(est: Option<f64>, truth: f64) -> String {
    match est {
        None => format!("{:>10} {:>8}", "-", ""),
        Some(e) if truth > 0.0 => {
            format!(
                "{:>10.1} {:>+7.1}%",
                e / 1048576.0,
                (e - truth) / truth * 100.0
            )
        }
        Some(e) => format!("{:>10.1} {:>8}", e / 1048576.0, ""),
    }
}

/// Runs each accuracy reader once and renders the table.
fn accuracy_table(dir: &Path, acc_scale: f64) -> Result<String, String> {
    let mut out = String::new();
    let mut lines = Vec::new();
    for c in ACCURACY_CONFIGS.iter().filter(|c| available(c)) {
        eprintln!("accuracy: {}", c.name);
        let (exe, mut cmd) = worker_cmd(dir, c);
        cmd.args([
            "--accuracy",
            "--scale",
            &(acc_scale * c.scale_mul).to_string(),
        ]);
        let stdout = output_of(&exe, c.name, "--accuracy", cmd)?;
        let (_, kn, cn, e) = Estimate::parse(&stdout)?;
        lines.push((c.name, kn, cn, e));
    }
    let (kn0, cn0) = (lines[0].1, lines[0].2);
    out.push_str(&format!(
        "Known-truth sites (one run each; estimates in MiB and % error vs truth):\n\
         keep  = {kn0} live blocks x {KEEP_SIZE} B = {:.1} MiB in use and allocated;\n\
         churn = {cn0} blocks x {CHURN_SIZE} B allocated and freed = {:.1} MiB allocated, 0 in use.\n\
         (dhat ran at {DHAT_SCALE} of that scale; its truth is scaled alike.)\n\
         total = the profile's whole in-use estimate (truth >= keep: the harness's own\n\
         allocations add ~{:.1} MiB of Vec headers and little else).\n\n",
        (kn0 * KEEP_SIZE) as f64 / 1048576.0,
        (cn0 * CHURN_SIZE) as f64 / 1048576.0,
        (kn0 * 24) as f64 / 1048576.0,
    ));
    out.push_str(&format!(
        "{:<16} {:>19} {:>19} {:>19} {:>10} {:>19}  note\n",
        "config", "keep in-use", "keep alloc", "churn alloc", "churn inuse", "total in-use"
    ));
    out.push_str(&format!("{}\n", "-".repeat(120)));
    for (name, kn, cn, e) in &lines {
        let kt = (kn * KEEP_SIZE) as f64;
        let ct = (cn * CHURN_SIZE) as f64;
        out.push_str(&format!(
            "{:<16} {} {} {} {:>10} {}  {}\n",
            name,
            pct(e.keep_inuse, kt),
            pct(e.keep_alloc, kt),
            pct(e.churn_alloc, ct),
            e.churn_inuse
                .map_or_else(|| "-".to_string(), |x| format!("{:.2}", x / 1048576.0)),
            pct(e.total_inuse, kt),
            e.note
        ));
    }
    Ok(out)
}

/// Instruction counts under `valgrind --tool=callgrind` (deterministic),
/// counting only `alloc_bench::workloads::run` and below.
fn callgrind_table(dir: &Path) -> Result<String, String> {
    let mut res: Vec<(&str, u64)> = Vec::new();
    let tmp = std::env::temp_dir();
    for name in CALLGRIND_CONFIGS {
        let c = CONFIGS
            .iter()
            .find(|c| c.name == *name)
            .ok_or_else(|| format!("callgrind config {name} missing"))?;
        if !available(c) {
            continue;
        }
        eprintln!("callgrind: {name}");
        let outf = tmp.join(format!("alloc-bench-cg-{}.out", std::process::id()));
        let (exe, inner) = worker_cmd(dir, c);
        let mut cmd = Command::new("valgrind");
        cmd.args([
            "--tool=callgrind",
            "--toggle-collect=alloc_bench::workloads::run*",
        ])
        .arg(format!("--callgrind-out-file={}", outf.display()))
        .arg(&exe);
        cmd.args(inner.get_args());
        cmd.args([
            "--workload",
            "churn1",
            "--scale",
            &CALLGRIND_SCALE.to_string(),
        ]);
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        output_of(Path::new("valgrind"), name, "callgrind churn1", cmd)?;
        let text = std::fs::read_to_string(&outf)
            .map_err(|e| format!("reading {}: {e}", outf.display()))?;
        let _ = std::fs::remove_file(&outf);
        let ir = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("summary:")
                    .or_else(|| l.strip_prefix("totals:"))
            })
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("no summary/totals line in callgrind output of {name}"))?;
        res.push((name, ir));
    }
    let base = |b: &str| res.iter().find(|(n, _)| *n == b).map(|x| x.1);
    let mut out = format!(
        "Instructions (Ir) under valgrind --tool=callgrind, churn1 at scale {CALLGRIND_SCALE} \
         ({} steps),\ncounted inside alloc_bench::workloads::run only (deterministic up to the \
         sampler's random draws):\n\n{:<17} {:>14} {:>10} {:>8}\n{}\n",
        (5_000_000.0 * CALLGRIND_SCALE) as u64,
        "config",
        "Ir",
        "vs",
        "ratio",
        "-".repeat(52)
    );
    for (name, ir) in &res {
        let b = CONFIGS
            .iter()
            .find(|c| c.name == *name)
            .map_or("system", |c| c.base);
        let bi = base(b).unwrap_or(*ir);
        out.push_str(&format!(
            "{:<17} {:>14} {:>10} {:>8.4}\n",
            name,
            ir,
            b,
            *ir as f64 / bi as f64
        ));
    }
    Ok(out)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
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
    if cfg!(feature = "peers") {
        s.push_str(" --features peers");
    }
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
    let load_before = loadavg();
    let t0 = Instant::now();
    let mut sections: Vec<(String, String)> = Vec::new();
    let mut svg_out = None;

    if o.overhead {
        let series = run_phase(&dir, "overhead", &o.configs, &o.workloads, o.runs, o.scale)?;
        let rows = rows_of(&o.configs, &o.workloads, &series);
        let table = report::render(&rows, o.runs);
        println!("{table}");
        let groups: Vec<(String, Vec<Bar>)> = o
            .workloads
            .iter()
            .map(|w| {
                let bars = rows
                    .iter()
                    .filter(|r| {
                        r.workload == w && r.config != "system/again" && r.config != "system@dhat"
                    })
                    .map(|r| Bar {
                        config: format!("{} (vs {})", r.config, r.base),
                        ratio: r.series.median_cpu_ratio(r.baseline),
                    })
                    .collect();
                (w.clone(), bars)
            })
            .collect();
        svg_out = Some(svg::chart(
            &format!(
                "alloc-bench: median CPU time ratio to the inner allocator ({} rounds, scale {})",
                o.runs, o.scale
            ),
            &groups,
            3.0,
        ));
        sections.push((
            format!(
                "Overhead (scale {}, {} rounds; dhat at scale {})",
                o.scale,
                o.runs,
                o.scale * DHAT_SCALE
            ),
            table,
        ));
    }
    if o.sampled {
        let cfgs: Vec<&Config> = SAMPLED_CONFIGS.iter().collect();
        let wls: Vec<String> = workloads::SAMPLED.iter().map(|s| s.to_string()).collect();
        let series = run_phase(&dir, "sampled", &cfgs, &wls, o.runs, o.scale.max(0.25))?;
        let rows = rows_of(&cfgs, &wls, &series);
        let table = report::render_sampled(&rows, o.runs);
        println!("{table}");
        sections.push((
            format!("Sampled-path cost (scale {})", o.scale.max(0.25)),
            table,
        ));
    }
    if o.accuracy {
        let table = accuracy_table(&dir, o.acc_scale)?;
        println!("{table}");
        sections.push((format!("Accuracy (scale {})", o.acc_scale), table));
    }
    if o.callgrind {
        let table = callgrind_table(&dir)?;
        println!("{table}");
        sections.push(("Instruction counts (callgrind)".into(), table));
    }
    if o.spans {
        // The span_bench binary (built with the workers), run as it is run by hand.
        let exe = dir.join(format!("span_bench{}", std::env::consts::EXE_SUFFIX));
        let table = output_of(&exe, "span_bench", "run", Command::new(&exe))?;
        println!("{table}");
        sections.push((
            "Span enter + exit with heaprof::tracing::LabelLayer (span_bench)".into(),
            table,
        ));
    }
    let wall = t0.elapsed();
    let load_after = loadavg();
    eprintln!("done in {:.1} s", wall.as_secs_f64());

    if o.write_results {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/RESULTS.md");
        let mut md = format!(
            "# alloc-bench results\n\n\
             - machine: {} CPUs (`nproc`), {}\n\
             - date: {}\n\
             - revision: {}\n\
             - command: `{}`\n\
             - load average (1/5/15 min) before: {load_before}; after: {load_after} \
             (the machine is shared with other builds: absolute times are noisy, ratios less so)\n\
             - wall time of the measurement: {:.1} s\n\
             {}\n",
            report::nproc(),
            report::cpu_model(),
            report::utc_now(),
            git_rev(),
            command_line(),
            wall.as_secs_f64(),
            o.note
                .as_deref()
                .map_or_else(String::new, |n| format!("- note: {n}\n")),
        );
        md.push_str(PEERS_NOTE);
        for (title, table) in &sections {
            md.push_str(&format!("\n## {title}\n\n```text\n{table}```\n"));
        }
        if svg_out.is_some() {
            md.push_str("\n![overhead ratios](overhead.svg)\n");
        }
        std::fs::write(path, md).map_err(|e| format!("writing {path}: {e}"))?;
        eprintln!("wrote {path}");
        if let Some(svg) = svg_out {
            let p = concat!(env!("CARGO_MANIFEST_DIR"), "/overhead.svg");
            std::fs::write(p, svg).map_err(|e| format!("writing {p}: {e}"))?;
            eprintln!("wrote {p}");
        }
    }
    Ok(())
}

/// What each configuration is, written into RESULTS.md.
const PEERS_NOTE: &str = "
## Configurations

| config | what | compared with |
|---|---|---|
| `system` | `std::alloc::System` (glibc malloc) | - |
| `system/again` | the same binary again: the noise floor | system |
| `heaprof/<rate>` | `heaprof::ProfilingAllocator<System>`, `set_heap_profile_rate(rate)`; `off` = 0 | system |
| `pprof-alloc` | crates.io `pprof-alloc` 0.6 `PprofAlloc::new().with_pprof()` (512 KiB, frame-pointer capture) over System | system |
| `re_memory` | `re_memory` 0.36 `AccountingAllocator<System>` + `set_tracking_callstacks(true)` | system |
| `jemalloc` | `tikv-jemallocator` 0.7 (built with `profiling`, `opt.prof` off) | system |
| `heaprof-je/512K` | `ProfilingAllocator<Jemalloc>` at 512 KiB | jemalloc |
| `jemalloc-prof` | jemalloc's profiler: `_rjem_malloc_conf` = `prof:true,prof_active:true,lg_prof_sample:19`, checked via `opt.prof`/`prof.active` | jemalloc |
| `mimalloc` | `mimalloc-pprof` 1.1 `MiMalloc`, profiler built in (feature `pprof`) but not started | system |
| `mimalloc-pprof` | the same with `prof::start(0)` (~512 KiB) | mimalloc |
| `dhat` | `dhat` 0.3 `dhat::Alloc` + heap `Profiler` (every allocation, with backtrace), at a reduced scale | `system@dhat` (System at that scale) |

All peers built offline from crates.io. The sampled-path table uses rate 1 (heaprof) and
`_RJEM_MALLOC_CONF=lg_prof_sample:0` (jemalloc); the accuracy run of jemalloc adds
`prof_accum:true` through the same variable so that its dump carries allocated totals.
";

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alloc-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
