//! End to end: automatic dumps in a real process (`examples/grow.rs`, which holds memory in
//! steps on command), configured by `HEAPROF_DUMP_*` through `init_from_env()`.
//!
//! Known truths: the bytes the process holds after each command; its resident set, which a
//! written block adds to; the cgroup limit the test sets. Steps of growth give one dump
//! each, with in-use totals within the sampling error of what is held; a spike of several
//! steps gives one; an RSS threshold gives one dump until RSS falls back below 90% of it;
//! the minimum interval holds dumps back and counts them; bad values warn once and leave the
//! feature off.

mod common;
mod grow_proc;
mod server_proc;

use std::path::{Path, PathBuf};

use grow_proc::Grow;
use server_proc::fresh_dir;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

const MIB: u64 = 1 << 20;

fn dump_file(dir: &Path, pid: i32, seq: u64) -> PathBuf {
    dir.join(format!("grow.{pid}.{seq}.heap.pb.gz"))
}

fn profile(path: &Path) -> heaprof::__private::proto::Profile {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    common::decode(&bytes)
}

/// In-use bytes of a dump file.
fn in_use(path: &Path) -> u64 {
    common::total_of(&profile(path), "inuse_space") as u64
}

#[test]
fn growth_steps_give_one_dump_each_within_sampling_error() {
    const RATE: u64 = 64 << 10;
    let dir = fresh_dir("auto-growth");
    let mut g = Grow::start(
        &dir,
        &[
            ("HEAPROF_RATE", "64k"),
            ("HEAPROF_DUMP_ON_GROWTH", "16MiB"),
            ("HEAPROF_DUMP_MIN_INTERVAL", "0"),
            ("HEAPROF_DUMP_PREFIX", "grow"),
        ],
    );
    assert_eq!(g.ready_value("growth"), Some(16 * MIB));
    g.wait_stderr(|l| l.starts_with("heaprof: automatic dumps every 16.0 MiB of heap growth"));
    let mut truths = Vec::new();
    let mut small = 0;
    // Each step: 8 MiB of 16 KiB blocks (sampled, with error), then one 12 MiB block
    // (sampled with probability 1 - e^-192, weight exact). The 8 MiB alone stay well under
    // the next level (+16 MiB), so the step's last allocation is the one that crosses it:
    // the dump sees the whole step. The next step waits for the dump to be written (a dump
    // counted as started has not taken its snapshot yet).
    let step = |g: &mut Grow, cmds: &[&str], k: u64| {
        let mut held = 0;
        for c in cmds {
            held = g.cmd(c).get("held");
        }
        let r = g.cmd(&format!("wait dumps_finished {k}"));
        assert_eq!(
            (r.get("growth_dumps"), r.get("dumps")),
            (k, k),
            "{}",
            r.line
        );
        held
    };
    for k in 1..=4u64 {
        small += 8 * MIB;
        truths.push((step(&mut g, &["small 8 16", "big 12"], k), small));
    }
    // A spike of four steps at once: one dump.
    truths.push((step(&mut g, &["big 64"], 5), small));
    // And the steps go on from the spike's level.
    small += 8 * MIB;
    truths.push((step(&mut g, &["small 8 16", "big 12"], 6), small));
    let r = g.cmd("stats");
    assert_eq!(
        (r.get("growth_dumps"), r.get("dumps")),
        (6, 6),
        "{}",
        r.line
    );
    assert_eq!(r.get("write_errors"), 0);
    let pid = g.pid;
    let stderr = g.finish();

    let mut last = 0;
    for (i, &(truth, small)) in truths.iter().enumerate() {
        let seq = i as u64 + 1;
        let est = in_use(&dump_file(&dir, pid, seq));
        // One standard error of the small blocks' estimate is at most sqrt(bytes × rate);
        // the process's own few allocations before the steps add under 1 MiB.
        let tol = 4.0 * ((small * RATE) as f64).sqrt() + MIB as f64;
        eprintln!("dump {seq}: {est} bytes in use, truth {truth}, tolerance {tol:.0}");
        assert!(
            (est as f64 - truth as f64).abs() <= tol,
            "dump {seq}: {est} in use, truth {truth} (tolerance {tol:.0})"
        );
        assert!(
            est > last,
            "dump {seq}: in-use totals increase ({last} then {est})"
        );
        last = est;
        let line = stderr
            .iter()
            .find(|l| l.starts_with(&format!("heaprof: dump {seq} (automatic: heap grew to")))
            .unwrap_or_else(|| panic!("no line for dump {seq}: {stderr:#?}"));
        assert!(!line.contains("held back"), "{line}");
    }
}

