//! The large-block region: address space reserved once, in which every sampled block that
//! the arena does not take lives — blocks over [`arena::MAX_BLOCK`](crate::alloc::arena), blocks
//! aligned to 4096 or more, and any sample when the arena is full.
//!
//! # Why
//! `dealloc` must tell a sampled block from any other by its address alone, without reading
//! a byte it does not own (valgrind, AddressSanitizer and the memory model all forbid it).
//! With every sampled block inside heaprof's own reservations (the arena and this region),
//! "is it ours?" is a range check, and the header below the pointer is read only once the
//! check has proved the block is ours.
//!
//! # Layout
//! [`init`] maps up to [`MAX_RESERVE`] (1 TiB) of address space, halving until the OS
//! agrees (valgrind, for one, allows 32 GiB), no less than [`MIN_RESERVE`]. A block lives in
//! an *extent*: a power of two of at least [`MIN_EXTENT`] (128 KiB) bytes, aligned to its
//! own size, so a block aligned to anything up to half its extent's size is aligned by
//! placing it at the right offset. The block starts [`block_offset::offset`](crate::alloc::block_offset::offset)
//! bytes into its extent (32 for alignments up to 32, 2048 up to 2048, else the alignment),
//! with its 32-byte header just below. One extent class per power of two; an extent freed
//! goes on its class's free list and is taken by the next block of that class.
//!
//! # Memory
//! Address space is not memory. Where the kernel overcommits (`vm.overcommit_memory` 0 or
//! 1, the default), the region is mapped readable and writable with `MAP_NORESERVE`: a page
//! costs memory only once written, and there is one mapping however many blocks live in it
//! (separately protected pieces would each be a kernel VMA, and a process may only have
//! 65 530). Under strict accounting (`vm.overcommit_memory=2`) the region is reserved
//! inaccessible and each block's pages are made writable (`mprotect`) when it is allocated
//! and inaccessible again when it is released, so the commit charge follows the live blocks.
//!
//! A freed extent keeps the pages its block touched while the region's retained pages stay
//! under [`RETAIN_BYTES`] (64 MiB), so a program that keeps allocating large blocks of one
//! size reuses warm pages as it would in its own allocator; past that, and always for blocks
//! aligned to 8192 or more, its pages are returned to the OS (`madvise(MADV_DONTNEED)`, or
//! `mmap(PROT_NONE)` under strict accounting) and only the address range is kept. Each
//! extent's free-list link and touched-page count live in a side table beside the region
//! (one word per 128 KiB of it), never in the freed memory.
//!
//! # Concurrency
//! Free lists and the carving cursor are changed under one spin lock, held for a few dozen
//! instructions (no system call, no allocation, no wait inside), taken only on the sampled
//! path of large blocks and by their frees. The fork protocol takes it before `fork`, so a
//! child never inherits it held. System calls happen outside it, on extents the caller owns.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::base::sys;

/// The most address space reserved.
pub const MAX_RESERVE: usize = 1 << 40;
/// The least: below this the region is not made and samples it would take are not kept.
pub const MIN_RESERVE: usize = 1 << 30;
/// The smallest extent (a power of two).
pub const MIN_EXTENT: usize = 1 << MIN_SHIFT;
const MIN_SHIFT: u32 = 17;
/// Extent classes: one per power of two from [`MIN_EXTENT`] to [`MAX_RESERVE`].
const CLASSES: usize = (MAX_RESERVE.trailing_zeros() - MIN_SHIFT + 1) as usize;
/// Freed extents keep their touched pages while the region retains at most this much.
pub const RETAIN_BYTES: usize = 64 << 20;
const PAGE: usize = 4096;

/// Start of the region (valid once [`LEN`] is non-zero).
static BASE: AtomicUsize = AtomicUsize::new(0);
/// Bytes reserved at [`BASE`]; 0 until the reservation succeeded. Stored last, with
/// release, so a reader that sees it non-zero (acquire) sees the rest.
static LEN: AtomicUsize = AtomicUsize::new(0);
/// The side table: one word per [`MIN_EXTENT`] of the region, for the extent starting there
/// when it is free: the next free extent of its class (index + 1, high 32 bits; 0 = none)
/// and the pages from its start that may be dirty (low 32 bits).
static SIDE: AtomicUsize = AtomicUsize::new(0);
/// True when pages must be made writable and inaccessible again explicitly
/// (`vm.overcommit_memory=2`).
static STRICT: AtomicBool = AtomicBool::new(false);

