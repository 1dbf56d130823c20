//! The `top` table: [`top_table`] prints, per leaf function, the largest values of a pprof
//! profile (in-use and allocated bytes for a heap profile), so a user sees a result without
//! installing Go.
//!
//! Readers' side only, like [`read`](crate::pprof::read), whose [`decode`] it reads through:
//! a bad file is the [`Error::InvalidProfile`] `decode` gives.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::base::error::Error;
use crate::pprof::proto;
use crate::pprof::read::decode;

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
    let columns = top_columns(&p);
    let rows = top_rows(&p, &columns);
    let bytes_unit = str_at(&p, p.sample_type[columns.first.0].unit) == "bytes";
    Ok(format_top(&columns, bytes_unit, rows.into_iter().take(n)))
}

/// The value columns of a `top` table: (sample index, heading) each.
struct TopColumns<'p> {
    /// The column rows are sorted by.
    first: (usize, &'p str),
    second: Option<(usize, &'p str)>,
}

/// String `i` of `p`'s string table, `""` if there is none (a `top` table shows what it can).
fn str_at(p: &proto::Profile, i: i64) -> &str {
    p.string_table
        .get(i as usize)
        .map(String::as_str)
        .unwrap_or("")
}

/// In-use then allocated bytes for a heap profile; else the last sample type alone.
fn top_columns(p: &proto::Profile) -> TopColumns<'_> {
    let index_of = |name: &str| {
        p.sample_type
            .iter()
            .position(|t| str_at(p, t.r#type) == name)
    };
    match (index_of("inuse_space"), index_of("alloc_space")) {
        (Some(i), Some(a)) => TopColumns {
            first: (i, "in-use"),
            second: Some((a, "allocated")),
        },
        _ => {
            let last = p.sample_type.len() - 1;
            TopColumns {
                first: (last, str_at(p, p.sample_type[last].r#type)),
                second: None,
            }
        }
    }
}

/// Per leaf function, the sums of the columns' values over its samples; largest first by the
/// first column, then the second, then by name.
fn top_rows(p: &proto::Profile, columns: &TopColumns) -> Vec<(String, (i64, i64))> {
    let locs: HashMap<u64, &proto::Location> = p.location.iter().map(|l| (l.id, l)).collect();
    let funcs: HashMap<u64, &proto::Function> = p.function.iter().map(|f| (f.id, f)).collect();
    let mut by_fn: HashMap<String, (i64, i64)> = HashMap::new();
    for sample in &p.sample {
        let e = by_fn
            .entry(leaf_name(p, sample, &locs, &funcs))
            .or_default();
        e.0 += sample.value.get(columns.first.0).copied().unwrap_or(0);
        if let Some((i, _)) = columns.second {
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
    rows
}

/// The leaf function of `sample`: its first location's innermost function, else that
/// location's address, else `<no stack>`.
fn leaf_name(
    p: &proto::Profile,
    sample: &proto::Sample,
    locs: &HashMap<u64, &proto::Location>,
    funcs: &HashMap<u64, &proto::Function>,
) -> String {
    sample
        .location_id
        .first()
        .and_then(|id| locs.get(id))
        .and_then(|l| l.line.first())
        .and_then(|line| funcs.get(&line.function_id))
        .map(|f| str_at(p, f.name).to_string())
        .or_else(|| {
            let l = locs.get(sample.location_id.first()?)?;
            Some(format!("{:#x}", l.address))
        })
        .unwrap_or_else(|| "<no stack>".into())
}

/// `v` bytes for people: in `B`, or in `KiB`, `MiB` or `GiB` with one decimal.
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

/// The table: a heading line, then one line per row, the name cut to 60 characters (from
/// the left) and the values in bytes (`KiB`, `MiB`, ...) if `bytes_unit`.
fn format_top(
    columns: &TopColumns,
    bytes_unit: bool,
    rows: impl Iterator<Item = (String, (i64, i64))>,
) -> String {
    let fmt = |v: i64| {
        if bytes_unit {
            human_bytes(v)
        } else {
            v.to_string()
        }
    };
    let mut out = String::new();
    let _ = write!(out, "{:<60} {:>12}", "function", columns.first.1);
    if let Some((_, label)) = columns.second {
        let _ = write!(out, " {label:>12}");
    }
    out.push('\n');
    for (name, (a, b)) in rows {
        let _ = write!(out, "{:<60} {:>12}", last_60_chars(name), fmt(a));
        if columns.second.is_some() {
            let _ = write!(out, " {:>12}", fmt(b));
        }
        out.push('\n');
    }
    out
}

/// `name` if it has at most 60 characters, else `…` and its last 59.
fn last_60_chars(name: String) -> String {
    if name.chars().count() <= 60 {
        return name;
    }
    let tail: String = name
        .chars()
        .rev()
        .take(59)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_picks_the_unit() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
