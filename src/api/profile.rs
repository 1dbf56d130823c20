//! The profile registry and the [`Profile`] handle: Go's `runtime/pprof` `Profile` API
//! (`Profiles`, `Lookup`, `NewProfile`, `Add`, `Remove`, `Count`, `WriteTo`).
//!
//! Called by user code. Writers and the custom-profile API only: nothing here runs inside the
//! allocator or a signal handler. Predefined profiles are rows of [`PREDEFINED`]; custom ones
//! live in `custom`'s registry (`Arc<CustomProfile>` each, see [`crate::profiles::custom`]).

use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;

use crate::base::error::Error;
use crate::profiles::custom::{self, CustomProfile, ProfileKey};
use crate::profiles::heap::{self, HeapView};
use crate::{
    alloc::tables, pprof::count_writer, profiles::block, profiles::mutex, profiles::threadcreate,
    profiles::threads,
};

/// A profile heaprof records itself.
struct Predefined {
    name: &'static str,
    count: fn() -> usize,
    write: fn(&mut dyn Write, u8) -> io::Result<()>,
}

/// The predefined profiles: adding one is one row.
static PREDEFINED: &[Predefined] = &[
    Predefined {
        name: "allocs",
        count: heap::record_count,
        write: |w, d| match d {
            0 => heap::write_proto(w, HeapView::Allocs),
            _ => heap::write_text(w, HeapView::Allocs),
        },
    },
    Predefined {
        name: "heap",
        count: heap::record_count,
        write: |w, d| match d {
            0 => heap::write_proto(w, HeapView::InUse),
            _ => heap::write_text(w, HeapView::InUse),
        },
    },
    Predefined {
        name: "heap_peak",
        count: heap::peak_record_count,
        write: |w, d| match d {
            0 => heap::write_proto(w, HeapView::Peak),
            _ => heap::write_text(w, HeapView::Peak),
        },
    },
    Predefined {
        name: "threadcreate",
        count: || threadcreate::created() as usize,
        write: |w, d| {
            let ids = threadcreate::snapshot();
            let stacks = threadcreate::stacks_if_created();
            let trim = Some(threadcreate::is_spawn_frame as fn(&str) -> bool);
            count_writer::write(w, "threadcreate", &ids, stacks, d, trim)
        },
    },
    Predefined {
        name: "threads",
        count: threads::count,
        write: |w, d| threads::write(w, "threads", d),
    },
    Predefined {
        name: "block",
        count: block::count,
        write: block::write,
    },
    Predefined {
        name: "mutex",
        count: mutex::count,
        write: mutex::write,
    },
];

/// Other names `lookup` accepts for predefined profiles: (alias, the profile's row as seen
/// through it). Aliases are not listed by [`profiles`] (each profile appears once, under its
/// own name) and cannot be taken by custom profiles. `goroutine`: Go's name for the
/// all-stacks profile, so `/debug/pprof/goroutine` and Go tooling find `threads`; written
/// through this name it carries Go's names too (sample and period type `goroutine`/`count`,
/// text `goroutine profile: total N`), which is how scrapers recognise the profile type.
static ALIASES: &[(&str, Predefined)] = &[(
    "goroutine",
    Predefined {
        name: "threads",
        count: threads::count,
        write: |w, d| threads::write(w, "goroutine", d),
    },
)];

fn predefined(name: &str) -> Option<&'static Predefined> {
    if let Some((_, p)) = ALIASES.iter().find(|(a, _)| *a == name) {
        return Some(p);
    }
    PREDEFINED.iter().find(|p| p.name == name)
}

/// The custom state behind `p`, if it is a custom profile (for tests in `custom`).
#[cfg(test)]
pub(crate) fn custom_of(p: &Profile) -> Option<&CustomProfile> {
    p.custom().ok()
}

/// A named collection of stack traces, like Go's `*pprof.Profile`. Cheap to clone; clones
/// are handles to the same profile.
///
/// Predefined: `allocs`, `heap` (sampled allocations), `threadcreate` (the stack that
/// created each OS thread), `threads` (alias `goroutine`: every thread's stack now),
/// `block` (waits on [`crate::profiles::sync`] locks, with [`crate::set_block_profile_rate`]) and
/// `mutex` (the releases that made others wait, with [`crate::set_mutex_profile_fraction`]). Custom profiles ([`Profile::new`]) count live keys by the stack
/// that added them — open files, connections, leases:
///
/// ```
/// let p = heaprof::Profile::new("doc.open_things");
/// p.add(42usize, 0);
/// assert_eq!(p.count(), 1);
/// {
///     let _g = p.track(String::from("scoped"));
///     assert_eq!(p.count(), 2);
/// }
/// p.remove(&42usize);
/// assert_eq!(p.count(), 0);
/// ```
#[derive(Clone)]
pub struct Profile {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Predefined(&'static Predefined),
    Custom(Arc<CustomProfile>),
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("name", &self.name())
            .field("predefined", &matches!(self.kind, Kind::Predefined(_)))
            .finish()
    }
}

