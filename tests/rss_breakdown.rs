//! The RSS breakdown in heap profiles, against known truths: 256 MiB held in written 4 KiB
//! blocks, then half of them freed. The profile's RSS is `/proc/self/status`'s `VmRSS`
//! (read just before and after the write); the sampled heap moves by what was allocated,
//! within sampling error; glibc's in-use plus heaprof's arena move by it too (the sampled
//! blocks live in the arena); freed blocks move from glibc's in-use to its free bytes while
//! RSS stays; and the parts add up to RSS.

mod common;

use std::collections::HashMap;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

const MIB: f64 = (1u64 << 20) as f64;
const RATE: usize = 64 << 10;
const BLOCK: usize = 4096;
const BLOCKS: usize = 65536; // 256 MiB

fn vm_rss() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: f64 = line[6..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024.0
}

/// The breakdown of a heap profile written now, with VmRSS just before and after.
struct Taken {
    c: HashMap<String, String>,
    rss_before: f64,
    rss_after: f64,
}

impl Taken {
    fn now() -> Taken {
        let rss_before = vm_rss();
        let mut buf = Vec::new();
        heaprof::write_heap_profile(&mut buf).unwrap();
        let rss_after = vm_rss();
        Taken {
            c: common::comments(&common::decode(&buf)),
            rss_before,
            rss_after,
        }
    }

    fn get(&self, key: &str) -> f64 {
        self.c
            .get(key)
            .unwrap_or_else(|| panic!("no {key}: {:#?}", self.c))
            .parse()
            .unwrap()
    }

    /// Checks what holds in every breakdown: RSS is VmRSS, and the parts add up to it.
    fn check(&self) {
        let rss = self.get("heaprof.rss");
        let slack = 4.0 * MIB;
        assert!(
            rss >= self.rss_before.min(self.rss_after) - slack
                && rss <= self.rss_before.max(self.rss_after) + slack,
            "heaprof.rss {rss} vs VmRSS {} .. {}",
            self.rss_before,
            self.rss_after
        );
        let parts = self.get("heaprof.rss.heap_sampled")
            + self.get("heaprof.rss.malloc_free")
            + self.get("heaprof.rss.heaprof")
            + self.get("heaprof.rss.other");
        assert_eq!(parts, rss, "heap + allocator free + heaprof + other = RSS");
        assert_eq!(
            self.get("heaprof.rss.heaprof"),
            self.get("heaprof.rss.heaprof_tables") + self.get("heaprof.rss.heaprof_arena")
        );
        let summary = &self.c["heaprof.rss.summary"];
        assert!(
            summary.starts_with("RSS ") && summary.contains("(sampled, ±"),
            "{summary}"
        );
    }

    fn delta(&self, earlier: &Taken, key: &str) -> f64 {
        self.get(key) - earlier.get(key)
    }
}

#[inline(never)]
fn hold(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| vec![i as u8 | 1; BLOCK]).collect()
}

#[test]
fn breakdown_matches_what_was_allocated_and_vm_rss() {
    heaprof::set_heap_profile_rate(RATE);
    // The first profile with samples loads the symbolizer's debug info (tens of MiB in a
    // debug build, in glibc's in-use and in "other"): done before the measurements, with
    // the same stacks.
    let warm = hold(BLOCKS / 64);
    Taken::now();
    drop(warm);
    let t0 = Taken::now();
    t0.check();

    let mut blocks = hold(BLOCKS);
    let t1 = Taken::now();
    t1.check();
    let truth = (BLOCK * BLOCKS) as f64;
    let heap = t1.delta(&t0, "heaprof.rss.heap_sampled");
    let tol = 4.0 * (truth * RATE as f64).sqrt() + MIB;
    eprintln!("held {truth}: heap estimate +{heap} (tolerance {tol:.0})");
    assert!((heap - truth).abs() <= tol, "heap +{heap}, truth {truth}");
    // Unsampled blocks are in glibc's in-use (16 B of chunk header each), sampled ones in
    // the arena (slots rounded up to their class, committed 2 MiB at a time).
    let malloc = t1.delta(&t0, "heaprof.rss.malloc_in_use");
    let arena = t1.delta(&t0, "heaprof.rss.arena_committed");
    eprintln!("malloc in use +{malloc}, arena +{arena}");
    assert!(
        malloc + arena >= 0.99 * truth && malloc + arena <= 1.10 * truth,
        "malloc +{malloc} arena +{arena}"
    );
    assert!(arena > 0.0 && arena < 0.2 * truth, "arena +{arena}");
    let rss = t1.delta(&t0, "heaprof.rss");
    let other = t1.delta(&t0, "heaprof.rss.other");
    eprintln!("RSS +{rss}, other {other:+}");
    assert!(rss >= 0.97 * truth && rss <= 1.15 * truth, "RSS +{rss}");
    // What the test added is accounted for: "other" moves by the heap estimate's error and
    // glibc's chunk headers (16 B per 4 KiB block), not by the 256 MiB.
    assert!(other.abs() <= tol + 0.02 * truth, "other moved by {other}");

    // Free every other block: neighbours stay in use, so glibc keeps the freed chunks.
    let mut i = 0;
    blocks.retain(|_| {
        i += 1;
        i % 2 == 0
    });
    let t2 = Taken::now();
    t2.check();
    let freed_in_use = -t2.delta(&t1, "heaprof.rss.malloc_in_use");
    let free = t2.delta(&t1, "heaprof.rss.malloc_free");
    eprintln!("freed half: malloc in use -{freed_in_use}, malloc free +{free}");
    assert!(
        freed_in_use >= 0.4 * truth && freed_in_use <= 0.55 * truth,
        "{freed_in_use}"
    );
    assert!(
        (free - freed_in_use).abs() <= 0.02 * freed_in_use + MIB,
        "the freed chunks are glibc's free bytes now: free +{free}, in use -{freed_in_use}"
    );
    let heap = -t2.delta(&t1, "heaprof.rss.heap_sampled");
    assert!(
        (heap - truth / 2.0).abs() <= tol,
        "heap -{heap}, truth {}",
        truth / 2.0
    );
    let rss = t2.delta(&t1, "heaprof.rss");
    assert!(rss.abs() <= 0.05 * truth, "RSS moved by {rss}");
    drop(blocks);

    // The other heap views and the text format carry it too.
    for name in ["allocs", "heap_peak"] {
        let mut buf = Vec::new();
        heaprof::lookup(name)
            .unwrap()
            .write_to(&mut buf, 0)
            .unwrap();
        let c = common::comments(&common::decode(&buf));
        assert!(c.contains_key("heaprof.rss.summary"), "{name}: {c:#?}");
    }
    let mut text = Vec::new();
    heaprof::lookup("heap")
        .unwrap()
        .write_to(&mut text, 1)
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("\n# heaprof.rss = "), "{text}");
    assert!(text.contains("\n# heaprof.rss.summary = RSS "));
}
