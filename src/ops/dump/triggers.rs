//! Automatic dumps: when the sampled in-use heap has grown by a step since the last growth
//! dump (`HEAPROF_DUMP_ON_GROWTH`), and when the resident set crosses a threshold
//! (`HEAPROF_DUMP_ON_RSS`); at most one per minimum interval (`HEAPROF_DUMP_MIN_INTERVAL`).
//!
//! The decisions ([`Triggers::observe`]) run on the dump thread, which feeds them the
//! in-use estimate and RSS readings; they are pure state (no clock, no I/O), so they are
//! tested with made-up readings. What reaches the dump thread:
//! - growth: the sampled path's in-use total crosses a level the dump thread armed in
//!   `peak` (one compare per sampled allocation) and writes a byte to the wake-up pipe;
//! - RSS: the dump thread reads `/proc/self/statm` every [`RSS_POLL`] while the RSS trigger
//!   is on. A crossing is seen within that time; a rise and fall back within it can be
//!   missed, and so can a rise to an OOM kill within it.
//!
//! Rules:
//! - growth: fires when in-use ≥ level + step; the level becomes the in-use seen then, so a
//!   jump of several steps at once fires once. The level starts at 0.
//! - RSS: fires once when RSS ≥ threshold; armed again when RSS falls below 90% of it.
//! - minimum interval: a trigger that fires less than the interval after the last automatic
//!   dump started is held back (counted); the held-back triggers are served by one dump when
//!   the interval has passed, reflecting the state then.
//!
//! Value parsing for the environment variables is here too, as pure functions of the
//! value's text.

use std::time::{Duration, Instant};

/// How often the dump thread reads the resident set while the RSS trigger is on.
pub const RSS_POLL: Duration = Duration::from_millis(100);
/// The default minimum interval between automatic dumps.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// The RSS trigger is armed again below this percentage of its threshold.
pub const REARM_PERCENT: u64 = 90;

/// When to dump on RSS.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RssThreshold {
    /// At this many bytes resident.
    Bytes(u64),
    /// At this percentage (0 < p ≤ 100) of the memory the process may have: its cgroup's
    /// memory limit (the lowest along the hierarchy; cgroup v2 `memory.max` or v1
    /// `memory.limit_in_bytes`), or physical memory when there is no limit or it is larger.
    /// Resolved to bytes when dumps start.
    PercentOfLimit(f64),
}

/// A size: digits with an optional `k`/`KiB`, `m`/`MiB` or `g`/`GiB` suffix (the syntax
/// of `HEAPROF_RATE`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    crate::base::config::parse_bytes(s.as_bytes())
        .map(|n| n as u64)
        .ok_or_else(|| "not a size (digits with an optional k/KiB, m/MiB or g/GiB suffix)".into())
}

/// `HEAPROF_DUMP_ON_GROWTH`: a size above 0.
pub fn parse_growth(s: &str) -> Result<u64, String> {
    match parse_size(s)? {
        0 => Err("the growth step must be above 0".into()),
        n => Ok(n),
    }
}

/// `HEAPROF_DUMP_ON_RSS`: a size above 0, or a percentage `P%` with 0 < P ≤ 100.
pub fn parse_rss(s: &str) -> Result<RssThreshold, String> {
    let Some(p) = s.strip_suffix('%') else {
        return match parse_size(s)? {
            0 => Err("the RSS threshold must be above 0".into()),
            n => Ok(RssThreshold::Bytes(n)),
        };
    };
    match parse_decimal(p) {
        Some(v) if v > 0.0 && v <= 100.0 => Ok(RssThreshold::PercentOfLimit(v)),
        _ => Err("a percentage must be a number above 0 and at most 100, like 90%".into()),
    }
}

/// `HEAPROF_DUMP_MIN_INTERVAL`: seconds, `0` (no limit) or more, decimals allowed.
pub fn parse_min_interval(s: &str) -> Result<Duration, String> {
    parse_decimal(s)
        .filter(|&v| v <= 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| "not a number of seconds (like 10, 0.5 or 0)".into())
}

