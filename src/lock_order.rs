//! Every lock and flag heaprof owns, in one ranked list: the lock order, and the fork
//! protocol that `base/fork.rs` runs ([`HOOKS`], installed there by this module's load-time
//! constructor). It names the locks of every layer, so it sits at the top of the crate.
//!
//! # Lock order
//! A thread holding a lock of this list may wait only for a lock further down it (directly,
//! or by waiting for a thread that takes one: stopping a CPU profile holds the session lock
//! while the drain thread symbolizes and reads label sets), never for one further up, and
//! never calls `pthread_atfork` (glibc holds its atfork lock while the prepare handlers
//! run: `fork::ensure_registered` is called before these locks are taken). No lock is taken
//! inside the allocator or a signal handler but the large-block region's spin lock (held
//! for a few instructions that wait for nothing, ranked last); flags are.
//!
//! # At `fork`
//! - **lock** ([`Hook::lock`]): the prepare handler takes the locks top to bottom, waiting
//!   for their holders. It always gets them: a holder is either on its way to releasing, or
//!   waiting for a lock further down, which the handler has not taken yet. Parent and child
//!   release them, so the child gets each guarded value whole and each lock free.
//! - **reset** ([`Hook::reset_in_child`]): a flag or lock-free state that a thread holds for
//!   a bounded, lock-free stretch (never waiting for anyone), on the sampled path or in a
//!   signal handler, where taking a lock is not allowed. Nothing happens before the fork;
//!   the child, where no other thread exists, resets what a vanished thread left half-done.
//! - **nothing** ([`Hook::nothing`]): listed so the list is complete; the comment says why.
//!
//! The application's own locks (`heaprof::sync` wrappers included) are not heaprof's: as
//! with `std`'s, a lock held by another thread at `fork` stays held in the child.
//!
//! A new lock or flag gets its line here (a test checks that every `static` mutex, flag and
//! once-cell of the crate is named in this file), and a fork test (`tests/fork_locks.rs`).

use crate::base::fork::{self, Hook};
use crate::{
    alloc::arena, alloc::labels, alloc::large_region, alloc::peak, base::env, ops::dump,
    profiles::block, profiles::cpu, profiles::custom, profiles::mutex,
};
use crate::{alloc::tables, pprof::symbolize};
use crate::{profiles::threadcreate, profiles::threads, unwind};

