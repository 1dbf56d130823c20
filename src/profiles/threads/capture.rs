//! Captures the current stack of every other thread of the process: a real-time signal
//! directed at each thread, whose handler unwinds the interrupted context into a preallocated
//! slot. The in-process `pstack`.
//!
//! Called by the `threads` profile writer ([`capture_others`]) only, with the profiler guard
//! set; the handler ([`handler`]) runs in the signalled threads. The handler must never
//! allocate, lock, wait, or touch anything but its own slot; the writer side may allocate and
//! holds [`ROUND`] (a mutex that no handler ever takes) for the whole round.
//!
//! # Protocol
//! [`SLOTS`] slots, each a packed atomic word `(round << 2) | state` plus a frame buffer:
//!
//! ```text
//! FREE --writer--> REQUESTED(r) --handler CAS--> CAPTURING(r) --handler--> DONE(r) --writer--> FREE
//!                       \--writer CAS on timeout--> FREE
//! ```
//!
//! The writer assigns a free slot to a thread, stores `REQUESTED(r)` (release) and queues the
//! signal with `rt_tgsigqueueinfo`, carrying `(r, slot, magic)` in `si_value` and
//! `si_code = SI_QUEUE`. The handler claims the slot only by a compare-and-swap from exactly
//! `REQUESTED(r)`, so a late signal from an earlier round (a thread that unblocked after
//! its round timed out) finds a different word and is dropped; while `CAPTURING` it has sole
//! access to the frame buffer; it publishes the length and `DONE(r)` (release). The writer
//! polls the words until all are `DONE` or the deadline passes; a timed-out `REQUESTED` slot
//! is taken back by CAS; a slot still `CAPTURING` is left alone and reclaimed by a later round
//! once `DONE`. More threads than slots are captured in batches.
//!
//! Before signalling, the writer reads `SigBlk`/`SigPnd` of `/proc/self/task/TID/status`: a
//! thread that blocks the signal, or still has one pending from an earlier round, is reported
//! at once instead of waited for (and no further signal is queued to it).
//!
//! Signals that are not ours (another `si_code`, another sender, another magic) go to the
//! handler that was installed before ours, if it is a function; if it was `SIG_DFL` or
//! `SIG_IGN` they are dropped (the default action of a real-time signal, terminating the
//! process, is not reproduced).

use core::cell::UnsafeCell;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize};
use std::mem::MaybeUninit;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::base::atomics::{Atomic, Family, Ordering, SharedCell as _, Std};
use crate::unwind::{self, MAX_DEPTH};

/// Threads captured per batch (one slot each).
pub const SLOTS: usize = 256;

/// Offset of the capture signal from `SIGRTMIN`: glibc keeps 32 and 33 for itself below
/// `SIGRTMIN`; `SIGRTMIN+5` is outside what common runtimes claim.
pub const SIGNAL_OFFSET: c_int = 5;

const FREE: u64 = 0;
const REQUESTED: u64 = 1;
const CAPTURING: u64 = 2;
const DONE: u64 = 3;
const STATE_MASK: u64 = 3;

/// Marks our `si_value`s: `value = round << 24 | MAGIC << 8 | slot`.
const MAGIC: u64 = 0x7468;
/// Bits of the round carried in `si_value` (the word holds the full round).
const ROUND_BITS: u32 = 40;

/// One capture slot, with atomics and cell of `F` (see `atomics`).
struct Slot<F: Family = Std> {
    /// `(round << 2) | state`; see the module docs.
    word: F::U64,
    /// Frames written by the handler, valid once `DONE`.
    len: F::Usize,
    /// Written only by the handler that moved the word to `CAPTURING`; read only by the
    /// writer after it saw `DONE` (acquire).
    frames: F::Cell<[usize; MAX_DEPTH]>,
}

// SAFETY: `frames` is accessed by one party at a time, as the slot word's state machine
// says (handler between its CAS to CAPTURING and its release store of DONE; writer after an
// acquire load of DONE and before it stores FREE); everything else is atomic.
unsafe impl<F: Family> Sync for Slot<F> {}

