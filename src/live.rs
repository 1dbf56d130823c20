//! Sampled blocks: how they are laid out and how `dealloc` recognises them.
//!
//! # The choice
//! The unsampled `dealloc` must not lock, probe a shared table or touch memory the inner
//! allocator does not touch. So a sampled block is given a property that arithmetic on its
//! pointer can rule out for almost every other block: for alignments up to 32 (nearly all
//! requests) its address modulo 2048 ([`SMALL_PERIOD`]) is [`TAG_SMALL`] (32); for
//! alignments 64 to 2048 its address modulo [`TAG_PAGE`] (4096) is [`TAG`] (2048, a multiple
//! of each). A 32-byte [`Header`] sits just below the user's pointer.
//!
//! Where the block lives:
//! - alignment ≤ 32 and up to [`arena::MAX_BLOCK`](crate::arena::MAX_BLOCK) (80 KiB): in a
//!   slot of the sampled-block arena (`arena`), which starts at a multiple of 2048, so the
//!   header is the slot's first 32 bytes and the pointer right after it has the tag with no
//!   padding, and the inner allocator's heap never sees the block;
//! - otherwise (or when the arena has no slot): in the inner allocator, requested with the
//!   caller's own alignment and 64 bytes more than the modulus (2112 or 4160); the user's
//!   pointer is the first address at least 32 bytes into it with the remainder, the header
//!   inside that padding.
//!
//! At remainder 32 the header shares its cache line with the block's first 32 bytes, which
//! the caller usually writes at once (1.3 cache misses per sample fewer on an
//! allocation-churn benchmark, by cachegrind). (Asking the inner allocator for 4096-aligned
//! blocks instead would make glibc split every sampled chunk into aligned pieces, which
//! fragments its heap and slows every later `malloc` and `free`: measured at +25% on an
//! allocation-churn benchmark. Padded blocks cost less, and arena slots less still: see
//! `arena`.)
//!
//! `dealloc` first tests `ptr % 2048` ∈ {0, 32} in a register (one instruction; every
//! sampled block passes, see [`may_be_sampled`]), then out of line the remainder for the
//! layout's alignment. For glibc's 16-aligned blocks of alignment ≤ 16 the first test passes
//! for about 1 in 64 unsampled frees and the second for 1 in 128. Those are then checked
//! against the arena's address range, and only while some sampled block of alignment below
//! 4096 lives in the inner allocator is the header read (it lies in the same page as `ptr`,
//! so the read cannot fault, and for glibc in the same cache line as the chunk header
//! glibc's `free` reads anyway). The header holds a check word — a keyed hash of the pointer
//! and the header's fields under a random per-process secret — so random bytes pass it with
//! odds 2⁻⁶⁴ and bytes copied from a real header to another address never do. A sampled
//! block's check word is cleared when it is freed, so a stale header cannot be mistaken for
//! a live one.
//!
//! Layouts aligned to 4096 or more cannot carry that property (the pointer is 0 mod 4096
//! either way): they are allocated `align` bytes larger, the user's pointer is
//! `base + align`, and the block is also entered in a small fixed set of addresses
//! ([`OVERALIGNED_CAPACITY`] slots) that `dealloc` of such layouts probes, and only while
//! the set is not empty. When the set is full such allocations are not sampled (counted).
//!
//! # Why the over-aligned set needs no model checker
//! It is an open-addressing set of non-zero words with one-word slots and three states per
//! slot (0 empty, [`TOMBSTONE`], a pointer), each changed by a single atomic operation:
//! insert CASes an empty or tombstoned slot to the pointer, removal stores [`TOMBSTONE`]
//! (never 0), lookups stop only at 0. So a probe chain is never cut by a removal, a slot is
//! never owned by two blocks (the CAS), and only the owner of a live block removes it (it is
//! freeing it). Inserts always find a slot because reservations keep at most 3/4 of the
//! slots live. The multi-threaded tests (`heap_threads`, `torture_exhaustion`) exercise it;
//! `stacktab` and `buckets` document their claim/publish protocol the same way.
//!
//! # Cost
//! Per sampled block in the arena: its size + 32 rounded up to its slot class (see
//! `arena`); in the inner allocator: at most 2112 bytes for alignments up to 32, 4160 up to
//! 2048, `align` bytes above. At the default rate about one block per 512 KiB allocated is
//! sampled, so the memory cost is under 1% of the heap; at rates of a few KiB and below a
//! heap of small objects grows noticeably (each sampled object takes at least a 2 KiB slot,
//! of which its first page is resident), and at rate 1 every block pays it.

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
    /// Bytes from the inner block's start to the user's pointer.
    base_offset: u32,
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
/// Live sampled blocks of alignment below [`TAG_PAGE`] in the inner allocator (not in the
/// arena). While it is 0, a tagged address outside the arena is not a sampled block, and
/// `lookup` does not read a header.
static INNER_TAGGED_LIVE: AtomicUsize = AtomicUsize::new(0);

