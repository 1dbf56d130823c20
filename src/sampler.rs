//! The sampling maths: exponential byte intervals and per-sample unbiasing weights.
//!
//! # Model
//! Sample points form a Poisson process of intensity `1/R` over the stream of allocated
//! bytes (`R` = the sampling rate). Each thread keeps a countdown of bytes until its next
//! point; after a sample the countdown is redrawn from `Exp(mean = R)` by inverse CDF:
//! `next = ⌊−ln(u)·R⌋ + 1` with `u` uniform in `(0, 1]`. Memorylessness lets the leftover
//! of the interval be dropped, so an allocation of `s` bytes is sampled, independently of
//! all others, with probability `p(s) = 1 − e^(−s/R)`. A huge block costs one draw, not a
//! loop of redraws.
//!
//! Weighting every sample by `1/p(s)` (Horvitz–Thompson) makes `Σ 1/p` an unbiased
//! estimate of the number of allocations and `Σ s/p` of their bytes. The weight is fixed
//! at sampling time with the rate the countdown was drawn with and stored with the sample,
//! so a later rate change never rescales old samples.
//!
//! This module is pure: no TLS, no atomics, no allocation. Called from the allocator's slow
//! path.

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

/// Fixed-point scale of object weights: a weight of `1.0` is stored as `1 << 16`.
pub const OBJECT_WEIGHT_ONE: u64 = 1 << 16;

/// Countdowns never exceed this many bytes (Go clamps its mean to 0x7000000 for the same
/// reason: a bounded draw keeps the arithmetic far from overflow).
const MAX_COUNTDOWN: u64 = 1 << 40;

/// Creates the per-thread generator from a seed (see [`thread_seed`]).
pub fn new_rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

/// Derives a thread's seed from the process seed and the thread's ordinal, so a fixed
/// process seed makes every thread's draws reproducible (splitmix64 finaliser).
pub fn thread_seed(process_seed: u64, thread_ordinal: u64) -> u64 {
    let mut z = process_seed ^ thread_ordinal.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Draws the number of bytes until the next sample for a mean of `rate_bytes` (> 1).
///
/// Never returns 0: the result is at least 1, at most [`MAX_COUNTDOWN`].
pub fn draw_countdown(rng: &mut SmallRng, rate_bytes: usize) -> u64 {
    // 53 random bits → u in (0, 1]: never 0, so ln(u) is finite.
    let u = ((rng.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
    let gap = -u.ln() * rate_bytes as f64;
    (gap as u64).saturating_add(1).min(MAX_COUNTDOWN)
}

/// The unbiasing weight of one sampled allocation, fixed at sampling time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weight {
    /// Estimated objects this sample stands for, in units of `1 / OBJECT_WEIGHT_ONE`.
    pub objects_fp: u64,
    /// Estimated bytes this sample stands for.
    pub bytes: u64,
}

/// Weight of a sample of `size` bytes taken at `rate_bytes`: `1/p(s)` objects and `s/p(s)`
/// bytes, with `p(s) = 1 − e^(−s/R)`. Rates 0 and 1 mean every allocation is recorded
/// (weight 1), as do zero-size allocations.
pub fn weight(size: usize, rate_bytes: usize) -> Weight {
    if rate_bytes <= 1 || size == 0 {
        return Weight {
            objects_fp: OBJECT_WEIGHT_ONE,
            bytes: size as u64,
        };
    }
    // p = 1 − e^(−s/R), computed as −expm1(−s/R) to keep precision for s ≪ R.
    let p = -(-(size as f64) / rate_bytes as f64).exp_m1();
    let inv = 1.0 / p;
    Weight {
        objects_fp: (inv * OBJECT_WEIGHT_ONE as f64).round() as u64,
        bytes: (inv * size as f64).round() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countdown_mean_and_spread_match_exponential() {
        // 200k draws: the sample mean's standard error is R/√n ≈ 0.22% of R; allow 6σ.
        let mut rng = new_rng(thread_seed(42, 0));
        let rate = 524_288usize;
        let n = 200_000;
        let draws: Vec<u64> = (0..n).map(|_| draw_countdown(&mut rng, rate)).collect();
        assert!(draws.iter().all(|&d| d >= 1));
        let mean = draws.iter().sum::<u64>() as f64 / n as f64;
        assert!(
            (mean / rate as f64 - 1.0).abs() < 6.0 / (n as f64).sqrt(),
            "mean {mean}"
        );
        // Exponential: P(X > R) = e^-1 ≈ 0.3679; binomial σ ≈ 0.0011.
        let above = draws.iter().filter(|&&d| d > rate as u64).count() as f64 / n as f64;
        assert!((above - (-1f64).exp()).abs() < 0.0066, "tail share {above}");
    }

    #[test]
    fn same_seed_same_draws() {
        let mut a = new_rng(thread_seed(7, 3));
        let mut b = new_rng(thread_seed(7, 3));
        for _ in 0..100 {
            assert_eq!(draw_countdown(&mut a, 4096), draw_countdown(&mut b, 4096));
        }
        assert_ne!(thread_seed(7, 3), thread_seed(7, 4));
    }

    #[test]
    fn weights_follow_inclusion_probability() {
        // Large blocks are almost surely sampled: weight ≈ 1 object, ≈ s bytes.
        let w = weight(64 << 20, 524_288);
        assert_eq!(w.objects_fp, OBJECT_WEIGHT_ONE);
        assert_eq!(w.bytes, 64 << 20);
        // Small blocks: p ≈ s/R, so each sample stands for ≈ R bytes and R/s objects.
        let w = weight(64, 524_288);
        let objs = w.objects_fp as f64 / OBJECT_WEIGHT_ONE as f64;
        assert!(
            (objs - 524_288.0 / 64.0).abs() / (524_288.0 / 64.0) < 1e-3,
            "{objs}"
        );
        assert!((w.bytes as f64 - 524_288.0).abs() < 100.0, "{}", w.bytes);
        // s = R: p = 1 − 1/e.
        let w = weight(4096, 4096);
        let expect = 1.0 / (1.0 - (-1f64).exp());
        assert!((w.objects_fp as f64 / OBJECT_WEIGHT_ONE as f64 - expect).abs() < 1e-4);
        // Rate 1 and 0: every allocation counts once.
        assert_eq!(
            weight(100, 1),
            Weight {
                objects_fp: OBJECT_WEIGHT_ONE,
                bytes: 100
            }
        );
        assert_eq!(
            weight(0, 4096),
            Weight {
                objects_fp: OBJECT_WEIGHT_ONE,
                bytes: 0
            }
        );
    }
}
