//! Per-function tables: `top` (flat and cum, like `go tool pprof -top`, optionally against a
//! base like pprof's `-base`) and `diff` (growth from a base to a new snapshot). Pure: takes a
//! `load::View`, returns the text; `main` prints it.
//!
//! pprof's definitions: a function's **flat** value is the sum over the samples whose leaf
//! (innermost frame) it is; its **cum** value the sum over the samples it appears in at all,
//! each sample counted once even if the function recurses.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use crate::load::{Sample, View};
use crate::units;

/// A function's flat and cum values.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node {
    pub flat: i64,
    pub cum: i64,
}

/// Flat and cum per function over `samples`, each value multiplied by `sign` and added to
/// `into`.
pub fn accumulate(samples: &[Sample], sign: i64, into: &mut HashMap<String, Node>) {
    let mut seen: HashSet<&str> = HashSet::new();
    for s in samples {
        let v = s.value * sign;
        if v == 0 {
            continue;
        }
        let leaf = s.stack.first().map(String::as_str).unwrap_or("[no stack]");
        into.entry(leaf.to_string()).or_default().flat += v;
        seen.clear();
        if s.stack.is_empty() {
            seen.insert(leaf);
        }
        seen.extend(s.stack.iter().map(String::as_str));
        for name in &seen {
            into.entry((*name).to_string()).or_default().cum += v;
        }
    }
}

/// The `top` table. With a base, values are new − base and percentages are of the total
/// absolute change per stack (pprof's `-base`).
pub fn top(view: &View, n: usize, by_cum: bool) -> String {
    let unit = view.sample_type.unit.as_str();
    let mut nodes = HashMap::new();
    accumulate(&view.samples, 1, &mut nodes);
    accumulate(&view.base_samples, -1, &mut nodes);
    let total = if view.base_file.is_some() {
        // pprof merges the base's negated samples into the profile: equal stacks cancel, and
        // the total is the sum of the remaining samples' absolute values.
        let mut by_stack: HashMap<&[String], i64> = HashMap::new();
        for s in &view.samples {
            *by_stack.entry(&s.stack).or_default() += s.value;
        }
        for s in &view.base_samples {
            *by_stack.entry(&s.stack).or_default() -= s.value;
        }
        by_stack.values().map(|v| v.abs()).sum()
    } else {
        view.samples.iter().map(|s| s.value.abs()).sum()
    };
    let mut rows: Vec<(String, Node)> = nodes
        .into_iter()
        .filter(|(_, v)| v.flat != 0 || v.cum != 0)
        .collect();
    rows.sort_by(|(an, a), (bn, b)| {
        let key = |v: &Node| {
            if by_cum {
                (v.cum.abs(), v.flat.abs())
            } else {
                (v.flat.abs(), v.cum.abs())
            }
        };
        key(b).cmp(&key(a)).then_with(|| an.cmp(bn))
    });
    let all = rows.len();
    if n > 0 {
        rows.truncate(n);
    }
    let shown: i64 = rows.iter().map(|(_, v)| v.flat).sum();

    let mut out = String::new();
    let _ = writeln!(out, "File: {}", view.file);
    if let Some(b) = &view.base_file {
        let _ = writeln!(out, "Base: {b} (subtracted)");
    }
    let _ = writeln!(out, "Type: {}", view.sample_type.name);
    if view.time_nanos != 0 {
        let _ = writeln!(out, "Time: {}", units::utc(view.time_nanos));
    }
    if let Some(b) = crate::rss::breakdown(&view.comments) {
        out.push_str(&b);
    }
    let _ = writeln!(
        out,
        "Showing nodes accounting for {}, {} of {} total",
        units::format(shown, unit),
        units::percent(shown, total),
        units::format(total, unit)
    );
    if rows.len() < all {
        let _ = writeln!(out, "Showing top {} nodes out of {all}", rows.len());
    }
    let _ = writeln!(
        out,
        "{:>10} {:>7} {:>7} {:>10} {:>7}  function",
        "flat", "flat%", "sum%", "cum", "cum%"
    );
    let mut sum = 0;
    for (name, v) in &rows {
        sum += v.flat;
        let _ = writeln!(
            out,
            "{:>10} {:>7} {:>7} {:>10} {:>7}  {name}",
            units::format(v.flat, unit),
            units::percent(v.flat, total),
            units::percent(sum, total),
            units::format(v.cum, unit),
            units::percent(v.cum, total),
        );
    }
    out
}

