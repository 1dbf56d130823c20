//! Where a sampled block starts in its slot or extent, and the one-instruction test `dealloc`
//! runs on every pointer.
//!
//! A sampled block starts [`offset`] bytes into its slot of the arena or its extent of the
//! large-block region — [`TAG_SMALL`] (32) for alignments up to 32, [`TAG`] (2048) up to
//! 2048, the alignment itself above — and slots and extents start at multiples of 2048, so
//! every sampled pointer is 0 or 32 modulo 2048: [`may_be_sampled`] tests exactly that.

/// The offset of alignments up to 32 (a multiple of each): the header in the 32 bytes
/// below the pointer shares the block's first cache line.
pub const TAG_SMALL: usize = 32;
/// The offset of alignments 64 to 2048 (a multiple of each).
pub const TAG: usize = 2048;
/// The modulus [`may_be_sampled`] tests in: half a page, the arena's slot unit.
pub const SMALL_PERIOD: usize = 2048;

/// Where a sampled block of alignment `align` starts in its slot or extent: [`TAG_SMALL`],
/// [`TAG`], or `align` itself from 4096 up.
#[inline(always)]
pub fn offset(align: usize) -> usize {
    if align <= TAG_SMALL {
        TAG_SMALL
    } else if align <= TAG {
        TAG
    } else {
        align
    }
}

/// Low bits that are zero in every sampled block's address: it is 0 or 32 mod 2048.
const SAMPLED_ZERO_BITS: usize = (SMALL_PERIOD - 1) & !TAG_SMALL;

/// The first test on `dealloc`, on the pointer alone: false means "certainly not a sampled
/// block". One `test` instruction; it clears all other pointers but 1 in 64 of 16-aligned
/// ones.
#[inline(always)]
pub fn may_be_sampled(ptr: *mut u8) -> bool {
    ptr as usize & SAMPLED_ZERO_BITS == 0
}
