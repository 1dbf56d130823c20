//! Labels from `tracing` spans (feature `tracing`): [`LabelLayer`], a
//! `tracing_subscriber::Layer` under which heap and CPU samples taken while a span is entered
//! carry the label `span` = the span's name and one label per field recorded on it.
//!
//! ```
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let subscriber = tracing_subscriber::registry().with(heaprof::tracing::LabelLayer::default());
//! tracing::subscriber::with_default(subscriber, || {
//!     let _e = tracing::info_span!("checkout", tenant = "acme").entered();
//!     assert_eq!(
//!         heaprof::Labels::current(),
//!         heaprof::Labels::new(&[("span", "checkout"), ("tenant", "acme")])
//!     );
//! });
//! ```
//!
//! How it works, and what it costs:
//! - When a span is created, its labels are interned once into a [`Labels`] set: its
//!   parent's set (as it is then) plus `span` = its name and its fields, its own winning key
//!   by key. `Span::record` re-interns them, and applies at once if the span is the
//!   innermost entered on the recording thread. A span created before its parent records a
//!   field keeps the parent's earlier value (until it records a field itself).
//! - Entering a span puts in force the labels in force before (those of an enclosing
//!   [`with_labels`](crate::alloc::labels::with_labels) or [`Labeled`](crate::alloc::labels::Labeled), of the span entered
//!   around it) merged with the span's set, the span winning; exiting puts back what was
//!   there. With nothing in force, or the span's parent in force, that is the span's own set
//!   (no lookup); other combinations are merged once and then looked up in a cache. The
//!   span's sets are read from a table of atomic words keyed by span id (one load), not from
//!   its extensions (a registry lookup and a lock). Nothing is allocated on entry or exit
//!   once a combination has been seen, and the allocator's paths are untouched: they read
//!   the thread's label set id as they always did.
//! - Entry and exit are per thread, so a task instrumented with
//!   [`tracing::Instrument`] keeps its labels on whichever worker
//!   polls it.
//! - Label sets are bounded by [`MAX_LABEL_SETS`](crate::alloc::labels::MAX_LABEL_SETS): a field with
//!   unbounded values (a request id) fills the registry, then its spans are labelled
//!   `heaprof.overflow=label_sets` and counted in the profiles' comments. Keep such fields
//!   out with [`LabelLayer::fields`].

mod fields;
mod stack;
mod table;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::fmt;

use ::tracing::span::{Attributes, Id, Record};
use ::tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::alloc::labels::{self, Labels};
use crate::base::tls::ProfilerGuard;
use fields::{SpanIds, SpanLabels};
use table::SpanTable;

/// A `tracing_subscriber` layer that puts the labels of the entered span (its name as
/// `span`, its recorded fields, its parents') in force on the thread, for heap and CPU
/// samples. See the [module docs](self) for the rules and costs.
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
///
/// // Only `tenant` and `route` become labels (besides `span`); `request_id` does not.
/// let layer = heaprof::tracing::LabelLayer::default().fields(&["tenant", "route"]);
/// let subscriber = tracing_subscriber::registry().with(layer);
/// tracing::subscriber::with_default(subscriber, || {
///     let span = tracing::info_span!("handler", tenant = "acme", request_id = 7);
///     span.in_scope(|| {
///         let pairs = heaprof::Labels::current().pairs();
///         assert_eq!(pairs, [("span".into(), "handler".into()), ("tenant".into(), "acme".into())]);
///     });
/// });
/// ```
#[derive(Default)]
pub struct LabelLayer {
    /// The field names kept; `None` keeps every field.
    keep: Option<Box<[Box<str>]>>,
    /// The sets of the live spans, read on entry.
    table: SpanTable,
}

/// The same fields kept, and a table of its own (span ids are a subscriber's own: two
/// subscribers' spans must not share one).
impl Clone for LabelLayer {
    fn clone(&self) -> Self {
        LabelLayer {
            keep: self.keep.clone(),
            table: SpanTable::default(),
        }
    }
}

impl LabelLayer {
    /// Keeps only the fields named here as labels (the `span` label is always there).
    pub fn fields(mut self, names: &[&str]) -> Self {
        self.keep = Some(names.iter().map(|n| Box::from(*n)).collect());
        self
    }

    /// The labels to put in force when a span with `ids` is entered over `prev`.
    fn applied(prev: Labels, ids: SpanIds) -> Labels {
        if prev == Labels::empty() || prev == ids.parent || prev == ids.full {
            return ids.full;
        }
        thread_local! {
            /// This thread's last merge (prev, full, merged): a merge never changes, and
            /// the same one comes back on every poll of a task under the same labels.
            static LAST_MERGE: Cell<(Labels, Labels, Labels)> =
                const { Cell::new((Labels::empty(), Labels::empty(), Labels::empty())) };
        }
        let last = LAST_MERGE.try_with(Cell::get).ok();
        match last {
            Some((p, f, merged)) if p == prev && f == ids.full => merged,
            _ => {
                let merged = labels::merge(prev, ids.full);
                let _ = LAST_MERGE.try_with(|m| m.set((prev, ids.full, merged)));
                merged
            }
        }
    }
}

/// Shows the kept fields (`None`: all of them); the span table is left out.
impl fmt::Debug for LabelLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabelLayer")
            .field("fields", &self.keep)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for LabelLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let _guard = ProfilerGuard::enter();
        let parent = fields::parent_full_of(&span);
        let mut own = SpanLabels::new(span.name());
        attrs.record(&mut own.visitor(self.keep.as_deref()));
        let ids = own.intern(parent);
        let mut ext = span.extensions_mut();
        ext.insert(own);
        // Under the lock, as every put (see `SpanTable::put`).
        self.table.put(id.into_u64(), ids);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let _guard = ProfilerGuard::enter();
        let parent = fields::parent_full_of(&span);
        let ids = {
            let mut ext = span.extensions_mut();
            let Some(own) = ext.get_mut::<SpanLabels>() else {
                return;
            };
            values.record(&mut own.visitor(self.keep.as_deref()));
            let ids = own.intern(parent);
            // Under the lock: two records of one span put in the order they wrote, and
            // after any fill that read the older sets (`SpanTable::put`).
            self.table.put(id.into_u64(), ids);
            ids
        };
        if let Some(applied) =
            stack::update_innermost(id.into_u64(), |prev| Self::applied(prev, ids))
        {
            labels::replace_current(applied);
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let ids = match self.table.get(id.into_u64()) {
            Ok(ids) => ids,
            Err(seen) => {
                let Some(span) = ctx.span(id) else { return };
                let ext = span.extensions();
                let Some(ids) = ext.get::<SpanLabels>().map(|s| s.ids) else {
                    return;
                };
                // With the read lock held, so that a record cannot change the sets between
                // the read and the fill (`SpanTable::fill`).
                self.table.fill(id.into_u64(), seen, ids);
                ids
            }
        };
        // The stack may grow (once per depth per thread), and a merge not seen before
        // interns: heaprof's own memory, not the program's.
        let _guard = ProfilerGuard::enter();
        let prev = Labels::current();
        let applied = Self::applied(prev, ids);
        if stack::push(id.into_u64(), prev, applied) {
            labels::replace_current(applied);
        }
    }

    fn on_exit(&self, id: &Id, _ctx: Context<'_, S>) {
        if let Some(restore) = stack::pop(id.into_u64()) {
            labels::replace_current(restore);
        }
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        self.table.remove(id.into_u64());
    }
}
