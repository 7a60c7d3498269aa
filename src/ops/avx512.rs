//! Hand-written AVX-512 reductions for the BatchNorm / GroupNorm statistics and gradients.
//!
//! LLVM does not vectorise these lane-split `f32` sums well (it keeps most lanes scalar), so
//! on CPUs with AVX-512F they run here: 16 lanes per register, FMA, and a masked load for the
//! tail. Callers check [`available`] and otherwise use the portable loops in
//! [`super::norm_kernels`], which are also the reference of the tests below.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether this CPU runs the functions of this module (one cached CPUID check).
#[inline]
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Mask of the first `n` (< 16) lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tail_mask(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

/// The 16 lanes of `v` summed in `f64`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn lanes_f64(v: __m512) -> f64 {
    let mut a = [0f32; 16];
    // SAFETY: `a` holds 16 f32.
    unsafe { _mm512_storeu_ps(a.as_mut_ptr(), v) };
    a.iter().map(|&x| x as f64).sum()
}

/// `(Σ (x − k), Σ (x − k)²)` (see `norm_kernels::sums_shifted`).
///
/// # Safety
/// The CPU must support AVX-512F ([`available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn sums_shifted(v: &[f32], k: f32) -> (f64, f64) {
    let (n, p) = (v.len(), v.as_ptr());
    let kk = _mm512_set1_ps(k);
    let (mut s, mut ss) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n.
        let d = _mm512_sub_ps(unsafe { _mm512_loadu_ps(p.add(i)) }, kk);
        s = _mm512_add_ps(s, d);
        ss = _mm512_fmadd_ps(d, d, ss);
        i += 16;
    }
    if i < n {
        let m = tail_mask(n - i);
        // SAFETY: the masked load reads only lanes below n − i.
        let d = _mm512_maskz_sub_ps(m, unsafe { _mm512_maskz_loadu_ps(m, p.add(i)) }, kk);
        s = _mm512_add_ps(s, d);
        ss = _mm512_fmadd_ps(d, d, ss);
    }
    (lanes_f64(s), lanes_f64(ss))
}

/// `(Σ dy, Σ dy·(x − μ))`, `dy` masked by `y > 0` when `y` is given (see
/// `norm_kernels::dot_sums`).
///
/// # Safety
/// The CPU must support AVX-512F ([`available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dot_sums(dy: &[f32], x: &[f32], y: Option<&[f32]>, mu: f32) -> (f64, f64) {
    let n = dy
        .len()
        .min(x.len())
        .min(y.map_or(usize::MAX, <[f32]>::len));
    let (pg, px) = (dy.as_ptr(), x.as_ptr());
    let py = y.map(<[f32]>::as_ptr);
    let (mm, zero) = (_mm512_set1_ps(mu), _mm512_setzero_ps());
    let (mut s, mut sx) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    while i < n {
        let m = if i + 16 <= n { !0 } else { tail_mask(n - i) };
        // SAFETY: masked loads read only the lanes below n − i of each slice (all ≥ n long).
        let (mut g, xv) = unsafe {
            (
                _mm512_maskz_loadu_ps(m, pg.add(i)),
                _mm512_maskz_loadu_ps(m, px.add(i)),
            )
        };
        if let Some(py) = py {
            // SAFETY: as above.
            let yv = unsafe { _mm512_maskz_loadu_ps(m, py.add(i)) };
            g = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(yv, zero), g);
        }
        s = _mm512_add_ps(s, g);
        // Lanes past the end hold g = 0, so they add nothing.
        sx = _mm512_fmadd_ps(g, _mm512_sub_ps(xv, mm), sx);
        i += 16;
    }
    (lanes_f64(s), lanes_f64(sx))
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::super::norm_kernels::{dot_sums_portable, sums_shifted_portable};
    use super::*;

    fn data(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 7919 % 1009) as f32 - 504.0) / 97.0)
            .collect()
    }

    #[test]
    fn match_the_portable_loops() {
        if !available() {
            eprintln!("no AVX-512F here; nothing to compare");
            return;
        }
        for n in [0usize, 1, 5, 15, 16, 17, 31, 32, 33, 250, 1000] {
            let (dy, x, y) = (data(n, 1), data(n, 2), data(n, 3));
            let close = |a: (f64, f64), b: (f64, f64)| {
                (a.0 - b.0).abs() <= 1e-4 * (1.0 + b.0.abs())
                    && (a.1 - b.1).abs() <= 1e-4 * (1.0 + b.1.abs())
            };
            // SAFETY: AVX-512F checked above.
            let (got, want) = unsafe { (sums_shifted(&x, 0.3), sums_shifted_portable(&x, 0.3)) };
            assert!(close(got, want), "sums_shifted n={n}: {got:?} vs {want:?}");
            for mask in [None, Some(y.as_slice())] {
                let got = unsafe { dot_sums(&dy, &x, mask, -0.2) };
                let want = dot_sums_portable(&dy, &x, mask, -0.2);
                assert!(
                    close(got, want),
                    "dot_sums n={n} mask={}: {got:?} vs {want:?}",
                    mask.is_some()
                );
            }
        }
    }
}
