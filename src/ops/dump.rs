//! Profile snapshots written by the process itself: on a signal (`kill -USR1 <pid>`), and
//! automatically when the sampled heap grows by a step or the resident set crosses a
//! threshold. Each writes `<dir>/<prefix>.<pid>.<seq>.<profile>.pb.gz` for each configured
//! profile.
//!
//! Called by the application ([`start_dumps`], [`dump_on_signal`], or `init_from_env`); the
//! work happens on a dedicated thread, `heaprof-dump`, started once (`dump/thread.rs`). The
//! signal handler (`dump/signal.rs`) only counts the signal, writes a byte to the wake-up
//! pipe (`base/wake_pipe.rs`) and chains to the handler installed before it; it must never do
//! more. The growth trigger is one compare on the allocator's sampled path (`peak`) that
//! writes the same byte; RSS is polled by the dump thread; the decisions are in
//! `dump/triggers.rs`. Files are written atomically (`dump/file.rs`).
//!
//! Coalescing: signals that arrive while a dump is being written are served by one more dump
//! that starts after them, so every signal is followed by a dump that reflects the state
//! after it arrived; none is dropped silently. Automatic dumps are at most one per minimum
//! interval; the ones held back are served by one dump when it has passed. The counts are
//! in [`DumpStats`] and in the line each dump prints on stderr.

mod file;
mod signal;
mod thread;
mod triggers;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::api::profile::{self, Profile};
use crate::base::error::Error;
use crate::profiles::rss;

use crate::base::wake_pipe as wake;
pub(crate) use file::write_atomic;
pub(crate) use signal::parse as parse_signal;
pub(crate) use thread::write_profile_file;
pub use triggers::RssThreshold;
pub(crate) use triggers::{parse_growth, parse_min_interval, parse_rss, DEFAULT_MIN_INTERVAL};

/// What [`start_dumps`] (or [`dump_on_signal`]) installs: which signal and which automatic
/// triggers write dumps, where, and of which profiles.
///
/// ```
/// let cfg = heaprof::DumpConfig::default();
/// assert_eq!(cfg.signal, Some(libc::SIGUSR1));
/// assert_eq!(cfg.profiles, ["heap"]);
/// assert_eq!((cfg.on_growth, cfg.on_rss), (None, None));
/// assert_eq!(cfg.min_interval, std::time::Duration::from_secs(10));
/// ```
#[derive(Clone, Debug)]
pub struct DumpConfig {
    /// The signal that triggers a dump: `SIGUSR1`, `SIGUSR2`, `SIGHUP`, `SIGWINCH` or a
    /// real-time signal other than `SIGRTMIN+5` (the `threads` profile's); `None` for
    /// automatic dumps only. Default `Some(SIGUSR1)`.
    pub signal: Option<i32>,
    /// Directory the files go to; relative paths are taken from the working directory at
    /// the call. Default: the working directory.
    pub dir: PathBuf,
    /// First part of each file name; no `/`. Default: the program's file name.
    pub prefix: String,
    /// Profiles to write on each dump, by name (see [`profiles`](crate::api::profile::profiles)). Default `["heap"]`.
    pub profiles: Vec<String>,
    /// Dump each time the sampled in-use heap first exceeds the level of the previous
    /// growth dump (starting from 0) by this many bytes (`HEAPROF_DUMP_ON_GROWTH`). A jump
    /// of several steps at once gives one dump. Default `None`.
    pub on_growth: Option<u64>,
    /// Dump once when the resident set first reaches this, and again only after it fell
    /// below 90% of it (`HEAPROF_DUMP_ON_RSS`). RSS is read every 100 ms. Default `None`.
    pub on_rss: Option<RssThreshold>,
    /// At most one automatic dump per this interval (`HEAPROF_DUMP_MIN_INTERVAL`);
    /// `Duration::ZERO` for no limit. Triggers held back are counted, and served by one
    /// dump when the interval has passed. Signal dumps are not limited. Default 10 s.
    pub min_interval: Duration,
}

