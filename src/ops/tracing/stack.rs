//! The spans entered on this thread, innermost last, each with the labels it put in force
//! and those it replaced, so that an exit restores them (even when spans are exited out of
//! order, which `tracing` allows).

use std::cell::RefCell;

use crate::alloc::labels::Labels;

struct Entry {
    /// The span's id (`Id::into_u64`).
    span: u64,
    /// The labels in force before the span was entered.
    prev: Labels,
    /// The labels the span put in force.
    applied: Labels,
}

thread_local! {
    /// Grows to the thread's deepest nesting and keeps its capacity: no allocation per entry.
    static ENTERED: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// Records that `span` was entered with `applied` put in force over `prev`. False when the
/// thread's stack is gone (a span entered by a thread-local destructor): then the caller
/// leaves the labels alone, and the exit finds nothing to undo.
pub(super) fn push(span: u64, prev: Labels, applied: Labels) -> bool {
    ENTERED
        .try_with(|s| match s.try_borrow_mut() {
            Ok(mut s) => {
                s.push(Entry {
                    span,
                    prev,
                    applied,
                });
                true
            }
            Err(_) => false,
        })
        .unwrap_or(false)
}

/// Forgets the innermost entry of `span`. Returns the labels to put back when it was the
/// innermost span; an entry exited out of order hands its `prev` to the entry above it, so
/// that the last exit still restores what was there before both.
pub(super) fn pop(span: u64) -> Option<Labels> {
    ENTERED
        .try_with(|s| {
            let mut s = s.try_borrow_mut().ok()?;
            let i = s.iter().rposition(|e| e.span == span)?;
            let e = if i + 1 == s.len() {
                s.pop()?
            } else {
                s.remove(i)
            };
            match s.get_mut(i) {
                None => Some(e.prev),
                Some(above) => {
                    above.prev = e.prev;
                    None
                }
            }
        })
        .ok()
        .flatten()
}

/// When `span` is the innermost entered span, puts `f(prev)` as the labels it applies and
/// returns them (a field recorded on the span while it is entered applies at once).
pub(super) fn update_innermost(span: u64, f: impl FnOnce(Labels) -> Labels) -> Option<Labels> {
    ENTERED
        .try_with(|s| {
            let mut s = s.try_borrow_mut().ok()?;
            let top = s.last_mut().filter(|e| e.span == span)?;
            top.applied = f(top.prev);
            Some(top.applied)
        })
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(k: &str) -> Labels {
        Labels::new(&[("k", k)])
    }

    #[test]
    fn exits_in_and_out_of_order() {
        assert!(push(1, Labels::empty(), l("a")));
        assert!(push(2, l("a"), l("b")));
        assert_eq!(pop(2), Some(l("a")));
        assert_eq!(pop(1), Some(Labels::empty()));
        assert_eq!(pop(1), None, "not entered");

        assert!(push(1, Labels::empty(), l("a")));
        assert!(push(2, l("a"), l("b")));
        assert_eq!(pop(1), None, "out of order: the inner span's labels stay");
        assert_eq!(pop(2), Some(Labels::empty()), "what was there before both");

        assert!(push(1, Labels::empty(), l("a")));
        assert_eq!(update_innermost(2, |_| l("x")), None);
        assert_eq!(update_innermost(1, |prev| prev.with(&[("j", "1")])), {
            Some(Labels::new(&[("j", "1")]))
        });
        assert_eq!(pop(1), Some(Labels::empty()));
    }
}
