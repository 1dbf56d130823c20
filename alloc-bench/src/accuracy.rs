//! Known-truth accuracy workload and the readers that turn each profiler's
//! output back into per-site byte estimates.
//!
//! Called by worker binaries in `--accuracy` mode (never timed). Two sites
//! with exactly known truth run under the worker's allocator:
//! * [`keep_site`] allocates `KEEP_N` blocks of `KEEP_SIZE` bytes and keeps
//!   them live until the estimate is taken (in-use = allocated = N × size);
//! * [`churn_site`] allocates and immediately frees `CHURN_N` blocks of
//!   `CHURN_SIZE` bytes (in-use 0, allocated = N × size).
//!
//! Profiles are read back in the same process, so raw addresses (jemalloc's
//! dump) can be resolved with heaprof's in-process [`Symbolizer`]. A sample
//! belongs to a site if any frame of its stack resolves to the site's
//! function name. This module allocates freely: it must never run inside an
//! allocator.

use heaprof::__private::{proto, Symbolizer};
use prost::Message;
use std::hint::black_box;
use std::io::Read;

/// Bytes per kept block.
pub const KEEP_SIZE: usize = 4000;
/// Kept blocks at scale 1 (64 000 × 4000 B ≈ 244 MiB live).
pub const KEEP_N: usize = 64_000;
/// Bytes per churned block.
pub const CHURN_SIZE: usize = 256;
/// Churned blocks at scale 1 (2M × 256 B = 488 MiB allocated, 0 in use).
pub const CHURN_N: usize = 2_000_000;

/// Function-name fragments identifying the two sites in symbolized stacks.
pub const KEEP_NAME: &str = "accuracy::keep_site";
/// See [`KEEP_NAME`].
pub const CHURN_NAME: &str = "accuracy::churn_site";

/// Allocates `n` live blocks of `size` bytes (each touched once) into
/// `out`, which the caller has sized (so `out`'s own buffer is not
/// attributed to this site).
#[inline(never)]
pub fn keep_site(out: &mut Vec<Vec<u8>>, n: usize, size: usize) {
    assert!(out.capacity() - out.len() >= n, "caller must reserve");
    for i in 0..n {
        let mut v: Vec<u8> = Vec::with_capacity(size);
        v.push(i as u8);
        out.push(black_box(v));
    }
}

/// Allocates and frees `n` blocks of `size` bytes.
#[inline(never)]
pub fn churn_site(n: usize, size: usize) -> u64 {
    let mut sum = 0u64;
    for i in 0..n {
        let mut v: Vec<u8> = Vec::with_capacity(size);
        v.push(i as u8);
        sum = sum.wrapping_add(black_box(&v)[0] as u64);
    }
    sum
}

/// What the profiler says about the two sites (bytes). `None` = the
/// profiler's output does not carry that quantity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Estimate {
    /// In-use bytes attributed to [`keep_site`].
    pub keep_inuse: Option<f64>,
    /// Allocated bytes attributed to [`keep_site`].
    pub keep_alloc: Option<f64>,
    /// In-use bytes attributed to [`churn_site`] (truth 0).
    pub churn_inuse: Option<f64>,
    /// Allocated bytes attributed to [`churn_site`].
    pub churn_alloc: Option<f64>,
    /// Total in-use bytes of the whole profile.
    pub total_inuse: Option<f64>,
    /// Free-form note (what could not be attributed, sample counts ...).
    pub note: String,
}

fn f(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.0}"))
}

fn pf(s: &str) -> Result<Option<f64>, String> {
    if s == "-" {
        Ok(None)
    } else {
        s.parse().map(Some).map_err(|_| format!("bad number {s:?}"))
    }
}

/// Prefix of the accuracy result line.
pub const ACC_TAG: &str = "alloc-bench-accuracy v1";

