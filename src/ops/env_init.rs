//! `heaprof::init_from_env()`: turns on the production features named by `HEAPROF_DUMP_*`
//! environment variables — signal dumps, automatic dumps on heap growth and on RSS, and a
//! heap profile at exit.
//!
//! Called once by the application, early in `main` (not from the allocator: it allocates).
//! It never fails: an invalid value prints one line on stderr and leaves that feature off.
//! The at-exit writer runs from `libc::atexit`; it must never panic or unwind into libc.
//!
//! Why a call and not a constructor run before `main`: at that point the standard library's
//! runtime (args, stderr, threads) is not guaranteed to be set up, and a library that
//! spawns threads and installs signal handlers uninvited is hard to reason about. One line
//! in `main` is explicit and robust.
//!
//! | variable | meaning |
//! |---|---|
//! | `HEAPROF_DUMP_SIGNAL` | `USR1`, `USR2`, `HUP`, `WINCH`, `RTMIN+N` or a number: enables signal dumps |
//! | `HEAPROF_DUMP_ON_GROWTH` | size (`256MiB`): a dump each time the sampled heap grew by it |
//! | `HEAPROF_DUMP_ON_RSS` | size, or `P%` of the cgroup memory limit (else physical memory): a dump when RSS reaches it |
//! | `HEAPROF_DUMP_MIN_INTERVAL` | seconds between automatic dumps, at least (default 10; 0 = no limit) |
//! | `HEAPROF_DUMP_DIR` | directory for dumps (default: working directory) |
//! | `HEAPROF_DUMP_PREFIX` | file name prefix (default: program name) |
//! | `HEAPROF_DUMP_PROFILES` | comma-separated profile names (default `heap`) |
//! | `HEAPROF_DUMP_AT_EXIT` | path: the heap profile is written there when the process exits |

use std::ffi::OsString;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::ops::dump::{self, DumpConfig, DumpHandle};
use crate::{api::profile, base::config, base::sys, base::tls};

/// What [`init_from_env`] turned on.
#[derive(Clone, Debug, Default)]
pub struct EnvInit {
    /// Dumps, when `HEAPROF_DUMP_SIGNAL`, `HEAPROF_DUMP_ON_GROWTH` or `HEAPROF_DUMP_ON_RSS`
    /// was set and valid.
    pub dump: Option<DumpHandle>,
    /// Where the heap profile goes at exit, when `HEAPROF_DUMP_AT_EXIT` was set and valid.
    pub dump_at_exit: Option<PathBuf>,
}

static CALLED: AtomicBool = AtomicBool::new(false);
static AT_EXIT_PATH: OnceLock<PathBuf> = OnceLock::new();
static AT_EXIT_RAN: AtomicBool = AtomicBool::new(false);

/// Enables what the `HEAPROF_*` variables ask for, with the values they had when the
/// process started (heaprof reads them once, before `main`): dumps on a signal
/// (`HEAPROF_DUMP_SIGNAL`), on heap growth (`HEAPROF_DUMP_ON_GROWTH`) and on RSS
/// (`HEAPROF_DUMP_ON_RSS`, `HEAPROF_DUMP_MIN_INTERVAL`), written as `HEAPROF_DUMP_DIR`,
/// `HEAPROF_DUMP_PREFIX` and `HEAPROF_DUMP_PROFILES` say (see [`crate::start_dumps`]); and
/// a heap profile at exit (`HEAPROF_DUMP_AT_EXIT`). Also reads `HEAPROF_RATE` now, so a
/// bad value is reported at startup.
///
/// Invalid values print one line on stderr and leave that feature off. Only the first call
/// acts; later calls return an empty [`EnvInit`]. The at-exit profile is written by a
/// `libc::atexit` hook: on return from `main` or `std::process::exit`, not when a signal
/// kills the process or on `abort`.
///
/// ```no_run
/// // First line of `main`; then run: HEAPROF_DUMP_SIGNAL=USR1 HEAPROF_DUMP_DIR=/var/tmp ./app
/// let enabled = heaprof::init_from_env();
/// if let Some(d) = &enabled.dump {
///     eprintln!("heap dumps on signal {:?} into {}", d.signal(), d.dir().display());
/// }
/// ```
pub fn init_from_env() -> EnvInit {
    if CALLED.swap(true, Ordering::AcqRel) {
        return EnvInit::default();
    }
    config::sample_rate();
    EnvInit {
        dump: dump_from_env(),
        dump_at_exit: at_exit_from_env(),
    }
}

