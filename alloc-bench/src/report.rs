//! Statistics and table formatting for the driver.

/// Median of a non-empty slice (mean of the two middle values if even).
pub fn median(xs: &[f64]) -> f64 {
    assert!(!xs.is_empty(), "median of empty slice");
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// (min, max) of a non-empty slice.
pub fn min_max(xs: &[f64]) -> (f64, f64) {
    xs.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// Per-round measurements of one configuration on one workload
/// (index = round).
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Wall time of the workload, ns.
    pub wall_ns: Vec<f64>,
    /// Process CPU time of the workload, ns (NaN if unavailable).
    pub cpu_ns: Vec<f64>,
    /// Logical operations.
    pub ops: Vec<f64>,
    /// Peak RSS of the worker, KiB (NaN if unavailable).
    pub maxrss_kb: Vec<f64>,
}

impl Series {
    /// Per-round ratio of `metric` to the same round of `base`.
    pub fn ratios(&self, base: &Series, metric: fn(&Series) -> &Vec<f64>) -> Vec<f64> {
        metric(self)
            .iter()
            .zip(metric(base))
            .map(|(x, b)| x / b)
            .filter(|r| r.is_finite())
            .collect()
    }

    /// Per-round CPU (or, if unavailable, wall) ns per op.
    pub fn ns_per_op(&self) -> Vec<f64> {
        self.cpu_ns
            .iter()
            .zip(&self.wall_ns)
            .zip(&self.ops)
            .map(|((c, w), n)| if c.is_finite() { c / n } else { w / n })
            .collect()
    }

    /// Per-round wall ns per op.
    pub fn wall_ns_per_op(&self) -> Vec<f64> {
        self.wall_ns
            .iter()
            .zip(&self.ops)
            .map(|(w, n)| w / n)
            .collect()
    }

    /// Median CPU ratio to `base` (NaN if no round has one).
    pub fn median_cpu_ratio(&self, base: &Series) -> f64 {
        let r = self.ratios(base, |s| &s.cpu_ns);
        if r.is_empty() {
            f64::NAN
        } else {
            median(&r)
        }
    }
}

/// Per-round `a - b` of two equally long series, non-finite dropped.
pub fn diffs(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|(x, y)| x - y)
        .filter(|d| d.is_finite())
        .collect()
}

/// One row of the main table.
pub struct Row<'a> {
    /// Workload name.
    pub workload: &'a str,
    /// Configuration name.
    pub config: &'a str,
    /// Name of the configuration it is compared with (its inner allocator).
    pub base: &'a str,
    /// Its series.
    pub series: &'a Series,
    /// The series of `base` on the same workload.
    pub baseline: &'a Series,
}

/// `median [min, max]` of `xs`, `n/a` if empty.
pub fn stat(xs: &[f64], prec: usize, signed: bool) -> String {
    if xs.is_empty() {
        return format!("{:>7} {:>17}", "n/a", "");
    }
    let (lo, hi) = min_max(xs);
    if signed {
        format!(
            "{:>+7.p$} [{:>+6.p$}, {:>+6.p$}]",
            median(xs),
            lo,
            hi,
            p = prec
        )
    } else {
        format!(
            "{:>7.p$} [{:>6.p$}, {:>6.p$}]",
            median(xs),
            lo,
            hi,
            p = prec
        )
    }
}

fn finite_median(xs: &[f64]) -> f64 {
    let v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        f64::NAN
    } else {
        median(&v)
    }
}

