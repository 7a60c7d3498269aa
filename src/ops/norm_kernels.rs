//! Per-plane loops shared by BatchNorm and GroupNorm: shifted sums for the statistics, the
//! affine (+ ReLU) forward, and the two passes of the input gradient. Compiled per instruction
//! set (see [`super::simd`]).

use super::simd::vectorised;
#[cfg(target_arch = "x86_64")]
use super::simd::Isa;

/// Partial sums per reduction: one AVX-512 register of `f32`.
const L: usize = 16;

/// `(Σ (x − k), Σ (x − k)²)` over a plane, summed in `f64` (AVX-512 or AVX2 when the CPU has it).
pub(super) fn sums_shifted(v: &[f32], k: f32) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    match Isa::get() {
        // SAFETY: the CPU has AVX-512F.
        Isa::Avx512 => return unsafe { super::avx512::sums_shifted(v, k) },
        // SAFETY: the CPU has AVX2 and FMA.
        Isa::Avx2 => return unsafe { super::avx2::sums_shifted(v, k) },
        Isa::Portable => {}
    }
    sums_shifted_portable(v, k)
}

/// `(Σ dy, Σ dy·(x − μ))` over a plane, `dy` masked by `y > 0` when `y` is given, summed in
/// `f64` (AVX-512 or AVX2 when the CPU has it).
pub(super) fn dot_sums(dy: &[f32], x: &[f32], y: Option<&[f32]>, mu: f32) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    match Isa::get() {
        // SAFETY: the CPU has AVX-512F.
        Isa::Avx512 => return unsafe { super::avx512::dot_sums(dy, x, y, mu) },
        // SAFETY: the CPU has AVX2 and FMA.
        Isa::Avx2 => return unsafe { super::avx2::dot_sums(dy, x, y, mu) },
        Isa::Portable => {}
    }
    dot_sums_portable(dy, x, y, mu)
}

vectorised! {
    /// `(Σ (x − k), Σ (x − k)²)` over a plane, [`L`] lanes in `f32`, summed in `f64`.
    pub(super) fn sums_shifted_portable(v: &[f32], k: f32) -> (f64, f64) {
        let mut s = [0f32; L];
        let mut ss = [0f32; L];
        let (chunks, rest) = v.as_chunks::<L>();
        for ch in chunks {
            for j in 0..L {
                let d = ch[j] - k;
                s[j] += d;
                ss[j] += d * d;
            }
        }
        let (mut a, mut b) = (0f64, 0f64);
        for j in 0..L {
            a += s[j] as f64;
            b += ss[j] as f64;
        }
        for &x in rest {
            let d = (x - k) as f64;
            a += d;
            b += d * d;
        }
        (a, b)
    }

    /// One plane of the forward: `y = x·scale + shift`, then ReLU if `relu`.
    pub(super) fn apply_plane(y: &mut [f32], x: &[f32], scale: f32, shift: f32, relu: bool) {
        if relu {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = (x * scale + shift).max(0.0);
            }
        } else {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = x * scale + shift;
            }
        }
    }

    /// One plane of the input gradient: `d = a·dy' + b·x + k`, `dy'` = `dy` masked by `y > 0`
    /// when `y` is given.
    pub(super) fn grad_plane(d: &mut [f32], dy: &[f32], x: &[f32], y: Option<&[f32]>, coef: (f32, f32, f32)) {
        let (a, b, k) = coef;
        match y {
            Some(y) => {
                for (((d, &g), &x), &y) in d.iter_mut().zip(dy).zip(x).zip(y) {
                    let g = if y > 0.0 { g } else { 0.0 };
                    *d = a * g + b * x + k;
                }
            }
            None => {
                for ((d, &g), &x) in d.iter_mut().zip(dy).zip(x) {
                    *d = a * g + b * x + k;
                }
            }
        }
    }

    /// `(Σ dy, Σ dy·(x − μ))` over a plane, `dy` masked by `y > 0` when `y` is given.
    pub(super) fn dot_sums_portable(dy: &[f32], x: &[f32], y: Option<&[f32]>, mu: f32) -> (f64, f64) {
        let mut s = [0f32; L];
        let mut sx = [0f32; L];
        let n = dy.len().min(x.len());
        let (dy, x) = (&dy[..n], &x[..n]);
        let (dyc, xc) = (dy.as_chunks::<L>().0, x.as_chunks::<L>().0);
        match y {
            None => {
                for (g, x) in dyc.iter().zip(xc) {
                    for j in 0..L {
                        s[j] += g[j];
                        sx[j] += g[j] * (x[j] - mu);
                    }
                }
            }
            Some(y) => {
                for ((g, x), y) in dyc.iter().zip(xc).zip(y.as_chunks::<L>().0) {
                    for j in 0..L {
                        // g[j] where y[j] > 0, else +0.0, as a bit mask (branch free).
                        let keep = ((y[j] > 0.0) as u32).wrapping_neg();
                        let g = f32::from_bits(g[j].to_bits() & keep);
                        s[j] += g;
                        sx[j] += g * (x[j] - mu);
                    }
                }
            }
        }
        let (mut a, mut b) = (0f64, 0f64);
        for j in 0..L {
            a += s[j] as f64;
            b += sx[j] as f64;
        }
        for i in n / L * L..n {
            let g = match y {
                Some(y) if y[i] <= 0.0 => 0.0,
                _ => dy[i],
            };
            a += g as f64;
            b += (g * (x[i] - mu)) as f64;
        }
        (a, b)
    }
}
