//! `heaprof::sync`: drop-in wrappers over `std::sync::{Mutex, RwLock, Condvar}` that feed the
//! `block` profile — Go's block profile for Rust locks.
//!
//! Called by user code. With the block profile rate at 0 (the default, see
//! [`crate::set_block_profile_rate`]) a lock costs one relaxed atomic load more than std's.
//! With a rate set, a lock first tries `try_lock`; only when that fails (the lock is
//! contended) is the wait timed and, if sampled, recorded with the waiting stack. Condition
//! variable waits always block, so every `Condvar` wait is an event (Go counts `sync.Cond`
//! waits and channel operations the same way): from the call until the guard is back.
//! `wait_while` / `wait_timeout_while` count as one event from the first real wait until
//! they return, and none if the condition is false at once.
//!
//! The recorded stack is the waiting thread's, with heaprof's frames trimmed; recording
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
use std::ops::{Deref, DerefMut};
use std::sync::{self as std_sync, LockResult, PoisonError, TryLockError, TryLockResult};
use std::time::{Duration, Instant};

use crate::block;

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

/// Acquires with `try`, and on contention times `block` and records the wait.
#[inline(always)]
fn acquire<G>(
    try_lock: impl FnOnce() -> TryLockResult<G>,
    contended: impl FnOnce(u64) -> LockResult<G>,
    blocking: impl FnOnce() -> LockResult<G>,
) -> LockResult<G> {
    let rate = block::rate();
    if rate == 0 {
        return blocking();
    }
    match try_lock() {
        Ok(g) => Ok(g),
        Err(TryLockError::Poisoned(p)) => Err(p),
        Err(TryLockError::WouldBlock) => contended(rate),
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
    inner: std_sync::Mutex<T>,
}

/// The guard of a [`Mutex`]; derefs to the data, unlocks when dropped.
#[must_use = "if unused the Mutex will immediately unlock"]
pub struct MutexGuard<'a, T: ?Sized + 'a> {
    inner: std_sync::MutexGuard<'a, T>,
}

impl<T> Mutex<T> {
    /// A new unlocked mutex holding `value`.
    pub const fn new(value: T) -> Self {
        Mutex {
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
    /// recorded in the `block` profile when a rate is set.
    #[inline]
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        acquire(
            || self.try_lock(),
            |rate| self.lock_contended(rate),
            || map_lock(self.inner.lock(), |inner| MutexGuard { inner }),
        )
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self, rate: u64) -> LockResult<MutexGuard<'_, T>> {
        let t0 = Instant::now();
        let r = self.inner.lock();
        block::record(elapsed_ns(t0), rate);
        map_lock(r, |inner| MutexGuard { inner })
    }

    /// Tries to lock without blocking (as `std::sync::Mutex::try_lock`); never recorded.
    #[inline]
    pub fn try_lock(&self) -> TryLockResult<MutexGuard<'_, T>> {
        map_try(self.inner.try_lock(), |inner| MutexGuard { inner })
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
    inner: std_sync::RwLock<T>,
}

/// Shared guard of a [`RwLock`].
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockReadGuard<'a, T: ?Sized + 'a> {
    inner: std_sync::RwLockReadGuard<'a, T>,
}

/// Exclusive guard of a [`RwLock`].
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockWriteGuard<'a, T: ?Sized + 'a> {
    inner: std_sync::RwLockWriteGuard<'a, T>,
}

impl<T> RwLock<T> {
    /// A new unlocked lock holding `value`.
    pub const fn new(value: T) -> Self {
        RwLock {
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
        acquire(
            || self.try_read(),
            |rate| self.read_contended(rate),
            || map_lock(self.inner.read(), |inner| RwLockReadGuard { inner }),
        )
    }

    #[cold]
    #[inline(never)]
    fn read_contended(&self, rate: u64) -> LockResult<RwLockReadGuard<'_, T>> {
        let t0 = Instant::now();
        let r = self.inner.read();
        block::record(elapsed_ns(t0), rate);
        map_lock(r, |inner| RwLockReadGuard { inner })
    }

    /// Exclusive lock, blocking (as `std::sync::RwLock::write`); a contended wait is recorded.
    #[inline]
    pub fn write(&self) -> LockResult<RwLockWriteGuard<'_, T>> {
        acquire(
            || self.try_write(),
            |rate| self.write_contended(rate),
            || map_lock(self.inner.write(), |inner| RwLockWriteGuard { inner }),
        )
    }

    #[cold]
    #[inline(never)]
    fn write_contended(&self, rate: u64) -> LockResult<RwLockWriteGuard<'_, T>> {
        let t0 = Instant::now();
        let r = self.inner.write();
        block::record(elapsed_ns(t0), rate);
        map_lock(r, |inner| RwLockWriteGuard { inner })
    }

    /// Shared lock without blocking; never recorded.
    #[inline]
    pub fn try_read(&self) -> TryLockResult<RwLockReadGuard<'_, T>> {
        map_try(self.inner.try_read(), |inner| RwLockReadGuard { inner })
    }

    /// Exclusive lock without blocking; never recorded.
    #[inline]
    pub fn try_write(&self) -> TryLockResult<RwLockWriteGuard<'_, T>> {
        map_try(self.inner.try_write(), |inner| RwLockWriteGuard { inner })
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
        let rate = block::rate();
        if rate == 0 {
            return map_lock(self.inner.wait(guard.inner), |inner| MutexGuard { inner });
        }
        self.wait_recorded(guard, rate)
    }

    #[inline(never)]
    fn wait_recorded<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        rate: u64,
    ) -> LockResult<MutexGuard<'a, T>> {
        let t0 = Instant::now();
        let r = self.inner.wait(guard.inner);
        block::record(elapsed_ns(t0), rate);
        map_lock(r, |inner| MutexGuard { inner })
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
        let rate = block::rate();
        let t0 = Instant::now();
        let r = self.inner.wait_while(guard.inner, condition);
        if rate != 0 {
            block::record(elapsed_ns(t0), rate);
        }
        map_lock(r, |inner| MutexGuard { inner })
    }

    /// Blocks until notified or `dur` passed (as `std::sync::Condvar::wait_timeout`).
    pub fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        dur: Duration,
    ) -> LockResult<(MutexGuard<'a, T>, std_sync::WaitTimeoutResult)> {
        let rate = block::rate();
        let t0 = Instant::now();
        let r = self.inner.wait_timeout(guard.inner, dur);
        if rate != 0 {
            block::record(elapsed_ns(t0), rate);
        }
        map_lock(r, |(inner, t)| (MutexGuard { inner }, t))
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
            return map_lock(
                self.inner.wait_timeout_while(guard.inner, dur, |_| false),
                |(inner, t)| (MutexGuard { inner }, t),
            );
        }
        let rate = block::rate();
        let t0 = Instant::now();
        let r = self.inner.wait_timeout_while(guard.inner, dur, condition);
        if rate != 0 {
            block::record(elapsed_ns(t0), rate);
        }
        map_lock(r, |(inner, t)| (MutexGuard { inner }, t))
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
