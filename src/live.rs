//! Sampled blocks: how they are laid out and how `dealloc` recognises them.
//!
//! # The choice
//! The unsampled `dealloc` must not lock, probe a shared table or touch memory the inner
//! allocator does not touch. So a sampled block is given a property that arithmetic on its
//! pointer can rule out for almost every other block: its address modulo [`TAG_PAGE`]
//! (4096) equals `offset(align) = max(64, align)`. The inner block is allocated with
//! alignment 4096 and `offset` bytes more; the user's pointer is `base + offset`, and a
//! 32-byte [`Header`] sits just below it, inside that padding.
//!
//! `dealloc` computes `ptr % 4096 == offset(align)` in registers. For glibc's 16-aligned
//! small blocks that is true for about 1 in 256 unsampled frees; only then is the header
//! read (it lies in the same page as `ptr`, so the read cannot fault, and for glibc in the
//! same cache line as the chunk header glibc's `free` reads anyway). The header holds a
//! check word — a keyed hash of the pointer and the header's fields under a random
//! per-process secret — so random bytes pass it with odds 2⁻⁶⁴ and bytes copied from a
//! real header to another address never do. A sampled block's check word is cleared when
//! it is freed, so a stale header cannot be mistaken for a live one.
//!
//! Layouts aligned to 4096 or more cannot carry that property (the pointer is 0 mod 4096
//! either way): their sampled blocks are also entered in a small fixed set of addresses
//! ([`OVERALIGNED_CAPACITY`] slots) that `dealloc` of such layouts probes, and only while
//! the set is not empty. When the set is full such allocations are not sampled (counted).
//!
//! # Cost
//! Per sampled block: `offset(align)` bytes (64 for ordinary alignments) plus the slack of
//! a 4096-aligned allocation in the inner allocator (glibc returns the unused lead to its
//! free lists). At the default rate about one block per 512 KiB allocated is sampled, so
//! the memory cost is well under 1% of the heap; at rate 1 every block pays it.

use core::alloc::Layout;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::sampler::Weight;

/// The alignment of sampled blocks' inner allocations; the tag is the pointer mod this.
pub const TAG_PAGE: usize = 4096;
/// Bytes of [`Header`].
const HEADER_BYTES: usize = core::mem::size_of::<Header>();
/// Slots in the set of sampled blocks with alignment ≥ [`TAG_PAGE`].
pub const OVERALIGNED_CAPACITY: usize = 4096;
const TOMBSTONE: usize = 1;

/// What a sampled block carries just below the user's pointer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Header {
    check: u64,
    /// The bucket the allocation was counted in.
    pub bucket: u32,
    _reserved: u32,
    /// The sample's weight, exactly as added to the bucket at allocation.
    pub objects_fp: u64,
    /// The sample's byte weight.
    pub bytes_w: u64,
}

static SECRET: AtomicU64 = AtomicU64::new(0);
static OVERALIGNED: [AtomicUsize; OVERALIGNED_CAPACITY] =
    [const { AtomicUsize::new(0) }; OVERALIGNED_CAPACITY];
static OVERALIGNED_LIVE: AtomicUsize = AtomicUsize::new(0);
static OVERALIGNED_SKIPPED: AtomicU64 = AtomicU64::new(0);

/// Chooses the per-process secret; called once when the tables are created, before any
/// block is sampled.
pub fn init_secret() {
    let mut s = crate::sys::monotonic_nanos() ^ (&SECRET as *const _ as u64).rotate_left(32);
    s = crate::sampler::thread_seed(s, std::process::id() as u64) | 1;
    SECRET.store(s, Ordering::Release);
}

