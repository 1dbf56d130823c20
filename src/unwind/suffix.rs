//! The suffix cache: reuse the end of the previous walk when the stack has not changed.
//!
//! An allocation-heavy loop samples the same call chain again and again. A DWARF step is a
//! deterministic function of the walk state (frame address, `ip`, `sp`, `bp`), the module
//! list and the stack words it reads. So if, at some step, the state equals a step of the
//! previous walk on this lease, and every stack word the previous walk read from then on
//! still holds the value it read (a read that failed must still fail), the rest of the walk
//! would produce exactly the previous walk's remaining frames: copy them instead. Verifying
//! is a couple of stack loads per remaining frame, against ~200 instructions and several
//! rule-cache lines per frame for framehop.
//!
//! One record per lease (in its `CacheSet`), two buffers swapped after each walk. Walks
//! that cross a signal frame (which reads memory outside the recorded reads) or overflow the
//! buffers are not stored. Owned by the walk that holds the lease: no sharing, no locks, no
//! allocation (the buffers are part of the leased set).

use super::MAX_DEPTH;

/// Steps recorded per walk (a step may record no frame: `capture`'s own).
const MAX_STEPS: usize = MAX_DEPTH + 8;
/// Stack reads recorded per walk.
const MAX_READS: usize = 4 * MAX_DEPTH;

/// The state at the start of one step.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub(super) struct StepState {
    /// Frame address, shifted left once, low bit = "is a return address".
    pub address: u64,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Whether this step records its frame.
    pub records: bool,
}

/// A stack word one step read: `value == None` for a read that failed.
#[derive(Clone, Copy, Default)]
struct Read {
    addr: u64,
    value: Option<u64>,
}

/// One walk's record.
pub(super) struct Record {
    steps: usize,
    state: [StepState; MAX_STEPS],
    /// Frames recorded before step i.
    frame_at: [u8; MAX_STEPS],
    /// Reads made before step i.
    read_at: [u16; MAX_STEPS],
    frames: [usize; MAX_DEPTH],
    nframes: usize,
    reads: [Read; MAX_READS],
    nreads: usize,
    /// The module list the walk used (its address), or 0 for none.
    modules: usize,
    overflow: bool,
    /// What the caller's stack table made of `frames` (see [`SuffixCache::memo`]); 0 = not
    /// known.
    memo: u32,
}

impl Record {
    const fn new() -> Self {
        Record {
            steps: 0,
            state: [StepState {
                address: 0,
                ip: 0,
                sp: 0,
                bp: 0,
                records: false,
            }; MAX_STEPS],
            frame_at: [0; MAX_STEPS],
            read_at: [0; MAX_STEPS],
            frames: [0; MAX_DEPTH],
            nframes: 0,
            reads: [Read {
                addr: 0,
                value: None,
            }; MAX_READS],
            nreads: 0,
            modules: 0,
            overflow: false,
            memo: 0,
        }
    }
}

/// The previous walk and the one being recorded.
pub(super) struct SuffixCache {
    records: [Record; 2],
    /// Index of the previous walk's record.
    prev: usize,
    /// Steps of the previous walk already passed (both walks climb the stack).
    cursor: usize,
    /// The walk matched the previous one at its first step: the previous record stands
    /// for this walk too, unchanged.
    same_as_prev: bool,
    /// The last walk was stored (or repeated the stored one): `records[prev]` holds its
    /// frames.
    last_stored: bool,
    /// Hits and misses, for tests and tuning.
    pub hits: u64,
    pub misses: u64,
}

impl SuffixCache {
    #[cfg(test)]
    const fn new() -> Self {
        SuffixCache {
            records: [Record::new(), Record::new()],
            prev: 0,
            cursor: 0,
            same_as_prev: false,
            last_stored: false,
            hits: 0,
            misses: 0,
        }
    }

    /// A cache built in place on the heap (no large temporary on the stack).
    pub(super) fn new_boxed() -> Box<Self> {
        let mut b = Box::<Self>::new_uninit();
        let p = b.as_mut_ptr();
        // SAFETY: every field is written before `assume_init`; `addr_of_mut!` writes into
        // the uninitialised allocation without reading it or creating references to it.
        unsafe {
            for i in 0..2 {
                core::ptr::addr_of_mut!((*p).records[i]).write(Record::new());
            }
            core::ptr::addr_of_mut!((*p).prev).write(0);
            core::ptr::addr_of_mut!((*p).cursor).write(0);
            core::ptr::addr_of_mut!((*p).same_as_prev).write(false);
            core::ptr::addr_of_mut!((*p).last_stored).write(false);
            core::ptr::addr_of_mut!((*p).hits).write(0);
            core::ptr::addr_of_mut!((*p).misses).write(0);
            b.assume_init()
        }
    }

