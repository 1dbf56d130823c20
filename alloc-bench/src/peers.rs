//! Per-configuration hooks shared by the worker binaries: heaprof's (over
//! any inner allocator) and jemalloc's profiler controls.
//!
//! Called by `src/bin/w_*.rs` before and after the timed workload, never from
//! inside an allocator. Whatever `jemalloc_*` reads through `mallctl` only
//! means something in a binary whose global allocator is jemalloc.

use crate::accuracy::{self, Estimate};
#[cfg(feature = "peers")]
use crate::harness::die;
use crate::harness::Hooks;
#[cfg(feature = "peers")]
use std::ffi::CString;
use std::path::Path;

fn heaprof_write(path: &Path) -> std::io::Result<()> {
    let f = std::io::BufWriter::new(std::fs::File::create(path)?);
    heaprof::write_heap_profile(f)
}

fn heaprof_estimate() -> Result<Estimate, String> {
    let mut buf = Vec::new();
    heaprof::write_heap_profile(&mut buf).map_err(|e| format!("write_heap_profile: {e}"))?;
    accuracy::estimate_from_pprof(&buf)
}

/// Hooks of a `heaprof::ProfilingAllocator<_>` worker: rate set and read back
/// through heaprof's API, profile via `write_heap_profile`.
pub fn heaprof_hooks(config: &'static str) -> Hooks {
    Hooks {
        config,
        set_rate: Some(heaprof::set_heap_profile_rate),
        get_rate: Some(heaprof::heap_profile_rate),
        write_profile: Some(heaprof_write),
        setup: None,
        estimate: Some(heaprof_estimate),
    }
}

#[cfg(feature = "peers")]
fn read_bool(name: &[u8]) -> bool {
    // SAFETY: `name` is a NUL-terminated mallctl name whose value is a bool.
    unsafe { tikv_jemalloc_ctl::raw::read::<bool>(name) }.unwrap_or_else(|e| {
        die(&format!(
            "mallctl {}: {e}",
            String::from_utf8_lossy(&name[..name.len() - 1])
        ))
    })
}

#[cfg(feature = "peers")]
/// `setup` of plain jemalloc: dies unless `opt.prof` is false.
pub fn jemalloc_check_prof_off() {
    if read_bool(b"opt.prof\0") {
        die("plain jemalloc worker has opt.prof=true (stray _RJEM_MALLOC_CONF?)");
    }
}

#[cfg(feature = "peers")]
fn jemalloc_prof_setup() {
    if !read_bool(b"opt.prof\0") || !read_bool(b"prof.active\0") {
        die("jemalloc profiling is not active (opt.prof / prof.active false)");
    }
}

#[cfg(feature = "peers")]
fn jemalloc_rate() -> usize {
    // SAFETY: `opt.lg_prof_sample` is a size_t mallctl.
    let lg = unsafe { tikv_jemalloc_ctl::raw::read::<usize>(b"opt.lg_prof_sample\0") }
        .unwrap_or_else(|e| die(&format!("mallctl opt.lg_prof_sample: {e}")));
    1usize << lg
}

#[cfg(feature = "peers")]
/// `prof.dump` to `path`.
pub fn jemalloc_dump(path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::other("path contains NUL"))?;
    // SAFETY: `prof.dump` takes a `const char *` file name; `c` outlives the call.
    unsafe { tikv_jemalloc_ctl::raw::write(b"prof.dump\0", c.as_ptr()) }
        .map_err(|e| std::io::Error::other(format!("mallctl prof.dump: {e}")))?;
    Ok(())
}

#[cfg(feature = "peers")]
fn jemalloc_estimate() -> Result<Estimate, String> {
    let path = std::env::temp_dir().join(format!("alloc-bench-jeprof-{}.heap", std::process::id()));
    jemalloc_dump(&path).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading dump: {e}"))?;
    let _ = std::fs::remove_file(&path);
    accuracy::estimate_from_jemalloc(&text)
}

#[cfg(feature = "peers")]
/// Hooks of the jemalloc-profiler worker (rate read back from
/// `opt.lg_prof_sample`; set through `_RJEM_MALLOC_CONF` only).
pub fn jemalloc_prof_hooks() -> Hooks {
    Hooks {
        config: "jemalloc-prof",
        set_rate: None,
        get_rate: Some(jemalloc_rate),
        write_profile: Some(jemalloc_dump),
        setup: Some(jemalloc_prof_setup),
        estimate: Some(jemalloc_estimate),
    }
}
