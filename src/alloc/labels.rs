//! Labels: key/value pairs attached to the heap (and CPU) samples taken while they are in
//! force on a thread, written as pprof `Label`s so `go tool pprof -tagfocus key=value`
//! splits a profile by request kind, tenant, job…
//!
//! A label set is interned once (here, outside the allocator) into a small integer id; the
//! thread's current id lives in its allocator state (`tls`), which the sampled path and the
//! SIGPROF handler read. Nothing is done on the unsampled path, and nothing allocates on the
//! sampled one.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use crate::base::tls;

/// One interned, sorted set of (key, value) pairs.
type Set = Arc<[(String, String)]>;

/// The most distinct label sets a process interns (the empty set not counted), so that a
/// label with unbounded values (a request id) cannot grow memory without limit. Once
/// `MAX_LABEL_SETS - 1` sets exist, every new set is replaced by the one set
/// `heaprof.overflow=label_sets` (the last slot), and each replacement is counted: heap,
/// allocs and CPU profiles carry `heaprof.label_sets: N of 4096 (B bytes)` and
/// `heaprof.label_sets_overflowed: K` comments. A set costs about 100 bytes plus its keys and
/// values, so the registry stays under about 1 MiB with short values.
pub const MAX_LABEL_SETS: usize = 4096;

/// The set that stands for the sets refused past [`MAX_LABEL_SETS`].
const OVERFLOW_PAIR: (&str, &str) = ("heaprof.overflow", "label_sets");

/// The most (base, over) merges remembered; the cache is emptied when it is full.
const MAX_MERGES: usize = 4 * MAX_LABEL_SETS;

struct Registry {
    /// `sets[id - 1]` is label set `id`; id 0 is the empty set.
    sets: Vec<Set>,
    ids: BTreeMap<Set, u32>,
    /// Sets refused because the registry was full (each refusal counts).
    overflowed: u64,
    /// Bytes the sets take (estimated from their lengths; see [`stat_lines`]).
    bytes: usize,
    /// `merge(base, over)` results by (base id, over id).
    merges: BTreeMap<(u32, u32), u32>,
}

/// The interned sets. A `const` static, not a lazily initialised one: a fork while another
/// thread was initialising a `OnceLock` would leave the child waiting for it for ever.
static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    sets: Vec::new(),
    ids: BTreeMap::new(),
    overflowed: 0,
    bytes: 0,
    merges: BTreeMap::new(),
});
static REGISTRY_FORK: crate::base::fork::HeldAcrossFork<Registry> =
    crate::base::fork::HeldAcrossFork::new();

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fork prepare: waits for an interning or a lookup in progress and holds the registry's
/// lock across the fork.
pub(crate) fn fork_prepare() {
    REGISTRY_FORK.hold(&REGISTRY);
}

/// Fork parent and child: releases the lock.
pub(crate) fn fork_release() {
    REGISTRY_FORK.release();
}

fn intern(mut pairs: Vec<(String, String)>) -> u32 {
    if pairs.is_empty() {
        return 0;
    }
    pairs.sort();
    let set: Set = pairs.into();
    crate::base::fork::ensure_registered();
    let mut r = registry();
    if let Some(&id) = r.ids.get(&set) {
        return id;
    }
    if r.sets.len() + 1 >= MAX_LABEL_SETS && set[..] != [overflow_pair()] {
        r.overflowed += 1;
        drop(r);
        return intern(vec![overflow_pair()]);
    }
    r.bytes += set_bytes(&set);
    r.sets.push(set.clone());
    let id = r.sets.len() as u32;
    r.ids.insert(set, id);
    id
}

fn overflow_pair() -> (String, String) {
    (OVERFLOW_PAIR.0.to_string(), OVERFLOW_PAIR.1.to_string())
}

/// What a set costs: its pairs and their strings, the `Arc` header, its slot in `sets` and
/// its entry in `ids` (a B-tree entry taken as a key and value plus a pointer of node).
fn set_bytes(set: &Set) -> usize {
    use std::mem::size_of;
    let strings: usize = set.iter().map(|(k, v)| k.len() + v.len()).sum();
    strings
        + size_of_val::<[(String, String)]>(set)
        + 2 * size_of::<usize>()
        + 2 * size_of::<Set>()
        + size_of::<u32>()
        + size_of::<usize>()
}