fn check_word(secret: u64, ptr: usize, bucket: u32, w: Weight) -> u64 {
    let mut h = secret ^ ptr as u64;
    for v in [bucket as u64, w.objects_fp, w.bytes] {
        h = (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 31;
    }
    h
}

/// Offset of the user pointer inside a sampled block's inner allocation.
#[inline(always)]
pub fn offset(align: usize) -> usize {
    if align <= 64 {
        64
    } else {
        align
    }
}

/// Cheap test on `dealloc`: false means "certainly not a sampled block" for alignments
/// below [`TAG_PAGE`]. Registers only.
#[inline(always)]
pub fn may_be_tagged(ptr: *mut u8, align: usize) -> bool {
    align < TAG_PAGE && (ptr as usize & (TAG_PAGE - 1)) == offset(align)
}

/// Whether `dealloc` of an over-aligned layout must consult the set (it is not empty).
#[inline(always)]
pub fn overaligned_live() -> bool {
    OVERALIGNED_LIVE.load(Ordering::Relaxed) != 0
}

/// The inner allocator's layout for a sampled block of `layout`; `None` if it would
/// overflow (then the allocation is simply not sampled).
pub fn inner_layout(layout: Layout) -> Option<Layout> {
    let off = offset(layout.align());
    Layout::from_size_align(
        layout.size().checked_add(off)?,
        layout.align().max(TAG_PAGE),
    )
    .ok()
}

/// Reserves a place for an over-aligned sampled block; false when the set is full.
pub fn reserve_overaligned() -> bool {
    if OVERALIGNED_LIVE.fetch_add(1, Ordering::Relaxed) >= OVERALIGNED_CAPACITY * 3 / 4 {
        OVERALIGNED_LIVE.fetch_sub(1, Ordering::Relaxed);
        OVERALIGNED_SKIPPED.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    true
}

/// Gives back a reservation that was not used (the inner allocation failed).
pub fn unreserve_overaligned() {
    OVERALIGNED_LIVE.fetch_sub(1, Ordering::Relaxed);
}

/// Over-aligned allocations left unsampled because the set was full.
pub fn overaligned_skipped() -> u64 {
    OVERALIGNED_SKIPPED.load(Ordering::Relaxed)
}

fn slot_start(ptr: usize) -> usize {
    (ptr >> 12).wrapping_mul(0x9e37_79b9) % OVERALIGNED_CAPACITY
}

fn insert_overaligned(ptr: usize) {
    let start = slot_start(ptr);
    for i in 0..OVERALIGNED_CAPACITY {
        let slot = &OVERALIGNED[(start + i) % OVERALIGNED_CAPACITY];
        let cur = slot.load(Ordering::Relaxed);
        if (cur == 0 || cur == TOMBSTONE)
            && slot
                .compare_exchange(cur, ptr, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return;
        }
    }
    // Unreachable while reservations stay below capacity: every reserved block finds a slot.
}

fn find_overaligned(ptr: usize) -> Option<&'static AtomicUsize> {
    let start = slot_start(ptr);
    for i in 0..OVERALIGNED_CAPACITY {
        let slot = &OVERALIGNED[(start + i) % OVERALIGNED_CAPACITY];
        match slot.load(Ordering::Acquire) {
            0 => return None,
            v if v == ptr => return Some(slot),
            _ => {}
        }
    }
    None
}

/// Turns a fresh inner block into a sampled block: writes the header, registers an
/// over-aligned block, and returns the user's pointer.
///
/// # Safety
/// `base` must be a live block of the inner allocator with layout `inner_layout(layout)`,
/// and, when `layout.align() >= TAG_PAGE`, a reservation must have been made.
pub unsafe fn tag(base: *mut u8, layout: Layout, bucket: u32, w: Weight) -> *mut u8 {
    let off = offset(layout.align());
    // SAFETY: the inner block is `off + size` bytes, so `base + off` is inside or one past it.
    let ptr = unsafe { base.add(off) };
    let h = Header {
        check: check_word(SECRET.load(Ordering::Relaxed), ptr as usize, bucket, w),
        bucket,
        _reserved: 0,
        objects_fp: w.objects_fp,
        bytes_w: w.bytes,
    };
    // SAFETY: off ≥ 64 ≥ HEADER_BYTES, so the header lies in the block's leading padding,
    // which we own; `ptr` is 64-aligned, so `ptr - 32` is aligned for Header.
    unsafe { ptr.sub(HEADER_BYTES).cast::<Header>().write(h) };
    if layout.align() >= TAG_PAGE {
        insert_overaligned(ptr as usize);
    }
    ptr
}

/// If `ptr` (freed with `layout`) is a live sampled block, returns its header and inner
/// base pointer, forgetting the block (check word cleared, set entry removed) when
/// `forget` is true. Called only after [`may_be_tagged`] or [`overaligned_live`] said so.
///
/// # Safety
/// `ptr` must be a live block returned by the profiling allocator for `layout`.
pub unsafe fn lookup(ptr: *mut u8, layout: Layout, forget: bool) -> Option<(Header, *mut u8)> {
    let secret = SECRET.load(Ordering::Acquire);
    if secret == 0 {
        return None; // nothing was ever sampled
    }
    let align = layout.align();
    let slot = if align >= TAG_PAGE {
        Some(find_overaligned(ptr as usize)?)
    } else {
        None
    };
    let hp = ptr.wrapping_sub(HEADER_BYTES).cast::<Header>();
    // SAFETY: for align < TAG_PAGE, `ptr % 4096 == offset(align) ≥ 64`, so `hp` lies in the
    // same page as `ptr`, which is mapped; it may belong to the inner allocator or another
    // block, hence a volatile read that makes no claim on its contents. For larger
    // alignments the set proved the block is ours and the header is in its padding.
    let h = unsafe { core::ptr::read_volatile(hp) };
    let w = Weight {
        objects_fp: h.objects_fp,
        bytes: h.bytes_w,
    };
    if h.check != check_word(secret, ptr as usize, h.bucket, w) {
        return None;
    }
    if forget {
        // SAFETY: the check word proved the header is ours; the block is being freed by
        // its owner, so no one else writes it now.
        unsafe { core::ptr::addr_of_mut!((*hp).check).write_volatile(0) };
        if let Some(s) = slot {
            s.store(TOMBSTONE, Ordering::Release);
            OVERALIGNED_LIVE.fetch_sub(1, Ordering::Relaxed);
        }
    }
    Some((h, ptr.wrapping_sub(offset(align))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_tag_every_alignment_below_the_page() {
        for shift in 0..12 {
            let align = 1usize << shift;
            let off = offset(align);
            assert!(off >= HEADER_BYTES && off % align == 0 && off < TAG_PAGE);
            let il = inner_layout(Layout::from_size_align(100, align).unwrap()).unwrap();
            assert_eq!(il.align(), TAG_PAGE);
            assert_eq!(il.size(), 100 + off);
        }
        assert_eq!(offset(65536), 65536);
        assert!(
            inner_layout(Layout::from_size_align(isize::MAX as usize - 4095, 4096).unwrap())
                .is_none()
        );
    }

    #[test]
    fn check_word_binds_pointer_and_fields() {
        let w = Weight {
            objects_fp: 5,
            bytes: 6,
        };
        let a = check_word(77, 0x1000, 3, w);
        assert_ne!(a, check_word(77, 0x2000, 3, w));
        assert_ne!(a, check_word(77, 0x1000, 4, w));
        assert_ne!(a, check_word(78, 0x1000, 3, w));
        assert_ne!(
            a,
            check_word(
                77,
                0x1000,
                3,
                Weight {
                    objects_fp: 5,
                    bytes: 7
                }
            )
        );
    }
}
