//! Reading profiles back: a small `top` table from any pprof file (ours or Go's), so a user
//! sees a result without installing Go.
//!
//! Writers' side only; never runs in the allocator.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;

use prost::Message;

use crate::error::Error;
use crate::pprof::proto;

/// Decodes a pprof profile: gzip-compressed or raw protobuf.
pub fn decode(bytes: &[u8]) -> Result<proto::Profile, Error> {
    let mut raw = Vec::new();
    let body: &[u8] = if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .map_err(|e| {
                Error::InvalidProfile(format!("gzip stream is truncated or corrupt: {e}"))
            })?;
        &raw
    } else {
        bytes
    };
    if body.is_empty() {
        return Err(Error::InvalidProfile(
            "empty input: not a pprof profile".into(),
        ));
    }
    let p = proto::Profile::decode(body)
        .map_err(|e| Error::InvalidProfile(format!("not a pprof protobuf ({e})")))?;
    if p.string_table.first().map(String::as_str) != Some("") || p.sample_type.is_empty() {
        return Err(Error::InvalidProfile(
            "not a pprof profile: no string table or sample types".into(),
        ));
    }
    Ok(p)
}

fn human_bytes(v: i64) -> String {
    let a = v.unsigned_abs() as f64;
    let (d, u) = match a {
        a if a >= (1u64 << 30) as f64 => (a / (1u64 << 30) as f64, "GiB"),
        a if a >= (1u64 << 20) as f64 => (a / (1u64 << 20) as f64, "MiB"),
        a if a >= 1024.0 => (a / 1024.0, "KiB"),
        _ => return format!("{v} B"),
    };
    format!("{}{d:.1} {u}", if v < 0 { "-" } else { "" })
}

/// A `top` table of a heap profile: per top (leaf) function, in-use and allocated bytes,
/// the `n` largest by in-use bytes. For other profiles, the last sample type is shown.
///
/// ```
/// let mut pb = Vec::new();
/// heaprof::write_heap_profile(&mut pb).unwrap();
/// let table = heaprof::top_table(&pb, 5).unwrap();
/// assert!(table.starts_with("function"));
/// assert!(heaprof::top_table(b"not a profile", 5).is_err());
/// ```
pub fn top_table(bytes: &[u8], n: usize) -> Result<String, Error> {
    let p = decode(bytes)?;
    let s = |i: i64| {
        p.string_table
            .get(i as usize)
            .map(String::as_str)
            .unwrap_or("")
    };
    let index_of = |name: &str| p.sample_type.iter().position(|t| s(t.r#type) == name);
    let (first, second) = match (index_of("inuse_space"), index_of("alloc_space")) {
        (Some(i), Some(a)) => ((i, "in-use"), Some((a, "allocated"))),
        _ => (
            (
                p.sample_type.len() - 1,
                s(p.sample_type[p.sample_type.len() - 1].r#type),
            ),
            None,
        ),
    };
    let locs: HashMap<u64, &proto::Location> = p.location.iter().map(|l| (l.id, l)).collect();
    let funcs: HashMap<u64, &proto::Function> = p.function.iter().map(|f| (f.id, f)).collect();
    let mut by_fn: HashMap<String, (i64, i64)> = HashMap::new();
    for sample in &p.sample {
        let name = sample
            .location_id
            .first()
            .and_then(|id| locs.get(id))
            .and_then(|l| l.line.first())
            .and_then(|line| funcs.get(&line.function_id))
            .map(|f| s(f.name).to_string())
            .or_else(|| {
                let l = locs.get(sample.location_id.first()?)?;
                Some(format!("{:#x}", l.address))
            })
            .unwrap_or_else(|| "<no stack>".into());
        let e = by_fn.entry(name).or_default();
        e.0 += sample.value.get(first.0).copied().unwrap_or(0);
        if let Some((i, _)) = second {
            e.1 += sample.value.get(i).copied().unwrap_or(0);
        }
    }
    let mut rows: Vec<(String, (i64, i64))> = by_fn.into_iter().collect();
    rows.sort_by(|a, b| {
        b.1 .0
            .cmp(&a.1 .0)
            .then(b.1 .1.cmp(&a.1 .1))
            .then(a.0.cmp(&b.0))
    });
    let bytes_unit = s(p.sample_type[first.0].unit) == "bytes";
    let fmt = |v: i64| {
        if bytes_unit {
            human_bytes(v)
        } else {
            v.to_string()
        }
    };
    let mut out = String::new();
    let _ = write!(out, "{:<60} {:>12}", "function", first.1);
    if let Some((_, label)) = second {
        let _ = write!(out, " {label:>12}");
    }
    out.push('\n');
    for (name, (a, b)) in rows.into_iter().take(n) {
        let shown: String = if name.chars().count() > 60 {
            let tail: String = name
                .chars()
                .rev()
                .take(59)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("…{tail}")
        } else {
            name
        };
        let _ = write!(out, "{shown:<60} {:>12}", fmt(a));
        if second.is_some() {
            let _ = write!(out, " {:>12}", fmt(b));
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_a_profile() {
        let e = decode(b"").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = decode(&[0x1f, 0x8b, 8, 0]).unwrap_err().to_string();
        assert!(e.contains("gzip"), "{e}");
        let e = decode(b"hello world, this is text")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a pprof"), "{e}");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