/// Guards [`CURSOR`] and [`HEADS`].
static LOCK: AtomicBool = AtomicBool::new(false);
/// Bytes from [`BASE`] carved into extents so far.
static CURSOR: AtomicUsize = AtomicUsize::new(0);
/// Per class: the first free extent's index + 1 (0 = none).
static HEADS: [AtomicUsize; CLASSES] = [const { AtomicUsize::new(0) }; CLASSES];
/// Pages held by free extents (retained for reuse).
static RETAINED_PAGES: AtomicUsize = AtomicUsize::new(0);
/// Pages that live blocks may have dirtied (their extents' touched ranges).
static LIVE_PAGES: AtomicUsize = AtomicUsize::new(0);
/// Blocks that found no room (region missing or full).
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// The most [`init`] asks for: [`MAX_RESERVE`] unless a test lowered it ([`limit`]).
static LIMIT: AtomicUsize = AtomicUsize::new(MAX_RESERVE);

/// Lowers the reservation to at most `bytes` (a power of two); for tests that fill the
/// region. Effective only before the first sample creates the tables.
pub fn limit(bytes: usize) {
    LIMIT.store(
        bytes.next_power_of_two().min(MAX_RESERVE),
        Ordering::Relaxed,
    );
}

/// Reserves the region; called once when the tables are created. If the OS refuses even
/// [`MIN_RESERVE`], the region stays empty and [`alloc`] always says no.
pub fn init() {
    let strict = sys::overcommit_is_strict();
    let mut len = LIMIT.load(Ordering::Relaxed);
    while len >= MIN_RESERVE.min(LIMIT.load(Ordering::Relaxed)) {
        let base = if strict {
            sys::reserve(len)
        } else {
            sys::map_zeroed(len)
        };
        if !base.is_null() {
            let side = sys::map_zeroed(len / MIN_EXTENT * core::mem::size_of::<AtomicU64>());
            if side.is_null() {
                // SAFETY: `base` is the mapping of `len` bytes made just above, unused.
                unsafe { sys::unmap(base, len) };
                return;
            }
            // Extents are aligned in absolute addresses; the first starts at a multiple
            // of MIN_EXTENT (mmap gives page alignment only), and the few pages below
            // it stay unused.
            let skew = (base as usize).next_multiple_of(MIN_EXTENT) - base as usize;
            STRICT.store(strict, Ordering::Relaxed);
            SIDE.store(side as usize, Ordering::Relaxed);
            BASE.store(base as usize + skew, Ordering::Relaxed);
            LEN.store((len - skew) & !(MIN_EXTENT - 1), Ordering::Release);
            return;
        }
        len /= 2;
    }
}

/// Whether `p` lies in the region. Two loads and a compare; false before [`init`].
#[inline]
pub fn contains(p: *const u8) -> bool {
    let len = LEN.load(Ordering::Acquire);
    (p as usize).wrapping_sub(BASE.load(Ordering::Relaxed)) < len
}

/// Bytes reserved (0 when the OS refused).
pub fn reserved() -> usize {
    LEN.load(Ordering::Relaxed)
}

/// (bytes live blocks may have touched, bytes retained in free extents, blocks refused).
pub fn stats() -> (usize, usize, u64) {
    (
        LIVE_PAGES.load(Ordering::Relaxed) * PAGE,
        RETAINED_PAGES.load(Ordering::Relaxed) * PAGE,
        REFUSED.load(Ordering::Relaxed),
    )
}

/// The extent class of a block needing `need` bytes from its extent's start.
fn class_of(need: usize) -> Option<usize> {
    let c = need
        .max(MIN_EXTENT)
        .checked_next_power_of_two()?
        .trailing_zeros()
        - MIN_SHIFT;
    (c < CLASSES as u32).then_some(c as usize)
}

fn extent_bytes(class: usize) -> usize {
    MIN_EXTENT << class
}

/// The pages of an extent a block at `off` of `size` bytes uses, header included:
/// `[lo, hi)` in pages from the extent's start.
fn page_range(off: usize, size: usize) -> (usize, usize) {
    ((off - 32) / PAGE, (off + size).div_ceil(PAGE))
}

fn side(index: usize) -> &'static AtomicU64 {
    let side = SIDE.load(Ordering::Relaxed) as *const AtomicU64;
    // SAFETY: `index` < LEN / MIN_EXTENT (it indexes an extent inside the region), and the
    // side table is a live, never-unmapped, zeroed mapping of that many words, stored
    // before LEN's release, which every caller's extent came through.
    unsafe { &*side.add(index) }
}

