//! Branch-free `f32` `exp` and `erf` that the compiler vectorises (libm's are scalar calls).
//!
//! - [`exp`]: Cephes' `expf` (range reduction by `ln 2` in two parts, degree-6 polynomial),
//!   with the rounding done by the `1.5 · 2²³` trick and `2ⁿ` built from its exponent bits, so
//!   a loop over a slice compiles to SIMD code. Relative error ≤ 2e-7 on `[-87, 88]`; inputs
//!   beyond are clamped (`exp(-100)` gives `exp(-87.3)` ≈ 1e-38, not 0).
//! - [`erf`]: Abramowitz & Stegun 7.1.26, the formula PyTorch's vectorised CPU `erf` uses:
//!   absolute error ≤ 1.5e-7 in exact arithmetic, ≤ 6e-7 as evaluated here in `f32`.

/// `1.5 · 2²³`: adding it rounds an `f32` of magnitude < 2²² to an integer.
const ROUND: f32 = 12_582_912.0;

/// `eˣ` (see the module docs for its error).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.336_55, 88.376_26);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    // r = x − n·ln 2, with ln 2 split so that n·C1 is exact.
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.000_000_1e-1;
    let y = p * r * r + r + 1.0;
    // 2ⁿ from the exponent bits: n = t.bits − bits(ROUND), n + 127 ∈ [1, 254] after the clamp.
    let n = t.to_bits() as i32 - ROUND.to_bits() as i32;
    y * f32::from_bits(((n + 127) << 23) as u32)
}

/// `erf(x)` (see the module docs for its error).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    erf_with(x, exp(-x * x))
}

/// `erf(x)` given `e = exp(-x²)`, for callers that need that exponential themselves (GELU's
/// derivative: the normal density at `x√2` is `e / √(2π)`).
#[inline(always)]
pub fn erf_with(x: f32, e: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = ((((A[4] * t + A[3]) * t + A[2]) * t + A[1]) * t + A[0]) * t;
    let y = 1.0 - poly * e;
    y.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_f64_within_2e_7_relative() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - want).abs() / want);
        }
        assert!(worst < 2e-7, "worst relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) >= 0.0);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn erf_matches_libm_within_6e_7() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -6.0 + 12.0 * i as f32 / 200_000.0;
            worst = worst.max(((erf(x) as f64) - libm::erf(x as f64)).abs());
        }
        assert!(worst < 6e-7, "worst absolute error {worst:e}");
        assert!(erf(0.0).abs() < 1e-7, "erf(0) = {}", erf(0.0));
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }
}