/// `base` with the pairs of `over` added, `over` winning key by key. Interned once per
/// (base, over) pair, then a lookup that allocates nothing (the tracing layer merges the
/// labels in force with a span's on entry).
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) fn merge(base: Labels, over: Labels) -> Labels {
    if base.id == 0 || base == over {
        return over;
    }
    if over.id == 0 {
        return base;
    }
    if let Some(&id) = registry().merges.get(&(base.id, over.id)) {
        return Labels { id };
    }
    let _guard = tls::ProfilerGuard::enter();
    let over_pairs = pairs(over.id);
    let refs: Vec<(&str, &str)> = over_pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let merged = base.with(&refs);
    let mut r = registry();
    if r.merges.len() >= MAX_MERGES {
        r.merges.clear();
    }
    r.merges.insert((base.id, over.id), merged.id);
    merged
}

/// Puts `labels` in force on this thread and returns the set they replace (the tracing
/// layer keeps its own stack of them, one entry per entered span).
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) fn replace_current(labels: Labels) -> Labels {
    Labels {
        id: tls::with(|t| t.labels.replace(labels.id)),
    }
}

/// The registry's figures as profile comments: `heaprof.label_sets` (sets of the cap, and
/// their estimated bytes plus the merge cache's) and `heaprof.label_sets_overflowed`.
pub(crate) fn stat_lines() -> Vec<(&'static str, String)> {
    let r = registry();
    let merge_bytes =
        r.merges.len() * (3 * std::mem::size_of::<u32>() + std::mem::size_of::<usize>());
    vec![
        (
            "heaprof.label_sets",
            format!(
                "{} of {} ({} bytes)",
                r.sets.len(),
                MAX_LABEL_SETS,
                r.bytes + merge_bytes
            ),
        ),
        ("heaprof.label_sets_overflowed", r.overflowed.to_string()),
    ]
}

/// The pairs of label set `id` (empty for 0 or an unknown id). For profile writers.
pub(crate) fn pairs(id: u32) -> Set {
    if id == 0 {
        return Arc::from([]);
    }
    let r = registry();
    r.sets
        .get(id as usize - 1)
        .cloned()
        .unwrap_or_else(|| Arc::from([]))
}

/// An interned label set: cheap to copy and to send to another thread (an async task's
/// labels travel with the task; see [`Labeled`]). A process interns at most
/// [`MAX_LABEL_SETS`] distinct sets; past that, new sets become `heaprof.overflow=label_sets`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Labels {
    id: u32,
}

impl Labels {
    /// The label set made of `pairs` (a later pair with the same key wins).
    ///
    /// ```
    /// let l = heaprof::Labels::new(&[("request", "checkout"), ("tenant", "acme")]);
    /// assert_eq!(l.pairs(), vec![("request".to_string(), "checkout".to_string()),
    ///                            ("tenant".to_string(), "acme".to_string())]);
    /// ```
    pub fn new(pairs: &[(&str, &str)]) -> Labels {
        Labels::empty().with(pairs)
    }

    /// No labels.
    pub const fn empty() -> Labels {
        Labels { id: 0 }
    }

    /// This set with `pairs` added (replacing values of keys already present).
    pub fn with(self, pairs: &[(&str, &str)]) -> Labels {
        let _guard = tls::ProfilerGuard::enter();
        let mut merged: Vec<(String, String)> = self.pairs();
        for (k, v) in pairs {
            merged.retain(|(mk, _)| mk != k);
            merged.push((k.to_string(), v.to_string()));
        }
        Labels { id: intern(merged) }
    }

    /// The interned id (0 = empty), for the tracing layer's table of span sets.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn id(self) -> u32 {
        self.id
    }

    /// The set with interned id `id` (one [`Labels::id`] gave).
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn from_id(id: u32) -> Labels {
        Labels { id }
    }

    /// The labels in force on this thread.
    pub fn current() -> Labels {
        Labels {
            id: tls::with(|t| t.labels.get()),
        }
    }

    /// The (key, value) pairs, sorted by key.
    pub fn pairs(&self) -> Vec<(String, String)> {
        pairs(self.id).to_vec()
    }

    /// Puts this set in force on the current thread until the guard is dropped (which
    /// restores the previous set). The guard is not `Send`: enter again on each thread.
    pub fn enter(&self) -> LabelGuard {
        let prev = tls::with(|t| t.labels.replace(self.id));
        LabelGuard {
            prev,
            _not_send: core::marker::PhantomData,
        }
    }
}

