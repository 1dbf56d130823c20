//! CPU profiling (Go's `StartCPUProfile`/`StopCPUProfile`): SIGPROF on per-thread CPU-time
//! timers, a signal handler that only captures the stack into a lock-free ring, a drain
//! thread that aggregates, and the pprof writer at stop.
//!
//! Called by: users (the API below), the kernel (the SIGPROF handler). Must never: allocate,
//! lock, symbolize or wait in the handler; encode while a sample could still arrive.
//!
//! # Design
//! - **Timers** ([`timers`]): at start, one `timer_create` per thread of `/proc/self/task` on
//!   that thread's CPU clock, `SIGEV_THREAD_ID` to the thread, period `1e9/hz` ns of its CPU
//!   time, first expiry uniform in `(0, period]`. The drain thread rescans `/proc/self/task`
//!   every [`DRAIN_TICK`], arming timers for new threads and deleting those of exited ones.
//!   Each busy thread is sampled in proportion to its own CPU time. If `timer_create` fails
//!   for a live thread the profile falls back to `setitimer(ITIMER_PROF)` (the comment says
//!   so).
//! - **Handler** ([`handler`]): saves `errno`; drops signals not from this profile's
//!   timers; gives a thread without known stack bounds its bounds from a `/proc/self/maps`
//!   snapshot ([`stacks`]); captures with `unwind::capture_from_ucontext` (leaf = the
//!   interrupted PC) straight into a ring slot ([`ring`]); a full ring, or too little of an
//!   alternate signal stack left, counts a lost sample.
//! - **Drain thread** ([`drain`]): every tick pops the ring into a map keyed by (thread
//!   name, label set, stack), reading names from `/proc/self/task/<tid>/comm` when a tid's
//!   first sample arrives.
//! - **Stop**: deletes timers, waits for handlers in flight, drains, symbolizes and writes
//!   the gzip pprof ([`encode`]; Go's layout: `samples/count`, `cpu/nanoseconds`, label
//!   `thread`).
//!
//! This file holds the session: starting ([`start_cpu_profile`]: ring, handler, timers,
//! drain thread), stopping, and the fork hooks.
//!
//! The handler stays installed after stop (a signal still queued from a deleted timer must
//! not hit the default action, which kills the process); stray SIGPROFs are ignored. A
//! SIGPROF handler installed by someone else is replaced at start, not chained.
//!
//! **Fork** (`lock_order`): a fork waits for a start or stop in progress. A profile running at
//! the fork stays the parent's: the child has neither its drain thread nor its timers, so the
//! child's hooks forget the session (nothing of it is ever written from the child) and reset
//! the flags, the ring and the stack snapshot; the child can start a profile of its own.

mod drain;
mod encode;
mod guard;
mod handler;
pub(crate) mod ring;
mod stacks;
mod timers;

use drain::Drain;
pub use guard::CpuProfile;
pub use handler::handler_stats;

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::base::error::Error;
use crate::profiles::cpu::ring::Ring;
use crate::{base::sys, base::tls, unwind};

/// Go's default CPU profile rate, in Hz.
pub const DEFAULT_CPU_PROFILE_RATE: u32 = 100;
/// Go's upper clamp for the CPU profile rate, in Hz.
pub const MAX_CPU_PROFILE_RATE: u32 = 1_000_000;
/// The old name of [`DEFAULT_CPU_PROFILE_RATE`], of the old type.
#[deprecated(
    note = "use `DEFAULT_CPU_PROFILE_RATE` (a u32, as `set_cpu_profile_rate` takes); removed in the next release"
)]
pub const DEFAULT_CPU_HZ: i64 = DEFAULT_CPU_PROFILE_RATE as i64;
/// How often the drain thread empties the ring and rescans threads.
pub const DRAIN_TICK: Duration = Duration::from_millis(50);
/// Ring capacity in samples (~4.3 MB reserved, touched as used): at 1000 Hz it holds a
/// 50 ms tick of 160 busy threads.
const RING_SLOTS: usize = 8192;
pub use crate::pprof::stack_groups::LOST_FRAME;