impl Estimate {
    /// One-line form printed by workers (`note` last, may contain spaces).
    pub fn format(&self, config: &str, n_keep: usize, n_churn: usize) -> String {
        format!(
            "{ACC_TAG} config={config} keep_n={n_keep} churn_n={n_churn} keep_inuse={} keep_alloc={} churn_inuse={} churn_alloc={} total_inuse={} note={}",
            f(self.keep_inuse),
            f(self.keep_alloc),
            f(self.churn_inuse),
            f(self.churn_alloc),
            f(self.total_inuse),
            self.note.replace('\n', " ")
        )
    }

    /// Parses [`Estimate::format`] output: (config, keep_n, churn_n, estimate).
    pub fn parse(stdout: &str) -> Result<(String, usize, usize, Estimate), String> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(ACC_TAG))
            .ok_or_else(|| format!("no accuracy line in {stdout:?}"))?;
        let rest = &line[ACC_TAG.len()..];
        let (fields, note) = rest.split_once(" note=").unwrap_or((rest, ""));
        let mut e = Estimate {
            note: note.to_string(),
            ..Default::default()
        };
        let (mut cfg, mut kn, mut cn) = (String::new(), 0, 0);
        for kv in fields.split_whitespace() {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("bad field {kv:?}"))?;
            match k {
                "config" => cfg = v.to_string(),
                "keep_n" => kn = v.parse().map_err(|_| format!("bad keep_n {v:?}"))?,
                "churn_n" => cn = v.parse().map_err(|_| format!("bad churn_n {v:?}"))?,
                "keep_inuse" => e.keep_inuse = pf(v)?,
                "keep_alloc" => e.keep_alloc = pf(v)?,
                "churn_inuse" => e.churn_inuse = pf(v)?,
                "churn_alloc" => e.churn_alloc = pf(v)?,
                "total_inuse" => e.total_inuse = pf(v)?,
                _ => {}
            }
        }
        Ok((cfg, kn, cn, e))
    }
}

/// Which site (if any) a symbolized stack belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Site {
    Keep,
    Churn,
    Other,
}

fn classify_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Site {
    for n in names {
        if n.contains(KEEP_NAME) {
            return Site::Keep;
        }
        if n.contains(CHURN_NAME) {
            return Site::Churn;
        }
    }
    Site::Other
}

/// Resolves return addresses (leaf first; `leaf_is_pc` = frame 0 is a PC,
/// not a return address) to a site.
fn classify_addrs(sym: &mut Symbolizer, addrs: &[u64], leaf_is_pc: bool) -> Site {
    let mut names = Vec::new();
    for (i, &a) in addrs.iter().enumerate() {
        let pc = if i == 0 && leaf_is_pc {
            a
        } else {
            a.saturating_sub(1)
        };
        for fr in sym.resolve(pc as usize) {
            names.push(fr.name.clone());
        }
    }
    classify_names(names.iter().map(String::as_str))
}

/// Decodes a (possibly gzipped) pprof protobuf.
pub fn decode_pprof(bytes: &[u8]) -> Result<proto::Profile, String> {
    let mut raw = Vec::new();
    let body: &[u8] = if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .map_err(|e| format!("gunzip: {e}"))?;
        &raw
    } else {
        bytes
    };
    proto::Profile::decode(body).map_err(|e| format!("not a pprof protobuf: {e}"))
}

