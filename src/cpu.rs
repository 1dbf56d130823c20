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
//! - **Handler** ([`on_sigprof`]): saves `errno`; drops signals not from this profile's
//!   timers; gives a thread without known stack bounds its bounds from a `/proc/self/maps`
//!   snapshot ([`stacks`]); captures with `unwind::capture_from_ucontext` (leaf = the
//!   interrupted PC) straight into a ring slot; a full ring counts a lost sample.
//! - **Drain thread**: every tick pops the ring into a map keyed by (thread name, stack),
//!   reading names from `/proc/self/task/<tid>/comm` when a tid's first sample arrives.
//! - **Stop**: deletes timers, waits for handlers in flight, drains, symbolizes and writes
//!   the gzip pprof (Go's layout: `samples/count`, `cpu/nanoseconds`, label `thread`).
//!
//! The handler stays installed after stop (a signal still queued from a deleted timer must
//! not hit the default action, which kills the process); stray SIGPROFs are ignored. A
//! SIGPROF handler installed by someone else is replaced at start, not chained.
//!
//! **Fork** (`lock_order`): a fork waits for a start or stop in progress. A profile running at
//! the fork stays the parent's: the child has neither its drain thread nor its timers, so the
//! child's hooks forget the session (nothing of it is ever written from the child) and reset
//! the flags, the ring and the stack snapshot; the child can start a profile of its own.

mod guard;
mod stacks;
mod timers;

pub use guard::CpuProfile;

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::Error;
use crate::pprof::builder::{Label, ProfileBuilder};
use crate::ring::Ring;
use crate::{labels, sys, tls, unwind};

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
/// Pseudo-function standing for samples lost to a full ring (Go: `runtime/pprof.lostProfileEvent`).
pub const LOST_FRAME: &str = "heaprof::lost_profile_event";

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
/// Handler statistics for the current profile: samples taken, ns spent capturing.
static HANDLER_SAMPLES: AtomicU64 = AtomicU64::new(0);
static HANDLER_NANOS: AtomicU64 = AtomicU64::new(0);
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
static SESSION_FORK: crate::fork::HeldAcrossFork<Sessions> = crate::fork::HeldAcrossFork::new();

fn session() -> std::sync::MutexGuard<'static, Sessions> {
    crate::fork::ensure_registered();
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
    let period_ns = 1_000_000_000 / u64::from(hz);
    unwind::global_init();
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
    sys::install_sigaction(libc::SIGPROF, on_sigprof)
        .map_err(|e| Error::errno("sigaction(SIGPROF)", e))?;

    let generation = GENERATION.fetch_add(1, SeqCst).wrapping_add(1);
    HANDLER_SAMPLES.store(0, Relaxed);
    HANDLER_NANOS.store(0, Relaxed);
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
    let tids = timers::list_tids();
    timers.sync(&tids, &mut known);
    if timers.fallback.is_some() {
        ITIMER_MODE.store(true, SeqCst);
    }

    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let state = Drain {
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
    };
    let stop2 = Arc::clone(&stop);
    let drain = std::thread::Builder::new()
        .name("heaprof-cpu".into())
        .spawn(move || state.run(&stop2, w))
        .map_err(|e| abort_start(Error::os("spawning the heaprof-cpu thread", e)))?;
    sessions.running = Some(Session {
        generation,
        guarded,
        stop,
        drain,
    });
    Ok(generation)
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

// ---------------------------------------------------------------------------------------
// Signal handler

/// The SIGPROF handler. Async-signal-safe: atomics, TLS loads, `gettid`, `clock_gettime`
/// (vDSO), `mincore`, and the unwinder's signal-safe capture into a preallocated ring slot.
extern "C" fn on_sigprof(_sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let saved = sys::errno();
    IN_HANDLER.fetch_add(1, SeqCst);
    if RUNNING.load(SeqCst) && !info.is_null() {
        // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
        let code = unsafe { (*info).si_code };
        let tid = if code == libc::SI_TIMER {
            // SAFETY: SI_TIMER signals carry the timer's sigev_value in the _rt/_timer union
            // member (same offset), which libc's si_value reads.
            let v = unsafe { (*info).si_value().sival_ptr } as usize;
            let (generation, tid) = timers::decode_value(v);
            (generation == GENERATION.load(Relaxed)).then_some(tid)
        } else if code == libc::SI_KERNEL && ITIMER_MODE.load(Relaxed) {
            Some(sys::gettid())
        } else {
            None
        };
        if let Some(tid) = tid {
            record(tid, uc);
        }
    }
    IN_HANDLER.fetch_sub(1, SeqCst);
    sys::set_errno(saved);
}