static RATE_HZ: AtomicU32 = AtomicU32::new(DEFAULT_CPU_PROFILE_RATE);
/// A profile is running (from start until stop returned): `set_cpu_profile_rate` refuses.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The handler records samples (set after the ring is ready, cleared before the last drain).
static RUNNING: AtomicBool = AtomicBool::new(false);
/// Handlers currently executing past the `RUNNING` check (stop waits for 0).
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);
/// Profile generation, carried in each timer's `si_value`.
static GENERATION: AtomicU32 = AtomicU32::new(0);
/// The profile runs on `setitimer(ITIMER_PROF)` (accept `SI_KERNEL` signals).
static ITIMER_MODE: AtomicBool = AtomicBool::new(false);
static RING: AtomicPtr<Ring> = AtomicPtr::new(core::ptr::null_mut());
/// Test knob: start in `setitimer` mode as if per-thread timers had failed.
static FORCE_ITIMER: AtomicBool = AtomicBool::new(false);

/// Sets the CPU profile rate in Hz (samples per second of each thread's CPU time) for the
/// next profile (Go's `runtime.SetCPUProfileRate`). Clamped to [`MAX_CPU_PROFILE_RATE`];
/// `0` turns CPU profiling off, so a later [`start_cpu_profile`] fails until a positive rate
/// is set. While a profile runs it prints Go's message to stderr and changes nothing. The
/// default is [`DEFAULT_CPU_PROFILE_RATE`] (100 Hz).
///
/// ```
/// heaprof::set_cpu_profile_rate(250);
/// assert_eq!(heaprof::cpu_profile_rate(), 250);
/// heaprof::set_cpu_profile_rate(5_000_000);
/// assert_eq!(heaprof::cpu_profile_rate(), 1_000_000);
/// heaprof::set_cpu_profile_rate(100);
/// ```
pub fn set_cpu_profile_rate(hz: u32) {
    if ACTIVE.load(SeqCst) {
        sys::write_stderr(&[
            b"runtime: cannot set cpu profile rate until previous profile has finished.\n",
        ]);
        return;
    }
    RATE_HZ.store(hz.min(MAX_CPU_PROFILE_RATE), SeqCst);
}

/// The CPU profile rate in Hz the next profile uses (see [`set_cpu_profile_rate`]; 0 = off).
///
/// ```
/// assert!(heaprof::cpu_profile_rate() <= heaprof::MAX_CPU_PROFILE_RATE);
/// ```
pub fn cpu_profile_rate() -> u32 {
    RATE_HZ.load(SeqCst)
}