/// The fork protocol: prepare runs top to bottom, parent and child bottom to top.
pub(crate) static HOOKS: &[Hook] = &[
    // ---- Locks, in rank order (see the module docs) ----
    // Held by start (maps the ring, spawns the drain thread) and by stop until the profile is
    // written (the drain thread symbolizes, reads label sets: ranks below). The child
    // forgets the parent's session (its drain thread, writer and samples are the parent's).
    Hook::lock_with_child(
        "cpu::SESSION",
        cpu::fork_prepare,
        cpu::fork_release,
        cpu::fork_child,
    ),
    // Held by `dump_on_signal` while it validates (looks up profiles: the registry below),
    // installs the handler and starts the dump thread.
    Hook::lock("dump::INSTALLED", dump::fork_prepare, dump::fork_release),
    // Held for a whole capture round of the `threads` profile (at most the answer timeout per
    // batch); `capture::INSTALL` (a `OnceLock`) is only initialised under it.
    Hook::lock(
        "threads::capture::ROUND (and INSTALL)",
        threads::capture::fork_prepare,
        threads::capture::fork_release,
    ),
    // The custom-profile registry, then every shard of every custom profile (single map
    // calls under each).
    Hook::lock(
        "custom::CUSTOM, then each custom::Shard",
        custom::fork_prepare,
        custom::fork_release,
    ),
    // The block profile's records (one map update per sampled wait, or a copy).
    Hook::lock("block::RECORDS", block::fork_prepare, block::fork_release),
    // The mutex profile's records (one map update per sampled release, or a copy); the
    // child also voids every lock's waiter count from before the fork (a new generation in
    // `waiters`: those waiters are not in the child).
    Hook::lock_with_child(
        "mutex::RECORDS (and waiters::GENERATION)",
        mutex::fork_prepare,
        mutex::fork_release,
        mutex::after_fork_child,
    ),
    // Interned label sets (one map call, or a lookup by a writer).
    Hook::lock("labels::REGISTRY", labels::fork_prepare, labels::fork_release),
    // Held around every call into `backtrace` (its own global lock and cache).
    // `SYM_TAKEN_FOR_FORK` says the prepare handler took it.
    Hook::lock(
        "symbolize::SYM_OWNER (and SYM_TAKEN_FOR_FORK)",
        symbolize::fork_prepare,
        symbolize::fork_release,
    ),
    // The large-block region's free lists and carving cursor: a spin lock taken on the
    // sampled path (so under any lock above, by a thread that allocates) for a few dozen
    // instructions that wait for nothing; last, so every holder above can still finish.
    Hook::lock(
        "large_region::LOCK",
        large_region::fork_prepare,
        large_region::fork_release,
    ),
    // ---- Flags and lock-free states: reset in the child ----
    // Once-cells whose initialisation a fork may interrupt (`once::ForkOnce`): the
    // environment snapshot (lazy path only), the tables (first sample), the creation-stack
    // table (first thread).
    Hook::reset_in_child("env::TAKEN", env::after_fork_child),
    Hook::reset_in_child("tables::TABLES", tables::after_fork_child),
    Hook::reset_in_child("threadcreate::STACKS", threadcreate::after_fork_child),
    // Sampled path: one thread commits more of the arena at a time; one thread copies the
    // peak snapshot at a time.
    Hook::reset_in_child("arena::GROWING", arena::after_fork_child),
    Hook::reset_in_child("peak::SNAPSHOTTING", peak::after_fork_child),
    // Unwinder: cache-pool slots leased for a capture (`busy`), the module-list builder.
    Hook::reset_in_child(
        "unwind::cache_pool::POOL (busy), unwind::modules::BUILDING",
        unwind::after_fork_child,
    ),
    // Capture slots a signal handler of an earlier, timed-out round still held.
    Hook::reset_in_child("threads::capture::SLOT", threads::capture::after_fork_child),
    // The CPU profile's flags (a SIGPROF handler running on another thread left IN_HANDLER
    // raised), its sample ring (slots claimed by such a handler), its stack-range snapshot
    // (a refresh interrupted on the drain thread left the seqlock odd).
    Hook::reset_in_child(
        "cpu::{ACTIVE, RUNNING, ITIMER_MODE, IN_HANDLER}",
        cpu::after_fork_child_flags,
    ),
    Hook::reset_in_child("cpu::RING", cpu::after_fork_child_ring),
    Hook::reset_in_child("cpu::stacks::SEQ", cpu::after_fork_child_stacks),
    // ---- Nothing to do ----
    // Set once and read, never held: the child keeps the parent's values, which are right
    // (the handlers are registered, `init_from_env` and the at-exit hook ran or not, a
    // forced `setitimer` and a wanted refresh are hints).
    Hook::nothing(
        "fork::REGISTERED, config::SEED_SET, large_region::STRICT, env_init::{CALLED, AT_EXIT_RAN}, cpu::FORCE_ITIMER, cpu::stacks::REFRESH_WANTED",
    ),
    // Set only in `init_from_env`'s first call, before the at-exit hook is registered; a set
    // the fork interrupted leaves the child's cell empty, which `get` reads without waiting.
    Hook::nothing("env_init::AT_EXIT_PATH"),
    // Lock-free claims a vanished thread may leave half-done: a stack-table or bucket-index
    // slot claimed (WRITING) and never published is skipped by probers (at worst a key gets
    // a second slot); a creation-stack slot's key is one CAS; an arena free-list push or pop
    // is one CAS on the head (a slot taken and never used is lost, nothing more).
    Hook::nothing("stack_table / buckets slot claims, threadcreate::TABLE, arena::HEADS"),
    // The HTTP server's counters and limits live in each server, whose threads do not exist
    // in the child; a server the child starts has its own (feature `http`).
    Hook::nothing("http::server::Shared (per server)"),
    // The dump thread does not exist in the child, and the dump signal's handler does not
    // write to the pipe outside the installing process (`dump::signal::OWNER_PID`).
    Hook::nothing("dump::signal::{WRITE_FD, OWNER_PID}"),
];

