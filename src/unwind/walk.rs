//! One DWARF walk of a stack, for [`capture`](super::capture) and
//! [`capture_from_ucontext`](super::capture_from_ucontext): from its first frame, each step
//! reuses the previous walk's tail if the rest would repeat it ([`suffix`](super::suffix)),
//! crosses a kernel signal frame, or records the frame and unwinds it with framehop (the
//! module list refreshed once on an unknown PC). Every stack read is bounds-checked against
//! the stack the walk is on. The steps are inlined into one loop: this runs on every sampled
//! allocation and in signal handlers.

use core::ops::ControlFlow;

use framehop::{FrameAddress, UnwindRegsNative, Unwinder as _};

use super::bounds;
use super::cache_pool::CacheSet;
use super::modules::{self, State};
use super::suffix::{StepState, SuffixCache};
use super::Regs;

/// At most this many signal frames are crossed in one walk (bounds nested signals).
const MAX_SIGNAL_FRAMES: usize = 8;

/// Read one stack word at `addr` if `[addr, addr + 8)` lies in `[lo, hi)`.
#[inline(always)]
fn read_word(addr: u64, lo: usize, hi: usize) -> Result<u64, ()> {
    let a = usize::try_from(addr).map_err(|_| ())?;
    if a < lo || a > hi.saturating_sub(8) {
        return Err(());
    }
    // SAFETY: [a, a + 8) is inside [lo, hi), which the walk's caller established as mapped,
    // readable stack memory of this thread (bounds.rs); unaligned reads are allowed.
    Ok(unsafe { (a as *const u64).read_unaligned() })
}

/// One DWARF walk's starting point.
pub(super) struct Walk {
    pub(super) first: FrameAddress,
    pub(super) regs: Regs,
    /// Readable stack range of the stack the walk starts on.
    pub(super) lo: usize,
    pub(super) hi: usize,
    /// Record `first` as `frames[0]` (handler) or only unwind through it (`capture`'s frame).
    pub(super) record_first: bool,
    /// May refresh the module list on an unknown PC (not in a signal handler).
    pub(super) may_refresh: bool,
}

impl Walk {
    /// Unwind into `frames`; the result says how many were written. Terminates: every
    /// [`Cursor::step`] records a frame (bounded by `frames.len()`), crosses a signal frame
    /// (bounded by MAX_SIGNAL_FRAMES), or ends the walk; the first step may record nothing.
    pub(super) fn run(
        self,
        state: &'static State,
        caches: &mut CacheSet,
        frames: &mut [usize],
    ) -> WalkResult {
        // framehop unwinds the registers in place, through a reference: they live here, not
        // in the cursor, so that the cursor's own fields can stay in machine registers.
        let r = self.regs;
        let mut regs = UnwindRegsNative::new(r.pc as u64, r.sp as u64, r.bp as u64);
        let mut at = Cursor::start(self, state, &mut regs);
        if at.use_suffix {
            caches.suffix.begin(state as *const State as usize);
        }
        while at.step(caches, frames).is_continue() {}
        if at.use_suffix {
            // A walk that crossed a signal frame read memory the record does not cover.
            caches.suffix.finish(&frames[..at.n], at.signal_frames == 0);
        }
        WalkResult {
            frames: at.n,
            suffix_hit: at.suffix_hit,
            steps: at.steps,
        }
    }
}

/// A walk in progress: the frame it is at, the registers there, the stack it is on, and
/// what it has done so far. Its methods are the phases of one step, inlined into
/// [`Walk::run`]'s loop; each returns `Break` when the walk ends.
struct Cursor<'r> {
    /// The module list in use (replaced once if a refresh finds the module of a new PC).
    state: &'static State,
    /// The frame to unwind next, and the registers in it.
    address: FrameAddress,
    regs: &'r mut UnwindRegsNative,
    /// Readable stack range of the stack the walk is currently on.
    lo: usize,
    hi: usize,
    /// Record the frame at `address` (false only at `capture`'s own frame).
    records: bool,
    /// The module list may not be refreshed (again): done once, or in a signal handler.
    refreshed: bool,
    /// Signal frames crossed so far.
    signal_frames: usize,
    /// The suffix cache serves `capture` (not signal handlers, whose walks may start on a
    /// different stack each time and cross signal frames).
    use_suffix: bool,
    /// Frames written so far.
    n: usize,
    /// Whether the walk reused the previous walk's tail, and the steps it unwound (counted
    /// only with the suffix cache).
    suffix_hit: bool,
    steps: u64,
}

