//! `heaprof::sync`: drop-in wrappers over `std::sync::{Mutex, RwLock, Condvar}` that feed the
//! `block` and `mutex` profiles — Go's block and mutex profiles for Rust locks.
//!
//! Called by user code. With both profiles off (the default, see
//! [`crate::set_block_profile_rate`] and [`crate::set_mutex_profile_fraction`]) a lock costs
//! two relaxed atomic loads more than std's and an unlock one. With either on, a lock first
//! tries `try_lock`; only when that fails (the lock is contended) is the wait timed and, if
//! sampled, recorded with the waiting stack (`block`), and the waiter registered with the lock
//! so that the release that ends its wait is charged with it (`mutex`, see `crate::profiles::waiters`).
//! A release that nobody waited for costs one relaxed load; one that ended some waiting is
//! recorded, with probability 1/fraction, with the releasing stack, after the lock is given
//! back (as Go does). The wrappers are 24 bytes larger than std's (the waiting-time
//! accounting) and their guards one pointer larger.
//!
//! Condition variable waits always block, so every `Condvar` wait is a `block` event (Go
//! counts `sync.Cond` waits and channel operations the same way): from the call until the
//! guard is back. `wait_while` / `wait_timeout_while` count as one event from the first real
//! wait until they return, and none if the condition is false at once. The mutex a wait
//! releases is a release like any other for the `mutex` profile.
//!
//! The `block` stack is the waiting thread's, with heaprof's frames trimmed; recording
//! happens after the lock was acquired (as in Go), adding one stack capture (~1–5 µs) to the
//! hold time of sampled contended acquisitions only. Poisoning behaves exactly as std's.
//!
//! ```
//! use heaprof::sync::{Condvar, Mutex};
//! let pair = (Mutex::new(false), Condvar::new());
//! *pair.0.lock().unwrap() = true;
//! let g = pair.1.wait_while(pair.0.lock().unwrap(), |ready| !*ready).unwrap();
//! assert!(*g);
//! ```

use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::{self as std_sync, LockResult, PoisonError, TryLockError, TryLockResult};
use std::time::{Duration, Instant};

use crate::profiles::waiters::LockWaits;
use crate::{profiles::block, profiles::mutex};

fn map_lock<G, H>(r: LockResult<G>, f: impl FnOnce(G) -> H) -> LockResult<H> {
    match r {
        Ok(g) => Ok(f(g)),
        Err(p) => Err(PoisonError::new(f(p.into_inner()))),
    }
}

fn map_try<G, H>(r: TryLockResult<G>, f: impl FnOnce(G) -> H) -> TryLockResult<H> {
    match r {
        Ok(g) => Ok(f(g)),
        Err(TryLockError::Poisoned(p)) => {
            Err(TryLockError::Poisoned(PoisonError::new(f(p.into_inner()))))
        }
        Err(TryLockError::WouldBlock) => Err(TryLockError::WouldBlock),
    }
}

fn elapsed_ns(t0: Instant) -> u64 {
    t0.elapsed().as_nanos().min(u64::MAX as u128) as u64
}

/// What a contended acquisition records: the block rate it was timed at (0: not timed) and
/// whether the waiter registers for the mutex profile.
#[derive(Clone, Copy)]
struct Profiling {
    block_rate: u64,
    mutex: bool,
}

/// Acquires with `try`, and on contention waits through `contended`; with both profiles off,
/// straight through `blocking`.
#[inline(always)]
fn acquire<G>(
    try_lock: impl FnOnce() -> TryLockResult<G>,
    contended: impl FnOnce(Profiling) -> LockResult<G>,
    blocking: impl FnOnce() -> LockResult<G>,
) -> LockResult<G> {
    let p = Profiling {
        block_rate: block::rate(),
        mutex: mutex::enabled(),
    };
    if p.block_rate == 0 && !p.mutex {
        return blocking();
    }
    match try_lock() {
        Ok(g) => Ok(g),
        Err(TryLockError::Poisoned(p)) => Err(p),
        Err(TryLockError::WouldBlock) => contended(p),
    }
}

/// A contended wait: registered with the lock's waiters and timed as the profiles ask.
#[cold]
#[inline(never)]
fn wait_contended<G>(waits: &LockWaits, p: Profiling, wait: impl FnOnce() -> G) -> G {
    if p.mutex {
        waits.arrive();
    }
    let t0 = (p.block_rate != 0).then(Instant::now);
    let g = wait();
    if p.mutex {
        waits.depart();
    }
    if let Some(t0) = t0 {
        block::record(elapsed_ns(t0), p.block_rate);
    }
    g
}