/// The writer a profile was started with, boxed for the drain thread, which writes the
/// profile to it and hands it back, so that [`CpuProfile::stop`] can return it.
trait Sink: Write + Send {
    /// The writer as `Any`, to be downcast to the type it was started with.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

impl<W: Write + Send + 'static> Sink for W {
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// What stopping a profile gives: its writer once the whole profile went to it, or the
/// error that stopped the writing.
type Outcome = io::Result<Box<dyn Sink>>;

/// A running profile: how to stop it and where its result comes from.
struct Session {
    generation: u32,
    /// Started by [`CpuProfile::start`]: the writer and the result belong to that value.
    guarded: bool,
    stop: Arc<(Mutex<bool>, Condvar)>,
    drain: JoinHandle<Outcome>,
}

/// The profile running, if any, and the outcomes of guarded profiles that
/// [`stop_cpu_profile`] stopped, kept until their [`CpuProfile`] claims them (stop or drop).
struct Sessions {
    running: Option<Session>,
    unclaimed: Vec<(u32, Outcome)>,
}

static SESSION: Mutex<Sessions> = Mutex::new(Sessions {
    running: None,
    unclaimed: Vec::new(),
});
static SESSION_FORK: crate::base::fork::HeldAcrossFork<Sessions> =
    crate::base::fork::HeldAcrossFork::new();

fn session() -> std::sync::MutexGuard<'static, Sessions> {
    crate::base::fork::ensure_registered();
    SESSION.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fork prepare: waits for a start or stop in progress (a stop lasts until the profile is
/// written) and holds the session lock across the fork.
pub(crate) fn fork_prepare() {
    SESSION_FORK.hold(&SESSION);
}

/// Fork parent: releases the session lock.
pub(crate) fn fork_release() {
    SESSION_FORK.release();
}

/// Fork child: a profile the parent was running is not the child's. Its drain thread, which
/// owns the writer and the samples, does not exist here, and its timers were not inherited:
/// the session is forgotten (leaked, never joined, so nothing is written to the writer from
/// the child and the parent's buffered bytes are not flushed twice), which leaves the child
/// free to start a profile of its own. Then releases the lock.
pub(crate) fn fork_child() {
    SESSION_FORK.with_data(|s| {
        if let Some(parents) = s.running.take() {
            core::mem::forget(parents);
        }
    });
    SESSION_FORK.release();
}

/// Fork child: the profile's flags as they are with no profile running (a handler that was
/// running on another thread left `IN_HANDLER` raised, which a later stop would wait on).
pub(crate) fn after_fork_child_flags() {
    RUNNING.store(false, SeqCst);
    ACTIVE.store(false, SeqCst);
    ITIMER_MODE.store(false, SeqCst);
    IN_HANDLER.store(0, SeqCst);
}

/// Fork child: the sample ring emptied of the parent's samples and of slots claimed by
/// handlers of threads that do not exist here (they would stop the next drain for good).
pub(crate) fn after_fork_child_ring() {
    let ring = RING.load(Acquire);
    // SAFETY: a non-null RING is a leaked `&'static Ring`; in the child no handler runs
    // (RUNNING is false and the parent's timers were not inherited) and no drain thread.
    if let Some(ring) = unsafe { ring.as_ref() } {
        ring.reset_after_fork();
    }
}

/// Fork child: see `stacks::after_fork_child`.
pub(crate) fn after_fork_child_stacks() {
    stacks::after_fork_child();
}

/// Tests of the fork protocol: counts a SIGPROF handler in flight, or takes it back.
pub(crate) fn hold_handler_for_test(held: bool) {
    if held {
        IN_HANDLER.fetch_add(1, SeqCst);
    } else {
        IN_HANDLER.fetch_sub(1, SeqCst);
    }
}

/// Tests of the fork protocol: see `stacks::hold_for_test`.
pub(crate) fn hold_stacks_for_test(held: bool) {
    stacks::hold_for_test(held);
}

/// Tests of the fork protocol: a new thread claims a slot of the sample ring, as a
/// SIGPROF handler does, and publishes it only after `dur`; returns once it is claimed.
/// Errors if no profile has made the ring yet.
pub(crate) fn hold_ring_slot_for_test(dur: Duration) -> Result<(), String> {
    // SAFETY: a non-null RING is a leaked `&'static Ring`.
    let ring: &'static Ring = unsafe { RING.load(Acquire).as_ref() }
        .ok_or("no CPU profile has run yet: no ring to hold")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        ring.push_with(sys::gettid(), 0, |_| {
            let _ = tx.send(());
            std::thread::sleep(dur);
            0
        })
    });
    rx.recv().map_err(|_| "the ring was full".to_string())
}

