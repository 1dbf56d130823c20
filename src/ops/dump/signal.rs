//! The dump signal's handler: count the signal, write one byte to a self-pipe, chain to the
//! handler that was installed before ours. Nothing else.
//!
//! Called by the kernel on any thread. It must never allocate, lock, format or touch the
//! profiler: everything it does is async-signal-safe (`getpid`, `write` to a non-blocking
//! pipe, atomics, a call to the previous handler). The dump thread reads the pipe
//! (`base/wake_pipe.rs`, shared with the automatic triggers).
//!
//! Chaining: the previous `sigaction` is kept in one of two fixed slots, published by an
//! index, so the handler never reads a half-written record. `SIG_DFL` and `SIG_IGN` are not
//! called (for the signals we accept, the default would end the process, which is exactly
//! what installing a dump handler replaces).

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::io;

use crate::base::wake_pipe as wake;

/// Signals received by our handler in the installing process (not in forked children: same
/// handler, but the parent's pipe and dump thread).
pub static RECEIVED: AtomicU64 = AtomicU64::new(0);

/// The previous handler: its address (`sa_sigaction`) and `sa_flags`.
struct Prev {
    handler: AtomicUsize,
    flags: AtomicUsize,
}
static PREV: [Prev; 2] = [
    Prev {
        handler: AtomicUsize::new(libc::SIG_DFL),
        flags: AtomicUsize::new(0),
    },
    Prev {
        handler: AtomicUsize::new(libc::SIG_DFL),
        flags: AtomicUsize::new(0),
    },
];
/// Which `PREV` slot is current.
static PREV_SLOT: AtomicUsize = AtomicUsize::new(0);

/// Why a dump may not be bound to `sig` (`name` is how the user wrote it), or `None` if it
/// may: the user signals, `SIGHUP`, `SIGWINCH` and the real-time signals except
/// `SIGRTMIN+5`, which the `threads` profile interrupts threads with. Others are refused:
/// `SIGPROF` is the CPU profiler's, faults and job control signals have meanings of their
/// own.
pub fn refusal(sig: c_int, name: &str) -> Option<String> {
    let capture = crate::profiles::threads::capture::signal_number();
    if capture != 0 && sig == capture {
        return Some(format!(
            "signal {name} ({sig}) is SIGRTMIN+{}, the signal the threads profile captures stacks with; use another one",
            sig - libc::SIGRTMIN()
        ));
    }
    let allowed = matches!(
        sig,
        libc::SIGUSR1 | libc::SIGUSR2 | libc::SIGHUP | libc::SIGWINCH
    ) || (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&sig);
    (!allowed).then(|| {
        format!(
            "signal {name} ({sig}) is not allowed for dumps (use USR1, USR2, HUP, WINCH or a real-time signal)"
        )
    })
}

/// Parses `USR1`, `SIGUSR1`, `usr2`, `HUP`, `WINCH`, `RTMIN+3`, `SIGRTMIN+3` or a number,
/// and checks the signal is one a dump may use (see [`refusal`]).
pub fn parse(name: &str) -> Result<c_int, String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let sig = match bare {
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "HUP" => libc::SIGHUP,
        "WINCH" => libc::SIGWINCH,
        "RTMIN" => libc::SIGRTMIN(),
        _ => {
            if let Some(n) = bare.strip_prefix("RTMIN+") {
                n.parse::<c_int>()
                    .ok()
                    .and_then(|n| libc::SIGRTMIN().checked_add(n))
                    .ok_or_else(|| format!("{name:?}: bad offset after RTMIN+"))?
            } else {
                bare.parse::<c_int>().map_err(|_| {
                    format!(
                        "{name:?} is not a signal name (USR1, USR2, HUP, WINCH, RTMIN+N) or number"
                    )
                })?
            }
        }
    };
    match refusal(sig, &format!("{name:?}")) {
        Some(why) => Err(why),
        None => Ok(sig),
    }
}

extern "C" fn on_signal(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    if wake::is_owner() {
        RECEIVED.fetch_add(1, Ordering::AcqRel);
        wake::wake(); // keeps errno
    }
    let slot = &PREV[PREV_SLOT.load(Ordering::Acquire)];
    let handler = slot.handler.load(Ordering::Relaxed);
    let flags = slot.flags.load(Ordering::Relaxed);
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        return;
    }
    if flags & libc::SA_SIGINFO as usize != 0 {
        // SAFETY: with SA_SIGINFO the previous disposition's address is a three-argument
        // handler (sigaction(2)); we pass on the kernel's own arguments.
        let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
            unsafe { core::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: without SA_SIGINFO the address is a one-argument `sa_handler`.
        let f: extern "C" fn(c_int) = unsafe { core::mem::transmute(handler) };
        f(sig);
    }
}

/// Installs the handler for `sig`, keeping the previous handler to chain to. Only once per
/// process, after `wake::create` (the caller makes sure).
pub fn install(sig: c_int) -> io::Result<()> {
    // Record the disposition in force before ours, so our handler can chain from its first run.
    // SAFETY: a zeroed sigaction is a valid out-parameter.
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: null `act` only queries; `old` is a valid out-pointer.
    if unsafe { libc::sigaction(sig, core::ptr::null(), &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    publish_prev(0, &old);

    // SAFETY: zeroed is a valid starting sigaction; the fields are set below.
    let mut act: libc::sigaction = unsafe { core::mem::zeroed() };
    act.sa_sigaction =
        on_signal as extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) as usize;
    act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
    // heaprof's other handlers wait until this one returns: on the alternate signal stack
    // (`SA_ONSTACK`, as Go requires of every handler in a process it shares) a nested
    // SIGPROF or `threads` capture would have only what is left of it to unwind on.
    // SAFETY: `act.sa_mask` is a valid sigset to initialize and add to.
    unsafe {
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaddset(&mut act.sa_mask, libc::SIGPROF);
        libc::sigaddset(
            &mut act.sa_mask,
            crate::profiles::threads::capture::signal_number(),
        );
    }
    // SAFETY: a zeroed sigaction is a valid out-parameter.
    let mut replaced: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: `act` is fully initialized with a handler of the SA_SIGINFO signature.
    if unsafe { libc::sigaction(sig, &act, &mut replaced) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Another thread may have installed a handler between the two calls: chain to that one.
    if replaced.sa_sigaction != old.sa_sigaction || replaced.sa_flags != old.sa_flags {
        publish_prev(1, &replaced);
    }
    Ok(())
}

fn publish_prev(slot: usize, old: &libc::sigaction) {
    PREV[slot]
        .handler
        .store(old.sa_sigaction, Ordering::Relaxed);
    PREV[slot]
        .flags
        .store(old.sa_flags as usize, Ordering::Relaxed);
    PREV_SLOT.store(slot, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_refuses_others() {
        assert_eq!(parse("USR1"), Ok(libc::SIGUSR1));
        assert_eq!(parse("sigusr2"), Ok(libc::SIGUSR2));
        assert_eq!(parse("HUP"), Ok(libc::SIGHUP));
        assert_eq!(parse("10"), Ok(libc::SIGUSR1));
        assert_eq!(parse("RTMIN+2"), Ok(libc::SIGRTMIN() + 2));
        for bad in [
            "", "USR3", "KILL", "9", "PROF", "SEGV", "RTMIN+99", "RTMIN+x",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse("9").unwrap_err().contains("not allowed"));
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        for taken in ["RTMIN+5", "sigrtmin+5"] {
            assert!(
                parse(taken).unwrap_err().contains("threads profile"),
                "{taken}"
            );
        }
        assert!(parse("TERM").unwrap_err().contains("not a signal name"));
    }
}