/// Before a release: the waiting it ends (0 when nobody waited: one relaxed load).
#[inline(always)]
fn release_charge(waits: &LockWaits) -> u64 {
    if waits.has_waiters() {
        waits.release()
    } else {
        0
    }
}

/// After a release that ended `charge` ns of waiting: the `mutex` profile's record.
#[inline(always)]
fn after_release(charge: u64) {
    if charge != 0 {
        mutex::record_release(charge);
    }
}

/// `std::sync::Mutex` that records contended waits in the `block` profile.
///
/// ```
/// let m = heaprof::sync::Mutex::new(1);
/// *m.lock().unwrap() += 1;
/// assert_eq!(m.into_inner().unwrap(), 2);
/// ```
#[derive(Default)]
pub struct Mutex<T: ?Sized> {
    waits: LockWaits,
    inner: std_sync::Mutex<T>,
}

/// The guard of a [`Mutex`]; derefs to the data, unlocks when dropped.
#[must_use = "if unused the Mutex will immediately unlock"]
pub struct MutexGuard<'a, T: ?Sized + 'a> {
    /// Dropped by hand in `Drop`, between the release accounting and its record.
    inner: ManuallyDrop<std_sync::MutexGuard<'a, T>>,
    waits: &'a LockWaits,
}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    fn new(inner: std_sync::MutexGuard<'a, T>, waits: &'a LockWaits) -> Self {
        MutexGuard {
            inner: ManuallyDrop::new(inner),
            waits,
        }
    }

    /// Takes the std guard out without releasing it (for condition variable waits).
    fn into_parts(self) -> (std_sync::MutexGuard<'a, T>, &'a LockWaits) {
        let mut me = ManuallyDrop::new(self);
        // SAFETY: `me` is never dropped (ManuallyDrop), so `inner` is taken exactly once and
        // not dropped again by `MutexGuard::drop`.
        let inner = unsafe { ManuallyDrop::take(&mut me.inner) };
        (inner, me.waits)
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        let charge = release_charge(self.waits);
        // SAFETY: `inner` is dropped exactly once, here; the guard is gone after this call.
        unsafe { ManuallyDrop::drop(&mut self.inner) };
        after_release(charge);
    }
}

impl<T> Mutex<T> {
    /// A new unlocked mutex holding `value`.
    pub const fn new(value: T) -> Self {
        Mutex {
            waits: LockWaits::new(),
            inner: std_sync::Mutex::new(value),
        }
    }

    /// Consumes the mutex and returns the data (as `std::sync::Mutex::into_inner`).
    pub fn into_inner(self) -> LockResult<T> {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Locks, blocking until available (as `std::sync::Mutex::lock`); a contended wait is
    /// recorded in the `block` profile, and charged to the releasing holder in the `mutex`
    /// profile, when they are on.
    #[inline]
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        let guard = |inner| MutexGuard::new(inner, &self.waits);
        acquire(
            || self.try_lock(),
            |p| map_lock(wait_contended(&self.waits, p, || self.inner.lock()), guard),
            || map_lock(self.inner.lock(), guard),
        )
    }

    /// Tries to lock without blocking (as `std::sync::Mutex::try_lock`); never recorded.
    #[inline]
    pub fn try_lock(&self) -> TryLockResult<MutexGuard<'_, T>> {
        map_try(self.inner.try_lock(), |inner| {
            MutexGuard::new(inner, &self.waits)
        })
    }

    /// Whether a holder panicked (as `std::sync::Mutex::is_poisoned`).
    pub fn is_poisoned(&self) -> bool {
        self.inner.is_poisoned()
    }

    /// Clears the poisoned state (as `std::sync::Mutex::clear_poison`).
    pub fn clear_poison(&self) {
        self.inner.clear_poison()
    }

    /// Mutable access without locking (as `std::sync::Mutex::get_mut`).
    pub fn get_mut(&mut self) -> LockResult<&mut T> {
        self.inner.get_mut()
    }
}

