//! PLACEHOLDER until the framehop-based unwinder lands: backtrace's unsynchronized trace.
/// Maximum frames captured.
pub const MAX_DEPTH: usize = 64;

/// Captures return addresses, leaf first, starting in the caller of `capture`.
#[inline(never)]
pub fn capture(frames: &mut [usize]) -> usize {
    let mut n = 0;
    let mut skipped = false;
    // SAFETY: placeholder; the caller holds the reentrancy guard.
    unsafe {
        backtrace::trace_unsynchronized(|f| {
            if !skipped {
                skipped = true;
                return true;
            }
            if n < frames.len() {
                frames[n] = f.ip() as usize;
                n += 1;
                true
            } else {
                false
            }
        })
    };
    n
}