/// Per-site estimate from a pprof heap profile with `inuse_space` and/or
/// `alloc_space` sample types (heaprof, pprof-alloc, mimalloc-pprof all use
/// these names; values are already scaled by the writer). Locations without
/// function names are resolved in-process from their addresses.
pub fn estimate_from_pprof(bytes: &[u8]) -> Result<Estimate, String> {
    let p = decode_pprof(bytes)?;
    let s = |i: i64| p.string_table.get(i as usize).map_or("", String::as_str);
    let idx = |name: &str| p.sample_type.iter().position(|t| s(t.r#type) == name);
    let (iu, ia) = (idx("inuse_space"), idx("alloc_space"));
    if iu.is_none() && ia.is_none() {
        return Err("profile has neither inuse_space nor alloc_space".into());
    }
    let funcs: std::collections::HashMap<u64, &str> =
        p.function.iter().map(|f| (f.id, s(f.name))).collect();
    let locs: std::collections::HashMap<u64, &proto::Location> =
        p.location.iter().map(|l| (l.id, l)).collect();
    let mut sym = Symbolizer::new();
    let mut e = Estimate::default();
    let zero = |has: bool| if has { Some(0.0) } else { None };
    e.keep_inuse = zero(iu.is_some());
    e.churn_inuse = zero(iu.is_some());
    e.total_inuse = zero(iu.is_some());
    e.keep_alloc = zero(ia.is_some());
    e.churn_alloc = zero(ia.is_some());
    let mut unresolved = 0usize;
    let max_depth = p
        .sample
        .iter()
        .map(|s| s.location_id.len())
        .max()
        .unwrap_or(0);
    for smp in &p.sample {
        let mut names: Vec<String> = Vec::new();
        let mut addrs = Vec::new();
        for id in &smp.location_id {
            let Some(l) = locs.get(id) else { continue };
            if l.line.is_empty() {
                addrs.push(l.address);
            } else {
                for ln in &l.line {
                    names.push(
                        funcs
                            .get(&ln.function_id)
                            .copied()
                            .unwrap_or("")
                            .to_string(),
                    );
                }
            }
        }
        let mut site = classify_names(names.iter().map(String::as_str));
        if site == Site::Other && !addrs.is_empty() {
            // pprof locations hold PCs already adjusted or return addresses;
            // resolving addr-1 is right for return addresses and harmless
            // (same function) for the leaf in practice.
            site = classify_addrs(&mut sym, &addrs, false);
            if names.is_empty() && site == Site::Other {
                unresolved += 1;
            }
        }
        let v = |i: Option<usize>| i.and_then(|i| smp.value.get(i)).map(|&x| x as f64);
        let (u, a) = (v(iu), v(ia));
        let add = |slot: &mut Option<f64>, x: Option<f64>| {
            if let (Some(s), Some(x)) = (slot.as_mut(), x) {
                *s += x
            }
        };
        add(&mut e.total_inuse, u);
        match site {
            Site::Keep => {
                add(&mut e.keep_inuse, u);
                add(&mut e.keep_alloc, a);
            }
            Site::Churn => {
                add(&mut e.churn_inuse, u);
                add(&mut e.churn_alloc, a);
            }
            Site::Other => {}
        }
    }
    e.note = format!(
        "{} stack records, deepest {} locations",
        p.sample.len(),
        max_depth
    );
    // An all-zero column is "not recorded" (e.g. mimalloc-pprof's
    // alloc_space without its accum mode), not an estimate of zero.
    let col_zero = |i: Option<usize>| {
        i.is_some_and(|i| {
            p.sample
                .iter()
                .all(|s| s.value.get(i).is_none_or(|&v| v == 0))
        })
    };
    if col_zero(ia) {
        (e.keep_alloc, e.churn_alloc) = (None, None);
        e.note.push_str(", alloc_space all zero (not recorded)");
    }
    if max_depth == 0 && !p.sample.is_empty() {
        e.note.push_str(", empty stacks: nothing attributable");
        (e.keep_inuse, e.churn_inuse, e.keep_alloc, e.churn_alloc) = (None, None, None, None);
    }
    if unresolved > 0 {
        e.note
            .push_str(&format!(", {unresolved} unattributed address-only stacks"));
    }
    Ok(e)
}

/// One stack record of a jemalloc `heap_v2` dump.
#[derive(Debug, Clone, PartialEq)]
pub struct JeRecord {
    /// Return addresses, leaf first.
    pub addrs: Vec<u64>,
    /// `t*:` current objects and bytes, accumulated objects and bytes (raw).
    pub cur: (u64, u64),
    /// Accumulated (needs `prof_accum:true`, else 0).
    pub accum: (u64, u64),
}

/// Parses a jemalloc `heap_v2/<period>` dump: (sample period, records).
pub fn parse_jemalloc_dump(text: &str) -> Result<(u64, Vec<JeRecord>), String> {
    let mut lines = text.lines();
    let head = lines.next().ok_or("empty jemalloc dump")?;
    let period: u64 = head
        .strip_prefix("heap_v2/")
        .ok_or_else(|| format!("not a heap_v2 dump: {head:?}"))?
        .trim()
        .parse()
        .map_err(|_| format!("bad period in {head:?}"))?;
    // "t*: 13: 6688 [0: 0]" -> ((13, 6688), (0, 0))
    type Pair = (u64, u64);
    let counts = |l: &str| -> Result<(Pair, Pair), String> {
        let bad = || format!("bad counts line {l:?}");
        let rest = l.trim().strip_prefix("t*:").ok_or_else(bad)?;
        let nums: Vec<u64> = rest
            .split(|c: char| !c.is_ascii_digit())
            .filter(|x| !x.is_empty())
            .map(|x| x.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        if nums.len() != 4 {
            return Err(bad());
        }
        Ok(((nums[0], nums[1]), (nums[2], nums[3])))
    };
    let mut recs = Vec::new();
    let mut cur: Option<Vec<u64>> = None;
    for l in lines {
        if l.starts_with("MAPPED_LIBRARIES") {
            break;
        }
        if let Some(a) = l.strip_prefix('@') {
            let addrs = a
                .split_whitespace()
                .map(|x| {
                    u64::from_str_radix(x.trim_start_matches("0x"), 16)
                        .map_err(|_| format!("bad address {x:?}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            cur = Some(addrs);
        } else if l.trim_start().starts_with("t*:") {
            if let Some(addrs) = cur.take() {
                let (c, a) = counts(l)?;
                recs.push(JeRecord {
                    addrs,
                    cur: c,
                    accum: a,
                });
            }
        }
    }
    Ok((period, recs))
}

/// jeprof's unbiasing of one (count, bytes) pair for sample period `p`
/// (jemalloc ≥ 5.3 pre-adjusts dumped values so that this formula yields
/// its internally unbiased result).
pub fn jeprof_unbias(count: u64, bytes: u64, p: u64) -> f64 {
    if count == 0 || bytes == 0 || p <= 1 {
        return bytes as f64;
    }
    let ratio = (bytes as f64 / count as f64) / p as f64;
    bytes as f64 / (1.0 - (-ratio).exp())
}

/// Per-site estimate from a jemalloc dump, symbolized in this process.
pub fn estimate_from_jemalloc(text: &str) -> Result<Estimate, String> {
    let (period, recs) = parse_jemalloc_dump(text)?;
    let mut sym = Symbolizer::new();
    let mut e = Estimate {
        keep_inuse: Some(0.0),
        churn_inuse: Some(0.0),
        total_inuse: Some(0.0),
        ..Default::default()
    };
    let accum = recs.iter().any(|r| r.accum.1 > 0);
    if accum {
        e.keep_alloc = Some(0.0);
        e.churn_alloc = Some(0.0);
    }
    for r in &recs {
        let site = classify_addrs(&mut sym, &r.addrs, false);
        let u = jeprof_unbias(r.cur.0, r.cur.1, period);
        let a = jeprof_unbias(r.accum.0, r.accum.1, period);
        *e.total_inuse.as_mut().expect("set") += u;
        let (iu, ia) = match site {
            Site::Keep => (&mut e.keep_inuse, &mut e.keep_alloc),
            Site::Churn => (&mut e.churn_inuse, &mut e.churn_alloc),
            Site::Other => continue,
        };
        *iu.as_mut().expect("set") += u;
        if let Some(x) = ia.as_mut() {
            *x += a;
        }
    }
    e.note = format!(
        "heap_v2/{period}, {} stacks{}",
        recs.len(),
        if accum { "" } else { ", no prof_accum" }
    );
    Ok(e)
}

/// Runs both sites at `scale`, calls `estimate` while the kept blocks are
/// still live, prints the accuracy line.
pub fn run(config: &str, scale: f64, estimate: fn() -> Result<Estimate, String>) {
    let n = |b: usize| ((b as f64 * scale).round() as usize).max(1);
    let (kn, cn) = (n(KEEP_N), n(CHURN_N));
    let mut kept = Vec::with_capacity(kn);
    keep_site(&mut kept, kn, KEEP_SIZE);
    black_box(churn_site(cn, CHURN_SIZE));
    let e = match estimate() {
        Ok(e) => e,
        Err(msg) => Estimate {
            note: format!("error: {msg}"),
            ..Default::default()
        },
    };
    drop(black_box(kept));
    println!("{}", e.format(config, kn, cn));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jemalloc_dump_parses() {
        let t = "heap_v2/524288\n  t*: 3: 300 [0: 0]\n  t0: 3: 300 [0: 0]\n@ 0x10 0x20\n  t*: 2: 200 [5: 500]\n  t0: 2: 200 [5: 500]\n\nMAPPED_LIBRARIES:\n55-66 r-xp 0 00:00 0 /x\n";
        let (p, r) = parse_jemalloc_dump(t).unwrap();
        assert_eq!(p, 524288);
        assert_eq!(
            r,
            vec![JeRecord {
                addrs: vec![0x10, 0x20],
                cur: (2, 200),
                accum: (5, 500)
            }]
        );
        assert!(parse_jemalloc_dump("heap_v1/5\n").is_err());
        assert!(parse_jemalloc_dump("heap_v2/8\n@ 0x1\n  t*: 1: x [0: 0]\n").is_err());
    }

    #[test]
    fn unbias_matches_jeprof() {
        // One 512 KiB-sized sample at period 512 KiB: 1/(1-e^-1) scaling.
        let x = jeprof_unbias(1, 524288, 524288);
        assert!((x - 524288.0 / (1.0 - (-1.0f64).exp())).abs() < 1e-6);
        // Huge objects are sampled with probability ~1: no scaling.
        assert!((jeprof_unbias(1, 1 << 40, 524288) - (1u64 << 40) as f64).abs() < 1.0);
    }

    fn profile(alloc_col: [i64; 2]) -> Vec<u8> {
        let strs = [
            "",
            "inuse_space",
            "bytes",
            "alloc_space",
            "a::accuracy::keep_site",
            "other",
        ];
        let f = |id: u64, name: i64| proto::Function {
            id,
            name,
            ..Default::default()
        };
        let loc = |id: u64, fid: u64| proto::Location {
            id,
            line: vec![proto::Line {
                function_id: fid,
                ..Default::default()
            }],
            ..Default::default()
        };
        let vt = |t: i64| proto::ValueType { r#type: t, unit: 2 };
        let p = proto::Profile {
            sample_type: vec![vt(1), vt(3)],
            sample: vec![
                proto::Sample {
                    location_id: vec![2, 1],
                    value: vec![100, alloc_col[0]],
                    ..Default::default()
                },
                proto::Sample {
                    location_id: vec![2],
                    value: vec![7, alloc_col[1]],
                    ..Default::default()
                },
            ],
            location: vec![loc(1, 1), loc(2, 2)],
            function: vec![f(1, 4), f(2, 5)],
            string_table: strs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        p.encode_to_vec()
    }

    #[test]
    fn pprof_estimate_attributes_by_function_name() {
        let e = estimate_from_pprof(&profile([300, 9])).unwrap();
        assert_eq!(e.keep_inuse, Some(100.0));
        assert_eq!(e.keep_alloc, Some(300.0));
        assert_eq!(e.churn_alloc, Some(0.0));
        assert_eq!(e.total_inuse, Some(107.0));
        // An all-zero alloc_space column means "not recorded".
        let z = estimate_from_pprof(&profile([0, 0])).unwrap();
        assert_eq!((z.keep_alloc, z.keep_inuse), (None, Some(100.0)));
        assert!(estimate_from_pprof(b"garbage").is_err());
    }

    #[test]
    fn accuracy_line_roundtrip() {
        let e = Estimate {
            keep_inuse: Some(12.0),
            keep_alloc: None,
            churn_inuse: Some(0.0),
            churn_alloc: Some(7.0),
            total_inuse: Some(20.0),
            note: "3 samples, x".into(),
        };
        let (c, k, n, back) = Estimate::parse(&e.format("heaprof", 5, 6)).unwrap();
        assert_eq!((c.as_str(), k, n), ("heaprof", 5, 6));
        assert_eq!(back, e);
    }
}