/// Shows the pairs, not the interned id: `Labels { pairs: {"request": "checkout"} }`.
///
/// ```
/// let l = heaprof::Labels::new(&[("request", "checkout")]);
/// assert_eq!(format!("{l:?}"), r#"Labels { pairs: {"request": "checkout"} }"#);
/// ```
impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = pairs(self.id);
        let map = DebugPairs(&set);
        f.debug_struct("Labels").field("pairs", &map).finish()
    }
}

/// Pairs shown as a map, in their (sorted) order.
struct DebugPairs<'a>(&'a [(String, String)]);

impl fmt::Debug for DebugPairs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

/// Restores the thread's previous labels when dropped. See [`Labels::enter`].
#[must_use = "the labels are in force only while the guard lives"]
pub struct LabelGuard {
    prev: u32,
    _not_send: core::marker::PhantomData<*const ()>,
}

/// Shows the labels the guard restores when dropped.
impl fmt::Debug for LabelGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabelGuard")
            .field("restores", &Labels { id: self.prev })
            .finish()
    }
}

impl Drop for LabelGuard {
    fn drop(&mut self) {
        let prev = self.prev;
        tls::with(|t| t.labels.set(prev));
    }
}

/// Runs `f` with `pairs` added to this thread's labels: heap (and CPU) samples taken inside
/// carry them.
///
/// ```
/// let v = heaprof::with_labels(&[("request", "checkout")], || vec![0u8; 1 << 20]);
/// assert_eq!(v.len(), 1 << 20);
/// ```
pub fn with_labels<R>(pairs: &[(&str, &str)], f: impl FnOnce() -> R) -> R {
    let _g = Labels::current().with(pairs).enter();
    f()
}

/// A future that runs with `labels` in force during every poll, on whichever thread polls
/// it: the form for async code whose tasks move between threads.
///
/// ```
/// # use std::future::Future;
/// let fut = heaprof::Labeled::new(heaprof::Labels::new(&[("request", "search")]), async { 42 });
/// # let _ = fut;
/// ```
pub struct Labeled<F> {
    labels: Labels,
    inner: F,
}

impl<F> Labeled<F> {
    /// Wraps `inner` so it is polled with `labels` in force.
    pub fn new(labels: Labels, inner: F) -> Self {
        Labeled { labels, inner }
    }
}

/// Shows the labels; the wrapped future is left out (futures seldom implement `Debug`).
impl<F> fmt::Debug for Labeled<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Labeled")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Labeled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned: it is never moved out of `self`, and
        // `Labeled` has no Drop impl or `Unpin` assumption that would move it.
        let this = unsafe { self.get_unchecked_mut() };
        let _g = this.labels.enter();
        // SAFETY: see above; `this.inner` stays where it is for as long as `self` is pinned.
        unsafe { Pin::new_unchecked(&mut this.inner) }.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_merging_and_guards() {
        let a = Labels::new(&[("k", "1"), ("j", "x")]);
        assert_eq!(
            a,
            Labels::new(&[("j", "x"), ("k", "1")]),
            "order does not matter"
        );
        assert_ne!(a, Labels::new(&[("k", "2"), ("j", "x")]));
        assert_eq!(
            a.with(&[("k", "2")]).pairs(),
            Labels::new(&[("j", "x"), ("k", "2")]).pairs()
        );
        assert_eq!(Labels::current(), Labels::empty());
        {
            let _g = a.enter();
            assert_eq!(Labels::current(), a);
            with_labels(&[("k", "3")], || {
                assert_eq!(
                    Labels::current().pairs(),
                    vec![("j".into(), "x".into()), ("k".into(), "3".into())]
                );
            });
            assert_eq!(Labels::current(), a);
        }
        assert_eq!(Labels::current(), Labels::empty());
        assert!(pairs(9_999_999).is_empty());
    }

    #[test]
    fn labeled_future_enters_on_poll() {
        let l = Labels::new(&[("request", "poll")]);
        let mut fut = Box::pin(Labeled::new(l, async { Labels::current() }));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert_eq!(fut.as_mut().poll(&mut cx), Poll::Ready(l));
        assert_eq!(Labels::current(), Labels::empty());
    }
}
