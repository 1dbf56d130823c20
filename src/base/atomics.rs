//! The atomics and cells the lock-free protocols are written against, so one source runs
//! in the program and under the `loom` model checker.
//!
//! Each protocol type takes a [`Family`] parameter that defaults to [`Std`]: core's atomics
//! and `UnsafeCell`, through trait methods that are `#[inline(always)]` forwards to the
//! inherent ones, so the program's code is what it was before the parameter existed (and
//! statics, which need `const` constructors, keep building). Under `--cfg loom` (tests
//! only) the same code is instantiated with `Loom`, whose atomics and cells are loom's:
//! the models in each protocol's `loom_model` test module then explore the interleavings
//! and weak-memory outcomes of a few threads and check the protocol's invariant.
//!
//! Run the models with
//! `RUSTFLAGS="--cfg loom" cargo test --release --lib --target-dir target/loom --features tracing loom_model`
//! (feature `tracing` for the span table's models).

pub use core::sync::atomic::Ordering;

/// An atomic word: the operations the protocols use, with core's signatures.
pub trait Atomic: Sync + Send {
    /// The value held.
    type Value: Copy;
    /// A new atomic holding `v`.
    fn new(v: Self::Value) -> Self;
    /// Loads the value.
    fn load(&self, order: Ordering) -> Self::Value;
    /// Stores `v`.
    fn store(&self, v: Self::Value, order: Ordering);
    /// Stores `v`, returning the previous value.
    fn swap(&self, v: Self::Value, order: Ordering) -> Self::Value;
    /// Stores `new` if the value is `current`; the previous value either way.
    fn compare_exchange(
        &self,
        current: Self::Value,
        new: Self::Value,
        success: Ordering,
        failure: Ordering,
    ) -> Result<Self::Value, Self::Value>;
    /// As [`Atomic::compare_exchange`], but may fail spuriously.
    fn compare_exchange_weak(
        &self,
        current: Self::Value,
        new: Self::Value,
        success: Ordering,
        failure: Ordering,
    ) -> Result<Self::Value, Self::Value>;
}

/// An atomic integer: [`Atomic`] plus wrapping addition.
pub trait AtomicInt: Atomic {
    /// Adds `v` (wrapping), returning the previous value.
    fn fetch_add(&self, v: Self::Value, order: Ordering) -> Self::Value;
}

/// A cell whose contents one party at a time may access, as the protocol around it says.
/// The accessors hand out raw pointers inside a closure (loom's API), so that loom can
/// check that no two accesses race.
pub trait SharedCell<T> {
    /// Calls `f` with a pointer for reading the contents.
    fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R;
    /// Calls `f` with a pointer for writing the contents.
    fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R;
}

/// A set of atomic and cell types to build a protocol from.
pub trait Family: Sized + 'static {
    /// Atomic `u8`.
    type U8: AtomicInt<Value = u8>;
    /// Atomic `u32`.
    type U32: AtomicInt<Value = u32>;
    /// Atomic `u64`.
    type U64: AtomicInt<Value = u64>;
    /// Atomic `usize`.
    type Usize: AtomicInt<Value = usize>;
    /// Atomic `bool`.
    type Bool: Atomic<Value = bool>;
    /// Atomic `*mut T`.
    type Ptr<T>: Atomic<Value = *mut T>;
    /// Interior mutability handed over by a protocol.
    type Cell<T>: SharedCell<T>;
    /// A busy-wait hint (loom: let another thread run).
    fn spin_loop();
}

/// The program's family: core's atomics and `UnsafeCell`.
#[derive(Debug)]
pub struct Std;

impl Family for Std {
    type U8 = core::sync::atomic::AtomicU8;
    type U32 = core::sync::atomic::AtomicU32;
    type U64 = core::sync::atomic::AtomicU64;
    type Usize = core::sync::atomic::AtomicUsize;
    type Bool = core::sync::atomic::AtomicBool;
    type Ptr<T> = core::sync::atomic::AtomicPtr<T>;
    type Cell<T> = core::cell::UnsafeCell<T>;
    #[inline(always)]
    fn spin_loop() {
        core::hint::spin_loop();
    }
}

