//! glibc malloc's own figures, from `mallinfo2()`: bytes in use, free bytes it holds, and
//! bytes in chunks it mapped on their own.
//!
//! Called by profile writers only: `mallinfo2` takes every arena's lock and walks its free
//! lists. `mallinfo2` appeared in glibc 2.33, so it is looked up at run time (`dlsym`)
//! rather than linked: a binary built here still starts on an older glibc, and shows no
//! malloc figures there. These are glibc's figures whatever the inner allocator is; with
//! jemalloc or mimalloc as the inner allocator they only describe what still goes to glibc.

use core::ffi::c_void;
use core::sync::atomic::{AtomicUsize, Ordering};

/// glibc malloc's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MallocInfo {
    /// Bytes in allocated chunks, including those mapped on their own (`uordblks + hblkhd`).
    pub in_use: u64,
    /// Free bytes malloc holds in its arenas, top chunks included (`fordblks`).
    pub free: u64,
    /// Bytes in chunks mapped on their own (large blocks, `hblkhd`); part of `in_use`.
    pub mmapped: u64,
}

/// glibc's `struct mallinfo2` (every field a `size_t`).
#[repr(C)]
#[derive(Default)]
struct Mallinfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

type Mallinfo2Fn = unsafe extern "C" fn() -> Mallinfo2;

/// The address of `mallinfo2`: 0 = not looked up yet, 1 = not there.
static MALLINFO2: AtomicUsize = AtomicUsize::new(0);

fn lookup() -> Option<Mallinfo2Fn> {
    let mut addr = MALLINFO2.load(Ordering::Acquire);
    if addr == 0 {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name has no other preconditions.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mallinfo2".as_ptr()) };
        addr = if p.is_null() { 1 } else { p as usize };
        MALLINFO2.store(addr, Ordering::Release);
    }
    (addr != 1).then(|| {
        // SAFETY: `addr` is glibc's `mallinfo2`, whose C signature is
        // `struct mallinfo2 mallinfo2(void)`, matched by `Mallinfo2Fn` (a repr(C) struct of
        // ten size_t, returned by value through the usual C ABI).
        unsafe { core::mem::transmute::<*mut c_void, Mallinfo2Fn>(addr as *mut c_void) }
    })
}

/// glibc malloc's figures now, or `None` when this C library has no `mallinfo2`.
pub fn read() -> Option<MallocInfo> {
    let f = lookup()?;
    // SAFETY: `f` is `mallinfo2` (see `lookup`); it takes no arguments and only reads
    // malloc's state under its own locks.
    let m = unsafe { f() };
    Some(MallocInfo {
        in_use: (m.uordblks + m.hblkhd) as u64,
        free: m.fordblks as u64,
        mmapped: m.hblkhd as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_a_block_malloc_maps_on_its_own() {
        // In a child: no other test thread allocates or frees large blocks meanwhile.
        let code =
            crate::base::fork::test_support::in_child(std::time::Duration::from_secs(30), || {
                let before = read().expect("mallinfo2 (these hosts have glibc 2.36)");
                // 64 MiB is above glibc's largest mmap threshold (32 MiB), so it is mapped alone.
                // SAFETY: plain malloc/free of a block we own.
                let p = unsafe { libc::malloc(64 << 20) };
                assert!(!p.is_null());
                let during = read().unwrap();
                // SAFETY: `p` came from malloc above.
                unsafe { libc::free(p) };
                let after = read().unwrap();
                assert_eq!(
                    during.mmapped,
                    before.mmapped + (64 << 20) + 4096,
                    "{during:?}"
                );
                assert_eq!(during.in_use, before.in_use + (64 << 20) + 4096);
                assert_eq!(after, before);
                0
            });
        assert_eq!(code, Some(0), "the child failed (101: a panic)");
    }
}
