//! The heap profiles' trimming policy: which leading frames are the allocation machinery.

use crate::pprof::trim::qualified_path_starts_with_any;

/// Leading (leaf-side) frames that belong to the allocation machinery rather than to the
/// code that asked for memory: heaprof itself, the `__rust_alloc` shims, and the standard
/// library's collections and allocation plumbing (`alloc::`, `core::`, hashbrown — what
/// Go's `runtime.*` allocation frames are to Go). Stripped so the top frame is the
/// allocating function; a stack made only of such frames is kept whole.
pub fn is_allocator_frame(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "heaprof::",
        "__rustc::",
        "__rust_alloc",
        "__rust_realloc",
        "__rust_alloc_zeroed",
        "__rdl_",
        "__rg_",
        "alloc::",
        "core::",
        "hashbrown::",
        "std::alloc::",
        "std::sys::alloc::",
        "std::collections::",
    ];
    // `<Type as Trait>::method`: a generic receiver (`<T as alloc::…>`) is judged by its
    // trait, a concrete type by its own path, so user impls of core traits stay.
    qualified_path_starts_with_any(name, PREFIXES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_frames_are_recognised() {
        for n in [
            "heaprof::alloc::ProfilingAllocator<A>::alloc_sampled",
            "<heaprof::alloc::ProfilingAllocator<A> as core::alloc::global::GlobalAlloc>::alloc",
            "__rustc::__rust_alloc",
            "__rust_alloc",
            "alloc::raw_vec::RawVecInner<A>::finish_grow",
            "alloc::alloc::exchange_malloc",
            "alloc::string::String::push_str",
            "<T as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
            "hashbrown::raw::RawTable<T,A>::reserve_rehash",
        ] {
            assert!(is_allocator_frame(n), "{n}");
        }
        for n in [
            "quickstart::make_strings",
            "<quickstart::Cache as core::default::Default>::default",
            "main",
        ] {
            assert!(!is_allocator_frame(n), "{n}");
        }
    }
}
