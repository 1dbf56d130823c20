//! Custom count profiles (Go's `pprof.NewProfile`): a set of live keys, each tied to the
//! stack that added it.
//!
//! Called by [`crate::Profile`]'s `add`/`remove`/`write_to` from any number of threads at
//! once. Never from the allocator or a signal handler: it takes shard locks and allocates
//! (key boxes, map growth) under the profiler guard.
//!
//! # Design
//! - Keys are any `Hash + Eq + Send + Sync + 'static` value, type-erased behind
//!   [`ErasedKey`]: two keys are the same iff they have the same type and compare equal
//!   (`5u32` and `5u64` are different keys). `remove` looks up by reference, without boxing.
//! - The stack is captured with [`crate::unwind::capture`] and interned in the lock-free
//!   stack table shared with the heap profile, so an entry is one `u32` stack id.
//! - key → stack id lives in [`SHARDS`] `Mutex<HashMap>` shards chosen by the key's hash,
//!   each on its own cache line, so threads adding different keys rarely meet.
//! - Writers copy the ids out shard by shard, releasing each lock before the next, and
//!   symbolize and encode with no lock held.

use std::any::Any;
use std::collections::hash_map::{Entry, RandomState};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::alloc::stack_table::OVERFLOW_STACK;
use crate::unwind::{self, MAX_DEPTH};
use crate::{alloc::tables, base::tls};

/// Custom profiles by name.
static CUSTOM: Mutex<BTreeMap<String, Arc<CustomProfile>>> = Mutex::new(BTreeMap::new());

/// Locks the registry of custom profiles (a map from name to profile).
pub(crate) fn registry() -> RegistryGuard {
    // Before the lock: registering the fork handlers with it held could wait for a fork
    // that waits for it (glibc holds its atfork lock while the prepare handlers run).
    crate::base::fork::ensure_registered();
    // Registry operations are single map calls: a poisoned lock still holds a sound map.
    CUSTOM.lock().unwrap_or_else(|e| e.into_inner())
}

/// The registry's lock guard (held across a fork by [`fork_prepare`]).
pub(crate) type RegistryGuard =
    std::sync::MutexGuard<'static, BTreeMap<String, Arc<CustomProfile>>>;

/// Number of key shards (a power of two).
pub const SHARDS: usize = 64;

/// A key of a custom profile: any `Hash + Eq + Send + Sync + 'static` value (an fd, a
/// connection id, a pointer as `usize`, a `String`, …). Implemented for every such type.
///
/// Keys of different types never collide: `5u32` and `5u64` are different keys.
pub trait ProfileKey: Hash + Eq + Send + Sync + 'static {}
impl<T: Hash + Eq + Send + Sync + 'static> ProfileKey for T {}

/// A key with its type erased: hashes as (type, value), equal iff same type and `==`.
pub trait ErasedKey: Send + Sync {
    /// The key as `Any`, for the type check of `eq`.
    fn as_any(&self) -> &dyn Any;
    /// Whether `other` has this key's type and equals it.
    fn eq_any(&self, other: &dyn Any) -> bool;
    /// Feeds the key's value into `state`.
    fn hash_into(&self, state: &mut dyn Hasher);
}

impl<K: ProfileKey> ErasedKey for K {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn eq_any(&self, other: &dyn Any) -> bool {
        other.downcast_ref::<K>() == Some(self)
    }
    fn hash_into(&self, mut state: &mut dyn Hasher) {
        self.hash(&mut state)
    }
}

impl Hash for dyn ErasedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_any().type_id().hash(state);
        self.hash_into(state);
    }
}

impl PartialEq for dyn ErasedKey {
    fn eq(&self, other: &Self) -> bool {
        self.eq_any(other.as_any())
    }
}
impl Eq for dyn ErasedKey {}

type KeyMap = HashMap<Box<dyn ErasedKey>, u32>;

/// One shard, alone on its cache line(s).
#[repr(align(64))]
struct Shard(Mutex<KeyMap>);

/// A custom profile's state (the registry holds it in an `Arc`).
pub struct CustomProfile {
    name: String,
    /// Picks the shard of a key (independent of the maps' own hashers).
    shard_hasher: RandomState,
    shards: Box<[Shard]>,
}

/// The calling code's stack, interned. Drops this function's frame and the `skip` frames
/// above it: `skip = 0` starts at the function that called `caller_stack`.
#[inline(never)]
pub fn caller_stack(skip: usize) -> u32 {
    let _guard = tls::ProfilerGuard::enter();
    let mut frames = [0usize; MAX_DEPTH + 8];
    let n = unwind::capture(&mut frames);
    let from = n.min(1usize.saturating_add(skip));
    tables::get().map_or(OVERFLOW_STACK, |t| t.stacks.intern(&frames[from..n]))
}