#[test]
fn an_rss_threshold_gives_one_dump_until_rss_falls_back() {
    let dir = fresh_dir("auto-rss");
    let mut g = Grow::start(
        &dir,
        &[
            ("HEAPROF_DUMP_ON_RSS", "300MiB"),
            ("HEAPROF_DUMP_MIN_INTERVAL", "0"),
            ("HEAPROF_DUMP_PREFIX", "grow"),
        ],
    );
    assert_eq!(g.ready_value("rss_threshold"), Some(300 * MIB));
    // Blocks above 32 MiB are mapped on their own by glibc: freeing them lowers RSS.
    g.cmd("big 340");
    let r = g.cmd("wait rss_dumps 1");
    assert_eq!(r.get("rss_dumps"), 1);
    g.cmd("big 60");
    // Three more readings, all above the threshold: still one dump.
    let r = g.cmd("checks 3");
    assert_eq!((r.get("rss_dumps"), r.get("dumps")), (1, 1), "{}", r.line);
    g.cmd("free");
    let r = g.cmd("checks 3");
    assert_eq!(r.get("rss_dumps"), 1, "falling back is no dump");
    g.cmd("big 340");
    let r = g.cmd("wait rss_dumps 2");
    let r2 = g.cmd("checks 3");
    assert_eq!(
        (r.get("rss_dumps"), r2.get("rss_dumps"), r2.get("dumps")),
        (2, 2, 2),
        "{}",
        r2.line
    );
    let pid = g.pid;
    let stderr = g.finish();
    for seq in [1, 2] {
        let line = stderr
            .iter()
            .find(|l| l.starts_with(&format!("heaprof: dump {seq} (automatic: RSS ")))
            .unwrap_or_else(|| panic!("no line for dump {seq}: {stderr:#?}"));
        assert!(line.contains("reached 300 MiB"), "{line}");
        // The dump's own breakdown saw RSS above the threshold.
        let c = common::comments(&profile(&dump_file(&dir, pid, seq)));
        let rss: u64 = c["heaprof.rss"].parse().unwrap();
        assert!(rss >= 300 * MIB, "dump {seq}: heaprof.rss {rss}");
    }
}

#[test]
fn the_minimum_interval_holds_dumps_back_and_counts_them() {
    let dir = fresh_dir("auto-interval");
    let mut g = Grow::start(
        &dir,
        &[
            ("HEAPROF_DUMP_ON_GROWTH", "16MiB"),
            ("HEAPROF_DUMP_MIN_INTERVAL", "3600"),
            ("HEAPROF_DUMP_SIGNAL", "USR1"),
            ("HEAPROF_DUMP_PREFIX", "grow"),
        ],
    );
    g.cmd("big 20");
    g.cmd("wait dumps_finished 1");
    // One step at a time: two steps before the dump thread looks would be one spike.
    for k in 1..=3 {
        g.cmd("big 20");
        g.cmd(&format!("wait held_back {k}"));
    }
    let r = g.cmd("stats");
    assert_eq!(
        (r.get("growth_dumps"), r.get("held_back"), r.get("dumps")),
        (1, 3, 1),
        "{}",
        r.line
    );
    // The next dump (here on a signal) says how many were held back.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(g.pid, libc::SIGUSR1) }, 0);
    let line = g.wait_stderr(|l| l.starts_with("heaprof: dump 2 "));
    assert!(
        line.contains("1 signals received")
            && line.contains("3 automatic dumps held back by the minimum interval of 3600s"),
        "{line}"
    );
    let r = g.cmd("stats");
    assert_eq!((r.get("growth_dumps"), r.get("held_back")), (1, 3));
    let stderr = g.finish();
    assert!(
        stderr.iter().any(|l| l.contains("at most one per 3600s")),
        "{stderr:#?}"
    );
}