/// The slot state machine of the module docs, one transition per method.
impl<F: Family> Slot<F> {
    /// Writer: asks for a capture in `round` (the slot is FREE and the writer's).
    fn request(&self, round: u64) {
        self.len.store(0, Ordering::Relaxed);
        self.word.store((round << 2) | REQUESTED, Ordering::Release);
    }

    /// Writer: the request could not be sent; the slot is FREE again.
    fn cancel(&self) {
        self.word.store(FREE, Ordering::Release);
    }

    /// Handler: captures into the slot if it is REQUESTED in the round whose low
    /// [`ROUND_BITS`] bits are `round`, with `capture` writing the frames; whether it did.
    #[inline(always)]
    fn serve(&self, round: u64, capture: impl FnOnce(&mut [usize; MAX_DEPTH]) -> usize) -> bool {
        let cur = self.word.load(Ordering::Relaxed);
        // Match the round on the bits the signal carries; the CAS then uses the full word.
        if cur & STATE_MASK != REQUESTED || (cur >> 2) & ((1 << ROUND_BITS) - 1) != round {
            return false; // stale
        }
        let full_round = cur >> 2;
        if self
            .word
            .compare_exchange(
                cur,
                (full_round << 2) | CAPTURING,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false;
        }
        // SAFETY: the CAS to CAPTURING gave this handler sole access to the buffer until it
        // stores DONE (module protocol).
        let n = self.frames.with_mut(|f| capture(unsafe { &mut *f }));
        self.len.store(n, Ordering::Relaxed);
        self.word.store((full_round << 2) | DONE, Ordering::Release);
        true
    }

    /// Writer: whether the handler finished the capture of `round`.
    fn is_done(&self, round: u64) -> bool {
        self.word.load(Ordering::Acquire) == (round << 2) | DONE
    }