/// Starts CPU profiling of every thread of the process, writing the profile to `w` when
/// [`stop_cpu_profile`] is called (Go's `pprof.StartCPUProfile`).
///
/// Errors: [`Error::CpuProfileInUse`] (`cpu profiling already in use`) if a profile is
/// running; [`Error::InvalidConfig`] if the rate is 0; [`Error::Os`], naming the call, if the
/// signal handler, the sample buffer, the timer or the profiler's thread cannot be set up.
/// Nothing is written to `w` then.
///
/// ```no_run
/// let f = std::fs::File::create("cpu.pb.gz")?;
/// heaprof::start_cpu_profile(f)?;
/// // ... work ...
/// heaprof::stop_cpu_profile();
/// # Ok::<(), heaprof::Error>(())
/// ```
pub fn start_cpu_profile(w: impl Write + Send + 'static) -> Result<(), Error> {
    start_session(Box::new(w), false).map(|_| ())
}

/// Starts a profile writing to `w`; `guarded` when a [`CpuProfile`] owns it. Returns its
/// generation.
fn start_session(w: Box<dyn Sink>, guarded: bool) -> Result<u32, Error> {
    let mut sessions = session();
    if sessions.running.is_some() {
        return Err(Error::CpuProfileInUse);
    }
    let hz = RATE_HZ.load(SeqCst);
    if hz == 0 {
        return Err(Error::InvalidConfig(
            "cpu profile rate is 0: set_cpu_profile_rate(0) turned CPU profiling off".into(),
        ));
    }
    let _guard = tls::ProfilerGuard::enter();
    unwind::global_init();
    let ring = empty_ring()?;
    sys::install_sigaction(libc::SIGPROF, handler::on_sigprof)
        .map_err(|e| Error::errno("sigaction(SIGPROF)", e))?;
    let generation = GENERATION.fetch_add(1, SeqCst).wrapping_add(1);
    let drain = arm(ring, hz, generation)?;
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let stop2 = Arc::clone(&stop);
    let drain = std::thread::Builder::new()
        .name("heaprof-cpu".into())
        .spawn(move || drain.run(&stop2, w))
        .map_err(|e| abort_start(Error::os("spawning the heaprof-cpu thread", e)))?;
    sessions.running = Some(Session {
        generation,
        guarded,
        stop,
        drain,
    });
    Ok(generation)
}

/// The sample ring (mapped by the first profile, kept for the next ones), emptied.
fn empty_ring() -> Result<&'static Ring, Error> {
    let ring = match RING.load(Acquire) {
        p if !p.is_null() => p,
        _ => {
            let r = Ring::new_leaked(RING_SLOTS).ok_or_else(|| {
                let oom = io::Error::from(io::ErrorKind::OutOfMemory);
                Error::os(
                    format!("mapping the CPU sample ring ({RING_SLOTS} slots)"),
                    oom,
                )
            })?;
            let p = r as *const Ring as *mut Ring;
            RING.store(p, Release);
            p
        }
    };
    // SAFETY: RING holds a leaked `&'static Ring` (set above or by an earlier start).
    let ring: &'static Ring = unsafe { &*ring };
    while ring.pop_with(|_, _, _| {}) {}
    ring.take_lost();
    Ok(ring)
}

/// Raises the flags and arms a timer on every thread (or the process timer): from here on
/// the handler records samples of profile `generation` into `ring`. Returns the drain
/// state that owns the timers.
fn arm(ring: &'static Ring, hz: u32, generation: u32) -> Result<Drain, Error> {
    let period_ns = 1_000_000_000 / u64::from(hz);
    handler::reset_stats();
    let adopted_before = stacks::ADOPTED.load(Relaxed);
    let unwind_before = unwind::stats();
    let mut timers = timers::Timers::new(period_ns, generation);
    let forced = FORCE_ITIMER.load(SeqCst);
    ITIMER_MODE.store(forced, SeqCst);
    RUNNING.store(true, SeqCst);
    ACTIVE.store(true, SeqCst);
    let start_nanos = sys::now_unix_nanos();
    let start_mono = sys::monotonic_nanos();
    stacks::refresh();
    let mut known = HashSet::new();
    if forced {
        timers
            .fall_back(timers::Fallback { tid: 0, errno: 0 })
            .map_err(|e| abort_start(Error::errno("setitimer(ITIMER_PROF)", e)))?;
    }
    timers.sync(&timers::list_tids(), &mut known);
    if timers.fallback.is_some() {
        ITIMER_MODE.store(true, SeqCst);
    }
    Ok(Drain {
        ring,
        timers,
        known,
        period_ns: period_ns as i64,
        hz,
        start_nanos,
        start_mono,
        adopted_before,
        unwind_before,
        agg: HashMap::new(),
        names: HashMap::new(),
        samples_drained: 0,
    })
}

