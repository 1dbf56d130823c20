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
    map_anonymous(len, libc::PROT_READ | libc::PROT_WRITE)
}

/// Reserves `len` bytes of address space, inaccessible until [`commit`]ted: no commit
/// charge, no resident memory. Returns null when the kernel refuses.
pub fn reserve(len: usize) -> *mut u8 {
    map_anonymous(len, libc::PROT_NONE)
}

/// A fresh private anonymous `MAP_NORESERVE` mapping of `len` bytes with protection `prot`;
/// null when the kernel refuses.
fn map_anonymous(len: usize, prot: libc::c_int) -> *mut u8 {
    // SAFETY: an anonymous private mapping at a kernel-chosen address has no preconditions;
    // failure is reported as MAP_FAILED and turned into null.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            prot,
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

/// Makes `len` bytes at `p` readable and writable; false when the kernel refuses (out of
/// commit charge).
///
/// # Safety
/// `[p, p + len)` must be page-aligned and inside a range the caller [`reserve`]d.
pub unsafe fn commit(p: *mut u8, len: usize) -> bool {
    // SAFETY: per the contract the range is part of the caller's own reservation, whose
    // pages nothing else uses; changing their protection affects no other memory.
    unsafe { libc::mprotect(p.cast(), len, libc::PROT_READ | libc::PROT_WRITE) == 0 }
}

/// Makes `len` bytes at `p` inaccessible again and gives their memory and commit charge back
/// to the OS (a fresh `PROT_NONE` mapping over them). Failure leaves them as they were.
///
/// # Safety
/// `[p, p + len)` must be page-aligned, inside a range the caller mapped, and unused.
pub unsafe fn decommit(p: *mut u8, len: usize) {
    // SAFETY: per the contract the range is the caller's own and unused; MAP_FIXED replaces
    // exactly those pages and nothing else.
    unsafe {
        libc::mmap(
            p.cast(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    };
}

/// Gives the memory of `len` bytes at `p` back to the OS; they stay mapped and read as zero
/// (`madvise(MADV_DONTNEED)` on private anonymous memory).
///
/// # Safety
/// `[p, p + len)` must be page-aligned, inside a private anonymous mapping the caller made,
/// and unused.
pub unsafe fn discard(p: *mut u8, len: usize) {
    // SAFETY: per the contract the range is the caller's own and unused; its contents may
    // be dropped.
    unsafe { libc::madvise(p.cast(), len, libc::MADV_DONTNEED) };
}

/// Unmaps `len` bytes at `p`.
///
/// # Safety
/// `[p, p + len)` must be a mapping the caller made and no one uses.
pub unsafe fn unmap(p: *mut u8, len: usize) {
    // SAFETY: per the contract.
    unsafe { libc::munmap(p.cast(), len) };
}

/// Whether the kernel accounts every writable private page strictly
/// (`vm.overcommit_memory` = 2), where `MAP_NORESERVE` is ignored. Reads the file with plain
/// system calls into a stack buffer: never allocates.
pub fn overcommit_is_strict() -> bool {
    let mut buf = [0u8; 4];
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        libc::open(
            c"/proc/sys/vm/overcommit_memory".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: `buf` is valid for `buf.len()` bytes; `fd` is open.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    n > 0 && buf[0] == b'2'
}

/// Gives up the CPU (`sched_yield`), for a spin loop whose lock holder may be preempted.
pub fn yield_now() {
    // SAFETY: no preconditions.
    unsafe { libc::sched_yield() };
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

// ---- CPU profiling (used by `profiles/cpu`; the async-signal-safe ones are marked) ----

/// The kernel thread id of the calling thread (`gettid(2)`). Async-signal-safe.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// The clock id of thread `tid`'s CPU clock: the kernel's `MAKE_THREAD_CPUCLOCK(tid,
/// CPUCLOCK_SCHED)` = `(!tid << 3) | 6` (bit 2: per-thread, low bits 2: scheduler time).
pub fn thread_cpu_clock(tid: i32) -> libc::clockid_t {
    ((!tid) << 3) | 6
}

/// `timer_create` on thread `tid`'s CPU clock, delivering `signo` to that thread
/// (`SIGEV_THREAD_ID`) with `value` as `si_value`. The timer starts disarmed.
pub fn thread_cpu_timer_create(
    tid: i32,
    signo: libc::c_int,
    value: usize,
) -> Result<libc::timer_t, i32> {
    // SAFETY: sigevent is plain old data; all-zero is a valid (empty) value.
    let mut sev: libc::sigevent = unsafe { core::mem::zeroed() };
    sev.sigev_notify = libc::SIGEV_THREAD_ID;
    sev.sigev_signo = signo;
    sev.sigev_value = libc::sigval {
        sival_ptr: value as *mut libc::c_void,
    };
    sev.sigev_notify_thread_id = tid;
    let mut id: libc::timer_t = ptr::null_mut();
    // SAFETY: sev and id are valid for the call; glibc passes a non-SIGEV_THREAD request
    // straight to the syscall and stores the kernel's timer id in `id`.
    let rc = unsafe { libc::timer_create(thread_cpu_clock(tid), &mut sev, &mut id) };
    if rc == 0 {
        Ok(id)
    } else {
        Err(errno())
    }
}

/// Arms `timer`: first expiry after `first_ns`, then every `interval_ns` (both > 0).
pub fn timer_arm(timer: libc::timer_t, first_ns: u64, interval_ns: u64) -> Result<(), i32> {
    let ts = |ns: u64| libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    let spec = libc::itimerspec {
        it_interval: ts(interval_ns),
        it_value: ts(first_ns),
    };
    // SAFETY: `timer` came from timer_create and was not deleted; spec is valid; the old
    // value is not requested.
    let rc = unsafe { libc::timer_settime(timer, 0, &spec, ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Deletes `timer` (disarming it first). Deleting the timer of a thread that has exited
/// is fine; an error (EINVAL: already gone) is returned, never a crash.
pub fn timer_delete(timer: libc::timer_t) -> Result<(), i32> {
    // SAFETY: `timer` came from timer_create; the caller deletes each timer at most once.
    if unsafe { libc::timer_delete(timer) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Sets the process-wide `ITIMER_PROF` interval timer (`interval_ns == 0` disarms it).
pub fn set_itimer_prof(interval_ns: u64) -> Result<(), i32> {
    let tv = libc::timeval {
        tv_sec: (interval_ns / 1_000_000_000) as libc::time_t,
        tv_usec: ((interval_ns % 1_000_000_000) / 1000).max(u64::from(interval_ns > 0))
            as libc::suseconds_t,
    };
    let it = libc::itimerval {
        it_interval: tv,
        it_value: tv,
    };
    // SAFETY: `it` is a valid itimerval; the old value is not requested.
    if unsafe { libc::setitimer(libc::ITIMER_PROF, &it, ptr::null_mut()) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// The calling thread's `errno`. Async-signal-safe.
pub fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno` (a signal handler restores it). Async-signal-safe.
pub fn set_errno(v: i32) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = v };
}

/// Whether every page of `[lo, hi)` is mapped right now (`mincore(2)` fails with ENOMEM on
/// any unmapped page). Async-signal-safe; uses 256 bytes of stack per 1 MiB checked.
pub fn range_is_mapped(lo: usize, hi: usize) -> bool {
    const PAGE: usize = 4096;
    const CHUNK_PAGES: usize = 256;
    let mut vec = [0u8; CHUNK_PAGES];
    let mut a = lo & !(PAGE - 1);
    while a < hi {
        let len = (hi - a).min(CHUNK_PAGES * PAGE);
        // SAFETY: mincore only reads the page tables for [a, a + len) (page-aligned start)
        // and writes at most ceil(len / PAGE) <= CHUNK_PAGES bytes into `vec`.
        if unsafe { libc::mincore(a as *mut libc::c_void, len, vec.as_mut_ptr()) } != 0 {
            return false;
        }
        a += len;
    }
    true
}

/// `RLIMIT_STACK`'s soft limit in bytes (`None` if unlimited or unknown).
pub fn stack_rlimit() -> Option<usize> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut r) } != 0
        || r.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    usize::try_from(r.rlim_cur).ok()
}

/// When the caller runs on this thread's alternate signal stack (a handler installed with
/// `SA_ONSTACK`, or one that interrupted such a handler), the bytes of it left below the
/// caller's frame; `None` on any other stack. One `sigaltstack` system call:
/// async-signal-safe, no allocation.
#[inline(always)]
pub fn altstack_headroom() -> Option<usize> {
    let ss = alt_signal_stack()?;
    if ss.ss_flags & libc::SS_ONSTACK == 0 {
        return None;
    }
    let here = &ss as *const libc::stack_t as usize;
    Some(here.saturating_sub(ss.ss_sp as usize))
}

/// This thread's alternate signal stack, as `sigaltstack` reports it (`ss_flags` has
/// `SS_ONSTACK` while the thread runs on it); `None` when it has none or the query fails.
/// One system call: async-signal-safe, no allocation.
#[inline(always)]
pub fn alt_signal_stack() -> Option<libc::stack_t> {
    let mut ss = core::mem::MaybeUninit::<libc::stack_t>::zeroed();
    // SAFETY: a null new-stack pointer only queries; `ss` is a valid out-pointer.
    if unsafe { libc::sigaltstack(core::ptr::null(), ss.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: zero-initialised and filled by the successful call; stack_t is plain data.
    let ss = unsafe { ss.assume_init() };
    (ss.ss_flags & libc::SS_DISABLE == 0 && !ss.ss_sp.is_null()).then_some(ss)
}

/// Installs `handler` for `signo` with `SA_SIGINFO | SA_RESTART` (no `SA_ONSTACK`: the
/// unwinder needs the thread's own stack) and returns the previous action.
pub fn install_sigaction(
    signo: libc::c_int,
    handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void),
) -> Result<libc::sigaction, i32> {
    // SAFETY: sigaction is plain old data; zeroed = empty mask, no flags.
    let mut sa: libc::sigaction = unsafe { core::mem::zeroed() };
    sa.sa_sigaction = handler as usize;
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: `sa_mask` is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    // SAFETY: as above; `old` is a valid out-pointer.
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: both pointers are valid; the handler is an `extern "C"` SA_SIGINFO function.
    if unsafe { libc::sigaction(signo, &sa, &mut old) } == 0 {
        Ok(old)
    } else {
        Err(errno())
    }
}