/// The variable's value at process start (`env`: read once, so a `set_var` made later by
/// another thread can neither race with this read nor change its result).
fn start_value(var: &str) -> Option<OsString> {
    use std::os::unix::ffi::OsStrExt;
    crate::base::env::get(var).map(|v| std::ffi::OsStr::from_bytes(v).to_os_string())
}

fn warn(var: &str, value: &OsString, why: &str, consequence: &str) {
    let shown: String = value.to_string_lossy().chars().take(128).collect();
    sys::write_stderr(&[
        format!("heaprof: ignoring {var}={shown}: {why}; {consequence}\n").as_bytes(),
    ]);
}

fn var_str(var: &str, consequence: &str) -> Option<String> {
    let v = start_value(var)?;
    match v.to_str() {
        Some(s) => Some(s.to_string()),
        None => {
            warn(var, &v, "not valid UTF-8", consequence);
            None
        }
    }
}

/// `var` parsed by `parse`; unset → `None`, invalid → one warning and `None`.
fn parsed<T>(var: &str, parse: fn(&str) -> Result<T, String>, consequence: &str) -> Option<T> {
    let s = var_str(var, consequence)?;
    match parse(&s) {
        Ok(v) => Some(v),
        Err(why) => {
            warn(var, &OsString::from(s), &why, consequence);
            None
        }
    }
}

/// What dumps stay when a `HEAPROF_DUMP_*` value is wrong.
const OFF: &str = "dumps stay off";

/// Starts the dumps the `HEAPROF_DUMP_*` variables describe, if any; each wrong value gets
/// one warning line.
fn dump_from_env() -> Option<DumpHandle> {
    let signal_set = start_value("HEAPROF_DUMP_SIGNAL").is_some();
    let signal = parsed(
        "HEAPROF_DUMP_SIGNAL",
        dump::parse_signal,
        "signal dumps stay off",
    );
    let on_growth = parsed(
        "HEAPROF_DUMP_ON_GROWTH",
        dump::parse_growth,
        "growth dumps stay off",
    );
    let on_rss = parsed("HEAPROF_DUMP_ON_RSS", dump::parse_rss, "RSS dumps stay off");
    let automatic = on_growth.is_some() || on_rss.is_some();
    let min_interval = min_interval_from_env(automatic);
    if signal.is_none() && !automatic {
        if !signal_set {
            warn_unused(&[
                "HEAPROF_DUMP_DIR",
                "HEAPROF_DUMP_PREFIX",
                "HEAPROF_DUMP_PROFILES",
            ]);
        }
        return None;
    }
    let cfg = where_and_what(DumpConfig {
        signal,
        on_growth,
        on_rss,
        min_interval,
        ..DumpConfig::default()
    })?;
    match dump::start_dumps(cfg) {
        Ok(h) => Some(h),
        Err(e) => {
            // Name the variable most likely at fault: the message says exactly what failed.
            sys::write_stderr(&[format!("heaprof: HEAPROF_DUMP_*: {e}; {OFF}\n").as_bytes()]);
            None
        }
    }
}

/// `cfg` with the directory, file prefix and profiles of `HEAPROF_DUMP_DIR`, `_PREFIX` and
/// `_PROFILES` where set; `None` (after a warning) when one of them is invalid.
fn where_and_what(mut cfg: DumpConfig) -> Option<DumpConfig> {
    if let Some(dir) = start_value("HEAPROF_DUMP_DIR") {
        if dir.is_empty() {
            warn("HEAPROF_DUMP_DIR", &dir, "empty", OFF);
            return None;
        }
        cfg.dir = PathBuf::from(dir);
    }
    if let Some(prefix) = var_str("HEAPROF_DUMP_PREFIX", OFF) {
        cfg.prefix = prefix;
    } else if start_value("HEAPROF_DUMP_PREFIX").is_some() {
        return None;
    }
    if let Some(list) = var_str("HEAPROF_DUMP_PROFILES", OFF) {
        cfg.profiles = list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
    } else if start_value("HEAPROF_DUMP_PROFILES").is_some() {
        return None;
    }
    Some(cfg)
}