/// For the fork protocol's tests (`tests/fork_locks.rs`, through `__private`): the list, and
/// a way to hold each entry from another thread at the moment of a fork.
/// Hands [`HOOKS`] to the fork mechanism and registers its handlers.
extern "C" fn at_load() {
    static LIST: &[Hook] = HOOKS;
    fork::install(&LIST);
}

/// Runs [`at_load`] when the binary or library is loaded, before `main` (rustc keeps `#[used]`
/// statics of a library in every binary that links it).
#[used]
#[link_section = ".init_array"]
static AT_LOAD: extern "C" fn() = at_load;

/// Whether the fork protocol is installed (tests of the constructor).
pub fn installed() -> bool {
    fork::protocol().len() == HOOKS.len()
}

pub mod test_support {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::HOOKS;

    /// The names of the list's entries that do something at fork, in rank order.
    pub fn names() -> Vec<&'static str> {
        HOOKS
            .iter()
            .filter(|h| h.kind != crate::base::fork::Kind::Nothing)
            .map(|h| h.name)
            .collect()
    }

    /// Makes a new thread hold entry `name` for `dur`, as a thread using it would (a lock
    /// locked, a flag raised, a slot claimed), and returns once it holds it. Errors for an
    /// entry that cannot be held in this process now (a once-cell already initialised; an
    /// entry with nothing to hold).
    pub fn hold(name: &str, dur: Duration) -> Result<(), String> {
        let h = *HOOKS
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| format!("{name:?} is not in lock_order::HOOKS"))?;
        let (take, give): (fn(), fn()) = match name {
            // A lock: what the prepare hook does takes it; what the parent hook does
            // releases it.
            _ if h.is_lock() => (h.prepare, h.parent),
            "tables::TABLES" => {
                if !crate::alloc::tables::hold_creation_for_test(true) {
                    return Err("the tables exist already: start with HEAPROF_RATE=0".into());
                }
                (
                    || {},
                    || {
                        crate::alloc::tables::hold_creation_for_test(false);
                    },
                )
            }
            "peak::SNAPSHOTTING" => (
                || crate::alloc::peak::hold_for_test(true),
                || crate::alloc::peak::hold_for_test(false),
            ),
            "threads::capture::SLOT" => (
                || crate::profiles::threads::capture::hold_slots_for_test(true),
                || crate::profiles::threads::capture::hold_slots_for_test(false),
            ),
            "cpu::{ACTIVE, RUNNING, ITIMER_MODE, IN_HANDLER}" => (
                || crate::profiles::cpu::hold_handler_for_test(true),
                || crate::profiles::cpu::hold_handler_for_test(false),
            ),
            "cpu::stacks::SEQ" => (
                || crate::profiles::cpu::hold_stacks_for_test(true),
                || crate::profiles::cpu::hold_stacks_for_test(false),
            ),
            "cpu::RING" => return crate::profiles::cpu::hold_ring_slot_for_test(dur),
            _ => return Err(format!("{name:?} cannot be held by a test")),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("heaprof-test-hold".into())
            .spawn(move || {
                take();
                let _ = tx.send(());
                std::thread::sleep(dur);
                give();
            })
            .map_err(|e| e.to_string())?;
        rx.recv().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    /// Every `static` lock, flag and once-cell declared in `src/` (outside tests) is named
    /// in this file.
    #[test]
    fn every_static_lock_and_flag_is_in_the_list() {
        const KINDS: [&str; 6] = [
            "Mutex<",
            "RwLock<",
            "AtomicBool",
            "OnceLock<",
            "ForkOnce<",
            "Condvar",
        ];
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let this = include_str!("lock_order.rs");
        let mut missing = Vec::new();
        let mut dirs = vec![src];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                    continue;
                }
                let text = std::fs::read_to_string(&p).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap();
                for line in code.lines() {
                    let l = line.trim_start();
                    let Some(rest) = ["static ", "pub static ", "pub(crate) static "]
                        .iter()
                        .find_map(|p| l.strip_prefix(p))
                    else {
                        continue;
                    };
                    let Some((name, ty)) = rest.split_once(':') else {
                        continue;
                    };
                    if KINDS.iter().any(|k| ty.contains(k)) && !this.contains(name.trim()) {
                        missing.push(format!("{}: {}", p.display(), name.trim()));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "not in lock_order.rs: {missing:#?}");
    }
}