    /// Writer, on timeout: takes the slot back if no handler claimed it in `round`.
    fn take_back(&self, round: u64) -> bool {
        let requested = (round << 2) | REQUESTED;
        !self.is_done(round)
            && self
                .word
                .compare_exchange(requested, FREE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Writer, once [`Slot::is_done`]: the captured frames; the slot is FREE again.
    fn take_frames(&self) -> Vec<usize> {
        let n = self.len.load(Ordering::Relaxed).min(MAX_DEPTH);
        // SAFETY: DONE was observed with acquire: the handler has finished writing and no
        // one writes the buffer until this writer stores FREE below.
        let frames = self.frames.with(|f| unsafe { (&*f)[..n].to_vec() });
        self.word.store(FREE, Ordering::Release);
        frames
    }

    /// Makes the slot usable for a new request if it is free or holds a finished old
    /// answer.
    fn claim_free(&self) -> bool {
        let w = self.word.load(Ordering::Acquire);
        match w & STATE_MASK {
            FREE => true,
            // A handler that finished after its round gave up on it.
            DONE => self
                .word
                .compare_exchange(w, FREE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
            _ => false,
        }
    }
}

static SLOT: [Slot; SLOTS] = [const {
    Slot {
        word: AtomicU64::new(FREE),
        len: AtomicUsize::new(0),
        frames: UnsafeCell::new([0; MAX_DEPTH]),
    }
}; SLOTS];

/// Serialises capture rounds (writers only; never taken in a handler). [`INSTALL`] is only
/// initialised under it, so a fork (which holds it) never finds that in progress.
static ROUND: Mutex<u64> = Mutex::new(0);
static ROUND_FORK: crate::base::fork::HeldAcrossFork<u64> =
    crate::base::fork::HeldAcrossFork::new();

/// Fork prepare: waits for a capture round in progress (bounded by the answer timeout) and
/// holds its lock across the fork.
pub fn fork_prepare() {
    ROUND_FORK.hold(&ROUND);
}

/// Fork parent and child: releases the lock.
pub fn fork_release() {
    ROUND_FORK.release();
}

/// Tests of the fork protocol: every slot `CAPTURING` (as handlers of a timed-out round
/// mid-capture leave them), or every slot free again.
pub fn hold_slots_for_test(held: bool) {
    for s in &SLOT {
        s.word
            .store(if held { CAPTURING } else { FREE }, Ordering::Release);
    }
}

/// In a forked child: slots left `CAPTURING` or `DONE` by handlers of an earlier round
/// (a round that timed out while a handler was mid-capture) would never be freed, as their
/// threads do not exist here. No round runs (the prepare hook held [`ROUND`]), so all are
/// free.
pub fn after_fork_child() {
    for s in &SLOT {
        s.word.store(FREE, Ordering::Relaxed);
    }
}

/// The signal in use, 0 until installed.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// The handler installed before ours (`sa_sigaction` as usize) and its flags.
static PREV_HANDLER: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
static PREV_FLAGS: AtomicI32 = AtomicI32::new(0);
static INSTALL: OnceLock<Result<c_int, String>> = OnceLock::new();

/// How long the writer waits for the signalled threads of one batch.
static TIMEOUT_MS: AtomicU64 = AtomicU64::new(500);
/// Whether to skip threads whose `SigBlk` has the signal (1) or signal them anyway (0, tests).
static PRECHECK: AtomicU64 = AtomicU64::new(1);

/// Sets the per-batch answer timeout and whether blocked threads are detected up front
/// (tests only: with `precheck = false` the timeout path is exercised).
pub fn set_options(timeout: Duration, precheck: bool) {
    TIMEOUT_MS.store(timeout.as_millis().max(1) as u64, Ordering::Relaxed);
    PRECHECK.store(precheck as u64, Ordering::Relaxed);
}

/// What became of one thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its stack was captured.
    Stack,
    /// It blocks the capture signal (seen in `SigBlk` before signalling).
    Blocked,
    /// A signal from an earlier round is still pending: it has not run since.
    StillPending,
    /// Signalled, no answer before the deadline.
    NoAnswer(Duration),
    /// The signal could not be sent (errno), or the handler could not be installed.
    SendFailed(String),
}

/// One thread's result.
pub struct Captured {
    /// Kernel thread id.
    pub tid: i32,
    /// Return addresses, leaf first (the interrupted PC is stored + 1, so every entry reads
    /// as a return address); empty unless `outcome` is [`Outcome::Stack`].
    pub frames: Vec<usize>,
    /// What happened.
    pub outcome: Outcome,
}

impl Captured {
    /// Thread `tid`, whose stack was not captured, and why.
    fn without_stack(tid: i32, outcome: Outcome) -> Captured {
        Captured {
            tid,
            frames: Vec::new(),
            outcome,
        }
    }
}

/// The capture signal's number (`SIGRTMIN + SIGNAL_OFFSET`).
pub fn signal_number() -> c_int {
    libc::SIGRTMIN() + SIGNAL_OFFSET
}

/// Installs the handler once. Called with [`ROUND`] held.
fn install() -> Result<c_int, String> {
    INSTALL
        .get_or_init(|| {
            let sig = signal_number();
            if sig > libc::SIGRTMAX() {
                return Err(format!("SIGRTMIN+{SIGNAL_OFFSET} exceeds SIGRTMAX"));
            }
            // SAFETY: an all-zero sigaction is a valid "no handler, no flags, empty mask" value.
            let mut new: libc::sigaction = unsafe { MaybeUninit::zeroed().assume_init() };
            new.sa_sigaction = handler_addr();
            new.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            // SAFETY: `new.sa_mask` is a valid sigset_t to initialise.
            unsafe { libc::sigemptyset(&mut new.sa_mask) };
            // SAFETY: as above.
            let mut old: libc::sigaction = unsafe { MaybeUninit::zeroed().assume_init() };
            // The previous handler is published before ours can run (sigaction is the
            // barrier): read it first, then install.
            // SAFETY: querying with a null new action only writes `old`.
            if unsafe { libc::sigaction(sig, core::ptr::null(), &mut old) } != 0 {
                return Err(format!(
                    "sigaction({sig}): {}",
                    std::io::Error::last_os_error()
                ));
            }
            if old.sa_sigaction != handler_addr() {
                PREV_HANDLER.store(old.sa_sigaction, Ordering::Relaxed);
                PREV_FLAGS.store(old.sa_flags, Ordering::Relaxed);
            }
            // SAFETY: `new` is fully initialised; `handler` has the SA_SIGINFO signature.
            if unsafe { libc::sigaction(sig, &new, core::ptr::null_mut()) } != 0 {
                return Err(format!(
                    "sigaction({sig}): {}",
                    std::io::Error::last_os_error()
                ));
            }
            SIGNAL.store(sig, Ordering::Release);
            Ok(sig)
        })
        .clone()
}

fn handler_addr() -> usize {
    let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) = handler;
    f as usize
}

/// The capture signal's handler. Async-signal-safe: atomics, `getpid`, the unwinder's
/// `capture_from_ucontext`, and a call to the previous handler for foreign signals.
extern "C" fn handler(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo_t and ucontext_t to an SA_SIGINFO handler.
    if !unsafe { serve(info, ctx) } {
        // SAFETY: same arguments, handed on unchanged.
        unsafe { chain(sig, info, ctx) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Serves one of our requests; false if the signal is not ours.
///
/// # Safety
/// `info` null or a valid siginfo_t; `ctx` the handler's ucontext for this thread.
unsafe fn serve(info: *mut libc::siginfo_t, ctx: *mut c_void) -> bool {
    if info.is_null() {
        return false;
    }
    // SAFETY: `info` is valid; for SI_QUEUE the kernel filled the rt fields (pid, value).
    let (code, pid, value) = unsafe {
        let i = &*info;
        if i.si_code != libc::SI_QUEUE {
            return false;
        }
        (i.si_code, i.si_pid(), i.si_value().sival_ptr as u64)
    };
    // SAFETY: getpid has no preconditions.
    if code != libc::SI_QUEUE || pid != unsafe { libc::getpid() } || (value >> 8) & 0xffff != MAGIC
    {
        return false;
    }
    let Some(slot) = SLOT.get((value & 0xff) as usize) else {
        return true;
    };
    // SAFETY: `ctx` is this handler's ucontext for the interrupted context of this thread.
    slot.serve(value >> 24, |frames| unsafe {
        unwind::capture_from_ucontext(ctx, frames)
    });
    true // ours, captured or stale
}

/// Calls the handler installed before ours with a signal that is not ours.
///
/// # Safety
/// The arguments of the running SA_SIGINFO handler.
unsafe fn chain(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let h = PREV_HANDLER.load(Ordering::Relaxed);
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        return;
    }
    if PREV_FLAGS.load(Ordering::Relaxed) & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous action had SA_SIGINFO, so `h` is such a handler.
        let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
            unsafe { core::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: without SA_SIGINFO the previous handler is a plain `fn(int)`.
        let f: extern "C" fn(c_int) = unsafe { core::mem::transmute(h) };
        f(sig);
    }
}

/// The kernel's `siginfo_t` head for `SI_QUEUE` on x86_64 (what `rt_tgsigqueueinfo` reads).
#[repr(C)]
struct QueueInfo {
    signo: c_int,
    errno: c_int,
    code: c_int,
    _pad: c_int,
    pid: libc::pid_t,
    uid: libc::uid_t,
    value: usize,
}
const _: () = assert!(core::mem::size_of::<QueueInfo>() <= core::mem::size_of::<libc::siginfo_t>());

/// Queues our signal to thread `tid` for `slot` in `round`.
fn send(sig: c_int, tid: i32, slot: usize, round: u64) -> Result<(), i32> {
    // SAFETY: all-zero is a valid siginfo_t.
    let mut info: libc::siginfo_t = unsafe { MaybeUninit::zeroed().assume_init() };
    let value = ((round & ((1 << ROUND_BITS) - 1)) << 24) | (MAGIC << 8) | slot as u64;
    // SAFETY: getpid/getuid have no preconditions.
    let (pid, uid) = unsafe { (libc::getpid(), libc::getuid()) };
    // SAFETY: QueueInfo is no larger than siginfo_t (checked at compile time) and lays out
    // the same leading fields; siginfo_t is suitably aligned for it (8).
    unsafe {
        (&mut info as *mut libc::siginfo_t)
            .cast::<QueueInfo>()
            .write(QueueInfo {
                signo: sig,
                errno: 0,
                code: libc::SI_QUEUE,
                _pad: 0,
                pid,
                uid,
                value: value as usize,
            })
    };
    // SAFETY: rt_tgsigqueueinfo(tgid, tid, sig, &info) reads `info` only; a thread of our own
    // process may be sent any si_code.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            pid as libc::c_long,
            tid as libc::c_long,
            sig as libc::c_long,
            &info as *const libc::siginfo_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// Thread ids of the process, from `/proc/self/task`, sorted.
pub fn list_tids() -> Vec<i32> {
    let mut out: Vec<i32> = std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

/// The calling thread's kernel id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

fn task_exists(tid: i32) -> bool {
    std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}

/// Whether `sig` is set in the hex mask on the `key:` line of a `/proc/.../status` text.
fn mask_has(status: &str, key: &str, sig: c_int) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|m| (1..=64).contains(&sig) && m & (1u64 << (sig - 1)) != 0)
}

/// Captures the stack of every thread in `tids` (the caller's own excluded by the caller).
/// Threads that exit meanwhile are left out. Never waits longer than the timeout per batch
/// (plus a bounded grace for a handler caught mid-capture).
pub fn capture_others(tids: &[i32]) -> Vec<Captured> {
    crate::base::fork::ensure_registered();
    let mut round = ROUND.lock().unwrap_or_else(|e| e.into_inner());
    let sig = match install() {
        Ok(s) => s,
        Err(e) => {
            return tids
                .iter()
                .map(|&tid| Captured::without_stack(tid, Outcome::SendFailed(e.clone())))
                .collect();
        }
    };
    // The DWARF unwinder and its cache pool must exist before handlers use them.
    unwind::global_init();
    let mut out = Vec::with_capacity(tids.len());
    let mut rest = tids;
    while !rest.is_empty() {
        *round += 1;
        let taken = batch(sig, *round, rest, &mut out);
        if taken == 0 {
            // Every slot is still held by a handler caught mid-capture in an earlier round.
            for &tid in rest {
                let outcome = Outcome::SendFailed("no free capture slot".into());
                out.push(Captured::without_stack(tid, outcome));
            }
            break;
        }
        rest = &rest[taken..];
    }
    out
}

/// One batch of at most [`SLOTS`] threads from the front of `tids`; returns how many it took.
/// Three phases: signal the threads, wait for their answers, collect them (or time out).
fn batch(sig: c_int, round: u64, tids: &[i32], out: &mut Vec<Captured>) -> usize {
    let timeout = Duration::from_millis(TIMEOUT_MS.load(Ordering::Relaxed));
    let (taken, waiting) = signal_threads(sig, round, tids, out);
    let start = Instant::now();
    wait_for_answers(round, &waiting, start, timeout);
    for (slot, tid) in waiting {
        out.extend(collect(&SLOT[slot], tid, round, start));
    }
    taken
}

/// Phase 1 of a [`batch`]: gives each thread from the front of `tids` a free slot and
/// signals it, until the slots run out. A thread that is not signalled gets its outcome in
/// `out` at once (none if it has exited). Returns how many threads were taken, and the
/// `(slot, tid)` pairs signalled.
fn signal_threads(
    sig: c_int,
    round: u64,
    tids: &[i32],
    out: &mut Vec<Captured>,
) -> (usize, Vec<(usize, i32)>) {
    let precheck = PRECHECK.load(Ordering::Relaxed) != 0;
    let mut waiting: Vec<(usize, i32)> = Vec::new();
    let mut taken = 0;
    let mut slots = SLOT.iter().enumerate();
    for &tid in tids {
        let Some(slot) = slots
            .by_ref()
            .find_map(|(i, s)| s.claim_free().then_some(i))
        else {
            break;
        };
        taken += 1;
        match signal_one(sig, round, tid, slot, precheck) {
            Signal::Sent => waiting.push((slot, tid)),
            Signal::NotSent(outcome) => out.push(Captured::without_stack(tid, outcome)),
            Signal::Gone => {}
        }
    }
    (taken, waiting)
}

/// What [`signal_one`] did.
enum Signal {
    /// The signal is queued; the slot is `REQUESTED`.
    Sent,
    /// The thread is not signalled, for this reason; the slot stays free.
    NotSent(Outcome),
    /// The thread has exited; the slot stays free.
    Gone,
}

/// Asks thread `tid` for a capture into the free `slot`, unless its `/proc` status shows
/// that it would not answer ([`refusal`]).
fn signal_one(sig: c_int, round: u64, tid: i32, slot: usize, precheck: bool) -> Signal {
    let Ok(status) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
        return Signal::Gone;
    };
    if let Some(outcome) = refusal(&status, sig, precheck) {
        return Signal::NotSent(outcome);
    }
    let s = &SLOT[slot];
    s.request(round);
    match send(sig, tid, slot, round) {
        Ok(()) => Signal::Sent,
        Err(e) => {
            s.cancel();
            if e == libc::ESRCH {
                return Signal::Gone;
            }
            Signal::NotSent(Outcome::SendFailed(format!(
                "rt_tgsigqueueinfo: {}",
                std::io::Error::from_raw_os_error(e)
            )))
        }
    }
}

/// Why a thread whose `/proc/self/task/TID/status` text is `status` is not signalled: it
/// blocks `sig` (looked at only with `precheck`), or one from an earlier round is still
/// pending. `None`: signal it.
fn refusal(status: &str, sig: c_int, precheck: bool) -> Option<Outcome> {
    if precheck && mask_has(status, "SigBlk:", sig) {
        Some(Outcome::Blocked)
    } else if mask_has(status, "SigPnd:", sig) {
        Some(Outcome::StillPending)
    } else {
        None
    }
}

/// Phase 2 of a [`batch`]: waits until the slot of every `(slot, tid)` in `waiting` is
/// `DONE` in `round`, or `timeout` has passed since `start`; yields the CPU at first, then
/// sleeps 200 µs at a time.
fn wait_for_answers(round: u64, waiting: &[(usize, i32)], start: Instant, timeout: Duration) {
    let mut spins = 0u32;
    while !waiting.iter().all(|&(s, _)| SLOT[s].is_done(round)) && start.elapsed() < timeout {
        spins += 1;
        if spins < 64 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Phase 3 of a [`batch`], for thread `tid` signalled at `start` to capture into `s`: its
/// stack if the handler answered. Else no answer: the slot is taken back (nothing is said of
/// a thread that has exited meanwhile), or a handler caught mid-capture did not finish
/// within a grace period (the slot is left to a later round).
fn collect(s: &Slot, tid: i32, round: u64, start: Instant) -> Option<Captured> {
    let no_answer = || Captured::without_stack(tid, Outcome::NoAnswer(start.elapsed()));
    if s.take_back(round) {
        return task_exists(tid).then(no_answer);
    }
    // DONE, or CAPTURING: a handler is running and finishes without blocking.
    if !finishes_within(s, round, Duration::from_millis(100)) {
        // Left CAPTURING; a later round reclaims the slot once DONE.
        return Some(no_answer());
    }
    let mut frames = s.take_frames();
    if let Some(leaf) = frames.first_mut() {
        // The interrupted PC, as a "return address" like the others (text and proto
        // writers look every entry up at address - 1).
        *leaf = leaf.wrapping_add(1);
    }
    Some(Captured {
        tid,
        frames,
        outcome: Outcome::Stack,
    })
}

/// Waits up to `grace` (yielding the CPU) for the handler capturing into `s` to finish;
/// whether it did.
fn finishes_within(s: &Slot, round: u64, grace: Duration) -> bool {
    let start = Instant::now();
    while !s.is_done(round) && start.elapsed() < grace {
        std::thread::yield_now();
    }
    s.is_done(round)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_masks_are_parsed() {
        let st = "Name:\tx\nSigPnd:\t0000000000000000\nSigBlk:\t0000004000000001\n";
        assert!(mask_has(st, "SigBlk:", 1));
        assert!(mask_has(st, "SigBlk:", 39));
        assert!(!mask_has(st, "SigBlk:", 38));
        assert!(!mask_has(st, "SigPnd:", 39));
        assert!(!mask_has(st, "ShdPnd:", 39));
        assert!(!mask_has(st, "SigBlk:", 0));
    }

    #[test]
    fn stale_done_slots_are_reclaimed_and_busy_ones_kept() {
        let s: Slot = Slot {
            word: AtomicU64::new((7 << 2) | DONE),
            len: AtomicUsize::new(0),
            frames: UnsafeCell::new([0; MAX_DEPTH]),
        };
        assert!(s.claim_free());
        assert_eq!(s.word.load(Ordering::Relaxed), FREE);
        s.word.store((8 << 2) | CAPTURING, Ordering::Relaxed);
        assert!(!s.claim_free());
        s.word.store((8 << 2) | REQUESTED, Ordering::Relaxed);
        assert!(!s.claim_free());
    }
}

/// A model of the slot state machine under loom (`atomics`): the writer of round 2 against
/// its handler and a late signal of round 1, with the writer's timeout at any point.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use crate::base::atomics::{self, Loom};
    use loom::sync::Arc;
    use loom::thread;

    /// The handler of `round`'s capture: two frames that tell which round wrote them.
    fn serve(slot: &Slot<Loom>, round: u64) -> bool {
        slot.serve(round, |f| {
            f[0] = round as usize;
            f[1] = round as usize * 10;
            2
        })
    }

    /// Exactly one of the writer's take-back and the round's handler wins the slot; a late
    /// signal of the earlier round never captures; the writer reads the frames of its own
    /// round only, after the handler finished (loom checks the buffer's accesses); the slot
    /// ends FREE.
    #[test]
    fn one_owner_at_a_time_and_stale_signals_dropped() {
        let n = atomics::model("threads capture", atomics::builder(Some(6)), || {
            // Left DONE by a handler of round 1 that finished after its writer gave up.
            let slot: Arc<Slot<Loom>> = Arc::new(Slot {
                word: Atomic::new((1 << 2) | DONE),
                len: Atomic::new(2),
                frames: loom::cell::UnsafeCell::new([1; MAX_DEPTH]),
            });
            let s = slot.clone();
            let late = thread::spawn(move || serve(&s, 1));
            let s = slot.clone();
            let writer = thread::spawn(move || {
                assert!(s.claim_free());
                s.request(2);
                let h = s.clone();
                let handler = thread::spawn(move || serve(&h, 2));
                // The deadline may pass at any point: loom runs the handler before,
                // during or after this check.
                let outcome = if s.is_done(2) || !s.take_back(2) {
                    // Claimed by the handler: it finishes without blocking.
                    while !s.is_done(2) {
                        loom::thread::yield_now();
                    }
                    Some(s.take_frames())
                } else {
                    None
                };
                (outcome, handler.join().unwrap())
            });
            assert!(
                !late.join().unwrap(),
                "a signal of round 1 captured in round 2"
            );
            let (outcome, captured) = writer.join().unwrap();
            match outcome {
                Some(frames) => {
                    assert!(captured);
                    assert_eq!(frames, [2, 20]);
                }
                None => assert!(!captured, "taken back and captured"),
            }
            assert_eq!(slot.word.load(Ordering::Relaxed), FREE);
        });
        assert!(n > 1);
    }
}