impl Profile {
    /// Creates and registers a custom profile called `name` (Go's `NewProfile`). By
    /// convention names are namespaced: `"mycrate.open_files"`.
    ///
    /// # Panics
    /// If `name` is empty, contains whitespace, or is taken (predefined names included);
    /// [`Profile::try_new`] returns the error instead.
    pub fn new(name: &str) -> Profile {
        Self::try_new(name).unwrap_or_else(|e| panic!("heaprof::Profile::new: {e}"))
    }

    /// Like [`Profile::new`], returning [`Error::DuplicateProfile`] for a taken name and
    /// [`Error::InvalidProfileName`] for an empty one or one with whitespace (the legacy text
    /// header `NAME profile: total N` could not be parsed back).
    ///
    /// ```
    /// let p = heaprof::Profile::try_new("doc.try_new").unwrap();
    /// assert!(matches!(
    ///     heaprof::Profile::try_new("doc.try_new"),
    ///     Err(heaprof::Error::DuplicateProfile(_))
    /// ));
    /// assert!(heaprof::Profile::try_new("heap").is_err());
    /// assert_eq!(heaprof::lookup("doc.try_new").unwrap().name(), p.name());
    /// ```
    pub fn try_new(name: &str) -> Result<Profile, Error> {
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::InvalidProfileName(name.to_string()));
        }
        if predefined(name).is_some() {
            return Err(Error::DuplicateProfile(name.to_string()));
        }
        let mut reg = custom::registry();
        if reg.contains_key(name) {
            return Err(Error::DuplicateProfile(name.to_string()));
        }
        let c = Arc::new(CustomProfile::new(name.to_string()));
        reg.insert(name.to_string(), Arc::clone(&c));
        Ok(Profile {
            kind: Kind::Custom(c),
        })
    }

    /// The profile's name (`"heap"`, `"threadcreate"`, `"mycrate.open_files"`, …).
    pub fn name(&self) -> &str {
        match &self.kind {
            Kind::Predefined(p) => p.name,
            Kind::Custom(c) => c.name(),
        }
    }

    /// Number of entries: live keys of a custom profile; (stack, size) records of `heap`
    /// and `allocs`; threads created for `threadcreate`.
    pub fn count(&self) -> usize {
        match &self.kind {
            Kind::Predefined(p) => (p.count)(),
            Kind::Custom(c) => c.len(),
        }
    }

    /// Adds `key` to the profile with the caller's stack (Go's `Add`). `skip = 0` records the
    /// stack from the function that called `add`, `skip = 1` from its caller, and so on.
    ///
    /// # Panics
    /// If the profile already holds `key`, or is predefined; [`Profile::try_add`] returns
    /// the error instead.
    #[inline(never)]
    pub fn add<K: ProfileKey>(&self, key: K, skip: usize) {
        if let Err(e) = self.add_from(key, skip) {
            panic!("heaprof::Profile::add: {e}");
        }
    }

    /// Like [`Profile::add`], returning [`Error::DuplicateKey`] or
    /// [`Error::PredefinedProfile`] instead of panicking.
    ///
    /// ```
    /// let p = heaprof::Profile::new("doc.try_add");
    /// p.try_add(1u8, 0).unwrap();
    /// assert!(matches!(p.try_add(1u8, 0), Err(heaprof::Error::DuplicateKey(_))));
    /// let heap = heaprof::lookup("heap").unwrap();
    /// assert!(matches!(heap.try_add(1u8, 0), Err(heaprof::Error::PredefinedProfile(_))));
    /// ```
    #[inline(never)]
    pub fn try_add<K: ProfileKey>(&self, key: K, skip: usize) -> Result<(), Error> {
        // black_box: keeps the call out of tail position, so this frame stays on the stack
        // the skip count relies on.
        std::hint::black_box(self.add_from(key, skip))
    }

    /// The shared body of `add`, `try_add` and `track`: each is exactly one frame between
    /// this function and the user's code.
    #[inline(never)]
    fn add_from<K: ProfileKey>(&self, key: K, skip: usize) -> Result<(), Error> {
        let c = self.custom()?;
        // Dropped: this frame and the public method's frame.
        let stack = custom::caller_stack(skip.saturating_add(2));
        if c.insert(key, stack) {
            Ok(())
        } else {
            Err(Error::DuplicateKey(c.name().to_string()))
        }
    }

    fn custom(&self) -> Result<&CustomProfile, Error> {
        match &self.kind {
            Kind::Custom(c) => Ok(c),
            Kind::Predefined(p) => Err(Error::PredefinedProfile(p.name.to_string())),
        }
    }

    /// Removes `key` (Go's `Remove`); a no-op when the profile does not hold it.
    ///
    /// # Panics
    /// On a predefined profile; see [`Profile::try_remove`].
    pub fn remove<K: ProfileKey>(&self, key: &K) {
        if let Err(e) = self.try_remove(key) {
            panic!("heaprof::Profile::remove: {e}");
        }
    }

    /// Removes `key`; `Ok(true)` if it was there, `Ok(false)` if not,
    /// [`Error::PredefinedProfile`] on a predefined profile.
    pub fn try_remove<K: ProfileKey>(&self, key: &K) -> Result<bool, Error> {
        Ok(self.custom()?.remove(key))
    }

    /// Adds `key` with the caller's stack (as `add(key, 0)`) and returns a guard that removes
    /// it when dropped.
    ///
    /// # Panics
    /// As [`Profile::add`]; see [`Profile::try_track`].
    #[inline(never)]
    pub fn track<K: ProfileKey + Clone>(&self, key: K) -> Tracked<K> {
        match self.add_from(key.clone(), 0) {
            Ok(()) => Tracked {
                profile: self.clone(),
                key,
            },
            Err(e) => panic!("heaprof::Profile::track: {e}"),
        }
    }

    /// Like [`Profile::track`], returning the error instead of panicking.
    #[inline(never)]
    pub fn try_track<K: ProfileKey + Clone>(&self, key: K) -> Result<Tracked<K>, Error> {
        let r = self.add_from(key.clone(), 0);
        std::hint::black_box(&r);
        r.map(|()| Tracked {
            profile: self.clone(),
            key,
        })
    }

    /// Writes the profile: `debug = 0` as gzip-compressed pprof protobuf; any other value as
    /// the legacy text form with symbolized frames in comments (for custom profiles and
    /// `threadcreate`, Go's count text `NAME profile: total N`).
    ///
    /// ```
    /// let mut out = Vec::new();
    /// heaprof::lookup("heap").unwrap().write_to(&mut out, 1).unwrap();
    /// assert!(out.starts_with(b"heap profile: "));
    /// ```
    pub fn write_to<W: Write>(&self, mut w: W, debug: u8) -> io::Result<()> {
        match &self.kind {
            Kind::Predefined(p) => (p.write)(&mut w, debug),
            Kind::Custom(c) => {
                // Copied under the shard locks, written with none held.
                let ids = c.snapshot();
                let stacks = tables::get_if_created().map(|t| &t.stacks);
                count_writer::write(&mut w, c.name(), &ids, stacks, debug, None)
            }
        }
    }
}