fn lock() {
    let mut spins = 0u32;
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins += 1;
        if spins < 64 {
            core::hint::spin_loop();
        } else {
            // The holder runs a few dozen instructions; it can only be slow if preempted.
            sys::yield_now();
        }
    }
}

fn unlock() {
    LOCK.store(false, Ordering::Release);
}

/// Takes a free extent of `class` or carves a new one; its index and the pages from its
/// start that may be dirty.
fn take(class: usize) -> Option<(usize, usize)> {
    lock();
    let head = HEADS[class].load(Ordering::Relaxed);
    let got = if head != 0 {
        let index = head - 1;
        let word = side(index).load(Ordering::Relaxed);
        HEADS[class].store((word >> 32) as usize, Ordering::Relaxed);
        Some((index, (word & u32::MAX as u64) as usize))
    } else {
        let bytes = extent_bytes(class);
        // Aligned to its size as an address, not merely as an offset from BASE.
        let base = BASE.load(Ordering::Relaxed);
        let start = (base + CURSOR.load(Ordering::Relaxed)).next_multiple_of(bytes) - base;
        let fits = start
            .checked_add(bytes)
            .is_some_and(|end| end <= LEN.load(Ordering::Relaxed));
        if fits {
            CURSOR.store(start + bytes, Ordering::Relaxed);
        }
        fits.then_some((start / MIN_EXTENT, 0))
    };
    unlock();
    got
}

/// Puts the extent at `index` back on its class's list with `pages` possibly dirty.
fn give_back(class: usize, index: usize, pages: usize) {
    lock();
    let next = HEADS[class].load(Ordering::Relaxed) as u64;
    side(index).store(next << 32 | pages as u64, Ordering::Relaxed);
    HEADS[class].store(index + 1, Ordering::Relaxed);
    unlock();
}

/// A block placed in the region.
pub struct Block {
    /// The extent's start.
    pub start: *mut u8,
    /// Bytes at the block's start (`start + off`) that may hold old data; the rest is zero.
    pub dirty: usize,
    /// Pages from `start` that the block's extent may have dirtied, recorded in its header
    /// and given back to [`free`].
    pub pages: u32,
}