#[test]
fn bad_values_warn_once_and_leave_the_feature_off() {
    let dir = fresh_dir("auto-bad");
    let mut g = Grow::start(
        &dir,
        &[
            ("HEAPROF_DUMP_ON_GROWTH", "lots"),
            ("HEAPROF_DUMP_ON_RSS", "150%"),
            ("HEAPROF_DUMP_MIN_INTERVAL", "soon"),
        ],
    );
    assert_eq!(
        (g.ready_value("growth"), g.ready_value("rss_threshold")),
        (None, None)
    );
    let r = g.cmd("big 64");
    assert!(r.dumps_off(), "{}", r.line);
    let stderr = g.finish();
    let warned = |var: &str| {
        stderr
            .iter()
            .filter(|l| l.starts_with(&format!("heaprof: ignoring {var}=")))
            .count()
    };
    assert_eq!(warned("HEAPROF_DUMP_ON_GROWTH"), 1, "{stderr:#?}");
    assert_eq!(warned("HEAPROF_DUMP_ON_RSS"), 1, "{stderr:#?}");
    assert_eq!(warned("HEAPROF_DUMP_MIN_INTERVAL"), 1, "{stderr:#?}");
    assert!(
        stderr.iter().any(|l| l.contains("growth dumps stay off"))
            && stderr.iter().any(|l| l.contains("RSS dumps stay off")),
        "{stderr:#?}"
    );

    // A bad interval with a good trigger: the default interval, and the trigger works.
    let mut g = Grow::start(
        &dir,
        &[
            ("HEAPROF_DUMP_ON_GROWTH", "16MiB"),
            ("HEAPROF_DUMP_MIN_INTERVAL", "-1"),
            ("HEAPROF_DUMP_ON_RSS", "0"),
        ],
    );
    g.cmd("big 20");
    let r = g.cmd("wait dumps_finished 1");
    assert_eq!((r.get("growth_dumps"), r.get("rss_checks")), (1, 0));
    let stderr = g.finish();
    for (var, why) in [
        (
            "HEAPROF_DUMP_MIN_INTERVAL",
            "using the default of 10 seconds",
        ),
        ("HEAPROF_DUMP_ON_RSS", "RSS dumps stay off"),
    ] {
        let n = stderr
            .iter()
            .filter(|l| l.starts_with(&format!("heaprof: ignoring {var}=")) && l.contains(why))
            .count();
        assert_eq!(n, 1, "{var}: {stderr:#?}");
    }
    assert!(stderr.iter().any(|l| l.contains("at most one per 10s")));
}

/// A memory cgroup made for one test (v1 `memory` hierarchy), removed on drop.
struct TestCgroup {
    dir: PathBuf,
}

impl TestCgroup {
    /// A child of this process's own memory cgroup with `limit` bytes, or why not.
    fn create(limit: u64) -> Result<TestCgroup, String> {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let own = cgroups
            .lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
                ctl.split(',').any(|c| c == "memory").then_some(path)
            })
            .ok_or("no cgroup v1 memory controller in /proc/self/cgroup")?;
        let root = Path::new("/sys/fs/cgroup/memory");
        let dir = root
            .join(own.trim_start_matches('/'))
            .join(format!("heaprof-test-{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let cg = TestCgroup { dir };
        std::fs::write(cg.dir.join("memory.limit_in_bytes"), limit.to_string())
            .map_err(|e| format!("setting the limit: {e}"))?;
        Ok(cg)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Empty by now: the child that was in it has exited.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn a_percentage_of_the_cgroup_limit_is_a_real_threshold() {
    const LIMIT: u64 = 512 * MIB;
    let cg = match TestCgroup::create(LIMIT) {
        Ok(cg) => cg,
        Err(why) => {
            eprintln!("SKIPPED: cannot create a memory cgroup to test in ({why}); needs root and cgroup v1 memory");
            return;
        }
    };
    let dir = fresh_dir("auto-cgroup");
    let mut g = Grow::start_in_cgroup(
        &dir,
        &[
            ("HEAPROF_DUMP_ON_RSS", "40%"),
            ("HEAPROF_DUMP_MIN_INTERVAL", "0"),
            ("HEAPROF_DUMP_PREFIX", "grow"),
        ],
        Some(&cg.dir.join("cgroup.procs")),
    );
    let threshold = (LIMIT as f64 * 0.4) as u64;
    assert_eq!(g.ready_value("rss_threshold"), Some(threshold));
    let line = g.wait_stderr(|l| l.starts_with("heaprof: automatic dumps"));
    assert!(
        line.contains("= 40% of 512 MiB in") && line.contains("memory.limit_in_bytes"),
        "{line}"
    );
    let r = g.cmd("checks 2");
    assert_eq!(r.get("rss_dumps"), 0, "under 40% of the limit");
    g.cmd("big 240");
    let r = g.cmd("wait rss_dumps 1");
    let r2 = g.cmd("checks 3");
    assert_eq!((r.get("rss_dumps"), r2.get("rss_dumps")), (1, 1));
    let pid = g.pid;
    g.finish();
    let c = common::comments(&profile(&dump_file(&dir, pid, 1)));
    assert_eq!(c["heaprof.rss.cgroup_limit"], LIMIT.to_string());
    let usage: u64 = c["heaprof.rss.cgroup_usage"].parse().unwrap();
    let rss: u64 = c["heaprof.rss"].parse().unwrap();
    assert!(rss >= threshold, "{rss}");
    // The crossing is seen while the block is being written, so the dump's figures are
    // past the threshold, not necessarily past the whole block. The cgroup is charged for
    // the anonymous memory; file pages in RSS (the binary, libraries) may be charged to the
    // cgroup that first read them, and v1 batches charges per CPU: hence the 10%.
    assert!(
        usage >= threshold / 10 * 9 && usage <= LIMIT,
        "the cgroup is charged for what the process holds: usage {usage}"
    );
}
