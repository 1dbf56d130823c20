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
//!
//! # Why its own `ln` and `exp`
//! The draw and the weight need one logarithm and one exponential per sample. glibc's `log`
//! and `expm1` are table-driven, and with their constants they touched ~20 cache lines per
//! sample that the workload had evicted in between (cachegrind, allocation-churn benchmark at
//! the default rate: a third of the sampled path's L1 misses outside the unwinder). The
//! versions below are short polynomials on registers, accurate to ~1e-10 relative (tested
//! against `f64::ln` / `f64::exp_m1`), far below the sampling error they feed — the same
//! trade Go's sampler makes with its `fastlog2`.

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

/// Fixed-point scale of object weights: a weight of `1.0` is stored as `1 << 16`.
pub const OBJECT_WEIGHT_ONE: u64 = 1 << 16;

/// Countdowns never exceed this many bytes (Go clamps its mean to 0x7000000 for the same
/// reason: a bounded draw keeps the arithmetic far from overflow).
const MAX_COUNTDOWN: u64 = 1 << 40;
// The largest rate's draws stay below the bound but with probability e^-64.
const _: () = assert!(crate::base::config::MAX_HEAP_PROFILE_RATE as u64 * 64 == MAX_COUNTDOWN);

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
    let gap = -ln(u) * rate_bytes as f64;
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
    let p = one_minus_exp_neg(size as f64 / rate_bytes as f64);
    let inv = 1.0 / p;
    Weight {
        objects_fp: (inv * OBJECT_WEIGHT_ONE as f64).round() as u64,
        bytes: (inv * size as f64).round() as u64,
    }
}

/// `ln(x)` for finite `x > 0` (here a uniform draw in `(0, 1]`).
fn ln(x: f64) -> f64 {
    const LN_2: f64 = core::f64::consts::LN_2;
    // x = m · 2^e with m in [√½, √2): ln x = e·ln 2 + ln m.
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > core::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    // ln m = 2·atanh(t), t = (m − 1)/(m + 1) in (−0.172, 0.172): the series to t¹¹ leaves
    // an error below 2·0.172¹³/13 ≈ 2e-11.
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let series = 1.0
        + t2 * (1.0 / 3.0
            + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0 + t2 * (1.0 / 11.0)))));
    e as f64 * LN_2 + 2.0 * t * series
}

/// `1 − e^(−x)` for `x ≥ 0`, with full relative precision for small `x`.
fn one_minus_exp_neg(x: f64) -> f64 {
    if x < 1.0 / 32.0 {
        // x − x²/2 + x³/6 − x⁴/24 + x⁵/120; the next term is below x·1e-12.
        return x * (1.0 - x * (0.5 - x * (1.0 / 6.0 - x * (1.0 / 24.0 - x * (1.0 / 120.0)))));
    }
    if x >= 40.0 {
        return 1.0; // e^-40 ≈ 4e-18: below f64's resolution at 1
    }
    // e^(−x) = 2^(−k) · e^(−r), x = k·ln 2 + r, r in [0, ln 2); Taylor to r¹¹ (error
    // < 0.7¹²/12! ≈ 3e-11).
    // Horner: e^(−r) = 1 − r(1 − r/2(1 − r/3(…))), with the 1/i as constants (no division).
    const INV: [f64; 11] = [
        1.0,
        1.0 / 2.0,
        1.0 / 3.0,
        1.0 / 4.0,
        1.0 / 5.0,
        1.0 / 6.0,
        1.0 / 7.0,
        1.0 / 8.0,
        1.0 / 9.0,
        1.0 / 10.0,
        1.0 / 11.0,
    ];
    let k = (x * core::f64::consts::LOG2_E) as u64;
    let r = x - k as f64 * core::f64::consts::LN_2;
    let e_neg_r = INV.iter().rev().fold(1.0, |acc, inv| 1.0 - r * inv * acc);
    1.0 - e_neg_r * f64::from_bits((1023 - k) << 52)
}

thread_local! {
    /// Per-thread xorshift state for [`event_rand`]; 0 = not seeded yet.
    static EVENT_RNG: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

/// A uniform 64-bit draw for the event profiles' sampling decisions (`block`, `mutex`):
/// a per-thread xorshift stream, seeded on first use from the clock and its state's address
/// (never 0), with a multiplicative output scramble. Allocation-free, lock-free.
pub fn event_rand() -> u64 {
    EVENT_RNG.with(|c| {
        let mut x = c.get();
        if x == 0 {
            x = (crate::base::sys::monotonic_nanos() ^ (c as *const _ as u64).rotate_left(32)) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
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
    fn own_ln_and_exp_match_libm() {
        let mut rng = new_rng(1);
        let mut worst = (0f64, 0f64);
        for i in 0..200_000u64 {
            // Uniform draws as the sampler makes them, plus the edges.
            let u = match i {
                0 => 1.0,
                1 => 1.0 / (1u64 << 53) as f64,
                _ => ((rng.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64),
            };
            let (a, b) = (ln(u), u.ln());
            let err = if b == 0.0 {
                a.abs()
            } else {
                ((a - b) / b).abs()
            };
            worst.0 = worst.0.max(err);
            // x = s/R over the range weights use: 1 byte at a 1 TiB rate up to 60·R.
            let x = 60.0 * (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let x = if i % 2 == 0 { x } else { x * 1e-9 };
            let (p, q) = (one_minus_exp_neg(x), -(-x).exp_m1());
            if q > 0.0 {
                worst.1 = worst.1.max(((p - q) / q).abs());
            }
        }
        assert!(
            worst.0 < 1e-10 && worst.1 < 1e-10,
            "relative errors {worst:?}"
        );
        assert_eq!(one_minus_exp_neg(0.0), 0.0);
        assert_eq!(one_minus_exp_neg(1e9), 1.0);
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