/// An extent for a block of `size` bytes at offset `off` (see
/// [`block_offset::offset`](crate::alloc::block_offset::offset)), with its pages writable. `None` when the region
/// is missing or full, or the OS refused the pages (then the caller does not keep the
/// sample).
pub fn alloc(off: usize, size: usize) -> Option<Block> {
    let got = (LEN.load(Ordering::Acquire) != 0)
        .then(|| off.checked_add(size).and_then(class_of))
        .flatten()
        .and_then(|class| Some((class, take(class)?)));
    let Some((class, (index, dirty_pages))) = got else {
        REFUSED.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    RETAINED_PAGES.fetch_sub(dirty_pages, Ordering::Relaxed);
    let start = BASE.load(Ordering::Relaxed) + index * MIN_EXTENT;
    let (lo, hi) = page_range(off, size);
    // Dirty pages are always a prefix (blocks aligned to 8192 or more release theirs).
    if STRICT.load(Ordering::Relaxed) && hi > dirty_pages {
        let from = lo.max(dirty_pages);
        // SAFETY: [start + from pages, start + hi pages) lies in this extent (hi pages ≤ its
        // bytes: `class_of(off + size)`), which this thread now owns, inside the region.
        let ok = unsafe { sys::commit((start + from * PAGE) as *mut u8, (hi - from) * PAGE) };
        if !ok {
            RETAINED_PAGES.fetch_add(dirty_pages, Ordering::Relaxed);
            give_back(class, index, dirty_pages);
            REFUSED.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    }
    let pages = hi.max(dirty_pages);
    LIVE_PAGES.fetch_add(pages, Ordering::Relaxed);
    Some(Block {
        start: start as *mut u8,
        dirty: (dirty_pages * PAGE).saturating_sub(off).min(size),
        pages: pages as u32,
    })
}

/// Frees the extent at `start` of a block of `size` bytes at offset `off` that recorded
/// `pages` ([`Block::pages`]): keeps its pages for reuse while the region retains less than
/// [`RETAIN_BYTES`], else returns them to the OS.
///
/// # Safety
/// `start` must be an extent [`alloc`]`(off, size)` returned, not freed since, that no one
/// uses any more.
pub unsafe fn free(start: *mut u8, off: usize, size: usize, pages: u32) {
    let Some(class) = off.checked_add(size).and_then(class_of) else {
        return; // unreachable: `alloc` placed this block with the same arguments
    };
    let pages = pages as usize;
    LIVE_PAGES.fetch_sub(pages, Ordering::Relaxed);
    let (lo, _) = page_range(off, size);
    let retained = RETAINED_PAGES.load(Ordering::Relaxed);
    let keep = lo == 0 && (retained + pages) * PAGE <= RETAIN_BYTES;
    let kept = if keep {
        RETAINED_PAGES.fetch_add(pages, Ordering::Relaxed);
        pages
    } else {
        // SAFETY: [start + lo pages, start + pages) is this extent's touched range; the
        // caller owns the extent and no one uses its memory any more.
        unsafe { release((start as usize + lo * PAGE) as *mut u8, (pages - lo) * PAGE) };
        0
    };
    let index = (start as usize - BASE.load(Ordering::Relaxed)) / MIN_EXTENT;
    give_back(class, index, kept);
}

/// Returns `len` bytes at `p` to the OS; they read as zero (or are inaccessible under strict
/// accounting) afterwards.
///
/// # Safety
/// `[p, p + len)` must be page-aligned, inside the region, and used by no one.
unsafe fn release(p: *mut u8, len: usize) {
    if len == 0 {
        return;
    }
    // SAFETY: the caller's contract: the range is part of our region and unused.
    unsafe {
        if STRICT.load(Ordering::Relaxed) {
            sys::decommit(p, len);
        } else {
            sys::discard(p, len);
        }
    }
}

/// Fork protocol, before `fork`: waits for the lock, so no thread holds it in the child.
pub fn fork_prepare() {
    lock();
}

/// Fork protocol, after `fork` in the parent and in the child: releases what
/// [`fork_prepare`] took.
pub fn fork_release() {
    unlock();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Runs `f` in a forked child with the region reserved; the parent's is untouched.
    fn in_child(f: impl FnOnce()) {
        crate::base::fork::test_support::with_tables_in_child(|| {
            assert!(reserved() >= MIN_RESERVE, "the region was reserved");
            f();
        });
    }

    #[test]
    fn classes_are_powers_of_two_that_fit() {
        assert_eq!(class_of(0), Some(0));
        assert_eq!(class_of(MIN_EXTENT), Some(0));
        assert_eq!(class_of(MIN_EXTENT + 1), Some(1));
        assert_eq!(class_of((1 << 32) + 64), Some(33 - MIN_SHIFT as usize));
        assert_eq!(class_of(MAX_RESERVE), Some(CLASSES - 1));
        assert_eq!(class_of(MAX_RESERVE + 1), None);
        assert_eq!(class_of(usize::MAX), None);
        assert_eq!(page_range(32, 4064), (0, 1));
        assert_eq!(page_range(32, 4065), (0, 2));
        assert_eq!(page_range(2048, 100), (0, 1));
        assert_eq!(page_range(8192, 1), (1, 3));
    }

    #[test]
    fn extents_are_aligned_reused_and_keep_or_release_their_pages() {
        in_child(|| {
            let a = alloc(32, 200_000).unwrap();
            assert_eq!(
                a.start as usize % (256 << 10),
                0,
                "aligned to its 256 KiB extent"
            );
            assert!(contains(a.start) && contains(a.start.wrapping_add(200_031)));
            assert_eq!((a.dirty, a.pages), (0, 49));
            // SAFETY: the block's 32 + 200 000 bytes are ours and writable.
            unsafe { a.start.write_bytes(0xab, 200_032) };
            // SAFETY: `a` came from `alloc(32, 200_000)` and is not used any more.
            unsafe { free(a.start, 32, 200_000, a.pages) };
            assert_eq!(stats().1, 49 * PAGE, "retained");
            // The same class comes back with its pages, dirty where the old block was.
            let b = alloc(2048, 150_000).unwrap();
            assert_eq!(b.start, a.start);
            assert_eq!(b.dirty, 150_000, "dirty up to its size");
            assert_eq!(b.pages, 49);
            // SAFETY: as above.
            unsafe { free(b.start, 2048, 150_000, b.pages) };
            // An alignment of 2^32: the pointer `start + 2^32` is aligned, and its pages
            // are released at its free.
            let c = alloc(1 << 32, 64).unwrap();
            assert_eq!((c.start as usize + (1 << 32)) % (1 << 32), 0);
            assert_eq!(c.pages as usize, (1 << 32) / PAGE + 1);
            // SAFETY: the header's page and the block's are ours and writable.
            unsafe { c.start.add((1 << 32) - 32).write_bytes(0xcd, 96) };
            let before = stats().1;
            // SAFETY: as above.
            unsafe { free(c.start, 1 << 32, 64, c.pages) };
            assert_eq!(stats().1, before, "over-aligned extents keep nothing");
            let d = alloc(1 << 32, 64).unwrap();
            assert_eq!((d.start, d.dirty), (c.start, 0));
            // SAFETY: as above; the released pages read as zero again.
            unsafe {
                assert!(core::slice::from_raw_parts(d.start.add((1 << 32) - 32), 96)
                    .iter()
                    .all(|&b| b == 0));
                free(d.start, 1 << 32, 64, d.pages);
            }
        });
    }

    #[test]
    fn retention_is_bounded_and_released_pages_read_zero() {
        in_child(|| {
            let size = 4 << 20;
            let blocks: Vec<Block> = (0..24).map(|_| alloc(32, size).unwrap()).collect();
            for b in &blocks {
                // SAFETY: each block's 32 + size bytes are ours and writable.
                unsafe { b.start.write_bytes(0xee, size + 32) };
            }
            for b in &blocks {
                // SAFETY: `b` came from `alloc(32, size)` and is not used any more.
                unsafe { free(b.start, 32, size, b.pages) };
            }
            let (live, retained, _) = stats();
            assert_eq!(live, 0);
            assert!(retained <= RETAIN_BYTES, "{retained}");
            assert!(
                retained + (size + 4096) > RETAIN_BYTES,
                "filled up to the bound"
            );
            // Every extent comes back; those whose pages were released are clean.
            let again: Vec<Block> = (0..24).map(|_| alloc(32, size).unwrap()).collect();
            let clean = again.iter().filter(|b| b.dirty == 0).count();
            assert_eq!(clean, 24 - retained / ((size + 32).div_ceil(PAGE) * PAGE));
            for b in again.iter().filter(|b| b.dirty == 0) {
                // SAFETY: ours; reading the released pages.
                let s = unsafe { core::slice::from_raw_parts(b.start, size + 32) };
                assert!(s.iter().all(|&x| x == 0));
            }
        });
    }

    #[test]
    fn threads_never_share_an_extent() {
        in_child(|| {
            let threads: Vec<_> = (0..4u8)
                .map(|t| {
                    std::thread::spawn(move || {
                        let mut held: Vec<(Block, usize)> = Vec::new();
                        for i in 0..3000usize {
                            if held.len() > 16 || (i % 3 == 0 && !held.is_empty()) {
                                let (b, size) = held.swap_remove(i % held.len());
                                // SAFETY: each block was filled with this thread's mark.
                                let s = unsafe { core::slice::from_raw_parts(b.start, size) };
                                assert!(s.iter().all(|&x| x == t + 1), "shared extent");
                                // SAFETY: ours, no longer used.
                                unsafe { free(b.start, 32, size - 32, b.pages) };
                            } else {
                                let size = 32 + 90_000 + (i * 7919) % 300_000;
                                let b = alloc(32, size - 32).unwrap();
                                // SAFETY: ours until freed.
                                unsafe { b.start.write_bytes(t + 1, size) };
                                held.push((b, size));
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        });
    }

    #[test]
    fn a_child_forked_while_another_thread_holds_the_lock_can_allocate() {
        in_child(|| {
            // Another thread holds the lock as the fork starts (as if preempted inside
            // `take`) and lets it go a little later: the prepare handler waits for it, so
            // the child does not inherit it held (without the handler the child hangs).
            let (held_tx, held_rx) = std::sync::mpsc::channel();
            let t = std::thread::spawn(move || {
                lock();
                held_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(200));
                unlock();
            });
            held_rx.recv().unwrap();
            let code = crate::base::fork::test_support::in_child(Duration::from_secs(20), || {
                let b = alloc(32, 100_000).expect("the child allocates");
                // SAFETY: b is ours, not used any more.
                unsafe { free(b.start, 32, 100_000, b.pages) };
                0
            });
            t.join().unwrap();
            assert_eq!(code, Some(0), "the child hung or failed");
        });
    }
}
