//! Helpers for the trimming policies of the profile kinds: whether a symbolized frame
//! belongs to a set of paths. Each kind names its own paths (the allocator's plumbing, the
//! lock wrappers, thread spawning); the builder and the text writers hide the leading
//! frames a policy matches ([`crate::pprof::builder::ProfileBuilder::set_trim_leading`]).

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
}