/// Implements [`Atomic`] for an atomic type `$a` of values `$v` by forwarding to its
/// inherent methods.
macro_rules! forward_atomic {
    ($a:ty, $v:ty $(, $t:ident)?) => {
        impl$(<$t>)? Atomic for $a {
            type Value = $v;
            #[inline(always)]
            fn new(v: $v) -> Self {
                <$a>::new(v)
            }
            #[inline(always)]
            fn load(&self, order: Ordering) -> $v {
                <$a>::load(self, order)
            }
            #[inline(always)]
            fn store(&self, v: $v, order: Ordering) {
                <$a>::store(self, v, order)
            }
            #[inline(always)]
            fn swap(&self, v: $v, order: Ordering) -> $v {
                <$a>::swap(self, v, order)
            }
            #[inline(always)]
            fn compare_exchange(
                &self,
                current: $v,
                new: $v,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$v, $v> {
                <$a>::compare_exchange(self, current, new, success, failure)
            }
            #[inline(always)]
            fn compare_exchange_weak(
                &self,
                current: $v,
                new: $v,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$v, $v> {
                <$a>::compare_exchange_weak(self, current, new, success, failure)
            }
        }
    };
}

/// [`forward_atomic`] plus [`AtomicInt`].
macro_rules! forward_int {
    ($($a:ty => $v:ty),* $(,)?) => {$(
        forward_atomic!($a, $v);
        impl AtomicInt for $a {
            #[inline(always)]
            fn fetch_add(&self, v: $v, order: Ordering) -> $v {
                <$a>::fetch_add(self, v, order)
            }
        }
    )*};
}

/// [`SharedCell`] for a cell type with `with`/`with_mut` (loom's) or `get` (core's).
macro_rules! forward_cell {
    ($c:ident, get) => {
        impl<T> SharedCell<T> for $c<T> {
            #[inline(always)]
            fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
                f(self.get())
            }
            #[inline(always)]
            fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
                f(self.get())
            }
        }
    };
    ($c:ident, with) => {
        impl<T> SharedCell<T> for $c<T> {
            fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
                $c::with(self, f)
            }
            fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
                $c::with_mut(self, f)
            }
        }
    };
}

mod std_impls {
    use super::*;
    use core::cell::UnsafeCell as CoreUnsafeCell;
    use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize};

    forward_int!(AtomicU8 => u8, AtomicU32 => u32, AtomicU64 => u64, AtomicUsize => usize);
    forward_atomic!(AtomicBool, bool);
    forward_atomic!(AtomicPtr<T>, *mut T, T);
    forward_cell!(CoreUnsafeCell, get);
}

#[cfg(all(test, loom))]
pub use loom_family::Loom;

#[cfg(all(test, loom))]
mod loom_family {
    use super::*;
    use loom::cell::UnsafeCell as LoomUnsafeCell;
    use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize};

    /// The model checker's family: loom's atomics and cells (only inside `loom::model`).
    #[derive(Debug)]
    pub struct Loom;

    impl Family for Loom {
        type U8 = AtomicU8;
        type U32 = AtomicU32;
        type U64 = AtomicU64;
        type Usize = AtomicUsize;
        type Bool = AtomicBool;
        type Ptr<T> = AtomicPtr<T>;
        type Cell<T> = LoomUnsafeCell<T>;
        fn spin_loop() {
            loom::hint::spin_loop();
        }
    }

    forward_int!(AtomicU8 => u8, AtomicU32 => u32, AtomicU64 => u64, AtomicUsize => usize);
    forward_atomic!(AtomicBool, bool);
    forward_atomic!(AtomicPtr<T>, *mut T, T);
    forward_cell!(LoomUnsafeCell, with);
}

/// Runs the loom model `f` under `builder` and returns how many executions (interleavings)
/// loom explored; prints `loom_model NAME: N interleavings` (run with `--nocapture`).
#[cfg(all(test, loom))]
pub fn model(
    name: &str,
    builder: loom::model::Builder,
    f: impl Fn() + Sync + Send + 'static,
) -> usize {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    builder.check(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        f();
    });
    let n = runs.load(Ordering::Relaxed);
    println!("loom_model {name}: {n} interleavings");
    n
}

/// A loom builder with loom's defaults and the preemption bound `bound` (`None`: every
/// interleaving), unless `LOOM_MAX_PREEMPTIONS` sets another or `HEAPROF_LOOM_EXHAUSTIVE`
/// asks for every interleaving of every model (minutes for the larger ones).
#[cfg(all(test, loom))]
pub fn builder(bound: Option<usize>) -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() && std::env::var_os("HEAPROF_LOOM_EXHAUSTIVE").is_none() {
        b.preemption_bound = bound;
    }
    b
}

/// `v` as a slice that lives until [`unleak`]: the protocols keep their slots as
/// `&'static` (the program maps them once and never frees them), a model iteration frees
/// them when it ends.
#[cfg(all(test, loom))]
pub fn leak<T>(v: Vec<T>) -> &'static [T] {
    Box::leak(v.into_boxed_slice())
}

/// Frees a slice from [`leak`].
///
/// # Safety
/// No reference into `s` (or derived from it) may be used afterwards: every thread of the
/// model that used it has been joined and every structure holding it dropped.
#[cfg(all(test, loom))]
pub unsafe fn unleak<T>(s: &'static [T]) {
    // SAFETY: `s` came from `Box::leak` of a boxed slice (`leak`) and, by the caller's
    // promise, is no longer used.
    drop(unsafe { Box::from_raw(s as *const [T] as *mut [T]) });
}
