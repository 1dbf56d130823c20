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
}

impl Series {
    /// Per-round ratio of `metric` to the same round of `base`.
    fn ratios(&self, base: &Series, metric: fn(&Series) -> &Vec<f64>) -> Vec<f64> {
        metric(self)
            .iter()
            .zip(metric(base))
            .map(|(x, b)| x / b)
            .filter(|r| r.is_finite())
            .collect()
    }

    /// Per-round CPU (or, if unavailable, wall) ns per op.
    fn ns_per_op(&self) -> Vec<f64> {
        self.cpu_ns
            .iter()
            .zip(&self.wall_ns)
            .zip(&self.ops)
            .map(|((c, w), n)| if c.is_finite() { c / n } else { w / n })
            .collect()
    }
}

/// One row of the main table.
pub struct Row<'a> {
    /// Workload name.
    pub workload: &'a str,
    /// Configuration name.
    pub config: &'a str,
    /// Its series.
    pub series: &'a Series,
    /// The System series of the same workload.
    pub baseline: &'a Series,
}

fn stat(xs: &[f64], prec: usize, signed: bool) -> String {
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

/// Renders the ratio table (and the ns-added table for `unsampled_pair`).
pub fn render(rows: &[Row<'_>], rounds: usize) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Ratio to the system run of the same round: median [min, max] over {rounds} rounds.\n\
         cpu = process CPU time (user+sys, all threads), wall = wall time; both cover the\n\
         workload only. 'system' = median system CPU time (context only). system/again is\n\
         the same binary as system: its spread is the noise floor of this run.\n\n"
    ));
    out.push_str(&format!(
        "{:<15} {:<13} {:>25}   {:>25}   {:>8}\n",
        "workload", "config", "cpu ratio", "wall ratio", "system"
    ));
    out.push_str(&format!("{}\n", "-".repeat(96)));
    let mut last = "";
    for r in rows {
        if r.workload != last && !last.is_empty() {
            out.push('\n');
        }
        last = r.workload;
        let cpu = r.series.ratios(r.baseline, |s| &s.cpu_ns);
        let wall = r.series.ratios(r.baseline, |s| &s.wall_ns);
        let base: Vec<f64> = r
            .baseline
            .cpu_ns
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        let sys = if base.is_empty() {
            median(&r.baseline.wall_ns)
        } else {
            median(&base)
        };
        out.push_str(&format!(
            "{:<15} {:<13} {}   {}   {:>7.3}s\n",
            r.workload,
            r.config,
            stat(&cpu, 3, false),
            stat(&wall, 3, false),
            sys / 1e9
        ));
    }
    let micro: Vec<_> = rows
        .iter()
        .filter(|r| r.workload == "unsampled_pair")
        .collect();
    if let Some(first) = micro.first() {
        out.push_str(
            "\nunsampled_pair: 64 B alloc+dealloc pair, CPU ns per pair; \
             ns added = minus system in the same round\n\n",
        );
        out.push_str(&format!(
            "{:<13} {:>9}   {:>25}\n",
            "config", "ns/pair", "ns added [min, max]"
        ));
        out.push_str(&format!("{}\n", "-".repeat(51)));
        out.push_str(&format!(
            "{:<13} {:>9.2}   {:>25}\n",
            "system",
            median(&first.baseline.ns_per_op()),
            "-"
        ));
        for r in micro {
            let base = r.baseline.ns_per_op();
            let added: Vec<f64> = r
                .series
                .ns_per_op()
                .iter()
                .zip(&base)
                .map(|(x, b)| x - b)
                .collect();
            out.push_str(&format!(
                "{:<13} {:>9.2}   {}\n",
                r.config,
                median(&r.series.ns_per_op()),
                stat(&added, 2, true)
            ));
        }
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
