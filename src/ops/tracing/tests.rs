//! The layer's rules, read back through `Labels::current()` on one thread (the dispatcher is
//! the thread's own, `with_default`, so the crate's other tests are not affected).

// `span.record(k, &v)`: older tracing (the floor, 0.1.27, among them) takes the value by
// reference; newer versions take it by value and accept the reference too.
#![allow(clippy::needless_borrows_for_generic_args)]

use std::fmt;

use ::tracing::{field, info_span, Span};
use tracing_subscriber::layer::SubscriberExt;

use super::LabelLayer;
use crate::{with_labels, Labels};

fn current() -> Vec<(String, String)> {
    Labels::current().pairs()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    Labels::new(p).pairs()
}

fn with_layer(layer: LabelLayer, f: impl FnOnce()) {
    let subscriber = tracing_subscriber::registry().with(layer);
    ::tracing::subscriber::with_default(subscriber, f);
    assert_eq!(Labels::current(), Labels::empty(), "everything exited");
}

struct Tenant(&'static str);

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tenant-{}", self.0)
    }
}

#[derive(Debug)]
#[allow(dead_code)] // read through Debug only
struct Key(u32);

#[test]
fn a_span_labels_its_name_and_fields() {
    with_layer(LabelLayer::default(), || {
        let span = info_span!("checkout", tenant = "acme", shard = 3, fast = true);
        assert_eq!(current(), []);
        span.in_scope(|| {
            assert_eq!(
                current(),
                pairs(&[
                    ("span", "checkout"),
                    ("tenant", "acme"),
                    ("shard", "3"),
                    ("fast", "true")
                ])
            );
        });
        assert_eq!(current(), []);
    });
}

#[test]
fn values_by_display_and_debug() {
    with_layer(LabelLayer::default(), || {
        let span = info_span!("s", tenant = %Tenant("a"), key = ?Key(7), quoted = ?"x");
        span.in_scope(|| {
            assert_eq!(
                current(),
                pairs(&[
                    ("span", "s"),
                    ("tenant", "tenant-a"),
                    ("key", "Key(7)"),
                    ("quoted", "\"x\"")
                ])
            );
        });
    });
}

#[test]
fn inner_spans_override_outer_ones_key_by_key() {
    with_layer(LabelLayer::default(), || {
        let outer = info_span!("outer", tenant = "a", route = "/x");
        let _o = outer.enter();
        let inner = info_span!("inner", tenant = "b");
        {
            let _i = inner.enter();
            assert_eq!(
                current(),
                pairs(&[("span", "inner"), ("tenant", "b"), ("route", "/x")])
            );
        }
        assert_eq!(
            current(),
            pairs(&[("span", "outer"), ("tenant", "a"), ("route", "/x")])
        );
    });
}

#[test]
fn fields_keeps_only_those_named() {
    with_layer(LabelLayer::default().fields(&["tenant", "route"]), || {
        info_span!("h", tenant = "a", request_id = 99, route = "/r").in_scope(|| {
            assert_eq!(
                current(),
                pairs(&[("span", "h"), ("tenant", "a"), ("route", "/r")])
            );
        });
    });
}

#[test]
fn fields_recorded_later_count_from_then_on() {
    with_layer(LabelLayer::default(), || {
        let span = info_span!("req", tenant = field::Empty);
        let _e = span.enter();
        assert_eq!(current(), pairs(&[("span", "req")]));
        span.record("tenant", &"acme");
        assert_eq!(current(), pairs(&[("span", "req"), ("tenant", "acme")]));
        // A child created now sees the value.
        info_span!("db").in_scope(|| {
            assert_eq!(current(), pairs(&[("span", "db"), ("tenant", "acme")]));
        });
        span.record("tenant", &"other");
        assert_eq!(current(), pairs(&[("span", "req"), ("tenant", "other")]));
    });
}

#[test]
fn a_field_recorded_on_one_thread_applies_on_another() {
    let subscriber = tracing_subscriber::registry().with(LabelLayer::default());
    let dispatch = ::tracing::Dispatch::new(subscriber);
    let span =
        ::tracing::dispatcher::with_default(&dispatch, || info_span!("req", tenant = field::Empty));
    let on_worker = |span: &Span| {
        let span = span.clone();
        std::thread::spawn(move || span.in_scope(current))
            .join()
            .unwrap()
    };
    assert_eq!(on_worker(&span), pairs(&[("span", "req")]));
    span.record("tenant", &"acme");
    assert_eq!(
        on_worker(&span),
        pairs(&[("span", "req"), ("tenant", "acme")])
    );
    // More live spans than the table has slots (few distinct sets: the registry is shared
    // with the crate's other tests): each still gets its own labels.
    let spans: Vec<Span> = ::tracing::dispatcher::with_default(&dispatch, || {
        (0..10_000).map(|i| info_span!("s", k = i % 7)).collect()
    });
    for (i, s) in spans.iter().enumerate().rev() {
        let want = pairs(&[("span", "s"), ("k", &(i % 7).to_string())]);
        s.in_scope(|| assert_eq!(current(), want));
    }
}

#[test]
fn a_child_keeps_its_parents_labels_where_the_parent_is_not_entered() {
    with_layer(LabelLayer::default(), || {
        let child = info_span!("request", tenant = "a").in_scope(|| info_span!("work"));
        // Entered alone (as a spawned task's span is, on a worker thread).
        child.in_scope(|| {
            assert_eq!(current(), pairs(&[("span", "work"), ("tenant", "a")]));
        });
        let root = info_span!(parent: None, "root");
        root.in_scope(|| assert_eq!(current(), pairs(&[("span", "root")])));
    });
}

#[test]
fn labels_in_force_are_kept_under_a_span_and_restored() {
    with_layer(LabelLayer::default(), || {
        let span = info_span!("s", tenant = "a");
        with_labels(&[("job", "nightly"), ("tenant", "x")], || {
            for _ in 0..2 {
                span.in_scope(|| {
                    assert_eq!(
                        current(),
                        pairs(&[("job", "nightly"), ("span", "s"), ("tenant", "a")])
                    );
                    with_labels(&[("step", "1")], || {
                        assert_eq!(current().len(), 4);
                    });
                });
                assert_eq!(current(), pairs(&[("job", "nightly"), ("tenant", "x")]));
            }
        });
    });
}

#[test]
fn out_of_order_exits_restore_what_was_there_before() {
    with_layer(LabelLayer::default(), || {
        let a = info_span!("a").entered();
        let b = info_span!("b", k = 1).entered();
        drop(a);
        assert_eq!(current(), pairs(&[("span", "b"), ("k", "1")]));
        drop(b);
        assert_eq!(current(), []);
    });
}

#[test]
fn without_the_layer_spans_do_nothing() {
    let subscriber = tracing_subscriber::registry();
    ::tracing::subscriber::with_default(subscriber, || {
        info_span!("s", tenant = "a").in_scope(|| assert_eq!(current(), []));
        assert!(Span::current().is_none());
    });
}