/// The `diff` table: per function, flat and cum growth (new − base), largest flat growth
/// first (cum with `by_cum`); functions that did not change are left out. Percentages are
/// of the base's total, as with pprof's `-diff_base`.
pub fn diff(view: &View, n: usize, by_cum: bool) -> String {
    let unit = view.sample_type.unit.as_str();
    let mut base = HashMap::new();
    accumulate(&view.base_samples, 1, &mut base);
    let mut new = HashMap::new();
    accumulate(&view.samples, 1, &mut new);
    let names: HashSet<&String> = base.keys().chain(new.keys()).collect();
    let mut rows: Vec<(&str, Node, Node)> = names
        .into_iter()
        .map(|name| {
            let b = base.get(name).copied().unwrap_or_default();
            let nw = new.get(name).copied().unwrap_or_default();
            (name.as_str(), b, nw)
        })
        .filter(|(_, b, nw)| b != nw)
        .collect();
    let growth = |b: &Node, nw: &Node| {
        let (f, c) = (nw.flat - b.flat, nw.cum - b.cum);
        if by_cum {
            (c, f)
        } else {
            (f, c)
        }
    };
    rows.sort_by(|(an, ab, anw), (bn, bb, bnw)| {
        growth(bb, bnw)
            .cmp(&growth(ab, anw))
            .then_with(|| an.cmp(bn))
    });
    let all = rows.len();
    if n > 0 {
        rows.truncate(n);
    }
    let (bt, nt) = (view.base_total(), view.total());

    let mut out = String::new();
    let _ = writeln!(out, "Base: {}", view.base_file.as_deref().unwrap_or(""));
    let _ = writeln!(out, "New:  {}", view.file);
    let _ = writeln!(out, "Type: {}", view.sample_type.name);
    let _ = writeln!(
        out,
        "Total: {} → {} ({}, {} of base)",
        units::format(bt, unit),
        units::format(nt, unit),
        units::signed(nt - bt, unit),
        units::percent(nt - bt, bt)
    );
    let _ = writeln!(
        out,
        "{} of {all} changed functions, by {} growth (flat: in the function itself; cum: with its callees)",
        rows.len(),
        if by_cum { "cum" } else { "flat" }
    );
    let _ = writeln!(
        out,
        "{:>10} {:>8} {:>10} {:>10} {:>10} {:>8}  function",
        "flat Δ", "flat Δ%", "base flat", "new flat", "cum Δ", "cum Δ%"
    );
    for (name, b, nw) in &rows {
        let _ = writeln!(
            out,
            "{:>10} {:>8} {:>10} {:>10} {:>10} {:>8}  {name}",
            units::signed(nw.flat - b.flat, unit),
            units::percent(nw.flat - b.flat, bt),
            units::format(b.flat, unit),
            units::format(nw.flat, unit),
            units::signed(nw.cum - b.cum, unit),
            units::percent(nw.cum - b.cum, bt),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(stack: &[&str], value: i64) -> Sample {
        Sample {
            stack: stack.iter().map(|s| s.to_string()).collect(),
            value,
        }
    }

    #[test]
    fn flat_is_leaf_cum_counts_recursion_once() {
        let mut m = HashMap::new();
        accumulate(
            &[
                s(&["leaf", "rec", "rec", "main"], 5),
                s(&["rec", "main"], 2),
                s(&[], 1),
            ],
            1,
            &mut m,
        );
        assert_eq!(m["leaf"], Node { flat: 5, cum: 5 });
        assert_eq!(m["rec"], Node { flat: 2, cum: 7 });
        assert_eq!(m["main"], Node { flat: 0, cum: 7 });
        assert_eq!(m["[no stack]"], Node { flat: 1, cum: 1 });
        accumulate(&[s(&["rec", "main"], 2)], -1, &mut m);
        assert_eq!(m["rec"], Node { flat: 0, cum: 5 });
    }
}