impl Default for DumpConfig {
    fn default() -> Self {
        DumpConfig {
            signal: Some(libc::SIGUSR1),
            dir: PathBuf::from("."),
            prefix: program_name(),
            profiles: vec!["heap".to_string()],
            on_growth: None,
            on_rss: None,
            min_interval: DEFAULT_MIN_INTERVAL,
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

/// Counters of dumps since [`start_dumps`] (or [`dump_on_signal`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpStats {
    /// Signals the handler received in this process.
    pub signals_received: u64,
    /// Signals served by a finished dump (one that started after they arrived).
    pub signals_served: u64,
    /// Dumps started, on a signal or automatically (a signal dump serves every signal
    /// received before it started).
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
    /// Finished dumps that served signals.
    pub signal_dumps: u64,
    /// Automatic dumps started because the sampled heap grew by a step.
    pub growth_dumps: u64,
    /// Automatic dumps started because the resident set crossed its threshold.
    pub rss_dumps: u64,
    /// Automatic triggers held back by the minimum interval.
    pub held_back: u64,
    /// Readings of the resident set by the RSS trigger (one per 100 ms while it is on, and
    /// one more each time the dump thread wakes for another reason).
    pub rss_checks: u64,
}

impl DumpStats {
    /// Signals served by a dump shared with other signals of the same burst:
    /// `signals_served − signal_dumps`.
    pub fn signals_coalesced(&self) -> u64 {
        self.signals_served.saturating_sub(self.signal_dumps)
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
static SIGNAL_DUMPS: AtomicU64 = AtomicU64::new(0);
static GROWTH_DUMPS: AtomicU64 = AtomicU64::new(0);
static RSS_DUMPS: AtomicU64 = AtomicU64::new(0);
static HELD_BACK: AtomicU64 = AtomicU64::new(0);
static RSS_CHECKS: AtomicU64 = AtomicU64::new(0);

fn stats_now() -> DumpStats {
    DumpStats {
        signals_received: signal::RECEIVED.load(Ordering::Acquire),
        signals_served: SERVED.load(Ordering::Acquire),
        dumps: DUMPS.load(Ordering::Acquire),
        dumps_finished: DUMPS_FINISHED.load(Ordering::Acquire),
        dumps_written: DUMPS_WRITTEN.load(Ordering::Acquire),
        files_written: FILES_WRITTEN.load(Ordering::Acquire),
        write_errors: WRITE_ERRORS.load(Ordering::Acquire),
        signal_dumps: SIGNAL_DUMPS.load(Ordering::Acquire),
        growth_dumps: GROWTH_DUMPS.load(Ordering::Acquire),
        rss_dumps: RSS_DUMPS.load(Ordering::Acquire),
        held_back: HELD_BACK.load(Ordering::Acquire),
        rss_checks: RSS_CHECKS.load(Ordering::Acquire),
    }
}

/// The installed dumps. They stay installed for the life of the process; dropping the
/// handle changes nothing.
#[derive(Clone, Debug)]
pub struct DumpHandle {
    signal: Option<i32>,
    dir: PathBuf,
    prefix: String,
    profiles: Vec<String>,
    on_growth: Option<u64>,
    rss_threshold: Option<(u64, String)>,
    min_interval: Duration,
}

impl DumpHandle {
    /// The signal that triggers a dump, if any.
    pub fn signal(&self) -> Option<i32> {
        self.signal
    }

    /// The growth step of growth dumps, in bytes, if they are on.
    pub fn on_growth(&self) -> Option<u64> {
        self.on_growth
    }

    /// The RSS threshold in bytes (a percentage resolved when dumps started), if RSS dumps
    /// are on.
    pub fn rss_threshold(&self) -> Option<u64> {
        self.rss_threshold.as_ref().map(|t| t.0)
    }

    /// The minimum interval between automatic dumps.
    pub fn min_interval(&self) -> Duration {
        self.min_interval
    }

    /// Whether a growth or RSS trigger is on.
    fn automatic(&self) -> bool {
        self.on_growth.is_some() || self.rss_threshold.is_some()
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

/// The counters of dumps, or `None` if no dumps were started ([`start_dumps`],
/// [`dump_on_signal`], or `init_from_env` with a `HEAPROF_DUMP_*` trigger).
pub fn dump_stats() -> Option<DumpStats> {
    INSTALLED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|_| stats_now())
}

static INSTALLED: Mutex<Option<DumpHandle>> = Mutex::new(None);
static INSTALLED_FORK: crate::base::fork::HeldAcrossFork<Option<DumpHandle>> =
    crate::base::fork::HeldAcrossFork::new();

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
/// `WriteHeapProfile`, from a thread of its own; and on the automatic triggers the config
/// sets ([`DumpConfig::on_growth`], [`DumpConfig::on_rss`]). [`start_dumps`] with a signal
/// required.
///
/// Each dump writes `<dir>/<prefix>.<pid>.<seq>.<profile>.pb.gz` (seq counts dumps from 1)
/// through a private temporary file (mode 0600, `O_EXCL | O_NOFOLLOW`) that is fsynced and
/// renamed into place: a final-name file is always complete, and a symlink planted at the
/// final name is replaced, never followed. Each dump prints one line on stderr with the
/// counts; a write error is printed once per kind of error and profile, and never stops
/// the process or later dumps. A handler already installed for the signal keeps being
/// called (ours chains to it).
///
/// One call per process: a second call is an error. Errors: no signal, a signal that is
/// not allowed, a directory that does not exist or is not writable, a bad prefix, an
/// unknown profile name, a trigger of 0 bytes.
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
    if config.signal.is_none() {
        return Err(Error::InvalidConfig(
            "dump_on_signal needs a signal (use start_dumps for automatic dumps only)".into(),
        ));
    }
    start_dumps(config)
}

/// Starts the dumps `config` asks for — on its signal, when the sampled heap grows by
/// [`DumpConfig::on_growth`], when RSS crosses [`DumpConfig::on_rss`] — written from a
/// thread of its own, `heaprof-dump`, as [`dump_on_signal`] describes.
///
/// Automatic dumps: at most one per [`DumpConfig::min_interval`]; the triggers held back
/// are counted ([`DumpStats::held_back`], and the next dump's stderr line) and served by
/// one dump when the interval has passed. A growth step is noticed by the sampled
/// allocation that completes it; RSS is read every 100 ms, so an RSS spike shorter than
/// that, or a rise to an OOM kill faster than that, can be missed. The dump thread prints
/// one line when it starts, with the thresholds in bytes.
///
/// One call per process: a second call (or one after `init_from_env` started dumps) is an
/// error, as is a config with no signal and no trigger.
///
/// ```no_run
/// // A heap profile at each 256 MiB of growth, and one when RSS reaches 90% of the
/// // cgroup's memory limit; no signal.
/// heaprof::start_dumps(heaprof::DumpConfig {
///     signal: None,
///     dir: "/var/tmp".into(),
///     on_growth: Some(256 << 20),
///     on_rss: Some(heaprof::RssThreshold::PercentOfLimit(90.0)),
///     ..Default::default()
/// })?;
/// # Ok::<(), heaprof::Error>(())
/// ```
pub fn start_dumps(config: DumpConfig) -> Result<DumpHandle, Error> {
    // Before taking INSTALLED: registering takes glibc's atfork lock, which a concurrent
    // fork holds while its prepare handler waits for INSTALLED.
    crate::base::fork::ensure_registered();
    let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = installed.as_ref() {
        return Err(Error::InvalidConfig(format!(
            "dumps are already enabled (into {}); only one dump configuration per process",
            h.dir.display()
        )));
    }
    let (handle, profiles) = validate(config)?;
    let reader =
        wake::create().map_err(|e| Error::os("cannot create the dump thread's pipe", e))?;
    if let Some(sig) = handle.signal {
        signal::install(sig)
            .map_err(|e| Error::os(format!("cannot install the handler for signal {sig}"), e))?;
    }
    let triggers = handle.automatic().then(|| {
        triggers::Triggers::new(
            handle.on_growth,
            handle.rss_threshold(),
            handle.min_interval,
        )
    });
    thread::spawn(reader, handle.clone(), profiles, triggers)
        .map_err(|e| Error::os("cannot start the dump thread", e))?;
    *installed = Some(handle.clone());
    Ok(handle)
}

/// Checks `config` and resolves what it names: the handle of the dumps it describes and the
/// profiles to write. The error says what is wrong.
fn validate(config: DumpConfig) -> Result<(DumpHandle, Vec<Profile>), Error> {
    if let Some(why) = config
        .signal
        .and_then(|sig| signal::refusal(sig, &sig.to_string()))
    {
        return Err(Error::InvalidConfig(why));
    }
    let rss_threshold = validate_triggers(&config)?;
    if !valid_component(&config.prefix) {
        return Err(Error::InvalidConfig(format!(
            "dump prefix {:?} must be a non-empty file name without '/'",
            config.prefix
        )));
    }
    let dir = writable_dir(&config.dir)?;
    let profiles = profiles_named(&config.profiles)?;
    let handle = DumpHandle {
        signal: config.signal,
        dir,
        prefix: config.prefix,
        profiles: config.profiles,
        on_growth: config.on_growth,
        rss_threshold,
        min_interval: config.min_interval,
    };
    Ok((handle, profiles))
}

/// `dir` made absolute, once it is known to be a directory this process can write to.
fn writable_dir(dir: &std::path::Path) -> Result<PathBuf, Error> {
    let dir = std::path::absolute(dir)
        .map_err(|e| Error::os(format!("dump directory {}", dir.display()), e))?;
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::InvalidConfig(format!(
                "dump directory {} is not a directory",
                dir.display()
            )))
        }
        Err(e) => return Err(Error::os(format!("dump directory {}", dir.display()), e)),
    }
    file::probe_writable(&dir).map_err(|e| {
        Error::os(
            format!("dump directory {} is not writable", dir.display()),
            e,
        )
    })?;
    Ok(dir)
}

/// The profiles `names` name, each usable in a file name; at least one.
fn profiles_named(names: &[String]) -> Result<Vec<Profile>, Error> {
    if names.is_empty() {
        return Err(Error::InvalidConfig("no profiles to dump".into()));
    }
    names
        .iter()
        .map(|name| {
            if !valid_component(name) {
                return Err(Error::InvalidConfig(format!(
                    "profile name {name:?} cannot be part of a file name"
                )));
            }
            profile::lookup(name).ok_or_else(|| {
                let known: Vec<String> = profile::profiles()
                    .iter()
                    .map(|p| p.name().to_string())
                    .collect();
                Error::InvalidConfig(format!(
                    "unknown profile {name:?} (known: {})",
                    known.join(", ")
                ))
            })
        })
        .collect()
}

/// Checks the automatic triggers and resolves the RSS threshold to bytes (with how it was
/// derived).
fn validate_triggers(config: &DumpConfig) -> Result<Option<(u64, String)>, Error> {
    if config.signal.is_none() && config.on_growth.is_none() && config.on_rss.is_none() {
        return Err(Error::InvalidConfig(
            "nothing to dump on: no signal, no growth step, no RSS threshold".into(),
        ));
    }
    if config.on_growth == Some(0) {
        return Err(Error::InvalidConfig(
            "the growth step must be above 0 bytes".into(),
        ));
    }
    let Some(t) = config.on_rss else {
        return Ok(None);
    };
    match t {
        RssThreshold::Bytes(0) => {
            return Err(Error::InvalidConfig(
                "the RSS threshold must be above 0 bytes".into(),
            ))
        }
        RssThreshold::PercentOfLimit(p) if !(p > 0.0 && p <= 100.0) => {
            return Err(Error::InvalidConfig(format!(
                "the RSS threshold {p}% must be above 0% and at most 100%"
            )))
        }
        _ => {}
    }
    let limit = rss::cgroup::Cgroup::find()
        .and_then(|c| c.limit())
        .map(|(l, f)| (l, f.display().to_string()));
    triggers::resolve_rss(t, limit, rss::cgroup::physical_memory())
        .map(Some)
        .map_err(|e| Error::InvalidConfig(format!("the RSS threshold: {e}")))
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
            signal: Some(libc::SIGKILL),
            ..ok.clone()
        })
        .contains("not allowed"));
        assert!(bad(DumpConfig {
            signal: None,
            ..ok.clone()
        })
        .contains("nothing to dump on"));
        assert!(bad(DumpConfig {
            on_growth: Some(0),
            ..ok.clone()
        })
        .contains("growth step must be above 0"));
        assert!(bad(DumpConfig {
            on_rss: Some(RssThreshold::PercentOfLimit(0.0)),
            ..ok.clone()
        })
        .contains("above 0%"));
        assert!(bad(DumpConfig {
            on_rss: Some(RssThreshold::Bytes(0)),
            ..ok.clone()
        })
        .contains("RSS threshold must be above 0"));
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
        let (h, _) = validate(DumpConfig {
            signal: None,
            on_rss: Some(RssThreshold::PercentOfLimit(50.0)),
            ..ok.clone()
        })
        .unwrap();
        let t = h.rss_threshold().unwrap();
        assert!(t > 0 && t <= rss::cgroup::physical_memory().unwrap() / 2 + 1);
        let (h, p) = validate(ok).unwrap();
        assert!(h.dir().is_absolute());
        assert_eq!(p.len(), 1);
        assert!(h
            .path_for(3, "heap")
            .to_string_lossy()
            .ends_with(&format!(".{}.3.heap.pb.gz", std::process::id())));
    }
}