/// Digits with an optional fraction (`12`, `0.5`): no sign, no exponent.
fn parse_decimal(s: &str) -> Option<f64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    (digits(int) && digits(frac)).then(|| s.parse().ok())?
}

/// The RSS threshold in bytes, and how it was derived (for the dump lines). `limit` is the
/// cgroup's (bytes, file), `physical` the machine's memory.
pub fn resolve_rss(
    t: RssThreshold,
    limit: Option<(u64, String)>,
    physical: Option<u64>,
) -> Result<(u64, String), String> {
    let p = match t {
        RssThreshold::Bytes(b) => return Ok((b, crate::profiles::rss::fmt_bytes(b as i64))),
        RssThreshold::PercentOfLimit(p) => p,
    };
    let (base, what) = match (limit, physical) {
        (Some((l, file)), Some(m)) if l > m => (m, format!("physical memory (below {file})")),
        (Some((l, file)), _) => (l, file),
        (None, Some(m)) => (m, "physical memory (no cgroup limit)".into()),
        (None, None) => {
            return Err("no cgroup memory limit and physical memory unknown".into());
        }
    };
    let bytes = (base as f64 * p / 100.0) as u64;
    Ok((
        bytes,
        format!(
            "{} = {p}% of {} in {what}",
            crate::profiles::rss::fmt_bytes(bytes as i64),
            crate::profiles::rss::fmt_bytes(base as i64)
        ),
    ))
}

/// What made an automatic dump.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reason {
    /// The in-use estimate reached `in_use`, a step over `previous` (the last growth level).
    pub growth: Option<(u64, u64)>,
    /// RSS reached `rss`, at or above `threshold`.
    pub rss: Option<(u64, u64)>,
}

impl Reason {
    fn any(&self) -> bool {
        self.growth.is_some() || self.rss.is_some()
    }

    fn count(&self) -> u64 {
        u64::from(self.growth.is_some()) + u64::from(self.rss.is_some())
    }

    /// `self` updated with what fired later.
    fn merge(self, later: Reason) -> Reason {
        Reason {
            growth: later.growth.or(self.growth),
            rss: later.rss.or(self.rss),
        }
    }
}

/// An automatic dump to write now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fire {
    /// What fired (for a dump held back until now, what fired meanwhile).
    pub reason: Reason,
    /// This dump was held back and is written at the end of the interval.
    pub deferred: bool,
}

/// The automatic triggers' state, owned by the dump thread.
#[derive(Debug)]
pub struct Triggers {
    step: Option<u64>,
    level: u64,
    rss_threshold: Option<u64>,
    rss_armed: bool,
    min_interval: Duration,
    last_dump: Option<Instant>,
    pending: Option<Reason>,
    held_back_total: u64,
}

impl Triggers {
    /// Growth dumps every `step` bytes (if any), RSS dumps at `rss_threshold` bytes (if
    /// any), at most one per `min_interval`.
    pub fn new(step: Option<u64>, rss_threshold: Option<u64>, min_interval: Duration) -> Self {
        Triggers {
            step,
            level: 0,
            rss_threshold,
            rss_armed: true,
            min_interval,
            last_dump: None,
            pending: None,
            held_back_total: 0,
        }
    }

    /// Whether the dump thread must read RSS.
    pub fn polls_rss(&self) -> bool {
        self.rss_threshold.is_some()
    }

    /// The in-use level at which the sampled path should wake the dump thread.
    pub fn growth_wake_at(&self) -> Option<u64> {
        self.step.map(|s| self.level.saturating_add(s))
    }

    /// Triggers held back by the minimum interval so far.
    pub fn held_back_total(&self) -> u64 {
        self.held_back_total
    }

