//! Run-time configuration: the sampling rate, the sampler seed and table capacities, from
//! the `HEAPROF_*` environment variables as they were at process start (`env`), without
//! allocating (the first read happens inside the allocator).
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `HEAPROF_RATE` | mean bytes between samples; `0` off, `1` every allocation; suffixes `k`, `KiB`, `m`, `MiB`; at most [`MAX_HEAP_PROFILE_RATE`] | 524288 |
//! | `HEAPROF_SEED` | seed of the sampler, for reproducible runs | time and pid |
//! | `HEAPROF_STACKS` | capacity of the stack table (distinct stacks) | 16384 |
//! | `HEAPROF_BUCKETS` | capacity of the heap bucket table ((stack, size) pairs) | 65536 |
//!
//! An invalid value prints one line on stderr and the default is used.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::{base::env, base::sys};

/// Go's `MemProfileRate` default: one sample per 512 KiB allocated, on average.
pub const DEFAULT_HEAP_PROFILE_RATE: usize = 512 * 1024;

/// The largest sampling rate, 16 GiB: larger rates (from [`crate::set_heap_profile_rate`] or
/// `HEAPROF_RATE`) are clamped to it. It keeps the arithmetic of weights, counters and the
/// peak test far from overflow (a sample's weight is at most this many bytes, or its own
/// size), and it is 1/64 of the sampler's countdown bound, so the exponential draw is not
/// distorted by that bound (a draw above it has probability e^-64).
pub const MAX_HEAP_PROFILE_RATE: usize = 1 << 34;

const UNSET: usize = usize::MAX;
static RATE: AtomicUsize = AtomicUsize::new(UNSET);
static SEED: AtomicU64 = AtomicU64::new(0);
static SEED_SET: AtomicBool = AtomicBool::new(false);

/// Parses a byte count: decimal digits with an optional `k`/`K`/`KiB` (×1024),
/// `m`/`M`/`MiB` (×1024²) or `g`/`G`/`GiB` (×1024³) suffix. Returns `None` for anything
/// else or on overflow.
pub fn parse_bytes(s: &[u8]) -> Option<usize> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n: usize = 0;
    for &b in &s[..digits] {
        n = n.checked_mul(10)?.checked_add((b - b'0') as usize)?;
    }
    let mult = match &s[digits..] {
        b"" => 1,
        b"k" | b"K" | b"KiB" | b"kib" => 1024,
        b"m" | b"M" | b"MiB" | b"mib" => 1024 * 1024,
        b"g" | b"G" | b"GiB" | b"gib" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&v| v != UNSET)
}

fn warn_invalid(var: &[u8], value: &[u8], default: &[u8]) {
    let shown = &value[..value.len().min(64)];
    sys::write_stderr(&[
        b"heaprof: ignoring ",
        var,
        b"=",
        shown,
        b": ",
        default,
        b"\n",
    ]);
}

/// Reads a count from the environment variable `var` (same syntax as [`parse_bytes`]; its
/// value at process start), `default` when unset; a value outside `min..=max` or
/// unparsable warns and gives `default`. Never allocates.
pub fn env_count(var: &core::ffi::CStr, default: usize, min: usize, max: usize) -> usize {
    let value = var.to_str().ok().and_then(env::get);
    match value {
        None => default,
        Some(v) => match parse_bytes(v) {
            Some(n) if (min..=max).contains(&n) => n,
            _ => {
                warn_invalid(
                    var.to_bytes(),
                    v,
                    b"out of range or not a number; using the default",
                );
                default
            }
        },
    }
}

/// The sampling rate in force, reading `HEAPROF_RATE` on first use.
#[inline]
pub fn sample_rate() -> usize {
    let r = RATE.load(Ordering::Relaxed);
    if r != UNSET {
        return r;
    }
    rate_from_env()
}

#[cold]
fn rate_from_env() -> usize {
    let rate = match env::get("HEAPROF_RATE") {
        None => DEFAULT_HEAP_PROFILE_RATE,
        Some(v) => parse_bytes(v).unwrap_or_else(|| {
            warn_invalid(
                b"HEAPROF_RATE",
                v,
                b"not a byte count (digits, optional k/KiB/m/MiB); using the default 524288",
            );
            DEFAULT_HEAP_PROFILE_RATE
        }),
    }
    .min(MAX_HEAP_PROFILE_RATE);
    match RATE.compare_exchange(UNSET, rate, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => rate,
        Err(set_meanwhile) => set_meanwhile,
    }
}

/// Sets the sampling rate, clamped to [`MAX_HEAP_PROFILE_RATE`]; takes effect for each thread at
/// its next sample.
pub fn set_sample_rate(bytes: usize) {
    RATE.store(bytes.min(MAX_HEAP_PROFILE_RATE), Ordering::Relaxed);
}

/// The process seed of the sampler: `HEAPROF_SEED`, else one set by
/// [`set_sampler_seed`], else derived from the clock and pid.
pub fn process_seed() -> u64 {
    if SEED_SET.load(Ordering::Acquire) {
        return SEED.load(Ordering::Relaxed);
    }
    let seed = match env::get("HEAPROF_SEED").map(|v| (v, parse_bytes(v))) {
        Some((_, Some(s))) => s as u64,
        Some((v, None)) => {
            warn_invalid(b"HEAPROF_SEED", v, b"not a number; using a random seed");
            time_seed()
        }
        None => time_seed(),
    };
    set_sampler_seed(seed);
    seed
}

fn time_seed() -> u64 {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u64;
    sys::monotonic_nanos() ^ (pid << 32) ^ 0x5851_f42d_4c95_7f2d
}

/// Fixes the sampler's process seed; threads that have not drawn yet derive their seed
/// from it and their creation order, so a single-threaded run is reproducible.
pub fn set_sampler_seed(seed: u64) {
    SEED.store(seed, Ordering::Relaxed);
    SEED_SET.store(true, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_byte_counts() {
        assert_eq!(parse_bytes(b"0"), Some(0));
        assert_eq!(parse_bytes(b"4096"), Some(4096));
        assert_eq!(parse_bytes(b"512k"), Some(512 * 1024));
        assert_eq!(parse_bytes(b"4MiB"), Some(4 << 20));
        assert_eq!(parse_bytes(b"3GiB"), Some(3 << 30));
        assert_eq!(parse_bytes(b"2g"), Some(2 << 30));
        assert_eq!(parse_bytes(b""), None);
        assert_eq!(parse_bytes(b"-1"), None);
        assert_eq!(parse_bytes(b"12x"), None);
        assert_eq!(parse_bytes(b" 12"), None);
        assert_eq!(parse_bytes(b"99999999999999999999999"), None);
    }
}