/// Chooses the per-process secret; called once when the tables are created, before any
/// block is sampled.
pub fn init_secret() {
    let mut s = crate::sys::monotonic_nanos() ^ (&SECRET as *const _ as u64).rotate_left(32);
    s = crate::sampler::thread_seed(s, std::process::id() as u64) | 1;
    SECRET.store(s, Ordering::Release);
}

fn check_word(secret: u64, ptr: usize, bucket: u32, base_offset: u32, w: Weight) -> u64 {
    let mut h = secret ^ ptr as u64;
    for v in [
        (bucket as u64) << 32 | base_offset as u64,
        w.objects_fp,
        w.bytes,
    ] {
        h = (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 31;
    }
    h
}

/// The tag of alignments 64 to 2048: a sampled block's address modulo [`TAG_PAGE`] (a
/// multiple of each of them).
pub const TAG: usize = 2048;
/// The tag of alignments up to 32 (a multiple of each): a sampled block's address modulo
/// [`SMALL_PERIOD`]. 32 rather than 0, so the header in the 32 bytes below the pointer lies
/// in the same 64-byte line as the block's start, and in the same page.
pub const TAG_SMALL: usize = 32;
/// The modulus of [`TAG_SMALL`]: half a page, so a small sampled block needs at most 2048 +
/// 64 bytes of padding, not 4096 + 64.
pub const SMALL_PERIOD: usize = TAG_PAGE / 2;

/// The modulus the tag of alignment `align` is taken in (below [`TAG_PAGE`]).
#[inline(always)]
fn period(align: usize) -> usize {
    if align <= TAG_SMALL {
        SMALL_PERIOD
    } else {
        TAG_PAGE
    }
}

/// The address of a sampled block of alignment `align` modulo [`period`]`(align)`
/// ([`TAG_SMALL`] or [`TAG`]; `align` itself from [`TAG_PAGE`] up).
#[inline(always)]
pub fn offset(align: usize) -> usize {
    if align <= TAG_SMALL {
        TAG_SMALL
    } else if align < TAG_PAGE {
        TAG
    } else {
        align
    }
}

/// Low bits that are zero in every sampled block's address: it is [`TAG_SMALL`] mod 2048,
/// [`TAG`] mod [`TAG_PAGE`], or a multiple of an alignment of at least [`TAG_PAGE`], so it
/// is 0 or 32 mod 2048.
const SAMPLED_ZERO_BITS: usize = (TAG - 1) & !TAG_SMALL;

/// The first test on `dealloc`, on the pointer alone: false means "certainly not a sampled
/// block". One `test` instruction; it clears all other pointers but 1 in 64 of 16-aligned
/// ones.
#[inline(always)]
pub fn may_be_sampled(ptr: *mut u8) -> bool {
    ptr as usize & SAMPLED_ZERO_BITS == 0
}

/// Cheap test on `dealloc`: false means "certainly not a sampled block" for alignments
/// below [`TAG_PAGE`]. Registers only.
#[inline(always)]
pub fn may_be_tagged(ptr: *mut u8, align: usize) -> bool {
    align < TAG_PAGE && (ptr as usize & (period(align) - 1)) == offset(align)
}

/// Whether `dealloc` of an over-aligned layout must consult the set (it is not empty).
#[inline(always)]
pub fn overaligned_live() -> bool {
    OVERALIGNED_LIVE.load(Ordering::Relaxed) != 0
}

/// The inner allocator's layout for a sampled block of `layout`; `None` if it would
/// overflow (then the allocation is simply not sampled).
pub fn inner_layout(layout: Layout) -> Option<Layout> {
    let extra = if layout.align() < TAG_PAGE {
        period(layout.align()) + 64
    } else {
        layout.align()
    };
    Layout::from_size_align(layout.size().checked_add(extra)?, layout.align()).ok()
}

/// Where the user's pointer goes in an inner block at `base`: the first position at least
/// [`HEADER_BYTES`] in whose address is `offset(align)` mod [`period`]`(align)` (a multiple of
/// `align`, since `base` and `offset(align)` both are); `align` itself for over-aligned
/// layouts. Always within the extra bytes [`inner_layout`] added.
fn base_offset(base: usize, align: usize) -> usize {
    if align >= TAG_PAGE {
        return align;
    }
    let mut d = offset(align).wrapping_sub(base) & (period(align) - 1);
    if d < HEADER_BYTES {
        d += period(align);
    }
    d
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
    let off = base_offset(base as usize, layout.align());
    // SAFETY: in an inner block, `off` is below the extra bytes `inner_layout` added (≤
    // period + 32 < period + 64, or `align`); an arena slot starts at a multiple of 2048, so
    // `off` is 32 and the slot holds 32 + size bytes. Either way `base + off` and the `size`
    // bytes after it are inside the block.
    let ptr = unsafe { base.add(off) };
    let h = Header {
        check: check_word(
            SECRET.load(Ordering::Relaxed),
            ptr as usize,
            bucket,
            off as u32,
            w,
        ),
        bucket,
        base_offset: off as u32,
        objects_fp: w.objects_fp,
        bytes_w: w.bytes,
    };
    // SAFETY: off ≥ HEADER_BYTES, so the header lies in the block's leading padding, which
    // we own; `ptr` is 32-aligned at least (its address is 32 mod 2048, 2048 mod 4096, or a
    // multiple of `align` ≥ 4096), so `ptr - 32` is aligned for Header.
    unsafe { ptr.sub(HEADER_BYTES).cast::<Header>().write(h) };
    if layout.align() >= TAG_PAGE {
        insert_overaligned(ptr as usize);
    } else if !crate::arena::contains(base) {
        INNER_TAGGED_LIVE.fetch_add(1, Ordering::Relaxed);
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
    // An inner block: its free happens after its `tag` (the caller got the pointer from
    // it), so the count includes it until this call removes it.
    let inner_tagged = align < TAG_PAGE && !crate::arena::contains(ptr);
    if inner_tagged && INNER_TAGGED_LIVE.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let hp = ptr.wrapping_sub(HEADER_BYTES).cast::<Header>();
    // SAFETY: for align < TAG_PAGE, `ptr % 4096` is 32 or 2080 (align ≤ 32: `offset` mod
    // 2048) or 2048, at least 32 either way, so `hp` lies in the same page as `ptr`, which
    // is mapped; it may belong to the inner allocator or another block, hence a volatile
    // read that makes no claim on its contents. For larger alignments the set proved the
    // block is ours and the header is in its padding.
    let h = unsafe { core::ptr::read_volatile(hp) };
    let w = Weight {
        objects_fp: h.objects_fp,
        bytes: h.bytes_w,
    };
    if h.check != check_word(secret, ptr as usize, h.bucket, h.base_offset, w) {
        return None;
    }
    if forget {
        // SAFETY: the check word proved the header is ours; the block is being freed by
        // its owner, so no one else writes it now.
        unsafe { core::ptr::addr_of_mut!((*hp).check).write_volatile(0) };
        if let Some(s) = slot {
            s.store(TOMBSTONE, Ordering::Release);
            OVERALIGNED_LIVE.fetch_sub(1, Ordering::Relaxed);
        } else if inner_tagged {
            INNER_TAGGED_LIVE.fetch_sub(1, Ordering::Relaxed);
        }
    }
    Some((h, ptr.wrapping_sub(h.base_offset as usize)))
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
            assert_eq!(il.align(), align);
            assert_eq!(il.size(), 100 + period(align) + 64);
            assert_eq!(il.size() - 100, if align <= 32 { 2112 } else { 4160 });
            // Every base the inner allocator may return (a multiple of align) gives a
            // pointer with the tag, aligned, with room for the header and the block.
            for base in (0x10_0000..0x10_0000 + 2 * TAG_PAGE).step_by(align.max(16)) {
                let d = base_offset(base, align);
                assert!(
                    d >= HEADER_BYTES && d + 100 <= il.size(),
                    "align {align} base {base:#x}: {d}"
                );
                assert!(may_be_tagged((base + d) as *mut u8, align));
                assert_eq!((base + d) % align, 0);
            }
        }
        assert_eq!(offset(65536), 65536);
        assert_eq!(base_offset(0x20_0000, 65536), 65536);
        let huge = Layout::from_size_align(isize::MAX as usize - 4095, 4096).unwrap();
        assert!(inner_layout(huge).is_none());
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
        assert_ne!(
            a,
            check_word(
                77,
                0x1000,
                3,
                64,
                Weight {
                    objects_fp: 5,
                    bytes: 7
                }
            )
        );
    }
}