impl<T> From<T> for Mutex<T> {
    fn from(value: T) -> Self {
        Mutex::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

/// `std::sync::RwLock` that records contended waits in the `block` profile.
///
/// ```
/// let l = heaprof::sync::RwLock::new(5);
/// assert_eq!(*l.read().unwrap(), 5);
/// *l.write().unwrap() = 6;
/// assert_eq!(l.into_inner().unwrap(), 6);
/// ```
#[derive(Default)]
pub struct RwLock<T: ?Sized> {
    waits: LockWaits,
    inner: std_sync::RwLock<T>,
}

/// Shared guard of a [`RwLock`].
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockReadGuard<'a, T: ?Sized + 'a> {
    /// Dropped by hand in `Drop`, between the release accounting and its record.
    inner: ManuallyDrop<std_sync::RwLockReadGuard<'a, T>>,
    waits: &'a LockWaits,
}

/// Exclusive guard of a [`RwLock`].
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockWriteGuard<'a, T: ?Sized + 'a> {
    /// Dropped by hand in `Drop`, between the release accounting and its record.
    inner: ManuallyDrop<std_sync::RwLockWriteGuard<'a, T>>,
    waits: &'a LockWaits,
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        let charge = release_charge(self.waits);
        // SAFETY: `inner` is dropped exactly once, here; the guard is gone after this call.
        unsafe { ManuallyDrop::drop(&mut self.inner) };
        after_release(charge);
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        let charge = release_charge(self.waits);
        // SAFETY: `inner` is dropped exactly once, here; the guard is gone after this call.
        unsafe { ManuallyDrop::drop(&mut self.inner) };
        after_release(charge);
    }
}

impl<T> RwLock<T> {
    /// A new unlocked lock holding `value`.
    pub const fn new(value: T) -> Self {
        RwLock {
            waits: LockWaits::new(),
            inner: std_sync::RwLock::new(value),
        }
    }

    /// Consumes the lock and returns the data.
    pub fn into_inner(self) -> LockResult<T> {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Shared lock, blocking (as `std::sync::RwLock::read`); a contended wait is recorded.
    #[inline]
    pub fn read(&self) -> LockResult<RwLockReadGuard<'_, T>> {
        let guard = |inner| RwLockReadGuard {
            inner: ManuallyDrop::new(inner),
            waits: &self.waits,
        };
        acquire(
            || self.try_read(),
            |p| map_lock(wait_contended(&self.waits, p, || self.inner.read()), guard),
            || map_lock(self.inner.read(), guard),
        )
    }

    /// Exclusive lock, blocking (as `std::sync::RwLock::write`); a contended wait is recorded.
    #[inline]
    pub fn write(&self) -> LockResult<RwLockWriteGuard<'_, T>> {
        let guard = |inner| RwLockWriteGuard {
            inner: ManuallyDrop::new(inner),
            waits: &self.waits,
        };
        acquire(
            || self.try_write(),
            |p| map_lock(wait_contended(&self.waits, p, || self.inner.write()), guard),
            || map_lock(self.inner.write(), guard),
        )
    }

    /// Shared lock without blocking; never recorded.
    #[inline]
    pub fn try_read(&self) -> TryLockResult<RwLockReadGuard<'_, T>> {
        map_try(self.inner.try_read(), |inner| RwLockReadGuard {
            inner: ManuallyDrop::new(inner),
            waits: &self.waits,
        })
    }

    /// Exclusive lock without blocking; never recorded.
    #[inline]
    pub fn try_write(&self) -> TryLockResult<RwLockWriteGuard<'_, T>> {
        map_try(self.inner.try_write(), |inner| RwLockWriteGuard {
            inner: ManuallyDrop::new(inner),
            waits: &self.waits,
        })
    }

    /// Whether a writer panicked.
    pub fn is_poisoned(&self) -> bool {
        self.inner.is_poisoned()
    }

    /// Clears the poisoned state.
    pub fn clear_poison(&self) {
        self.inner.clear_poison()
    }

    /// Mutable access without locking.
    pub fn get_mut(&mut self) -> LockResult<&mut T> {
        self.inner.get_mut()
    }
}

impl<T> From<T> for RwLock<T> {
    fn from(value: T) -> Self {
        RwLock::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// A condition variable wait releases the mutex inside std: the release that ends others'
/// waiting is accounted here, before the wait (its record, if sampled, is taken with the lock
/// still held, as the release itself happens inside the wait).
fn release_for_wait<T: ?Sized>(
    guard: MutexGuard<'_, T>,
) -> (std_sync::MutexGuard<'_, T>, &LockWaits) {
    let (inner, waits) = guard.into_parts();
    after_release(release_charge(waits));
    (inner, waits)
}

/// `std::sync::Condvar` over heaprof's [`MutexGuard`]; every wait is a `block` event.
///
/// ```
/// use std::time::Duration;
/// let (m, cv) = (heaprof::sync::Mutex::new(0), heaprof::sync::Condvar::new());
/// let (g, res) = cv.wait_timeout(m.lock().unwrap(), Duration::from_millis(1)).unwrap();
/// assert!(res.timed_out());
/// assert_eq!(*g, 0);
/// cv.notify_all();
/// ```
#[derive(Debug, Default)]
pub struct Condvar {
    inner: std_sync::Condvar,
}

impl Condvar {
    /// A new condition variable.
    pub const fn new() -> Self {
        Condvar {
            inner: std_sync::Condvar::new(),
        }
    }

    /// Blocks until notified (as `std::sync::Condvar::wait`; spurious wakeups possible).
    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        let (inner, waits) = release_for_wait(guard);
        let rate = block::rate();
        if rate == 0 {
            return map_lock(self.inner.wait(inner), |g| MutexGuard::new(g, waits));
        }
        let t0 = Instant::now();
        let r = self.inner.wait(inner);
        block::record(elapsed_ns(t0), rate);
        map_lock(r, |g| MutexGuard::new(g, waits))
    }

    /// Blocks while `condition` returns true (as `std::sync::Condvar::wait_while`).
    pub fn wait_while<'a, T, F>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: F,
    ) -> LockResult<MutexGuard<'a, T>>
    where
        F: FnMut(&mut T) -> bool,
    {
        if !condition(&mut *guard) {
            return Ok(guard);
        }
        let (inner, waits) = release_for_wait(guard);
        let rate = block::rate();
        let t0 = Instant::now();
        let r = self.inner.wait_while(inner, condition);
        if rate != 0 {
            block::record(elapsed_ns(t0), rate);
        }
        map_lock(r, |g| MutexGuard::new(g, waits))
    }