    /// Starts recording a new walk that uses module list `modules`.
    pub(super) fn begin(&mut self, modules: usize) {
        let next = &mut self.records[1 - self.prev];
        next.steps = 0;
        next.nframes = 0;
        next.nreads = 0;
        next.modules = modules;
        next.overflow = false;
        next.memo = 0;
        self.cursor = 0;
        self.same_as_prev = false;
        self.last_stored = false;
        if self.records[self.prev].modules != modules {
            self.records[self.prev].steps = 0; // another module list: nothing reusable
        }
    }

    /// Called at the start of each step, with the frames recorded so far. Returns the
    /// previous walk's frames from the matching step on, if the rest of this walk would
    /// repeat them; `read` re-reads a stack word (None if it fails).
    pub(super) fn step(
        &mut self,
        s: StepState,
        nframes: usize,
        read: impl Fn(u64) -> Option<u64>,
    ) -> Option<&[usize]> {
        let [a, b] = &mut self.records;
        let (prev, next): (&Record, &mut Record) = if self.prev == 0 { (a, b) } else { (b, a) };
        if next.steps < MAX_STEPS {
            next.state[next.steps] = s;
            next.frame_at[next.steps] = nframes as u8;
            next.read_at[next.steps] = next.nreads as u16;
            next.steps += 1;
        } else {
            next.overflow = true;
        }
        // Advance over the previous walk's steps that lie below this one on the stack.
        let mut c = self.cursor;
        while c < prev.steps && prev.state[c].sp < s.sp {
            c += 1;
        }
        self.cursor = c;
        if c >= prev.steps || prev.state[c] != s {
            return None;
        }
        let reads = &prev.reads[prev.read_at[c] as usize..prev.nreads];
        if !reads.iter().all(|r| read(r.addr) == r.value) {
            self.misses += 1;
            return None;
        }
        self.hits += 1;
        if c == 0 && next.steps == 1 {
            // The whole walk repeats the previous one: keep its record as it is.
            self.same_as_prev = true;
            return Some(&prev.frames[..prev.nframes]);
        }
        // This walk's record continues with the previous walk's tail.
        let (f0, r0) = (prev.frame_at[c] as usize, prev.read_at[c] as usize);
        let here = next.steps - 1; // the step just pushed is the matching one
        for (i, k) in (c..prev.steps).enumerate() {
            let j = here + i;
            if j >= MAX_STEPS {
                next.overflow = true;
                break;
            }
            next.state[j] = prev.state[k];
            next.frame_at[j] = (prev.frame_at[k] as usize - f0 + nframes) as u8;
            next.read_at[j] = (prev.read_at[k] as usize - r0 + next.nreads) as u16;
            next.steps = j + 1;
        }
        for r in reads {
            next.push_read(r.addr, r.value);
        }
        Some(&prev.frames[f0..prev.nframes])
    }

    /// Records a stack read of the walk in progress.
    #[inline]
    pub(super) fn read(&mut self, addr: u64, value: Option<u64>) {
        self.records[1 - self.prev].push_read(addr, value);
    }

    /// Finishes the walk with its `frames`; stores it for the next walk unless `usable` is
    /// false (it crossed a signal frame) or it overflowed.
    pub(super) fn finish(&mut self, frames: &[usize], usable: bool) {
        if self.same_as_prev {
            self.last_stored = true;
            return;
        }
        let next = &mut self.records[1 - self.prev];
        if !usable || next.overflow || frames.len() > MAX_DEPTH {
            next.steps = 0;
            return;
        }
        next.frames[..frames.len()].copy_from_slice(frames);
        next.nframes = frames.len();
        self.prev = 1 - self.prev;
        self.last_stored = true;
    }