/// Captures one sample for `tid` from the interrupted context `uc`.
fn record(tid: i32, uc: *mut libc::c_void) {
    let t0 = sys::monotonic_nanos();
    let ring = RING.load(Acquire);
    if ring.is_null() || uc.is_null() {
        return;
    }
    // SAFETY: a non-null RING is a leaked `&'static Ring`.
    let ring = unsafe { &*ring };
    // SAFETY: `uc` is the handler's third argument: a valid ucontext_t of this thread.
    let sp =
        unsafe { (*(uc as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RSP as usize] };
    stacks::adopt_for_current_thread(sp as usize);
    // The labels in force on the interrupted thread (a TLS load: async-signal-safe).
    let labels = tls::with(|t| t.labels.get());
    ring.push_with(tid, labels, |frames| {
        // SAFETY: `uc` is this handler's ucontext for this thread (see above).
        unsafe { unwind::capture_from_ucontext(uc, frames) }
    });
    HANDLER_SAMPLES.fetch_add(1, Relaxed);
    HANDLER_NANOS.fetch_add(sys::monotonic_nanos().saturating_sub(t0), Relaxed);
}

// ---------------------------------------------------------------------------------------
// Drain thread and writer

/// What CPU samples are aggregated by: thread name, label set id, stack.
type SampleKey = (Arc<str>, u32, Box<[usize]>);

struct Drain {
    ring: &'static Ring,
    timers: timers::Timers,
    known: HashSet<i32>,
    period_ns: i64,
    hz: u32,
    start_nanos: i64,
    start_mono: u64,
    adopted_before: usize,
    unwind_before: unwind::UnwindStats,
    /// (thread name, label set, stack) → samples.
    agg: HashMap<SampleKey, i64>,
    /// tid → thread name, read at the tid's first sample.
    names: HashMap<i32, Arc<str>>,
    samples_drained: u64,
}

fn read_comm(tid: i32) -> Option<Arc<str>> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
    Some(Arc::from(s.trim_end_matches('\n')))
}

impl Drain {
    fn run(mut self, stop: &(Mutex<bool>, Condvar), mut w: Box<dyn Sink>) -> Outcome {
        let _guard = tls::ProfilerGuard::enter();
        let (flag, cv) = stop;
        loop {
            let stopping = {
                let g = flag.lock().unwrap_or_else(|e| e.into_inner());
                let (g, _) = cv
                    .wait_timeout_while(g, DRAIN_TICK, |s| !*s)
                    .unwrap_or_else(|e| e.into_inner());
                *g
            };
            self.drain_ring();
            if stopping {
                break;
            }
            self.rescan();
        }
        self.timers.delete_all();
        RUNNING.store(false, SeqCst);
        while IN_HANDLER.load(SeqCst) != 0 {
            std::thread::yield_now();
        }
        self.drain_ring();
        let duration = sys::monotonic_nanos().saturating_sub(self.start_mono) as i64;
        self.write(&mut w, duration)?;
        Ok(w)
    }

    /// New threads: refresh the stack snapshot first (their stacks must be in it before
    /// their first sample), then arm their timers; exited threads lose theirs.
    fn rescan(&mut self) {
        let tids = timers::list_tids();
        let any_new = tids.iter().any(|t| !self.known.contains(t));
        if any_new || stacks::refresh_wanted() {
            stacks::refresh();
        }
        let was_fallback = self.timers.fallback.is_some();
        for tid in self.timers.sync(&tids, &mut self.known) {
            if let Some(n) = read_comm(tid) {
                self.names.entry(tid).or_insert(n);
            }
        }
        if !was_fallback && self.timers.fallback.is_some() {
            ITIMER_MODE.store(true, SeqCst);
        }
    }

