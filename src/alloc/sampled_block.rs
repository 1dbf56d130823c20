//! Sampled blocks: where they live, how `dealloc` knows them by address alone, and the
//! header each one carries.
//!
//! # Where they live
//! Every sampled block lives in memory heaprof reserved itself, never in the inner
//! allocator's heap: blocks of alignment ≤ 2048 up to about 80 KiB in a slot of the arena
//! (`arena`), every other one in an extent of the large-block region (`large_region`).
//! A block starts [`offset`] bytes into its slot or extent (`block_offset`: 32 for
//! alignments up to 32, 2048 up to 2048, the alignment itself above) with a 32-byte
//! [`Header`] just below it. Slots and extents start at multiples of 2048 (extents of
//! 4096), so every sampled pointer is 0 or 32 modulo 2048.
//!
//! # How `dealloc` knows them
//! 1. [`may_be_sampled`](crate::alloc::block_offset::may_be_sampled): `ptr % 2048` ∈ {0, 32}, one `test` instruction on a register.
//!    Every sampled pointer passes; of glibc's 16-aligned blocks about 1 in 64 do.
//! 2. Out of line, for those: [`is_sampled`], whether the pointer lies in the arena or in
//!    the large-block region (two range checks on four read-mostly words). The inner
//!    allocator never hands out addresses inside heaprof's reservations, so this is exact.
//! 3. Only then is the header read, from memory the check just proved is ours.
//!
//! So the unsampled `dealloc` reads no byte outside the block it was given, takes no lock
//! and probes no table, and valgrind and AddressSanitizer see nothing to report. The
//! header's check word — a keyed hash of the pointer and the header's fields under a
//! per-process secret — is cleared when the block is freed: a second free of the same
//! pointer (a bug in the caller) finds it cleared and is ignored and counted
//! ([`invalid_frees`]) instead of corrupting the free lists.
//!
//! # Cost
//! Per sampled block in the arena: its offset and size rounded up to its slot class (see
//! `arena`); in the large-block region: the pages its header and bytes touch, in an extent
//! of address space up to twice its size (see `large_region`). At the default rate about
//! one block per 512 KiB allocated is sampled, so the memory cost is under 1% of the heap;
//! at rates of a few KiB and below a heap of small objects grows noticeably (each sampled
//! object takes at least a 2 KiB slot, of which its first page is resident), and at rate 1
//! every block pays it.

use core::alloc::Layout;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::alloc::block_offset::{offset, TAG};
use crate::base::sampler::Weight;
use crate::{alloc::arena, alloc::large_region};

/// Bytes of [`Header`].
const HEADER_BYTES: usize = core::mem::size_of::<Header>();
/// What a sampled block carries just below the user's pointer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Header {
    check: u64,
    /// The bucket the allocation was counted in.
    pub bucket: u32,
    /// For a block in the large-block region: the pages of its extent it may have dirtied
    /// ([`large_region::Block::pages`]); 0 in the arena.
    pages: u32,
    /// The sample's weight, exactly as added to the bucket at allocation.
    pub objects_fp: u64,
    /// The sample's byte weight.
    pub bytes_w: u64,
}

static SECRET: AtomicU64 = AtomicU64::new(0);
static INVALID_FREES: AtomicU64 = AtomicU64::new(0);

/// Chooses the per-process secret; called once when the tables are created, before any
/// block is sampled.
pub fn init_secret() {
    let mut s = crate::base::sys::monotonic_nanos() ^ (&SECRET as *const _ as u64).rotate_left(32);
    s = crate::base::sampler::thread_seed(s, std::process::id() as u64) | 1;
    SECRET.store(s, Ordering::Release);
}

