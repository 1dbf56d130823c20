//! Profile snapshots on a signal: `kill -USR1 <pid>` writes
//! `<dir>/<prefix>.<pid>.<seq>.<profile>.pb.gz` for each configured profile.
//!
//! Called by the application ([`dump_on_signal`], or `init_from_env`); the work happens on a
//! dedicated thread, `heaprof-dump`, started once. The signal handler (`dump/signal.rs`) only
//! counts the signal, writes a byte to a self-pipe and chains to the handler installed
//! before it; it must never do more. Files are written atomically (`dump/file.rs`).
//!
//! Coalescing: signals that arrive while a dump is being written are served by one more dump
//! that starts after them, so every signal is followed by a dump that reflects the state
//! after it arrived; none is dropped silently. The counts are in [`DumpStats`] and in the
//! line each dump prints on stderr.

mod file;
mod signal;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Write};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::Error;
use crate::profile::{self, Profile};
use crate::{sys, tls};

pub(crate) use file::write_atomic;
pub(crate) use signal::parse as parse_signal;

/// What [`dump_on_signal`] installs.
///
/// ```
/// let cfg = heaprof::DumpConfig::default();
/// assert_eq!(cfg.signal, libc::SIGUSR1);
/// assert_eq!(cfg.profiles, ["heap"]);
/// ```
#[derive(Clone, Debug)]
pub struct DumpConfig {
    /// The signal that triggers a dump: `SIGUSR1`, `SIGUSR2`, `SIGHUP`, `SIGWINCH` or a
    /// real-time signal other than `SIGRTMIN+5` (the `threads` profile's). Default `SIGUSR1`.
    pub signal: i32,
    /// Directory the files go to; relative paths are taken from the working directory at
    /// the call. Default: the working directory.
    pub dir: PathBuf,
    /// First part of each file name; no `/`. Default: the program's file name.
    pub prefix: String,
    /// Profiles to write on each signal, by name (see [`crate::profiles`]). Default `["heap"]`.
    pub profiles: Vec<String>,
}

impl Default for DumpConfig {
    fn default() -> Self {
        DumpConfig {
            signal: libc::SIGUSR1,
            dir: PathBuf::from("."),
            prefix: program_name(),
            profiles: vec!["heap".to_string()],
        }
    }
}

/// The program's file name (`argv[0]` without its directory), or `heaprof`.
fn program_name() -> String {
    std::env::args_os()
        .next()
        .as_deref()
        .map(Path::new)
        .and_then(Path::file_name)
        .and_then(OsStr::to_str)
        .filter(|s| valid_component(s))
        .unwrap_or("heaprof")
        .to_string()
}

fn valid_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\0'])
}

/// Counters of signal dumps since [`dump_on_signal`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpStats {
    /// Signals the handler received in this process.
    pub signals_received: u64,
    /// Signals served by a finished dump (one that started after they arrived).
    pub signals_served: u64,
    /// Dumps started: each serves every signal received before it started.
    pub dumps: u64,
    /// Dumps finished, whether or not every file could be written.
    pub dumps_finished: u64,
    /// Dumps for which every profile file was written.
    pub dumps_written: u64,
    /// Files written (one per profile per dump).
    pub files_written: u64,
    /// Files that could not be written (each reported on stderr the first time its kind of
    /// error occurs).
    pub write_errors: u64,
}

impl DumpStats {
    /// Signals served by a dump shared with other signals of the same burst:
    /// `signals_served − dumps_finished`.
    pub fn signals_coalesced(&self) -> u64 {
        self.signals_served.saturating_sub(self.dumps_finished)
    }

    /// Signals whose dump has not finished yet: `0` when the dump thread is idle.
    pub fn signals_pending(&self) -> u64 {
        self.signals_received.saturating_sub(self.signals_served)
    }
}

static SERVED: AtomicU64 = AtomicU64::new(0);
static DUMPS: AtomicU64 = AtomicU64::new(0);
static DUMPS_FINISHED: AtomicU64 = AtomicU64::new(0);
static DUMPS_WRITTEN: AtomicU64 = AtomicU64::new(0);
static FILES_WRITTEN: AtomicU64 = AtomicU64::new(0);
static WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);

fn stats_now() -> DumpStats {
    DumpStats {
        signals_received: signal::RECEIVED.load(Ordering::Acquire),
        signals_served: SERVED.load(Ordering::Acquire),
        dumps: DUMPS.load(Ordering::Acquire),
        dumps_finished: DUMPS_FINISHED.load(Ordering::Acquire),
        dumps_written: DUMPS_WRITTEN.load(Ordering::Acquire),
        files_written: FILES_WRITTEN.load(Ordering::Acquire),
        write_errors: WRITE_ERRORS.load(Ordering::Acquire),
    }
}

/// The installed dump handler. The handler stays installed for the life of the process;
/// dropping the handle changes nothing.
#[derive(Clone, Debug)]
pub struct DumpHandle {
    signal: i32,
    dir: PathBuf,
    prefix: String,
    profiles: Vec<String>,
}