/// Undo a half-done start (timers are deleted when the `Timers` value drops).
fn abort_start(e: Error) -> Error {
    RUNNING.store(false, SeqCst);
    ACTIVE.store(false, SeqCst);
    e
}

/// Stops the running CPU profile, writes it completely and returns once the last byte went
/// to the writer (Go's `pprof.StopCPUProfile`). No-op when none is running. A write error
/// is dropped, as in Go; use [`stop_cpu_profile_result`] to see it.
pub fn stop_cpu_profile() {
    let _ = stop_cpu_profile_result();
}

/// Like [`stop_cpu_profile`], returning `None` when no profile was running (in a forked
/// child, a profile the parent was running is not running), else the
/// result of writing the profile to the writer given at start (`Some(Err(..))` on an I/O
/// error, or if the profiler's drain thread died).
///
/// A profile started by [`CpuProfile::start`] is stopped and written too, but its writer
/// and result stay with that [`CpuProfile`], whose [`stop`](CpuProfile::stop) returns them;
/// the error returned here is then a copy (same kind and message).
///
/// ```
/// let w: Vec<u8> = Vec::new();
/// heaprof::start_cpu_profile(w)?;
/// assert!(heaprof::stop_cpu_profile_result().unwrap().is_ok());
/// assert!(heaprof::stop_cpu_profile_result().is_none(), "nothing running");
/// # Ok::<(), heaprof::Error>(())
/// ```
pub fn stop_cpu_profile_result() -> Option<io::Result<()>> {
    let mut sessions = session();
    let (generation, guarded, outcome) = stop_running(&mut sessions)?;
    if !guarded {
        return Some(outcome.map(drop));
    }
    let copy = match &outcome {
        Ok(_) => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    };
    sessions.unclaimed.push((generation, outcome));
    Some(copy)
}

/// Stops the running session, if any: its generation, whether a [`CpuProfile`] owns it and
/// its outcome. The caller holds the session lock until the profile is written, so a new
/// start waits for it.
fn stop_running(sessions: &mut Sessions) -> Option<(u32, bool, Outcome)> {
    let s = sessions.running.take()?;
    {
        let (flag, cv) = &*s.stop;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
    let outcome = s
        .drain
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("heaprof CPU profiler thread panicked")));
    ACTIVE.store(false, SeqCst);
    Some((s.generation, s.guarded, outcome))
}

/// The outcome of profile `generation`, owned by a [`CpuProfile`]: stops it if it is
/// running, else takes what [`stop_cpu_profile`] kept of it. `None` if neither (the process
/// forked while it ran: the profile stayed with the parent).
fn finish(generation: u32) -> Option<Outcome> {
    let mut sessions = session();
    if sessions
        .running
        .as_ref()
        .is_some_and(|s| s.generation == generation)
    {
        return stop_running(&mut sessions).map(|(_, _, outcome)| outcome);
    }
    let i = sessions
        .unclaimed
        .iter()
        .position(|(g, _)| *g == generation)?;
    Some(sessions.unclaimed.swap_remove(i).1)
}

/// Test knob: make the next profiles use `setitimer(ITIMER_PROF)` as if per-thread timers
/// had failed.
#[doc(hidden)]
pub fn force_setitimer_fallback(on: bool) {
    FORCE_ITIMER.store(on, SeqCst);
}
