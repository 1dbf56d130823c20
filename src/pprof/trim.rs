//! Leading-frame trimming: which leaf-side frames of a symbolized stack a writer leaves out.
//! A profile kind's policy says which frames are its internals, by their paths (the
//! allocator's plumbing, the lock wrappers, thread spawning), with the helpers here;
//! [`leading_trim`] and [`split_trim`] apply a policy to a stack, per PC and per inlined
//! frame, never removing all of it. The builder and the text writers apply the policy set
//! with [`crate::pprof::builder::ProfileBuilder::set_trim_leading`].
//!
//! Pure functions of names and of frames the [`Symbolizer`] resolved.
//!
//! [`Symbolizer`]: crate::pprof::symbolize::Symbolizer

use crate::pprof::symbolize::SymFrame;

/// Whether `name` starts with one of `prefixes`, ignoring the `<` of a qualified path
/// (`<heaprof::sync::Mutex<T>>::lock` is judged as `heaprof::sync::…`).
pub fn path_starts_with_any(name: &str, prefixes: &[&str]) -> bool {
    let n = name.strip_prefix('<').unwrap_or(name);
    prefixes.iter().any(|p| n.starts_with(p))
}

/// Like [`path_starts_with_any`], judging `<Type as Trait>::method` by both sides: a
/// concrete type by its own path (so a user type's impl of a `core` trait is not matched),
/// a generic receiver (`<T as alloc::…>`) by its trait.
pub fn qualified_path_starts_with_any(name: &str, prefixes: &[&str]) -> bool {
    let matches = |n: &str| prefixes.iter().any(|p| n.starts_with(p));
    match name.strip_prefix('<') {
        Some(qualified) => {
            let (ty, tr) = qualified.split_once(" as ").unwrap_or((qualified, ""));
            matches(ty) || (!ty.contains("::") && matches(tr))
        }
        None => matches(name),
    }
}

/// Number of leading frames of `frames` (per PC, innermost inlined frame first) that `pred`
/// trims, or 0 if it would trim all of them.
///
/// Leaf-first, per PC: if the PC's real (outermost) function matches, the whole PC goes, with
/// everything inlined into it (Go's per-PC rule: what an internal function inlined, it called);
/// otherwise its leading inlined frames that match go, and trimming stops there. An unresolved
/// PC stops trimming. The outermost name is the symbol table's full name even under
/// `debug = "line-tables-only"`, where DWARF names inlined frames unqualified (`trace`), so the
/// per-PC rule is the reliable one in release builds.
pub(crate) fn leading_trim(frames: &[&[SymFrame]], pred: Option<fn(&str) -> bool>) -> usize {
    let Some(pred) = pred else { return 0 };
    let total: usize = frames.iter().map(|fs| fs.len().max(1)).sum();
    let mut n = 0;
    for fs in frames {
        let Some(outer) = fs.last() else { break };
        if pred(&outer.name) {
            n += fs.len();
            continue;
        }
        n += fs.iter().take_while(|f| pred(&f.name)).count();
        break;
    }
    if n == total {
        0
    } else {
        n
    }
}

/// Splits a flat trim count into (whole PCs dropped, inlined frames dropped from the next PC).
pub(crate) fn split_trim(frames: &[&[SymFrame]], mut n: usize) -> (usize, usize) {
    let mut pcs = 0;
    for fs in frames {
        let len = fs.len().max(1);
        if n < len {
            return (pcs, n);
        }
        n -= len;
        pcs += 1;
    }
    (pcs, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_paths_are_judged_by_type_then_trait() {
        let p = &["core::", "alloc::"];
        assert!(path_starts_with_any("<core::cell::Cell<T>>::get", p));
        assert!(!path_starts_with_any("<T as core::clone::Clone>::clone", p));
        assert!(qualified_path_starts_with_any(
            "<T as core::clone::Clone>::clone",
            p
        ));
        assert!(!qualified_path_starts_with_any(
            "<app::Cache as core::default::Default>::default",
            p
        ));
        assert!(qualified_path_starts_with_any(
            "alloc::vec::Vec<T>::push",
            p
        ));
        assert!(!qualified_path_starts_with_any("app::main", p));
    }

    fn frame(name: &str) -> SymFrame {
        SymFrame {
            name: name.into(),
            system_name: name.into(),
            file: None,
            line: 1,
            sym_addr: 0,
        }
    }

    #[test]
    fn trim_counts_inlined_frames() {
        let pred: fn(&str) -> bool = |n| n.starts_with("alloc::") || n.starts_with("heaprof::");
        // Outermost matches: the whole PC goes, inlined frames included (even non-matching).
        let internal = vec![frame("alloc::inner"), frame("heaprof::x")];
        let callback = vec![frame("user_cb"), frame("heaprof::y")];
        // Outermost does not match: only its leading matching inlined frames go.
        let user = vec![
            frame("alloc::a"),
            frame("user2"),
            frame("alloc::b"),
            frame("main"),
        ];
        let refs: Vec<&[SymFrame]> = vec![&internal, &callback, &user, &[]];
        assert_eq!(leading_trim(&refs, Some(pred)), 5);
        assert_eq!(split_trim(&refs, 5), (2, 1), "cuts into an inlined PC");
        let refs: Vec<&[SymFrame]> = vec![&user[1..], &internal];
        assert_eq!(
            leading_trim(&refs, Some(pred)),
            0,
            "stops at the first non-matching frame"
        );
        let only: Vec<&[SymFrame]> = vec![&internal, &callback];
        assert_eq!(leading_trim(&only, Some(pred)), 0, "all would go: keep all");
        assert_eq!(leading_trim(&refs, None), 0);
        // An unresolved PC stops trimming.
        let unresolved: Vec<&[SymFrame]> = vec![&[], &internal, &user];
        assert_eq!(leading_trim(&unresolved, Some(pred)), 0);
        let refs: Vec<&[SymFrame]> = vec![&internal, &[], &user];
        assert_eq!(split_trim(&refs, leading_trim(&refs, Some(pred))), (1, 0));
    }
}
