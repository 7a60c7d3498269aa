//! Exact (erf) GELU with a multi-threaded CPU `f32` forward and a one-pass backward (candle's
//! `gelu_erf` runs on one thread and its backward is five tensor ops).
//!
//! `y = x · Φ(x) = ½ x (1 + erf(x / √2))`, `dy/dx = Φ(x) + x · φ(x)`, with the vectorised
//! [`super::fastmath`] `erf` and `exp` (PyTorch's CPU kernel uses the same `erf` formula).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::fastmath;
use super::host::{cpu_f32, storage_f32, to_candle, view_f32};
use super::simd::vectorised;
use crate::error::Result;

/// Exact GELU (PyTorch's default `approximate='none'`), with gradients.
///
/// # Shapes
/// any → same.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if !cpu_f32(x) {
        return Ok(x.gelu_erf()?);
    }
    Ok(x.contiguous()?.apply_op1(Gelu)?)
}

struct Gelu;

const CHUNK: usize = 1 << 14;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `1 / √(2π)`.
const INV_SQRT_2PI: f32 = 0.398_942_3;

vectorised! {
    /// `y = gelu(x)` elementwise.
    fn forward(y: &mut [f32], x: &[f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = 0.5 * x * (1.0 + fastmath::erf(x * FRAC_1_SQRT_2));
        }
    }

    /// `dx = dy · gelu'(x)` elementwise.
    fn backward(dx: &mut [f32], x: &[f32], dy: &[f32]) {
        for ((d, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
            // One exponential serves both: exp(-z²) with z = x/√2 is exp(-x²/2).
            let z = x * FRAC_1_SQRT_2;
            let e = fastmath::exp(-z * z);
            let cdf = 0.5 * (1.0 + fastmath::erf_with(z, e));
            let pdf = INV_SQRT_2PI * e;
            *d = g * (cdf + x * pdf);
        }
    }
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "noisycxr-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = storage_f32(s, l, "gelu input")?;
        let mut y = super::alloc::overwritten_f32(x.len());
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(yc, xc)| forward(yc, xc));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let (xv, dyv) = (
            view_f32(x).map_err(to_candle)?,
            view_f32(&grad).map_err(to_candle)?,
        );
        let (xs, dy) = (xv.as_slice(), dyv.as_slice());
        let mut dx = super::alloc::overwritten_f32(xs.len());
        dx.par_chunks_mut(CHUNK)
            .zip(xs.par_chunks(CHUNK))
            .zip(dy.par_chunks(CHUNK))
            .for_each(|((dc, xc), gc)| backward(dc, xc, gc));
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{max_rel_err, random};
    use candle_core::Var;

    #[test]
    fn matches_candle_gelu_erf_with_gradients() {
        let x = Var::from_tensor(&(random(&[3, 50, 7], 1) * 5.0).unwrap()).unwrap();
        let ours = gelu_erf(&x).unwrap();
        let refr = x.gelu_erf().unwrap();
        assert!(max_rel_err(&ours, &refr) < 1e-5);
        let up = random(&[3, 50, 7], 2);
        let g1 = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (refr * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let e = max_rel_err(g1.get(&x).unwrap(), g2.get(&x).unwrap());
        assert!(e < 1e-4, "grad rel err {e}");
    }
}