fn lock(m: &Mutex<KeyMap>) -> MutexGuard<'_, KeyMap> {
    // A panic while a shard was locked cannot leave the map half-updated (the only
    // operations under the lock are single map calls), so a poisoned lock is still sound.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CustomProfile {
    /// An empty profile called `name`.
    pub fn new(name: String) -> Self {
        crate::base::fork::ensure_registered();
        CustomProfile {
            name,
            shard_hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| Shard(Mutex::new(HashMap::new())))
                .collect(),
        }
    }

    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn shard<K: ProfileKey>(&self, key: &K) -> &Mutex<KeyMap> {
        let h = self.shard_hasher.hash_one(key as &dyn ErasedKey);
        &self.shards[(h >> 32) as usize % SHARDS].0
    }

    /// Associates `key` with `stack_id`; false (and nothing changed) if `key` is present.
    pub fn insert<K: ProfileKey>(&self, key: K, stack_id: u32) -> bool {
        let _guard = tls::ProfilerGuard::enter();
        let shard = self.shard(&key);
        let boxed: Box<dyn ErasedKey> = Box::new(key);
        let mut map = lock(shard);
        match map.entry(boxed) {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                v.insert(stack_id);
                true
            }
        }
    }

    /// Removes `key`; true if it was present.
    pub fn remove<K: ProfileKey>(&self, key: &K) -> bool {
        let _guard = tls::ProfilerGuard::enter();
        let removed = lock(self.shard(key)).remove_entry(key as &dyn ErasedKey);
        // The key box is dropped here, after the shard lock is released.
        removed.is_some()
    }

    /// Number of keys present.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(&s.0).len()).sum()
    }

    /// (stack id, keys with it), copied out one shard lock at a time.
    pub fn snapshot(&self) -> Vec<(u32, u64)> {
        let _guard = tls::ProfilerGuard::enter();
        let mut ids: Vec<u32> = Vec::new();
        for s in self.shards.iter() {
            ids.extend(lock(&s.0).values().copied());
        }
        let mut counts: HashMap<u32, u64> = HashMap::new();
        for id in ids {
            *counts.entry(id).or_insert(0) += 1;
        }
        counts.into_iter().collect()
    }
}

/// What the fork protocol's prepare hook holds across a fork (`lock_order`). Fields drop in
/// order: the shard guards, then the profiles they borrow from, then the registry guard.
struct ForkHeld {
    _shards: Vec<MutexGuard<'static, KeyMap>>,
    _profiles: Vec<std::sync::Arc<CustomProfile>>,
    _registry: RegistryGuard,
}

thread_local! {
    /// Set on the forking thread between the prepare and the parent/child handlers.
    static FORK_HELD: core::cell::RefCell<Option<ForkHeld>> =
        const { core::cell::RefCell::new(None) };
}

/// `pthread_atfork` prepare: locks the registry, then every shard of every custom profile
/// (waiting for the single map calls in progress), so the child gets each map whole and
/// each lock free. No other path takes a shard lock and then the registry, so the order
/// cannot deadlock.
pub(crate) fn fork_prepare() {
    let registry = registry();
    let profiles: Vec<std::sync::Arc<CustomProfile>> = registry.values().cloned().collect();
    let mut shards = Vec::with_capacity(profiles.len() * SHARDS);
    for p in &profiles {
        // SAFETY: the Arc clone is kept in `ForkHeld::_profiles`, which drops after
        // `ForkHeld::_shards`, so the profile outlives every guard borrowed from it.
        let p: &'static CustomProfile = unsafe { &*std::sync::Arc::as_ptr(p) };
        shards.extend(p.shards.iter().map(|s| lock(&s.0)));
    }
    let held = ForkHeld {
        _shards: shards,
        _profiles: profiles,
        _registry: registry,
    };
    let _ = FORK_HELD.try_with(|h| *h.borrow_mut() = Some(held));
}

/// `pthread_atfork` parent and child: unlocks what [`fork_prepare`] locked.
pub(crate) fn fork_release() {
    let _ = FORK_HELD.try_with(|h| h.borrow_mut().take());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_typed_and_compared_by_value() {
        let p = CustomProfile::new("t.keys".into());
        assert!(p.insert(5u32, 1));
        assert!(p.insert(5u64, 1), "different type, different key");
        assert!(!p.insert(5u32, 2), "duplicate");
        assert!(p.insert(String::from("a"), 3));
        assert!(!p.insert(String::from("a"), 3));
        assert_eq!(p.len(), 3);
        assert!(p.remove(&String::from("a")));
        assert!(!p.remove(&String::from("a")));
        assert!(!p.remove(&7u32));
        assert!(p.remove(&5u64));
        assert_eq!(p.len(), 1);
        let snap = p.snapshot();
        assert_eq!(snap, vec![(1, 1)]);
    }

    #[test]
    fn snapshot_counts_keys_per_stack() {
        let p = CustomProfile::new("t.snap".into());
        for i in 0..100usize {
            assert!(p.insert(i, (i % 3) as u32 + 10));
        }
        let mut snap = p.snapshot();
        snap.sort();
        assert_eq!(snap, vec![(10, 34), (11, 33), (12, 33)]);
    }

    /// A fork while another thread holds a shard lock: the fork waits for it (prepare
    /// handler), and the child can use every shard and the registry.
    #[test]
    fn child_forked_while_a_shard_is_locked_can_use_it() {
        use std::sync::mpsc;
        let p = crate::Profile::new("t.fork_shards");
        let c = p.clone();
        p.add(1usize, 0);
        let (locked_tx, locked_rx) = mpsc::channel();
        let holder = std::thread::spawn(move || {
            let prof = crate::api::profile::custom_of(&c).unwrap();
            let shard = prof.shard(&1usize);
            let _g = lock(shard);
            locked_tx.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
        });
        locked_rx.recv().unwrap();
        crate::base::fork::ensure_registered();
        let status =
            crate::base::fork::test_support::in_child(std::time::Duration::from_secs(20), || {
                let ok = matches!(p.try_remove(&1usize), Ok(true))
                    && p.try_add(2usize, 0).is_ok()
                    && p.count() == 1
                    && crate::Profile::try_new("t.fork_shards.child").is_ok();
                if ok {
                    0
                } else {
                    1
                }
            });
        holder.join().unwrap();
        assert_eq!(status, Some(0), "None = the child deadlocked");
        assert_eq!(p.count(), 1, "the parent's profile is unchanged");
    }
}
