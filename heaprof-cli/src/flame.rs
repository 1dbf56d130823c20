//! Flame graphs: collapses each sample's stack root→leaf into inferno's folded format
//! (`root;caller;leaf VALUE`, or `… BASE NEW` for a differential graph) and renders an
//! interactive SVG with `inferno::flamegraph`. Called by `main` for `heaprof flamegraph`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use inferno::flamegraph::{self, color::BasicPalette, Options, Palette};

use crate::load::{Sample, View};
use crate::units;

/// A frame name as inferno needs it: `;` separates frames in the folded format, so a `;`
/// inside a name (Rust array types, `[u8; 4]`) becomes a full-width `；`; line breaks become
/// spaces.
fn frame_name(name: &str) -> String {
    name.replace(';', "；").replace(['\n', '\r'], " ")
}

/// A stack, leaf first, as one folded key root→leaf.
fn folded(stack: &[String]) -> String {
    if stack.is_empty() {
        return "[no stack]".into();
    }
    stack
        .iter()
        .rev()
        .map(|n| frame_name(n))
        .collect::<Vec<_>>()
        .join(";")
}

/// Folded lines for `view`: one per distinct stack, sorted; values ≤ 0 are left out (a
/// flame graph has no negative widths). With a base, two columns: base then new.
pub fn folded_lines(view: &View) -> Vec<String> {
    let sum = |samples: &[Sample], m: &mut BTreeMap<String, (i64, i64)>, new: bool| {
        for s in samples {
            let e = m.entry(folded(&s.stack)).or_default();
            if new {
                e.1 += s.value;
            } else {
                e.0 += s.value;
            }
        }
    };
    let mut m = BTreeMap::new();
    sum(&view.samples, &mut m, true);
    sum(&view.base_samples, &mut m, false);
    let differential = view.base_file.is_some();
    m.into_iter()
        .filter_map(|(stack, (b, n))| {
            let (b, n) = (b.max(0), n.max(0));
            if differential {
                (b > 0 || n > 0).then(|| format!("{stack} {b} {n}"))
            } else {
                (n > 0).then(|| format!("{stack} {n}"))
            }
        })
        .collect()
}

/// Renders `view` as an SVG flame graph into `output` (`-` = standard output).
pub fn write(view: &View, title: Option<String>, output: &Path) -> Result<(), String> {
    let lines = folded_lines(view);
    if lines.is_empty() {
        return Err(format!(
            "{}: no samples with a positive {} value: nothing to draw",
            view.file, view.sample_type.name
        ));
    }
    let unit = view.sample_type.unit.as_str();
    let mut opt = Options::default();
    opt.title = title.unwrap_or_else(|| format!("{}: {}", view.sample_type.name, view.file));
    opt.subtitle = Some(match &view.base_file {
        Some(b) => format!(
            "differential against {b}: {} → {} (red grew, blue shrank; widths are the new profile)",
            units::format(view.base_total(), unit),
            units::format(view.total(), unit)
        ),
        None => format!(
            "total {} — click a frame to zoom, Ctrl-F to search",
            units::format(view.total(), unit)
        ),
    });
    opt.count_name = unit.to_string();
    opt.name_type = "Function:".into();
    opt.colors = Palette::Basic(if unit == "bytes" {
        BasicPalette::Mem
    } else {
        BasicPalette::Hot
    });
    // The same function gets the same color in every graph.
    opt.deterministic = true;

    let mut svg = Vec::new();
    flamegraph::from_lines(&mut opt, lines.iter().map(String::as_str), &mut svg)
        .map_err(|e| format!("rendering the flame graph: {e}"))?;
    if output == Path::new("-") {
        std::io::stdout()
            .lock()
            .write_all(&svg)
            .map_err(|e| format!("writing the SVG to standard output: {e}"))
    } else {
        std::fs::write(output, &svg).map_err(|e| format!("cannot write {}: {e}", output.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_root_to_leaf_and_escapes_semicolons() {
        let stack: Vec<String> = ["<[u8; 4] as Foo>::leaf", "caller", "main"]
            .map(String::from)
            .to_vec();
        assert_eq!(folded(&stack), "main;caller;<[u8； 4] as Foo>::leaf");
        assert_eq!(folded(&[]), "[no stack]");
    }
}
