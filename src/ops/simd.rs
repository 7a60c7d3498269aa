//! Run-time choice of instruction set for our elementwise and row kernels.
//!
//! The crate is compiled for baseline x86-64 (SSE2), so that one binary runs on any x86-64
//! machine (CI, the GPU hosts). A plain loop then vectorises 4 lanes wide with no FMA. Kernels
//! wrapped in [`vectorised!`] are compiled three times, for AVX-512 (x86-64-v4), AVX2 + FMA
//! (x86-64-v3) and the baseline, and the best one the CPU supports is picked at run time (the
//! [`multiversion`] crate; one cached feature check per call). gemm does the same for its
//! microkernels.

/// Compiles the `fn` items inside for x86-64-v4, x86-64-v3 and the baseline, dispatching at
/// run time. Keep the wrapped functions small and their loops simple (slices, no calls that
/// are not `#[inline]`), so that the whole loop body is compiled with the wider features.
macro_rules! vectorised {
    ($($item:item)*) => {
        $(
            #[multiversion::multiversion(targets(
                "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl+avx2+avx+fma+f16c+bmi1+bmi2+lzcnt+movbe+popcnt+sse4.2+sse4.1+ssse3+sse3",
                "x86_64+avx2+avx+fma+f16c+bmi1+bmi2+lzcnt+movbe+popcnt+sse4.2+sse4.1+ssse3+sse3",
            ))]
            $item
        )*
    };
}
pub(crate) use vectorised;

/// Which hand-written SIMD kernels ([`super::avx512`], [`super::avx2`]) this CPU runs, detected
/// once. Hot loops read it once outside the loop: a feature check per short row was 6 % of a
/// `resnet_tiny` im2col.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    Avx512,
    Avx2,
    Portable,
}

impl Isa {
    /// This CPU's best.
    #[inline]
    pub(crate) fn get() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            if super::avx512::available() {
                Isa::Avx512
            } else if super::avx2::available() {
                Isa::Avx2
            } else {
                Isa::Portable
            }
        })
    }
}

/// Accumulator lanes of the reductions below: one AVX-512 register, two AVX2 ones.
const LANES: usize = 16;

/// `Σ f(x[i])` with [`LANES`] partial sums, so that it vectorises (a plain `f32` sum is one
/// serial chain). The order differs from a left-to-right sum by rounding only.
#[inline(always)]
pub(crate) fn sum_map(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let (chunks, rest) = x.as_chunks::<LANES>();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += f(c[i]);
        }
    }
    let tail: f32 = rest.iter().map(|&v| f(v)).sum();
    acc.iter().sum::<f32>() + tail
}

/// `Σ x[i]` (see [`sum_map`]).
#[inline(always)]
pub(crate) fn sum(x: &[f32]) -> f32 {
    sum_map(x, |v| v)
}

/// `Σ a[i] · b[i]` with [`LANES`] partial sums.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let ((ca, ra), (cb, rb)) = (a.as_chunks::<LANES>(), b.as_chunks::<LANES>());
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `max x[i]` (`-∞` for an empty slice) with [`LANES`] partial maxima.
#[inline(always)]
pub(crate) fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let (chunks, rest) = x.as_chunks::<LANES>();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let m = rest.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    acc.iter().fold(m, |a, &b| a.max(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_match_plain_loops() {
        for n in [0usize, 1, 15, 16, 17, 100, 1000] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let y: Vec<f32> = (0..n)
                .map(|i| ((i * 13 % 29) as f32 - 14.0) / 3.0)
                .collect();
            let want_sum: f64 = x.iter().map(|&v| v as f64).sum();
            let want_dot: f64 = x.iter().zip(&y).map(|(&a, &b)| a as f64 * b as f64).sum();
            let want_sq: f64 = x.iter().map(|&v| (v as f64 - 1.0).powi(2)).sum();
            let want_max = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            assert!((sum(&x) as f64 - want_sum).abs() < 1e-3, "sum n={n}");
            assert!((dot(&x, &y) as f64 - want_dot).abs() < 1e-2, "dot n={n}");
            let sq = sum_map(&x, |v| (v - 1.0) * (v - 1.0)) as f64;
            assert!(
                (sq - want_sq).abs() < 1e-2 * want_sq.max(1.0),
                "sum_map n={n}"
            );
            assert_eq!(max(&x), want_max, "max n={n}");
        }
    }
}