impl<'r> Cursor<'r> {
    /// The cursor at `walk`'s first frame, whose registers are `regs`.
    #[inline(always)]
    fn start(walk: Walk, state: &'static State, regs: &'r mut UnwindRegsNative) -> Self {
        let Walk {
            first,
            regs: _,
            lo,
            hi,
            record_first,
            may_refresh,
        } = walk;
        Cursor {
            state,
            address: first,
            regs,
            lo,
            hi,
            records: record_first,
            refreshed: !may_refresh,
            signal_frames: 0,
            use_suffix: may_refresh,
            n: 0,
            suffix_hit: false,
            steps: 0,
        }
    }

    /// One step: the previous walk's tail if the rest repeats it, else across a signal frame,
    /// else record this frame and unwind it to its caller.
    #[inline(always)]
    fn step(&mut self, caches: &mut CacheSet, frames: &mut [usize]) -> ControlFlow<()> {
        if self.use_suffix {
            self.reuse_cached_tail(&mut caches.suffix, frames)?;
        }
        if self.at_signal_frame() {
            return self.cross_signal_frame();
        }
        self.record(frames)?;
        let lookup = self.known_lookup_address()?;
        self.unwind_frame(caches, lookup)
    }

    /// Ends the walk with the previous walk's remaining frames if the suffix cache finds
    /// that the rest of this walk would repeat them (and feeds it this step otherwise).
    #[inline(always)]
    fn reuse_cached_tail(
        &mut self,
        suffix: &mut SuffixCache,
        frames: &mut [usize],
    ) -> ControlFlow<()> {
        let (address, lo, hi) = (self.address, self.lo, self.hi);
        let s = StepState {
            address: (address.address() << 1) | address.is_return_address() as u64,
            ip: self.regs.ip(),
            sp: self.regs.sp(),
            bp: self.regs.bp(),
            records: self.records,
        };
        // The closures here and in `unwind_frame` hold the bounds by value (`move`), so the
        // reads they do for every step load no pointer to them first.
        let Some(tail) = suffix.step(s, self.n, move |a| read_word(a, lo, hi).ok()) else {
            return ControlFlow::Continue(());
        };
        self.suffix_hit = true;
        let take = tail.len().min(frames.len() - self.n);
        frames[self.n..self.n + take].copy_from_slice(&tail[..take]);
        self.n += take;
        ControlFlow::Break(())
    }

    /// Whether this frame is a return into the sigreturn trampoline (a kernel signal frame).
    #[inline(always)]
    fn at_signal_frame(&self) -> bool {
        self.address.is_return_address()
            && self
                .state
                .is_sigreturn_trampoline(self.address.address() as usize)
    }

    /// Continues from the context saved in the signal frame: the interrupted PC (recorded,
    /// an exact PC) on the stack its `sp` lies on. Ends the walk past [`MAX_SIGNAL_FRAMES`],
    /// or if the saved registers cannot be read or their stack is unknown.
    #[inline(always)]
    fn cross_signal_frame(&mut self) -> ControlFlow<()> {
        self.signal_frames += 1;
        let Some(r) = (self.signal_frames <= MAX_SIGNAL_FRAMES)
            .then(|| signal_frame_regs(self.regs.sp() as usize, self.lo, self.hi))
            .flatten()
        else {
            return ControlFlow::Break(());
        };
        let Some((lo, hi)) = bounds::readable_from(r.sp) else {
            return ControlFlow::Break(());
        };
        (self.lo, self.hi) = (lo, hi);
        self.address = FrameAddress::from_instruction_pointer(r.pc as u64);
        *self.regs = UnwindRegsNative::new(r.pc as u64, r.sp as u64, r.bp as u64);
        self.records = true;
        ControlFlow::Continue(())
    }