    /// A word the caller keeps with the frames of the walk that just finished: what its
    /// stack table interned them as. `Some(0)` = not known yet (set it), `None` = the walk was
    /// not stored, so there is nowhere to keep it. A walk that repeats the stored one from
    /// its first step gets the same word back, so its frames need not be interned again.
    /// Stack-table ids never change (entries are never removed), so the word stays right
    /// for as long as the record holds these frames; a new record starts at 0.
    pub(super) fn memo(&mut self) -> Option<&mut u32> {
        self.last_stored.then(|| &mut self.records[self.prev].memo)
    }
}

impl Record {
    fn push_read(&mut self, addr: u64, value: Option<u64>) {
        if self.nreads < MAX_READS {
            self.reads[self.nreads] = Read { addr, value };
            self.nreads += 1;
        } else {
            self.overflow = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(sp: u64, ip: u64) -> StepState {
        StepState {
            address: ip << 1 | 1,
            ip,
            sp,
            bp: 0,
            records: true,
        }
    }

    #[test]
    fn reuses_a_verified_tail_and_refuses_a_changed_one() {
        let mem =
            std::cell::RefCell::new(std::collections::HashMap::from([(100u64, 7u64), (200, 8)]));
        let read = |a: u64| mem.borrow().get(&a).copied();
        let mut c = Box::new(SuffixCache::new());
        // First walk: three steps (sp 10, 20, 30), reads at 100 and 200, frames 1, 2, 3.
        c.begin(1);
        assert!(c.step(st(10, 1), 0, read).is_none());
        c.read(100, Some(7));
        assert!(c.step(st(20, 2), 1, read).is_none());
        c.read(200, Some(8));
        assert!(c.step(st(30, 3), 2, read).is_none());
        c.finish(&[1, 2, 3], true);
        // Second walk: a different leaf (sp 5), then the same state at sp 20: tail reused.
        c.begin(1);
        assert!(c.step(st(5, 9), 0, read).is_none());
        assert_eq!(c.step(st(20, 2), 1, read), Some(&[2, 3][..]));
        c.finish(&[9, 2, 3], true);
        // A walk identical from its first step reuses everything and keeps the record.
        c.begin(1);
        assert_eq!(c.step(st(5, 9), 0, read), Some(&[9, 2, 3][..]));
        c.finish(&[9, 2, 3], true);
        c.begin(1);
        assert_eq!(c.step(st(5, 9), 0, read), Some(&[9, 2, 3][..]));
        c.finish(&[9, 2, 3], true);
        // Third walk: the word at 200 changed: no reuse.
        mem.borrow_mut().insert(200, 99);
        c.begin(1);
        assert!(c.step(st(20, 2), 0, read).is_none());
        c.finish(&[2], true);
        // Another module list: no reuse either.
        c.begin(2);
        assert!(c.step(st(20, 2), 0, read).is_none());
        assert_eq!((c.hits, c.misses), (3, 1));
    }

    #[test]
    fn memo_follows_the_record_of_the_frames() {
        let mut c = Box::new(SuffixCache::new());
        // One walk of a single step at frame `ip` on module list `modules`, stored or not:
        // whether it reused the previous walk.
        let walk = |c: &mut SuffixCache, modules: usize, ip: usize, stored: bool| {
            c.begin(modules);
            let hit = c.step(st(10, ip as u64), 0, |_| Some(0)).is_some();
            c.finish(&[ip], stored);
            hit
        };
        // A stored walk: its memo starts unknown and keeps what the caller sets.
        assert!(!walk(&mut c, 1, 1, true));
        assert_eq!(c.memo().map(|m| *m), Some(0));
        *c.memo().unwrap() = 42;
        // The same walk again (matched at its first step): the memo comes back.
        assert!(walk(&mut c, 1, 1, true));
        assert_eq!(c.memo().map(|m| *m), Some(42));
        // A different walk is a new record: unknown again.
        assert!(!walk(&mut c, 1, 7, true));
        assert_eq!(c.memo().map(|m| *m), Some(0));
        *c.memo().unwrap() = 43;
        // A walk that is not stored has no memo, and leaves the stored one alone.
        assert!(!walk(&mut c, 1, 8, false));
        assert!(c.memo().is_none());
        assert!(walk(&mut c, 1, 7, true));
        assert_eq!(c.memo().map(|m| *m), Some(43));
        // Another module list: nothing reused, nothing remembered.
        assert!(!walk(&mut c, 2, 7, true));
        assert_eq!(c.memo().map(|m| *m), Some(0));
    }
}
