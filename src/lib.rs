//! heaprof: Go's `runtime/pprof` for Rust.
//!
//! TEMPORARY SHIM (branch `bench`): forwards every call to the inner allocator
//! and implements the public API contract with no profiling at all, so that
//! `alloc-bench` can be developed before the real allocator lands. The
//! integrator should drop this commit and keep the real implementation.
#![deny(unsafe_op_in_unsafe_fn)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Default mean sampling interval in bytes (512 KiB), as in Go.
pub const DEFAULT_SAMPLE_RATE: usize = 512 * 1024;

static SAMPLE_RATE: AtomicUsize = AtomicUsize::new(DEFAULT_SAMPLE_RATE);

/// Sampling heap-profiling allocator wrapper (SHIM: forwards only).
pub struct ProfilingAllocator<A: GlobalAlloc = System> {
    inner: A,
}

impl ProfilingAllocator<System> {
    /// Wraps `std::alloc::System`.
    pub const fn system() -> Self {
        Self { inner: System }
    }
}

impl<A: GlobalAlloc> ProfilingAllocator<A> {
    /// Wraps any `GlobalAlloc`.
    pub const fn new(inner: A) -> Self {
        Self { inner }
    }
}

// SAFETY: every method forwards unchanged to the inner allocator, which upholds
// the `GlobalAlloc` contract.
unsafe impl<A: GlobalAlloc> GlobalAlloc for ProfilingAllocator<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: caller upholds the GlobalAlloc contract.
        unsafe { self.inner.alloc(layout) }
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: caller upholds the GlobalAlloc contract.
        unsafe { self.inner.alloc_zeroed(layout) }
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: caller upholds the GlobalAlloc contract.
        unsafe { self.inner.dealloc(ptr, layout) }
    }
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: caller upholds the GlobalAlloc contract.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }
}

/// Sets the mean sampling interval in bytes (0 = off, 1 = every allocation).
pub fn set_sample_rate(bytes: usize) {
    SAMPLE_RATE.store(bytes, Ordering::Relaxed);
}

/// Returns the current mean sampling interval in bytes.
pub fn sample_rate() -> usize {
    SAMPLE_RATE.load(Ordering::Relaxed)
}

/// Writes the heap profile in pprof format (SHIM: writes nothing).
pub fn write_heap_profile(w: impl std::io::Write) -> std::io::Result<()> {
    let _ = w;
    Ok(())
}