/// Renders the ratio table (and the ns-added table for `unsampled_pair`).
pub fn render(rows: &[Row<'_>], rounds: usize) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Ratio to the base run (the config's own inner allocator) of the same round:\n\
         median [min, max] over {rounds} rounds. cpu = process CPU time (user+sys, all\n\
         threads), wall = wall time; both cover the workload only. 'base s' = median CPU\n\
         time of the base. RSS = worker peak RSS (ru_maxrss), MiB; dRSS = median per-round\n\
         difference to the base (the profiler's own memory, plus allocator effects).\n\
         system/again is the same binary as system: its spread is the noise floor.\n\n"
    ));
    out.push_str(&format!(
        "{:<15} {:<17} {:<14} {:>25}   {:>25}   {:>8} {:>8} {:>8}\n",
        "workload", "config", "vs", "cpu ratio", "wall ratio", "base s", "RSS", "dRSS"
    ));
    out.push_str(&format!("{}\n", "-".repeat(131)));
    let mut last = "";
    for r in rows {
        if r.workload != last && !last.is_empty() {
            out.push('\n');
        }
        last = r.workload;
        let cpu = r.series.ratios(r.baseline, |s| &s.cpu_ns);
        let wall = r.series.ratios(r.baseline, |s| &s.wall_ns);
        let base = finite_median(&r.baseline.cpu_ns);
        let base = if base.is_finite() {
            base
        } else {
            median(&r.baseline.wall_ns)
        };
        let rss = finite_median(&r.series.maxrss_kb) / 1024.0;
        let drss = finite_median(&diffs(&r.series.maxrss_kb, &r.baseline.maxrss_kb)) / 1024.0;
        out.push_str(&format!(
            "{:<15} {:<17} {:<14} {}   {}   {:>7.3}s {:>8.1} {:>+8.1}\n",
            r.workload,
            r.config,
            r.base,
            stat(&cpu, 3, false),
            stat(&wall, 3, false),
            base / 1e9,
            rss,
            drss
        ));
    }
    let micro: Vec<_> = rows
        .iter()
        .filter(|r| r.workload == "unsampled_pair")
        .collect();
    if !micro.is_empty() {
        out.push_str(
            "\nunsampled_pair: 64 B alloc+dealloc pair, CPU ns per pair; \
             ns added = minus the base in the same round\n\n",
        );
        out.push_str(&format!(
            "{:<17} {:<14} {:>9} {:>9}   {:>25}\n",
            "config", "vs", "ns/pair", "base", "ns added [min, max]"
        ));
        out.push_str(&format!("{}\n", "-".repeat(80)));
        for r in micro {
            let base = r.baseline.ns_per_op();
            let added = diffs(&r.series.ns_per_op(), &base);
            out.push_str(&format!(
                "{:<17} {:<14} {:>9.2} {:>9.2}   {}\n",
                r.config,
                r.base,
                median(&r.series.ns_per_op()),
                median(&base),
                stat(&added, 2, true)
            ));
        }
    }
    out
}

/// Renders the sampled-path table: ns added per alloc+dealloc pair when
/// every allocation is sampled, vs the same allocator unsampled.
pub fn render_sampled(rows: &[Row<'_>], rounds: usize) -> String {
    let mut out = format!(
        "Sampled path: 64 B alloc+dealloc pairs with every allocation sampled (rate 1 /\n\
         lg_prof_sample:0), called at recursion depth d below the harness frames, on 1 or 2\n\
         threads. ns added per sampled pair = CPU ns/pair minus the base's in the same round\n\
         (median [min, max] over {rounds} rounds); wall = the same from wall time.\n\n"
    );
    out.push_str(&format!(
        "{:<16} {:<20} {:<14} {:>27}   {:>27}\n",
        "workload", "config", "vs", "cpu ns added/pair", "wall ns added/pair"
    ));
    out.push_str(&format!("{}\n", "-".repeat(110)));
    for r in rows {
        let cpu = diffs(&r.series.ns_per_op(), &r.baseline.ns_per_op());
        let wall = diffs(&r.series.wall_ns_per_op(), &r.baseline.wall_ns_per_op());
        out.push_str(&format!(
            "{:<16} {:<20} {:<14} {}   {}\n",
            r.workload,
            r.config,
            r.base,
            stat(&cpu, 0, false),
            stat(&wall, 0, false)
        ));
    }
    out
}

/// CPU model from /proc/cpuinfo (first `model name`), or "unknown".
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// Number of CPUs available to this process (what `nproc` prints).
pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Current UTC time as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(min_max(&[2.0, -1.0, 5.0]), (-1.0, 5.0));
    }

    #[test]
    fn date_format() {
        let s = utc_now();
        assert_eq!(s.len(), "2024-01-01 00:00:00 UTC".len());
        assert!(s.starts_with("20"));
    }
}