    /// How long the dump thread may sleep before it must look again (`None`: until woken).
    pub fn next_check(&self, now: Instant) -> Option<Duration> {
        let poll = self.polls_rss().then_some(RSS_POLL);
        let deferred = self.pending.map(|_| self.until_due(now));
        match (poll, deferred) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn until_due(&self, now: Instant) -> Duration {
        self.last_dump.map_or(Duration::ZERO, |l| {
            (l + self.min_interval).saturating_duration_since(now)
        })
    }

    /// Feeds a reading: the in-use estimate, and RSS when it was read. Returns the dump to
    /// write now, if any; a trigger within the minimum interval is held back instead
    /// (counted in [`Triggers::held_back_total`]) and served by a later [`Fire`].
    pub fn observe(&mut self, now: Instant, in_use: u64, rss: Option<u64>) -> Option<Fire> {
        let fired = self.fired(in_use, rss);
        let due = self.until_due(now).is_zero();
        if fired.any() && !due {
            self.held_back_total += fired.count();
            self.pending = Some(self.pending.unwrap_or_default().merge(fired));
            return None;
        }
        let (reason, deferred) = match (fired.any(), self.pending) {
            (true, p) => (p.unwrap_or_default().merge(fired), false),
            (false, Some(p)) if due => (p, true),
            _ => return None,
        };
        let fire = Fire { reason, deferred };
        self.last_dump = Some(now);
        self.pending = None;
        Some(fire)
    }

    /// Which triggers fire on this reading (and the state they leave).
    fn fired(&mut self, in_use: u64, rss: Option<u64>) -> Reason {
        let mut r = Reason::default();
        if let Some(at) = self.growth_wake_at() {
            if in_use >= at {
                r.growth = Some((in_use, self.level));
                self.level = in_use;
            }
        }
        if let (Some(t), Some(rss)) = (self.rss_threshold, rss) {
            if self.rss_armed && rss >= t {
                r.rss = Some((rss, t));
                self.rss_armed = false;
            } else if !self.rss_armed && (rss as u128) * 100 < (t as u128) * REARM_PERCENT as u128 {
                self.rss_armed = true;
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn parses_values_and_says_what_is_wrong() {
        assert_eq!(parse_growth("256MiB"), Ok(256 * MIB));
        assert_eq!(parse_growth("1g"), Ok(1024 * MIB));
        assert!(parse_growth("0").unwrap_err().contains("above 0"));
        assert!(parse_growth("lots").unwrap_err().contains("not a size"));
        assert_eq!(parse_rss("1GiB"), Ok(RssThreshold::Bytes(1024 * MIB)));
        assert_eq!(parse_rss("90%"), Ok(RssThreshold::PercentOfLimit(90.0)));
        assert_eq!(parse_rss("12.5%"), Ok(RssThreshold::PercentOfLimit(12.5)));
        for bad in ["0%", "101%", "-5%", "%", "1e2%", "x%", "0"] {
            assert!(parse_rss(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_min_interval("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_min_interval("0"), Ok(Duration::ZERO));
        assert_eq!(parse_min_interval("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["", "-1", "ten", "1.", ".5", "1e3", "inf", "99999999999"] {
            assert!(parse_min_interval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolves_percentages_against_the_cgroup_or_physical_memory() {
        let lim = |b: u64| Some((b, "/cg/memory.max".to_string()));
        assert_eq!(
            resolve_rss(RssThreshold::Bytes(5), None, None).unwrap().0,
            5
        );
        let (b, what) = resolve_rss(
            RssThreshold::PercentOfLimit(40.0),
            lim(1000 * MIB),
            Some(8 << 30),
        )
        .unwrap();
        assert_eq!(b, 400 * MIB);
        assert!(what.contains("40% of 1000 MiB in /cg/memory.max"), "{what}");
        let (b, what) = resolve_rss(
            RssThreshold::PercentOfLimit(50.0),
            lim(64 << 30),
            Some(8 << 30),
        )
        .unwrap();
        assert_eq!(b, 4 << 30);
        assert!(what.contains("physical memory"), "{what}");
        assert_eq!(
            resolve_rss(RssThreshold::PercentOfLimit(50.0), None, Some(8 << 30))
                .unwrap()
                .0,
            4 << 30
        );
        assert!(resolve_rss(RssThreshold::PercentOfLimit(50.0), None, None).is_err());
    }

    #[test]
    fn growth_fires_once_per_step_and_once_per_spike() {
        let t0 = Instant::now();
        let mut t = Triggers::new(Some(100), None, Duration::ZERO);
        assert_eq!(t.growth_wake_at(), Some(100));
        assert_eq!(t.observe(t0, 99, None), None);
        let f = t.observe(t0, 130, None).unwrap();
        assert_eq!(f.reason.growth, Some((130, 0)));
        assert_eq!(t.growth_wake_at(), Some(230));
        assert_eq!(t.observe(t0, 229, None), None);
        assert_eq!(t.observe(t0, 50, None), None, "shrinking fires nothing");
        // A spike of five steps at once: one dump, and the level moves to it.
        let f = t.observe(t0, 700, None).unwrap();
        assert_eq!(f.reason.growth, Some((700, 130)));
        assert_eq!(t.growth_wake_at(), Some(800));
        assert_eq!(t.next_check(t0), None, "nothing to poll, nothing pending");
    }

    #[test]
    fn rss_fires_once_until_it_falls_below_ninety_percent() {
        let t0 = Instant::now();
        let mut t = Triggers::new(None, Some(1000), Duration::ZERO);
        assert_eq!(t.next_check(t0), Some(RSS_POLL));
        assert_eq!(t.observe(t0, 0, Some(999)), None);
        let f = t.observe(t0, 0, Some(1000)).unwrap();
        assert_eq!(f.reason.rss, Some((1000, 1000)));
        for rss in [5000, 1000, 950, 900] {
            assert_eq!(t.observe(t0, 0, Some(rss)), None, "{rss}: not re-armed yet");
        }
        assert_eq!(
            t.observe(t0, 0, Some(899)),
            None,
            "re-armed, below threshold"
        );
        assert_eq!(t.observe(t0, 0, None), None, "no reading, no decision");
        assert!(t.observe(t0, 0, Some(1200)).is_some(), "crossing again");
    }

    #[test]
    fn the_minimum_interval_holds_back_counts_and_serves_later() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut t = Triggers::new(Some(100), Some(10_000), 10 * s);
        assert!(t.observe(t0, 100, Some(0)).is_some());
        // Within the interval: three growth steps and an RSS crossing are held back.
        assert_eq!(t.observe(t0 + s, 200, Some(0)), None);
        assert_eq!(t.observe(t0 + 2 * s, 300, Some(0)), None);
        assert_eq!(t.next_check(t0 + 2 * s), Some(RSS_POLL));
        assert_eq!(t.observe(t0 + 3 * s, 400, Some(20_000)), None);
        assert_eq!(t.observe(t0 + 9 * s, 450, Some(20_000)), None);
        // The interval has passed: one dump serves all four.
        let f = t.observe(t0 + 10 * s, 450, Some(20_000)).unwrap();
        assert_eq!(
            f,
            Fire {
                reason: Reason {
                    growth: Some((400, 300)),
                    rss: Some((20_000, 10_000))
                },
                deferred: true,
            }
        );
        assert_eq!(t.observe(t0 + 11 * s, 450, Some(20_000)), None);
        assert_eq!(t.held_back_total(), 4);
        // Without RSS polling the thread sleeps exactly until a pending dump is due.
        let mut g = Triggers::new(Some(100), None, 10 * s);
        assert!(g.observe(t0, 100, None).is_some());
        assert_eq!(g.observe(t0 + 4 * s, 250, None), None);
        assert_eq!(g.next_check(t0 + 4 * s), Some(6 * s));
        assert!(g.observe(t0 + 10 * s, 250, None).unwrap().deferred);
        // Zero interval: never held back.
        let mut z = Triggers::new(Some(100), None, Duration::ZERO);
        for k in 1..=5 {
            assert!(!z.observe(t0, k * 100, None).unwrap().deferred);
        }
        assert_eq!(z.held_back_total(), 0);
    }
}