    fn drain_ring(&mut self) {
        let mut batch: Vec<(i32, u32, Box<[usize]>)> = Vec::new();
        while self
            .ring
            .pop_with(|tid, labels, frames| batch.push((tid, labels, frames.into())))
        {}
        for (tid, labels, stack) in batch {
            self.samples_drained += 1;
            let name = self.name_of(tid);
            *self.agg.entry((name, labels, stack)).or_insert(0) += 1;
        }
    }

    /// The name for `tid`: read when its first sample arrives (by then the thread has
    /// usually named itself), else the name seen at the scan, else `tid-N`.
    fn name_of(&mut self, tid: i32) -> Arc<str> {
        if let Some(n) = self.names.get(&tid) {
            return n.clone();
        }
        let n = read_comm(tid).unwrap_or_else(|| Arc::from(format!("tid-{tid}")));
        self.names.insert(tid, n.clone());
        n
    }

    fn write(self, w: &mut dyn Write, duration: i64) -> io::Result<()> {
        let lost = self.ring.take_lost() as i64;
        let mut b = ProfileBuilder::new(
            &[("samples", "count"), ("cpu", "nanoseconds")],
            ("cpu", "nanoseconds"),
            self.period_ns,
        );
        b.set_time_nanos(self.start_nanos);
        b.set_duration_nanos(duration);
        match &self.timers.fallback {
            None => b.add_comment(&format!(
                "heaprof cpu: {} Hz per-thread CPU-time timers (timer_create, SIGEV_THREAD_ID); {} threads covered",
                self.hz, self.timers.created
            )),
            Some(f) if f.tid == 0 => b.add_comment(&format!(
                "heaprof cpu: {} Hz setitimer(ITIMER_PROF) (forced): busy threads may be under-sampled",
                self.hz
            )),
            Some(f) => b.add_comment(&format!(
                "heaprof cpu: {} Hz setitimer(ITIMER_PROF) fallback: timer_create failed for thread {} (errno {}); busy threads may be under-sampled",
                self.hz, f.tid, f.errno
            )),
        }
        let taken = HANDLER_SAMPLES.load(Relaxed);
        let nanos = HANDLER_NANOS.load(Relaxed);
        let after = unwind::stats();
        b.add_comment(&format!(
            "heaprof cpu: {} samples taken, {} drained, {} lost (ring full), handler mean {} ns/sample, {} threads given stack bounds from /proc/self/maps, {} leaf-only (no stack bounds), {} frame-pointer walks",
            taken,
            self.samples_drained,
            lost,
            nanos.checked_div(taken).unwrap_or(0),
            stacks::ADOPTED.load(Relaxed) - self.adopted_before,
            after.no_stack_bounds - self.unwind_before.no_stack_bounds,
            after.fp_fallbacks - self.unwind_before.fp_fallbacks,
        ));
        for (k, v) in labels::stat_lines() {
            b.add_comment(&format!("{k}: {v}"));
        }
        let mut rows: Vec<_> = self.agg.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for ((name, label_set, stack), n) in rows {
            let mut labels = vec![Label::Str {
                key: "thread".into(),
                value: name.to_string(),
            }];
            labels.extend(labels::pairs(label_set).iter().map(|(k, v)| Label::Str {
                key: k.clone(),
                value: v.clone(),
            }));
            b.add_sample(&stack, true, &[n, n * self.period_ns], &labels);
        }
        if lost > 0 {
            b.add_pseudo_sample(LOST_FRAME, &[lost, lost * self.period_ns], &[]);
        }
        b.write_gzip(&mut *w)?;
        w.flush()
    }
}

/// Statistics of the SIGPROF handler since the last start: `(samples, total ns)`.
#[doc(hidden)]
pub fn handler_stats() -> (u64, u64) {
    (HANDLER_SAMPLES.load(Relaxed), HANDLER_NANOS.load(Relaxed))
}
