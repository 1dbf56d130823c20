//! The `HEAPROF_*` environment, copied once at process start and kept.
//!
//! Reading the environment later is unsound in a program with threads: `getenv` walks
//! `environ` while another thread may be in `setenv` (`std::env::set_var`), and glibc
//! reallocates that array, freeing the old one, when a variable is added. So every
//! `HEAPROF_*` variable is read once:
//! - when the binary or library is loaded, by an `.init_array` constructor, which glibc calls
//!   with `argc, argv, envp` before `main` (and before any thread the program starts);
//! - or, if a Rust allocation comes first (another library's constructor) or the
//!   constructor was not run (another libc), at the first call to [`get`], which the first
//!   allocation makes, still before `main`.
//!
//! The values are copied into a fixed static store (the first reader may be the allocator,
//! so nothing here allocates), and every later read — sampling rate and seed, table
//! capacities, [`crate::init_from_env`] — uses the copy: a `set_var` of a `HEAPROF_*`
//! variable after the process started changes nothing.

use core::cell::UnsafeCell;

use crate::base::once::ForkOnce;
use crate::base::sys;

/// Every variable heaprof reads.
pub const NAMES: [&str; 12] = [
    "HEAPROF_RATE",
    "HEAPROF_SEED",
    "HEAPROF_STACKS",
    "HEAPROF_BUCKETS",
    "HEAPROF_DUMP_SIGNAL",
    "HEAPROF_DUMP_DIR",
    "HEAPROF_DUMP_PREFIX",
    "HEAPROF_DUMP_PROFILES",
    "HEAPROF_DUMP_AT_EXIT",
    "HEAPROF_DUMP_ON_GROWTH",
    "HEAPROF_DUMP_ON_RSS",
    "HEAPROF_DUMP_MIN_INTERVAL",
];

/// Room for the longest name and its NUL, for `getenv`.
const NAME_BUF: usize = 32;
const _: () = {
    let mut i = 0;
    while i < NAMES.len() {
        assert!(NAMES[i].len() < NAME_BUF);
        i += 1;
    }
};

/// Bytes for all values together (four paths of `PATH_MAX` fit). A value that does not fit
/// is treated as unset, with a warning.
const POOL: usize = 16 * 1024;

/// The copied values. All-zero is the empty store, so the static lives in `.bss`.
struct Values {
    bytes: [u8; POOL],
    /// Per name: (start in `bytes`, length + 1); length + 1 = 0 when the variable is unset.
    spans: [(u32, u32); NAMES.len()],
    used: usize,
}

impl Values {
    fn clear(&mut self) {
        self.spans = [(0, 0); NAMES.len()];
        self.used = 0;
    }

    /// Keeps `value` for `NAMES[i]` unless one was kept already (the first entry of a name
    /// is the one `getenv` returns).
    fn put(&mut self, i: usize, value: &[u8]) {
        if self.spans[i].1 != 0 {
            return;
        }
        let Some(end) = self.used.checked_add(value.len()).filter(|&e| e <= POOL) else {
            sys::write_stderr(&[
                b"heaprof: ignoring ",
                NAMES[i].as_bytes(),
                b": the HEAPROF_* values are longer than 16384 bytes together\n",
            ]);
            return;
        };
        self.bytes[self.used..end].copy_from_slice(value);
        self.spans[i] = (self.used as u32, value.len() as u32 + 1);
        self.used = end;
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        let (start, len1) = self.spans[i];
        let start = start as usize;
        (len1 != 0).then(|| &self.bytes[start..start + len1 as usize - 1])
    }
}

struct Store(UnsafeCell<Values>);

// SAFETY: the values are written only inside `TAKEN.call_once`'s initialiser, by the one
// thread that runs it, and read only after `call_once` returned (its Release/Acquire on
// the ready state orders the writes before every read); a forked child's reset of an
// interrupted initialisation lets one thread of the child rewrite it the same way.
unsafe impl Sync for Store {}

static STORE: Store = Store(UnsafeCell::new(Values {
    bytes: [0; POOL],
    spans: [(0, 0); NAMES.len()],
    used: 0,
}));
/// Whether the store was filled (a `ForkOnce`, so the fork protocol can reset a fill that a
/// fork interrupted on another thread).
pub(crate) static TAKEN: ForkOnce<()> = ForkOnce::new();