/// Keeps a key in a custom profile until dropped ([`Profile::track`]).
#[must_use = "the key is removed when the guard is dropped"]
pub struct Tracked<K: ProfileKey> {
    profile: Profile,
    key: K,
}

impl<K: ProfileKey> Tracked<K> {
    /// The tracked key.
    pub fn key(&self) -> &K {
        &self.key
    }
}

impl<K: ProfileKey> Drop for Tracked<K> {
    fn drop(&mut self) {
        // Cannot fail: `track` only succeeds on custom profiles.
        let _ = self.profile.try_remove(&self.key);
    }
}

impl<K: ProfileKey + fmt::Debug> fmt::Debug for Tracked<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracked")
            .field("profile", &self.profile.name())
            .field("key", &self.key)
            .finish()
    }
}

/// All known profiles, predefined and custom, sorted by name.
///
/// ```
/// let names: Vec<String> = heaprof::profiles().iter().map(|p| p.name().to_string()).collect();
/// assert!(names.windows(2).all(|w| w[0] < w[1]));
/// assert!(names.iter().any(|n| n == "threadcreate"));
/// ```
pub fn profiles() -> Vec<Profile> {
    let mut all: Vec<Profile> = PREDEFINED
        .iter()
        .map(|p| Profile {
            kind: Kind::Predefined(p),
        })
        .collect();
    all.extend(custom::registry().values().map(|c| Profile {
        kind: Kind::Custom(Arc::clone(c)),
    }));
    all.sort_by(|a, b| a.name().cmp(b.name()));
    all
}

/// The profile called `name`, if there is one. `goroutine` is accepted for `threads`.
///
/// ```
/// assert!(heaprof::lookup("heap").is_some());
/// assert_eq!(heaprof::lookup("goroutine").unwrap().name(), "threads");
/// assert!(heaprof::lookup("no.such.profile").is_none());
/// ```
pub fn lookup(name: &str) -> Option<Profile> {
    if let Some(p) = predefined(name) {
        return Some(Profile {
            kind: Kind::Predefined(p),
        });
    }
    custom::registry().get(name).map(|c| Profile {
        kind: Kind::Custom(Arc::clone(c)),
    })
}

/// Writes the heap profile as gzip pprof: `lookup("heap").write_to(w, 0)`.
pub fn write_heap_profile<W: Write>(w: W) -> io::Result<()> {
    heap::write_proto(w, HeapView::InUse)
}
