//! Validated frame-pointer walk: the fallback when the DWARF unwinder cannot be used
//! (signal handler with no free cache, unwinder not built yet), and a cheap comparison.
//!
//! Stack layout with frame pointers (x86_64), growing down:
//!
//! ```text
//!   higher addresses   [ caller's frame ... ]
//!                      [ return address     ]  <- bp + 8
//!   bp --------------> [ caller's bp        ]  <- bp
//!                      [ locals ...         ]
//!   sp --------------> [ ...                ]
//! ```
//!
//! Every read is checked against the readable range `[lo, hi)` (this thread's stack above the
//! starting sp), `bp` must be 8-aligned and strictly rise, so the walk always ends. In code
//! built without frame pointers `rbp` is a general register: the walk then yields 0–1 junk or
//! truncated frames, but it never reads outside the range. Async-signal-safe.

/// Append return addresses found by following the `rbp` chain from `bp` to `frames[n..]`.
/// Returns the new frame count.
pub(super) fn walk(
    mut bp: usize,
    lo: usize,
    hi: usize,
    frames: &mut [usize],
    mut n: usize,
) -> usize {
    while n < frames.len() {
        if bp < lo || bp % 8 != 0 || bp > hi.saturating_sub(16) {
            break;
        }
        // SAFETY: lo <= bp and bp + 16 <= hi, and [lo, hi) is mapped, readable stack memory of
        // this thread (the caller's contract); bp is 8-aligned.
        let (next_bp, ra) = unsafe { (*(bp as *const usize), *((bp + 8) as *const usize)) };
        if ra == 0 {
            break;
        }
        frames[n] = ra;
        n += 1;
        if next_bp <= bp {
            break;
        }
        bp = next_bp;
    }
    n
}
