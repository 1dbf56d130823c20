//! The dump thread's wake-up pipe: the signal handler and the growth trigger write one byte,
//! the dump thread waits on the read end (with a timeout when it also polls RSS).
//!
//! [`wake`] is async-signal-safe and never allocates or locks: it runs in the dump signal's
//! handler and on the allocator's sampled path (`peak::on_alloc`, when a growth threshold is
//! crossed). It acts only in the process that created the pipe: a forked child inherits the
//! write end, and must not wake its parent's dump thread.

use core::ffi::c_int;
use core::sync::atomic::{AtomicI32, Ordering};
use std::io;
use std::time::Duration;

/// Write end of the pipe; -1 until [`create`].
static WRITE_FD: AtomicI32 = AtomicI32::new(-1);
/// The process that created the pipe.
static OWNER_PID: AtomicI32 = AtomicI32::new(0);

/// Whether the calling process is the one that created the pipe (so its dump thread exists).
/// Async-signal-safe.
pub fn is_owner() -> bool {
    // SAFETY: getpid is async-signal-safe and has no preconditions.
    let pid = unsafe { libc::getpid() };
    pid == OWNER_PID.load(Ordering::Relaxed)
}

/// Wakes the dump thread: one byte into the pipe, if this process owns it. Async-signal-safe;
/// preserves `errno`. A full pipe means a wake-up is pending anyway: the failed write is
/// harmless.
pub fn wake() {
    if !is_owner() {
        return;
    }
    let fd = WRITE_FD.load(Ordering::Acquire);
    if fd < 0 {
        return;
    }
    let saved = crate::base::sys::errno();
    let byte = 1u8;
    // SAFETY: write(2) is async-signal-safe; `byte` is a valid 1-byte buffer; the fd is the
    // pipe's write end, open for the life of the process. It is non-blocking.
    unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    crate::base::sys::set_errno(saved);
}

/// The pipe's read end, held by the dump thread.
#[derive(Debug)]
pub struct PipeReader(c_int);

impl PipeReader {
    /// Waits until a wake-up arrives or `timeout` passes (`None`: no timeout), then drains
    /// every pending byte (wake-ups coalesce). Returns whether a wake-up arrived. Retries on
    /// `EINTR` (with the full timeout again: a late return only delays an RSS check).
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as c_int);
        let mut pfd = libc::pollfd {
            fd: self.0,
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: `pfd` is one valid pollfd for the duration of the call.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n > 0 {
                return self.drain().map(|()| true);
            }
            if n == 0 {
                return Ok(false);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Reads what is pending (the read end is non-blocking); end of file is an error.
    fn drain(&self) -> io::Result<()> {
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: `buf` is a valid writable buffer of its length; the fd is ours and open.
            let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
            if n == buf.len() as isize {
                continue;
            }
            if n > 0 {
                return Ok(());
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "wake-up pipe closed",
                ));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(()),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
    }
}

/// Creates the pipe (both ends non-blocking and close-on-exec) and makes this process its
/// owner. Once per process (the caller, `dump::start_dumps`, makes sure).
pub fn create() -> io::Result<PipeReader> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getpid has no preconditions.
    OWNER_PID.store(unsafe { libc::getpid() }, Ordering::Relaxed);
    WRITE_FD.store(fds[1], Ordering::Release);
    Ok(PipeReader(fds[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_ups_coalesce_and_time_out() {
        let mut fds = [0 as c_int; 2];
        // SAFETY: valid out-array; the fds are closed at the end of the test.
        assert_eq!(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) },
            0
        );
        let r = PipeReader(fds[0]);
        assert!(!r.wait(Some(Duration::from_millis(1))).unwrap());
        for _ in 0..300 {
            // SAFETY: a 1-byte write to the pipe's write end.
            unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) };
        }
        assert!(r.wait(None).unwrap(), "pending bytes wake at once");
        assert!(
            !r.wait(Some(Duration::ZERO)).unwrap(),
            "all 300 were drained by one wait"
        );
        // SAFETY: both fds are ours.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
