//! Where the resident set goes: the breakdown written into every `heap`, `allocs` and
//! `heap_peak` profile (as comments, and in the `debug=1` text's stats section), and the
//! resident-set readings the RSS dump trigger polls.
//!
//! Called by profile writers and the dump thread, never by the allocator (it reads files
//! and allocates). The figures, taken when the profile is written:
//!
//! - RSS: `VmRSS` of `/proc/self/status`; the cgroup's limit and usage where there is one
//!   (`cgroup`);
//! - the sampled in-use heap: the estimate every sampled allocation and free keeps
//!   (`peak`), with one standard error at most `sqrt(in-use × rate)`;
//! - glibc malloc's own figures (`malloc`): bytes in use, free bytes it holds, bytes in
//!   chunks mapped on their own;
//! - heaprof's own memory (`own`): the tables' resident pages, the arena's committed bytes
//!   less the live sampled blocks in it (the program's bytes, counted in the heap);
//! - other: RSS − heap − allocator free − heaprof (thread stacks, code, mapped files, the
//!   allocators' bookkeeping, heaprof's symbolizer caches, and the estimate's error).
//!
//! The parts add up to RSS by construction, since "other" is the rest. "other" can be
//! negative: the sampled heap counts blocks whose pages were never touched (a
//! `Vec::with_capacity` not yet filled, zeroed memory fresh from the kernel), which are not
//! resident.

pub mod cgroup;
pub mod malloc;
pub mod own;

use crate::base::config;

/// The breakdown's figures (bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Breakdown {
    /// `VmRSS` of `/proc/self/status`.
    pub rss: Option<u64>,
    /// The lowest memory limit of the process's cgroup and its ancestors.
    pub cgroup_limit: Option<u64>,
    /// The memory charged to the process's cgroup.
    pub cgroup_usage: Option<u64>,
    /// The sampled in-use heap estimate.
    pub heap_sampled: u64,
    /// The sampling rate the estimate's error is bounded with.
    pub rate: u64,
    /// glibc malloc's figures.
    pub malloc: Option<malloc::MallocInfo>,
    /// heaprof's own memory.
    pub own: own::Own,
}

impl Breakdown {
    /// The figures now.
    pub fn take() -> Breakdown {
        let cg = cgroup::Cgroup::find();
        Breakdown {
            rss: vm_rss(),
            cgroup_limit: cg.as_ref().and_then(|c| c.limit()).map(|(l, _)| l),
            cgroup_usage: cg.as_ref().and_then(|c| c.usage()),
            heap_sampled: crate::alloc::peak::in_use(),
            rate: config::sample_rate() as u64,
            malloc: malloc::read(),
            own: own::read(),
        }
    }

    /// Free bytes the allocator holds (glibc's; 0 when unknown).
    fn allocator_free(&self) -> u64 {
        self.malloc.map_or(0, |m| m.free)
    }

    /// RSS − sampled heap − allocator free − heaprof's own; `None` without an RSS reading.
    pub fn other(&self) -> Option<i64> {
        let rss = self.rss? as i64;
        Some(
            rss - self.heap_sampled as i64 - self.allocator_free() as i64 - self.own.total() as i64,
        )
    }

    /// An upper bound on one standard error of the heap estimate, in percent of it: each
    /// sampled block of `s` bytes adds variance at most `s × rate` (0 at rate 1, where
    /// every allocation is recorded).
    fn heap_error_percent(&self) -> f64 {
        if self.heap_sampled == 0 || self.rate <= 1 {
            return 0.0;
        }
        100.0 * ((self.heap_sampled as f64 * self.rate as f64).sqrt() / self.heap_sampled as f64)
    }

