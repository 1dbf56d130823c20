//! heaprof's own memory, as far as it is heaprof's to measure: the recording tables'
//! resident pages (`mincore` over their mappings), the sampled-block arena's committed
//! bytes less the live sampled blocks in it (those are the program's, and in the heap
//! estimate already), and the large sampled blocks' region.
//!
//! Called by profile writers only (it allocates a page vector for `mincore`). Not counted
//! here: what heaprof allocates from the inner allocator under its reentrancy guard — the
//! symbolizer's caches (the `backtrace` crate's parsed debug info) above all: +39 MiB of
//! glibc in-use, and 15 MiB of mapped debug sections, after the first profile of a 14 MB
//! release binary with line tables. Those are in glibc's in-use figure and outside the
//! sampled heap, so in the breakdown they fall in "other"; measuring them needs a counter on
//! the guarded allocation path (the allocator's), which this module leaves to `alloc`.

use crate::{alloc::arena, alloc::large_region, alloc::tables};

/// heaprof's own memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Own {
    /// Resident bytes of the stack and bucket tables (and the peak snapshot beside them).
    pub tables_resident: u64,
    /// Bytes the tables have mapped (virtual; what is never touched costs nothing).
    pub tables_mapped: u64,
    /// Bytes of the sampled-block arena made writable so far (its slots are written when
    /// used, so nearly all of this is resident).
    pub arena_committed: u64,
    /// Bytes of the live sampled blocks the arena holds (sampled blocks of up to
    /// `arena::MAX_BLOCK` bytes, by their records), part of `arena_committed`.
    pub arena_sampled_live: u64,
    /// Freed pages the large-block region keeps for reuse (its live blocks are the
    /// program's), when the region exists.
    pub large_region: Option<u64>,
}

impl Own {
    /// What the breakdown counts as heaprof's: tables resident + arena committed − the live
    /// sampled blocks in it + large region.
    pub fn total(&self) -> u64 {
        self.tables_resident + self.arena_overhead() + self.large_region.unwrap_or(0)
    }

    /// The arena's committed bytes that are not live sampled blocks: slot rounding, headers,
    /// free slots kept for reuse, and pages committed but not used yet.
    pub fn arena_overhead(&self) -> u64 {
        self.arena_committed.saturating_sub(self.arena_sampled_live)
    }
}

/// heaprof's own memory now.
pub fn read() -> Own {
    let mut own = Own {
        arena_committed: arena::committed() as u64,
        large_region: large_region_bytes(),
        ..Own::default()
    };
    if let Some(t) = tables::get_if_created() {
        for &(addr, len) in &t.mappings {
            own.tables_mapped += len as u64;
            own.tables_resident += resident(addr, len);
        }
        // Buckets are per size class: a record whose sampled blocks average at most the
        // arena's largest block is taken to live there (blocks aligned to 4096 or more, or
        // sampled while the arena was full, are in the large-block region instead: rare).
        t.buckets.for_each_used(|_, b| {
            if b.alloc_count > 0 && b.alloc_bytes / b.alloc_count <= arena::MAX_BLOCK as u64 {
                own.arena_sampled_live += b.alloc_bytes.saturating_sub(b.free_bytes);
            }
        });
    }
    own.arena_sampled_live = own.arena_sampled_live.min(own.arena_committed);
    own
}

/// The large-block region's own part: the freed pages it keeps for the next large samples
/// (its live blocks are the program's, in the heap estimate already); `None` when the OS
/// refused the reservation.
fn large_region_bytes() -> Option<u64> {
    let (_live, retained, _refused) = large_region::stats();
    (large_region::reserved() > 0).then_some(retained as u64)
}

/// Resident bytes of the mapping at `addr` (page-aligned) of `len` bytes.
fn resident(addr: usize, len: usize) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
    let pages = len.div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: [addr, addr + pages·page) is one of the tables' own mappings (page-aligned,
    // never unmapped); `vec` has one byte per page of it, as mincore(2) writes.
    let r = unsafe { libc::mincore(addr as *mut libc::c_void, len, vec.as_mut_ptr()) };
    if r != 0 {
        return 0;
    }
    vec.iter().filter(|&&v| v & 1 != 0).count() as u64 * page as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mincore_counts_touched_pages_only() {
        let len = 64 * 4096;
        let p = crate::base::sys::map_zeroed(len);
        assert!(!p.is_null());
        assert_eq!(resident(p as usize, len), 0);
        for i in [0usize, 5, 63] {
            // SAFETY: inside the fresh mapping of `len` bytes.
            unsafe { p.add(i * 4096).write(1) };
        }
        assert_eq!(resident(p as usize, len), 3 * 4096);
        // SAFETY: our own mapping, not used afterwards.
        unsafe { libc::munmap(p.cast(), len) };
    }
}