impl DumpHandle {
    /// The signal that triggers a dump.
    pub fn signal(&self) -> i32 {
        self.signal
    }

    /// The (absolute) directory files are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of dump number `seq` (from 1) of `profile` in this process.
    pub fn path_for(&self, seq: u64, profile: &str) -> PathBuf {
        self.dir.join(file_name(&self.prefix, seq, profile))
    }

    /// The profiles written on each dump.
    pub fn profiles(&self) -> &[String] {
        &self.profiles
    }

    /// The counters so far.
    pub fn stats(&self) -> DumpStats {
        stats_now()
    }
}

fn file_name(prefix: &str, seq: u64, profile: &str) -> String {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    format!("{prefix}.{pid}.{seq}.{profile}.pb.gz")
}

/// The counters of signal dumps, or `None` if [`dump_on_signal`] has not succeeded.
pub fn dump_stats() -> Option<DumpStats> {
    INSTALLED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|_| stats_now())
}

static INSTALLED: Mutex<Option<DumpHandle>> = Mutex::new(None);
static INSTALLED_FORK: crate::fork::HeldAcrossFork<Option<DumpHandle>> =
    crate::fork::HeldAcrossFork::new();

/// Fork prepare: waits for a `dump_on_signal` in progress and holds its lock across the
/// fork. (The child keeps the parent's handle: its dump thread is not there, so the child
/// does not dump; see the crate's limits.)
pub(crate) fn fork_prepare() {
    INSTALLED_FORK.hold(&INSTALLED);
}

/// Fork parent and child: releases the lock.
pub(crate) fn fork_release() {
    INSTALLED_FORK.release();
}

/// Writes the configured profiles on every `config.signal`, like a `SIGUSR1`-triggered
/// `WriteHeapProfile`, from a thread of its own.
///
/// Each dump writes `<dir>/<prefix>.<pid>.<seq>.<profile>.pb.gz` (seq counts dumps from 1)
/// through a private temporary file (mode 0600, `O_EXCL | O_NOFOLLOW`) that is fsynced and
/// renamed into place: a final-name file is always complete, and a symlink planted at the
/// final name is replaced, never followed. Each dump prints one line on stderr with the
/// counts; a write error is printed once per kind of error and profile, and never stops
/// the process or later dumps. A handler already installed for the signal keeps being
/// called (ours chains to it).
///
/// One dump signal per process: a second call is an error. Errors: a signal that is not
/// allowed, a directory that does not exist or is not writable, a bad prefix, an unknown
/// profile name.
///
/// ```no_run
/// let handle = heaprof::dump_on_signal(heaprof::DumpConfig {
///     dir: "/var/tmp".into(),
///     ..Default::default()
/// })?;
/// eprintln!("kill -USR1 {} writes {}", std::process::id(), handle.path_for(1, "heap").display());
/// # Ok::<(), heaprof::Error>(())
/// ```
pub fn dump_on_signal(config: DumpConfig) -> Result<DumpHandle, Error> {
    crate::fork::ensure_registered();
    let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = installed.as_ref() {
        return Err(Error::InvalidConfig(format!(
            "signal dumps are already enabled (signal {} into {}); only one dump signal per process",
            h.signal,
            h.dir.display()
        )));
    }
    let (handle, profiles) = validate(config)?;
    let reader = signal::install(handle.signal).map_err(|e| {
        Error::InvalidConfig(format!(
            "cannot install the handler for signal {}: {e}",
            handle.signal
        ))
    })?;
    let thread_handle = handle.clone();
    std::thread::Builder::new()
        .name("heaprof-dump".into())
        .spawn(move || dump_thread(reader, thread_handle, profiles))
        .map_err(|e| Error::InvalidConfig(format!("cannot start the dump thread: {e}")))?;
    *installed = Some(handle.clone());
    Ok(handle)
}

fn validate(config: DumpConfig) -> Result<(DumpHandle, Vec<Profile>), Error> {
    if let Some(why) = signal::refusal(config.signal, &config.signal.to_string()) {
        return Err(Error::InvalidConfig(why));
    }
    if !valid_component(&config.prefix) {
        return Err(Error::InvalidConfig(format!(
            "dump prefix {:?} must be a non-empty file name without '/'",
            config.prefix
        )));
    }
    let dir = std::path::absolute(&config.dir).map_err(|e| {
        Error::InvalidConfig(format!("dump directory {}: {e}", config.dir.display()))
    })?;
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::InvalidConfig(format!(
                "dump directory {} is not a directory",
                dir.display()
            )))
        }
        Err(e) => {
            return Err(Error::InvalidConfig(format!(
                "dump directory {}: {e}",
                dir.display()
            )))
        }
    }
    file::probe_writable(&dir).map_err(|e| {
        Error::InvalidConfig(format!(
            "dump directory {} is not writable: {e}",
            dir.display()
        ))
    })?;
    if config.profiles.is_empty() {
        return Err(Error::InvalidConfig("no profiles to dump".into()));
    }
    let mut profiles = Vec::new();
    for name in &config.profiles {
        if !valid_component(name) {
            return Err(Error::InvalidConfig(format!(
                "profile name {name:?} cannot be part of a file name"
            )));
        }
        let p = profile::lookup(name).ok_or_else(|| {
            let known: Vec<String> = profile::profiles()
                .iter()
                .map(|p| p.name().to_string())
                .collect();
            Error::InvalidConfig(format!(
                "unknown profile {name:?} (known: {})",
                known.join(", ")
            ))
        })?;
        profiles.push(p);
    }
    let handle = DumpHandle {
        signal: config.signal,
        dir,
        prefix: config.prefix,
        profiles: config.profiles,
    };
    Ok((handle, profiles))
}