/// Fills the store with `fill` unless it was filled already.
fn take(fill: impl FnOnce(&mut Values)) {
    TAKEN.call_once(|| {
        // SAFETY: inside the initialiser: this thread alone writes the store (see `Store`).
        let v = unsafe { &mut *STORE.0.get() };
        v.clear();
        fill(v);
    });
}

/// In a forked child: a snapshot the fork interrupted on another thread (only possible when
/// it is taken lazily) is taken again from the child's environment.
pub fn after_fork_child() {
    TAKEN.reset_after_fork();
}

/// The value `name` (one of [`NAMES`]) had at process start; `None` when it was not set.
/// Takes the snapshot from `getenv` if the load-time constructor has not. Never allocates.
pub fn get(name: &str) -> Option<&'static [u8]> {
    if !TAKEN.is_completed() {
        take(from_getenv);
    }
    let i = NAMES.iter().position(|n| *n == name);
    debug_assert!(i.is_some(), "{name} is not in env::NAMES");
    // SAFETY: the store is filled (`take` returned, or READY was seen) and never written
    // again in this process (see `Store`).
    let v = unsafe { &*STORE.0.get() };
    v.get(i?)
}

fn from_getenv(v: &mut Values) {
    let mut name = [0u8; NAME_BUF];
    for (i, n) in NAMES.iter().enumerate() {
        name[..n.len()].copy_from_slice(n.as_bytes());
        name[n.len()] = 0;
        let Ok(c) = core::ffi::CStr::from_bytes_until_nul(&name) else {
            continue;
        };
        if let Some(value) = sys::getenv_bytes(c) {
            v.put(i, value);
        }
    }
}

/// # Safety
/// `envp` is null or a null-terminated array of NUL-terminated `NAME=value` strings.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe fn from_envp(v: &mut Values, envp: *const *const core::ffi::c_char) {
    if envp.is_null() {
        return;
    }
    for k in 0.. {
        // SAFETY: the caller's contract: entries up to the terminating null are readable.
        let entry = unsafe { *envp.add(k) };
        if entry.is_null() {
            break;
        }
        // SAFETY: a non-null entry is a NUL-terminated string (caller's contract).
        let entry = unsafe { core::ffi::CStr::from_ptr(entry) }.to_bytes();
        if !entry.starts_with(b"HEAPROF_") {
            continue;
        }
        let Some(eq) = entry.iter().position(|&b| b == b'=') else {
            continue;
        };
        if let Some(i) = NAMES.iter().position(|n| n.as_bytes() == &entry[..eq]) {
            v.put(i, &entry[eq + 1..]);
        }
    }
}

/// The load-time constructor: glibc passes `argc, argv, envp` to `.init_array` functions.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" fn at_load(
    _argc: core::ffi::c_int,
    _argv: *const *const core::ffi::c_char,
    envp: *const *const core::ffi::c_char,
) {
    // SAFETY: glibc's third argument to an init function is the process environment, a
    // null-terminated array of `NAME=value` strings.
    take(|v| unsafe { from_envp(v, envp) });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[used]
#[link_section = ".init_array"]
static AT_LOAD: extern "C" fn(
    core::ffi::c_int,
    *const *const core::ffi::c_char,
    *const *const core::ffi::c_char,
) = at_load;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_kept_by_name_first_entry_wins_and_the_pool_is_bounded() {
        let mut v = Values {
            bytes: [0; POOL],
            spans: [(0, 0); NAMES.len()],
            used: 0,
        };
        v.put(2, b"1000");
        v.put(2, b"5");
        v.put(0, b"");
        assert_eq!(v.get(2), Some(&b"1000"[..]));
        assert_eq!(v.get(0), Some(&b""[..]), "set but empty is not unset");
        assert_eq!(v.get(1), None);
        v.put(5, &[b'x'; POOL]);
        assert_eq!(v.get(5), None, "does not fit: unset");
        v.put(6, b"svc");
        assert_eq!(v.get(6), Some(&b"svc"[..]));
    }
}
