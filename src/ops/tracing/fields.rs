//! What the layer keeps on each span (in its extensions): the span's own label pairs, as
//! its fields are recorded, and the interned sets made of them.

use std::fmt::{self, Write};

use ::tracing::field::{Field, Visit};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use crate::alloc::labels::Labels;

/// The interned sets of a span, copied out on every entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct SpanIds {
    /// The parent's full set when this one was interned (empty for a root span).
    pub parent: Labels,
    /// The parent's set plus this span's own pairs, these winning key by key.
    pub full: Labels,
}

/// A span's own pairs: `span` = its name first, then each kept field recorded (a field
/// recorded again replaces its value).
pub(super) struct SpanLabels {
    own: Vec<(&'static str, String)>,
    /// Whether `own` changed since the last [`intern`](Self::intern).
    changed: bool,
    pub ids: SpanIds,
}

impl SpanLabels {
    /// A span named `name` with no field recorded yet.
    pub fn new(name: &'static str) -> Self {
        SpanLabels {
            own: vec![("span", name.to_string())],
            changed: true,
            ids: SpanIds::default(),
        }
    }

    /// A visitor that records the fields named in `keep` (all when `None`) into this span.
    pub fn visitor<'a>(&'a mut self, keep: Option<&'a [Box<str>]>) -> FieldVisitor<'a> {
        FieldVisitor { span: self, keep }
    }

    /// Interns this span's pairs over `parent` (the parent's full set now) and returns the
    /// new ids (the same ids, without interning, when nothing changed).
    pub fn intern(&mut self, parent: Labels) -> SpanIds {
        if !self.changed && parent == self.ids.parent {
            return self.ids;
        }
        self.changed = false;
        let pairs: Vec<(&str, &str)> = self.own.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.ids = SpanIds {
            parent,
            full: parent.with(&pairs),
        };
        self.ids
    }

    fn set(&mut self, key: &'static str, value: String) {
        match self.own.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) if slot.1 == value => return,
            Some(slot) => slot.1 = value,
            None => self.own.push((key, value)),
        }
        self.changed = true;
    }
}

/// The full set of `span` (empty if the layer has not seen it).
pub(super) fn full_of<'a, R: LookupSpan<'a>>(span: &SpanRef<'a, R>) -> Labels {
    span.extensions()
        .get::<SpanLabels>()
        .map(|s| s.ids.full)
        .unwrap_or_default()
}

/// The full set of `span`'s parent (empty for a root span): what the span's own pairs
/// are added to.
pub(super) fn parent_full_of<'a, R: LookupSpan<'a>>(span: &SpanRef<'a, R>) -> Labels {
    span.parent().map(|p| full_of(&p)).unwrap_or_default()
}

/// Records field values as label values: strings as they are, `%x` by `Display`, `?x`
/// and everything else by `Debug` (numbers and booleans read the same either way).
pub(super) struct FieldVisitor<'a> {
    span: &'a mut SpanLabels,
    keep: Option<&'a [Box<str>]>,
}

impl FieldVisitor<'_> {
    fn kept(&self, field: &Field) -> bool {
        self.keep
            .is_none_or(|names| names.iter().any(|n| **n == *field.name()))
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.kept(field) {
            self.span.set(field.name(), value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.kept(field) {
            let mut s = String::new();
            let _ = write!(s, "{value:?}");
            self.span.set(field.name(), s);
        }
    }
}