fn check_word(secret: u64, ptr: usize, bucket: u32, pages: u32, w: Weight) -> u64 {
    let mut h = secret ^ ptr as u64;
    for v in [(bucket as u64) << 32 | pages as u64, w.objects_fp, w.bytes] {
        h = (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 31;
    }
    h
}

/// Whether `ptr` is a sampled block: it lies in the arena or the large-block region. Exact
/// for any pointer the allocator handed out; reads only heaprof's own statics.
#[inline]
pub fn is_sampled(ptr: *mut u8) -> bool {
    arena::contains(ptr) || large_region::contains(ptr)
}

/// Memory for a sampled block, before its header is written.
pub struct Placed {
    /// The slot's or extent's start.
    start: *mut u8,
    /// The block's offset from `start`.
    off: usize,
    /// Bytes at the block's start that may hold old data (the rest is zero).
    pub dirty: usize,
    /// See [`Header`]'s `pages`.
    pages: u32,
}

impl Placed {
    /// The user's pointer.
    pub fn ptr(&self) -> *mut u8 {
        self.start.wrapping_add(self.off)
    }
}

/// Memory for a sampled block of `layout`: an arena slot, else an extent of the large-block
/// region. `None` when neither has room (the allocation is then not kept as a sample).
pub fn place(layout: Layout) -> Option<Placed> {
    let off = offset(layout.align());
    if layout.align() <= TAG {
        if let Some((start, fresh)) = off.checked_add(layout.size()).and_then(arena::alloc) {
            return Some(Placed {
                start,
                off,
                dirty: if fresh { 0 } else { layout.size() },
                pages: 0,
            });
        }
    }
    let b = large_region::alloc(off, layout.size())?;
    Some(Placed {
        start: b.start,
        off,
        dirty: b.dirty,
        pages: b.pages,
    })
}

/// Writes the header of the block at `p` and returns the user's pointer.
///
/// # Safety
/// `p` must come from [`place`] for the layout being allocated and not be tagged yet.
pub unsafe fn tag(p: Placed, bucket: u32, w: Weight) -> *mut u8 {
    let ptr = p.ptr();
    let h = Header {
        check: check_word(
            SECRET.load(Ordering::Relaxed),
            ptr as usize,
            bucket,
            p.pages,
            w,
        ),
        bucket,
        pages: p.pages,
        objects_fp: w.objects_fp,
        bytes_w: w.bytes,
    };
    // SAFETY: `off` ≥ HEADER_BYTES, so the header lies in the slot or extent before the
    // block, which `place` made writable and gave to this thread; `ptr` is 32-aligned at
    // least, so `ptr - 32` is aligned for Header.
    unsafe { ptr.sub(HEADER_BYTES).cast::<Header>().write(h) };
    ptr
}

/// Reads the header of the sampled block `ptr` (freed or reallocated with `layout`);
/// `None` if its check word does not hold (it was freed already).
///
/// # Safety
/// `ptr` must have passed [`is_sampled`] and be a block the allocator returned for
/// `layout`.
pub unsafe fn header(ptr: *mut u8) -> Option<Header> {
    // SAFETY: the caller's contract: `ptr` is a sampled block, so its header lies in our own
    // slot or extent, written by `tag`.
    let h = unsafe { ptr.sub(HEADER_BYTES).cast::<Header>().read() };
    let w = Weight {
        objects_fp: h.objects_fp,
        bytes: h.bytes_w,
    };
    let secret = SECRET.load(Ordering::Relaxed);
    (h.check == check_word(secret, ptr as usize, h.bucket, h.pages, w)).then_some(h)
}

/// Frees the sampled block `ptr` of `layout` and returns its header, or `None` (counted in
/// [`invalid_frees`]) when its header says it is not live: then nothing is freed.
///
/// # Safety
/// `ptr` must have passed [`is_sampled`]; the caller gives up the block.
pub unsafe fn free(ptr: *mut u8, layout: Layout) -> Option<Header> {
    // SAFETY: forwarded contract.
    let Some(h) = (unsafe { header(ptr) }) else {
        INVALID_FREES.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    // SAFETY: the check word proved the header is a live one of ours, and its owner is
    // freeing it: no one else touches it now. Cleared so a second free is recognised.
    unsafe { ptr.sub(HEADER_BYTES).cast::<u64>().write(0) };
    let off = offset(layout.align());
    let start = ptr.wrapping_sub(off);
    if arena::contains(start) {
        // SAFETY: `start` is the slot `place` took for `off + size` bytes; its owner frees it.
        unsafe { arena::free(start, off + layout.size()) };
    } else {
        // SAFETY: `start` is the extent `place` took for this block; its owner frees it.
        unsafe { large_region::free(start, off, layout.size(), h.pages) };
    }
    Some(h)
}

/// Frees of sampled-looking blocks whose header was not live (double frees), ignored.
pub fn invalid_frees() -> u64 {
    INVALID_FREES.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::block_offset::may_be_sampled;

    #[test]
    fn offsets_are_aligned_leave_room_for_the_header_and_pass_the_filter() {
        for shift in 0..40 {
            let align = 1usize << shift;
            let off = offset(align);
            assert!(off >= HEADER_BYTES && off % align == 0, "align {align}");
            // Slots and extents start at multiples of 2048.
            for start in [0x7f00_0000_0000usize, 0x7f00_0000_0800] {
                if align <= TAG || start % 4096 == 0 {
                    assert!(may_be_sampled((start + off) as *mut u8), "align {align}");
                }
            }
        }
        assert_eq!(
            (offset(1), offset(32), offset(64), offset(2048)),
            (32, 32, 2048, 2048)
        );
        assert_eq!(offset(1 << 32), 1 << 32);
    }

    #[test]
    fn one_in_64_of_16_aligned_pointers_passes_the_filter() {
        let misses = (0..4096usize)
            .step_by(16)
            .filter(|&o| may_be_sampled((0x5555_0000_0000usize + o) as *mut u8))
            .count();
        assert_eq!(misses, 4);
    }

    #[test]
    fn check_word_binds_pointer_and_fields() {
        let w = Weight {
            objects_fp: 5,
            bytes: 6,
        };
        let a = check_word(77, 0x1000, 3, 64, w);
        assert_ne!(a, check_word(77, 0x2000, 3, 64, w));
        assert_ne!(a, check_word(77, 0x1000, 4, 64, w));
        assert_ne!(a, check_word(77, 0x1000, 3, 128, w));
        assert_ne!(a, check_word(78, 0x1000, 3, 64, w));
        let w2 = Weight {
            objects_fp: 5,
            bytes: 7,
        };
        assert_ne!(a, check_word(77, 0x1000, 3, 64, w2));
    }

    #[test]
    fn blocks_are_placed_in_our_reservations_freed_once_and_reused() {
        let code =
            crate::base::fork::test_support::in_child(std::time::Duration::from_secs(60), || {
                let _ = crate::alloc::tables::get();
                let w = Weight {
                    objects_fp: 1 << 16,
                    bytes: 100,
                };
                for (size, align) in [(100, 8), (3000, 64), (200_000, 16), (64, 1 << 32), (0, 1)] {
                    let l = Layout::from_size_align(size, align).unwrap();
                    let p = place(l).unwrap();
                    // SAFETY: fresh from `place` for `l`.
                    let ptr = unsafe { tag(p, 7, w) };
                    assert!(is_sampled(ptr) && may_be_sampled(ptr), "{l:?}");
                    assert_eq!(ptr as usize % align, 0, "{l:?}");
                    assert_eq!(
                        arena::contains(ptr),
                        size < 80_000 && align <= 2048,
                        "{l:?}"
                    );
                    // SAFETY: ours, `size` bytes.
                    unsafe { ptr.write_bytes(0x5a, size) };
                    // SAFETY: a live sampled block of `l`.
                    let h = unsafe { free(ptr, l) }.expect("a live header");
                    assert_eq!((h.bucket, h.objects_fp, h.bytes_w), (7, 1 << 16, 100));
                    // A second free of the same pointer is recognised and ignored.
                    let before = invalid_frees();
                    // SAFETY: a double free, which `free` must survive.
                    assert!(unsafe { free(ptr, l) }.is_none());
                    assert_eq!(invalid_frees(), before + 1);
                    // The slot or extent serves the next block of the same layout.
                    let again = place(l).unwrap();
                    assert_eq!(again.ptr(), ptr, "{l:?}");
                    // SAFETY: as above.
                    let ptr = unsafe { tag(again, 8, w) };
                    // SAFETY: as above.
                    assert!(unsafe { free(ptr, l) }.is_some());
                }
                0
            });
        assert_eq!(
            code,
            Some(0),
            "the child failed (101: a panic; None: a hang)"
        );
    }
}
