//! Thin wrappers over the libc calls the hot side needs: anonymous memory from the OS,
//! environment reads and stderr writes that never touch the global allocator.
//!
//! Called from the allocator's slow path and from signal handlers; nothing here allocates.

use core::ptr;

/// Maps `len` bytes of zeroed, private, anonymous memory straight from the kernel.
///
/// The memory is reserved with `MAP_NORESERVE`: pages cost RSS only once touched. Returns
/// null when the kernel refuses.
pub fn map_zeroed(len: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at a kernel-chosen address has no preconditions;
    // failure is reported as MAP_FAILED and turned into null.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Reads an environment variable as raw bytes without allocating.
///
/// Returns `None` when unset. The slice borrows the process environment: callers copy or
/// parse it at once (a later `setenv` may free it).
pub fn getenv_bytes(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated; getenv returns null or a NUL-terminated string owned
    // by the environment, which we only read before returning to the caller.
    let v = unsafe { libc::getenv(name.as_ptr()) };
    if v.is_null() {
        return None;
    }
    // SAFETY: `v` is a valid NUL-terminated C string (checked non-null above).
    Some(unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes())
}

/// Writes `parts` to stderr with `write(2)`, without allocating or locking.
pub fn write_stderr(parts: &[&[u8]]) {
    for part in parts {
        let mut rest = *part;
        while !rest.is_empty() {
            // SAFETY: `rest` is a valid readable buffer of `rest.len()` bytes.
            let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
            if n <= 0 {
                return;
            }
            rest = &rest[n as usize..];
        }
    }
}

/// Nanoseconds since the Unix epoch (`CLOCK_REALTIME`), without allocating.
pub fn now_unix_nanos() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Monotonic nanoseconds, used to seed the sampler.
pub fn monotonic_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