    /// Blocks until notified or `dur` passed (as `std::sync::Condvar::wait_timeout`).
    pub fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        dur: Duration,
    ) -> LockResult<(MutexGuard<'a, T>, std_sync::WaitTimeoutResult)> {
        let (inner, waits) = release_for_wait(guard);
        let rate = block::rate();
        let t0 = Instant::now();
        let r = self.inner.wait_timeout(inner, dur);
        if rate != 0 {
            block::record(elapsed_ns(t0), rate);
        }
        map_lock(r, |(g, t)| (MutexGuard::new(g, waits), t))
    }

    /// Blocks while `condition` is true, at most `dur` (as
    /// `std::sync::Condvar::wait_timeout_while`).
    pub fn wait_timeout_while<'a, T, F>(
        &self,
        mut guard: MutexGuard<'a, T>,
        dur: Duration,
        mut condition: F,
    ) -> LockResult<(MutexGuard<'a, T>, std_sync::WaitTimeoutResult)>
    where
        F: FnMut(&mut T) -> bool,
    {
        if !condition(&mut *guard) {
            // std returns a "not timed out" result without waiting; get one the same way.
            let (inner, waits) = guard.into_parts();
            return map_lock(
                self.inner.wait_timeout_while(inner, dur, |_| false),
                |(g, t)| (MutexGuard::new(g, waits), t),
            );
        }
        let (inner, waits) = release_for_wait(guard);
        let rate = block::rate();
        let t0 = Instant::now();
        let r = self.inner.wait_timeout_while(inner, dur, condition);
        if rate != 0 {
            block::record(elapsed_ns(t0), rate);
        }
        map_lock(r, |(g, t)| (MutexGuard::new(g, waits), t))
    }

    /// Wakes one waiter.
    pub fn notify_one(&self) {
        self.inner.notify_one()
    }

    /// Wakes all waiters.
    pub fn notify_all(&self) {
        self.inner.notify_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisoning_is_passed_through() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        let g = m.lock().unwrap_err().into_inner();
        assert_eq!(*g, 1);
        drop(g);
        assert!(matches!(m.try_lock(), Err(TryLockError::Poisoned(_))));
        m.clear_poison();
        assert!(m.lock().is_ok());
    }

    #[test]
    fn try_lock_reports_would_block() {
        let m = Mutex::new(());
        let _g = m.lock().unwrap();
        assert!(matches!(m.try_lock(), Err(TryLockError::WouldBlock)));
        let l = RwLock::new(());
        let _r = l.read().unwrap();
        assert!(l.try_read().is_ok());
        assert!(matches!(l.try_write(), Err(TryLockError::WouldBlock)));
    }

    #[test]
    fn wait_timeout_while_false_at_once_does_not_wait() {
        let (m, cv) = (Mutex::new(3), Condvar::new());
        let (g, r) = cv
            .wait_timeout_while(m.lock().unwrap(), Duration::from_secs(60), |v| *v != 3)
            .unwrap();
        assert!(!r.timed_out());
        assert_eq!(*g, 3);
    }

    #[test]
    fn get_mut_and_from() {
        let mut m = Mutex::from(vec![1]);
        m.get_mut().unwrap().push(2);
        assert_eq!(*m.lock().unwrap(), vec![1, 2]);
        let mut l = RwLock::from(1);
        *l.get_mut().unwrap() = 4;
        assert_eq!(format!("{:?}", l.read().unwrap()), "4");
    }
}
