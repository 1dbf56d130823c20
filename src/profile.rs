//! The profile registry and the [`Profile`] handle: Go's `runtime/pprof` `Profile` API.
//!
//! Writers only: nothing here runs inside the allocator.

use std::io::{self, Write};

use crate::heap::{self, HeapView};

/// A named collection of stack traces, like Go's `*pprof.Profile`. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Profile {
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Heap,
    Allocs,
}

impl Profile {
    /// The profile's name (`"heap"`, `"allocs"`, …).
    pub fn name(&self) -> &str {
        match &self.kind {
            Kind::Heap => "heap",
            Kind::Allocs => "allocs",
        }
    }

    /// Number of records: for `heap` and `allocs`, the (stack, size) records.
    pub fn count(&self) -> usize {
        match &self.kind {
            Kind::Heap | Kind::Allocs => heap::record_count(),
        }
    }

    /// Writes the profile: `debug = 0` as gzip-compressed pprof protobuf, any other value
    /// as the legacy text form with symbolized frames in comments.
    ///
    /// ```
    /// let mut out = Vec::new();
    /// heaprof::lookup("heap").unwrap().write_to(&mut out, 1).unwrap();
    /// assert!(out.starts_with(b"heap profile: "));
    /// ```
    pub fn write_to<W: Write>(&self, w: W, debug: u8) -> io::Result<()> {
        match (&self.kind, debug) {
            (Kind::Heap, 0) => heap::write_proto(w, HeapView::InUse),
            (Kind::Allocs, 0) => heap::write_proto(w, HeapView::Allocs),
            (Kind::Heap | Kind::Allocs, _) => heap::write_text(w),
        }
    }
}

fn predefined() -> Vec<Profile> {
    vec![Profile { kind: Kind::Allocs }, Profile { kind: Kind::Heap }]
}

/// All known profiles, sorted by name.
pub fn profiles() -> Vec<Profile> {
    let mut all = predefined();
    all.sort_by(|a, b| a.name().cmp(b.name()));
    all
}

/// The profile called `name`, if there is one.
///
/// ```
/// assert!(heaprof::lookup("heap").is_some());
/// assert!(heaprof::lookup("no.such.profile").is_none());
/// ```
pub fn lookup(name: &str) -> Option<Profile> {
    predefined().into_iter().find(|p| p.name() == name)
}

/// Writes the heap profile as gzip pprof: `lookup("heap").write_to(w, 0)`.
pub fn write_heap_profile<W: Write>(w: W) -> io::Result<()> {
    heap::write_proto(w, HeapView::InUse)
}