    /// The breakdown as `key: value` pairs (values in bytes, but the summary), for profile
    /// comments and the text format's stats section. Keys start with `heaprof.rss`.
    pub fn lines(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        let mut put = |k: &'static str, x: Option<u64>| {
            if let Some(x) = x {
                v.push((k, x.to_string()));
            }
        };
        put("heaprof.rss", self.rss);
        put("heaprof.rss.cgroup_limit", self.cgroup_limit);
        put("heaprof.rss.cgroup_usage", self.cgroup_usage);
        put("heaprof.rss.heap_sampled", Some(self.heap_sampled));
        put("heaprof.rss.malloc_in_use", self.malloc.map(|m| m.in_use));
        put("heaprof.rss.malloc_free", self.malloc.map(|m| m.free));
        put("heaprof.rss.malloc_mmapped", self.malloc.map(|m| m.mmapped));
        put("heaprof.rss.heaprof", Some(self.own.total()));
        put("heaprof.rss.heaprof_tables", Some(self.own.tables_resident));
        put("heaprof.rss.heaprof_arena", Some(self.own.arena_overhead()));
        put(
            "heaprof.rss.arena_committed",
            Some(self.own.arena_committed),
        );
        put("heaprof.rss.heaprof_large_region", self.own.large_region);
        if let Some(o) = self.other() {
            v.push(("heaprof.rss.other", o.to_string()));
        }
        v.push(("heaprof.rss.summary", self.summary()));
        v
    }

    /// One line for people: `RSS 1.20 GiB: heap 810 MiB (sampled, ±2.5%), allocator free
    /// 290 MiB, heaprof 21.0 MiB, other 80.0 MiB`, then the cgroup's figures if any.
    pub fn summary(&self) -> String {
        let mut s = match self.rss {
            Some(r) => format!("RSS {}:", fmt_bytes(r as i64)),
            None => "RSS unknown:".to_string(),
        };
        s += &format!(
            " heap {} (sampled, ±{:.1}%)",
            fmt_bytes(self.heap_sampled as i64),
            self.heap_error_percent()
        );
        if let Some(m) = self.malloc {
            s += &format!(", allocator free {}", fmt_bytes(m.free as i64));
        }
        s += &format!(", heaprof {}", fmt_bytes(self.own.total() as i64));
        if let Some(o) = self.other() {
            s += &format!(", other {}", fmt_bytes(o));
        }
        if let Some(l) = self.cgroup_limit {
            s += &format!("; cgroup limit {}", fmt_bytes(l as i64));
        }
        if let Some(u) = self.cgroup_usage {
            s += &format!(", cgroup usage {}", fmt_bytes(u as i64));
        }
        s
    }
}

/// `VmRSS` of `/proc/self/status`, in bytes.
pub fn vm_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

/// The `VmRSS:   1234 kB` line of a `/proc/<pid>/status` text, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line["VmRSS:".len()..]
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// The resident set in bytes from `/proc/self/statm` (the same count as `VmRSS`, from a
/// shorter file): what the RSS dump trigger polls.
pub fn statm_rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages.checked_mul(u64::try_from(page).ok()?)
}

/// Bytes for people, three significant digits in binary units: `512 B`, `21.0 MiB`,
/// `1.20 GiB`; negative values keep their sign.
pub fn fmt_bytes(v: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = v.unsigned_abs() as f64;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    let sign = if v < 0 { "-" } else { "" };
    if unit == 0 {
        return format!("{sign}{x} B");
    }
    let n = if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    format!("{sign}{n} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_bytes_for_people() {
        assert_eq!(fmt_bytes(0), "0 B");
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(21 << 20), "21.0 MiB");
        assert_eq!(fmt_bytes(810 << 20), "810 MiB");
        assert_eq!(fmt_bytes(1288490188), "1.20 GiB");
        assert_eq!(fmt_bytes(-(5 << 20)), "-5.00 MiB");
    }

    #[test]
    fn reads_vm_rss_in_bytes() {
        let status = "Name:\tx\nVmHWM:\t  2000 kB\nVmRSS:\t  1234 kB\nRssAnon:\t 1000 kB\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("VmRSS: lots\n"), None);
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        let live = vm_rss().unwrap();
        let statm = statm_rss().unwrap();
        assert!(live > 0 && statm > 0);
    }

    #[test]
    fn the_parts_add_up_to_rss() {
        let b = Breakdown {
            rss: Some(1000 << 20),
            cgroup_limit: Some(2 << 30),
            cgroup_usage: Some(1100 << 20),
            heap_sampled: 810 << 20,
            rate: 512 << 10,
            malloc: Some(malloc::MallocInfo {
                in_use: 820 << 20,
                free: 90 << 20,
                mmapped: 100 << 20,
            }),
            own: own::Own {
                tables_resident: 4 << 20,
                tables_mapped: 28 << 20,
                arena_committed: 18 << 20,
                arena_sampled_live: 2 << 20,
                large_region: None,
            },
        };
        assert_eq!(b.other(), Some(80 << 20));
        assert_eq!(
            b.summary(),
            "RSS 1000 MiB: heap 810 MiB (sampled, ±2.5%), allocator free 90.0 MiB, \
             heaprof 20.0 MiB, other 80.0 MiB; cgroup limit 2.00 GiB, cgroup usage 1.07 GiB"
        );
        let lines = b.lines();
        let get = |k: &str| {
            lines
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("heaprof.rss.other").unwrap(), (80u64 << 20).to_string());
        assert_eq!(
            get("heaprof.rss.heaprof").unwrap(),
            (20u64 << 20).to_string()
        );
        assert_eq!(get("heaprof.rss.heaprof_large_region"), None);
    }
}