    /// Writes this frame to `frames` (unless it is `capture`'s own); ends the walk if
    /// `frames` is full.
    #[inline(always)]
    fn record(&mut self, frames: &mut [usize]) -> ControlFlow<()> {
        if self.records {
            if self.n == frames.len() {
                return ControlFlow::Break(());
            }
            frames[self.n] = self.address.address() as usize;
            self.n += 1;
        }
        self.records = true;
        ControlFlow::Continue(())
    }

    /// The address to look this frame's unwind rule up at, once a module holds it: an
    /// unknown PC refreshes the module list once (from `capture`), else ends the walk.
    #[inline(always)]
    fn known_lookup_address(&mut self) -> ControlFlow<(), usize> {
        let lookup = self.address.address_for_lookup() as usize;
        if !self.state.is_known(lookup) {
            if self.refreshed {
                return ControlFlow::Break(());
            }
            self.refreshed = true;
            match modules::rebuild_if_changed() {
                Some(s) if s.is_known(lookup) => self.state = s,
                _ => return ControlFlow::Break(()),
            }
        }
        ControlFlow::Continue(lookup)
    }

    /// Unwinds this frame with framehop (stack reads bounds-checked, and fed to the suffix
    /// cache) and moves to the caller's return address; ends the walk if that fails.
    #[inline(always)]
    fn unwind_frame(&mut self, caches: &mut CacheSet, lookup: usize) -> ControlFlow<()> {
        let (lo, hi, use_suffix) = (self.lo, self.hi, self.use_suffix);
        if use_suffix {
            self.steps += 1;
        }
        let (rules, suffix) = caches.split(lookup as u64);
        let mut read = move |a: u64| {
            let v = read_word(a, lo, hi);
            if use_suffix {
                suffix.read(a, v.ok());
            }
            v
        };
        match self
            .state
            .unwinder
            .unwind_frame(self.address, self.regs, rules, &mut read)
        {
            Ok(Some(ra)) => match FrameAddress::from_return_address(ra) {
                Some(next) => {
                    self.address = next;
                    ControlFlow::Continue(())
                }
                None => ControlFlow::Break(()),
            },
            _ => ControlFlow::Break(()),
        }
    }
}

/// What [`Walk::run`] did: frames written, and for the suffix statistics whether it reused a
/// cached tail and how many steps it unwound (counted by the caller, not in shared memory).
pub(super) struct WalkResult {
    pub(super) frames: usize,
    pub(super) suffix_hit: bool,
    pub(super) steps: u64,
}

/// Registers saved in a kernel signal frame. At the trampoline, the unwound `sp` points at the
/// `ucontext_t` of `struct rt_sigframe` (its `pretcode` word was just popped as the return
/// address). All reads are bounds-checked; `None` if any is out of range, or the saved `sp`
/// does not lie above the signal frame when on the same stack.
fn signal_frame_regs(uc: usize, lo: usize, hi: usize) -> Option<Regs> {
    let gregs = uc
        .checked_add(core::mem::offset_of!(libc::ucontext_t, uc_mcontext))?
        .checked_add(core::mem::offset_of!(libc::mcontext_t, gregs))?;
    let reg = |i: libc::c_int| read_word(gregs.checked_add(i as usize * 8)? as u64, lo, hi).ok();
    let r = Regs {
        pc: reg(libc::REG_RIP)? as usize,
        sp: reg(libc::REG_RSP)? as usize,
        bp: reg(libc::REG_RBP)? as usize,
    };
    let same_stack = lo <= r.sp && r.sp < hi;
    (r.pc != 0 && (!same_stack || r.sp > uc)).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_frame_regs_checks_bounds() {
        let buf = [0u64; 8];
        let lo = buf.as_ptr() as usize;
        assert!(
            signal_frame_regs(lo, lo, lo + 64).is_none(),
            "ucontext larger than range"
        );
    }
}