/// `HEAPROF_DUMP_MIN_INTERVAL`, or the default; warns when it is invalid, or set while no
/// automatic trigger is on (then it is not parsed: one warning per variable).
fn min_interval_from_env(automatic: bool) -> std::time::Duration {
    const VAR: &str = "HEAPROF_DUMP_MIN_INTERVAL";
    if !automatic {
        if let Some(v) = start_value(VAR) {
            warn(
                VAR,
                &v,
                "no valid HEAPROF_DUMP_ON_GROWTH or HEAPROF_DUMP_ON_RSS is set",
                "it has nothing to limit",
            );
        }
        return dump::DEFAULT_MIN_INTERVAL;
    }
    parsed(
        VAR,
        dump::parse_min_interval,
        "using the default of 10 seconds",
    )
    .unwrap_or(dump::DEFAULT_MIN_INTERVAL)
}

/// Warns about each of `vars` that is set although no dump trigger is.
fn warn_unused(vars: &[&str]) {
    for var in vars {
        if let Some(v) = start_value(var) {
            warn(
                var,
                &v,
                "HEAPROF_DUMP_SIGNAL is not set, nor HEAPROF_DUMP_ON_GROWTH or HEAPROF_DUMP_ON_RSS",
                "dumps stay off",
            );
        }
    }
}

fn at_exit_from_env() -> Option<PathBuf> {
    const OFF: &str = "no profile is written at exit";
    let var = "HEAPROF_DUMP_AT_EXIT";
    let raw = start_value(var)?;
    let path = match check_exit_path(Path::new(&raw)) {
        Ok(p) => p,
        Err(why) => {
            warn(var, &raw, &why, OFF);
            return None;
        }
    };
    if AT_EXIT_PATH.set(path.clone()).is_err() {
        return None;
    }
    // SAFETY: `write_at_exit` is an `extern "C" fn()` that never unwinds (it catches panics).
    if unsafe { libc::atexit(write_at_exit) } != 0 {
        warn(var, &raw, "atexit refused the hook", OFF);
        return None;
    }
    Some(path)
}

fn check_exit_path(p: &Path) -> Result<PathBuf, String> {
    if p.as_os_str().is_empty() {
        return Err("empty path".into());
    }
    let abs = std::path::absolute(p).map_err(|e| e.to_string())?;
    if abs.file_name().is_none() || p.to_string_lossy().ends_with('/') {
        return Err("not a file path".into());
    }
    let parent = abs.parent().unwrap_or(Path::new("/"));
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory", parent.display())),
        Err(e) => return Err(format!("directory {}: {e}", parent.display())),
    }
    if std::fs::symlink_metadata(&abs).is_ok_and(|m| m.is_dir()) {
        return Err("is a directory".into());
    }
    Ok(abs)
}

/// The `atexit` hook: writes the heap profile to `HEAPROF_DUMP_AT_EXIT`, once, atomically.
/// It catches every panic (unwinding into libc would abort) and reports failures with a
/// raw `write(2)` on stderr (std's stderr may already be torn down at this point).
extern "C" fn write_at_exit() {
    if AT_EXIT_RAN.swap(true, Ordering::AcqRel) {
        return;
    }
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let _guard = tls::ProfilerGuard::enter();
        let Some(path) = AT_EXIT_PATH.get() else {
            return;
        };
        let msg = match profile::lookup("heap") {
            None => "heaprof: HEAPROF_DUMP_AT_EXIT: no heap profile registered\n".to_string(),
            Some(p) => match dump::write_profile_file(path, &p) {
                Ok(()) => format!(
                    "heaprof: wrote the heap profile to {} at exit\n",
                    path.display()
                ),
                Err(e) => format!(
                    "heaprof: HEAPROF_DUMP_AT_EXIT: cannot write {}: {e}\n",
                    path.display()
                ),
            },
        };
        sys::write_stderr(&[msg.as_bytes()]);
    }));
    if result.is_err() {
        sys::write_stderr(&[b"heaprof: HEAPROF_DUMP_AT_EXIT: the profile writer panicked\n"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_path_checks() {
        assert_eq!(check_exit_path(Path::new("")).unwrap_err(), "empty path");
        assert!(check_exit_path(Path::new("/no/such/dir/x"))
            .unwrap_err()
            .contains("/no/such/dir"));
        assert_eq!(
            check_exit_path(&std::env::temp_dir()).unwrap_err(),
            "is a directory"
        );
        assert!(check_exit_path(Path::new("rel.pb.gz"))
            .unwrap()
            .is_absolute());
    }
}