fn dump_thread(reader: signal::PipeReader, handle: DumpHandle, profiles: Vec<Profile>) {
    // The dump thread's own allocations are the profiler's, not the application's.
    let _guard = tls::ProfilerGuard::enter();
    let mut reported: HashSet<(String, io::ErrorKind)> = HashSet::new();
    loop {
        if let Err(e) = reader.wait() {
            sys::write_stderr(&[format!(
                "heaprof: signal dumps stop: reading the wake-up pipe failed: {e}\n"
            )
            .as_bytes()]);
            return;
        }
        dump_once(&handle, &profiles, &mut reported);
    }
}

fn dump_once(
    handle: &DumpHandle,
    profiles: &[Profile],
    reported: &mut HashSet<(String, io::ErrorKind)>,
) {
    // Every signal counted before this load is served by this dump.
    let covered = signal::RECEIVED.load(Ordering::Acquire);
    let seq = DUMPS.fetch_add(1, Ordering::AcqRel) + 1;
    let mut written = Vec::new();
    let mut failed = 0;
    for p in profiles {
        let path = handle.path_for(seq, p.name());
        match write_profile_file(&path, p) {
            Ok(()) => {
                FILES_WRITTEN.fetch_add(1, Ordering::AcqRel);
                written.push(path.display().to_string());
            }
            Err(e) => {
                failed += 1;
                WRITE_ERRORS.fetch_add(1, Ordering::AcqRel);
                if reported.insert((p.name().to_string(), e.kind())) {
                    let s = stats_now();
                    sys::write_stderr(&[format!(
                        "heaprof: dump {seq}: cannot write {}: {e} ({} signals received, {} dumps; \
                         later errors of this kind are counted, not printed)\n",
                        path.display(),
                        s.signals_received,
                        s.dumps
                    )
                    .as_bytes()]);
                }
            }
        }
    }
    if failed == 0 {
        DUMPS_WRITTEN.fetch_add(1, Ordering::AcqRel);
    }
    // Served before finished: a reader that sees the finished count sees these signals served.
    SERVED.store(covered, Ordering::Release);
    DUMPS_FINISHED.fetch_add(1, Ordering::AcqRel);
    if !written.is_empty() {
        sys::write_stderr(&[format!(
            "heaprof: dump {seq} ({covered} signals received, {} coalesced): wrote {}\n",
            covered.saturating_sub(seq),
            written.join(", ")
        )
        .as_bytes()]);
    }
}

/// Writes `profile` (gzip protobuf) to `path` atomically; a panic in the writer becomes an
/// error.
pub(crate) fn write_profile_file(path: &Path, profile: &Profile) -> io::Result<()> {
    write_atomic(path, |w: &mut dyn Write| {
        panic::catch_unwind(AssertUnwindSafe(|| profile.write_to(w, 0))).unwrap_or_else(|_| {
            Err(io::Error::other(format!(
                "the {} profile writer panicked",
                profile.name()
            )))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_says_what_is_wrong() {
        let bad = |c: DumpConfig| validate(c).unwrap_err().to_string();
        let ok = DumpConfig {
            dir: std::env::temp_dir(),
            ..Default::default()
        };
        assert!(bad(DumpConfig {
            signal: libc::SIGKILL,
            ..ok.clone()
        })
        .contains("not allowed"));
        assert!(bad(DumpConfig {
            prefix: "a/b".into(),
            ..ok.clone()
        })
        .contains("without '/'"));
        assert!(bad(DumpConfig {
            dir: "/no/such/heaprof/dir".into(),
            ..ok.clone()
        })
        .contains("/no/such/heaprof/dir"));
        assert!(bad(DumpConfig {
            dir: "/etc/passwd".into(),
            ..ok.clone()
        })
        .contains("not a directory"));
        assert!(bad(DumpConfig {
            profiles: vec!["heapp".into()],
            ..ok.clone()
        })
        .contains("unknown profile \"heapp\" (known: allocs, block, heap"));
        assert!(bad(DumpConfig {
            profiles: vec![],
            ..ok.clone()
        })
        .contains("no profiles"));
        let (h, p) = validate(ok).unwrap();
        assert!(h.dir().is_absolute());
        assert_eq!(p.len(), 1);
        assert!(h
            .path_for(3, "heap")
            .to_string_lossy()
            .ends_with(&format!(".{}.3.heap.pb.gz", std::process::id())));
    }
}
