//! Softmax over the last dimension with a backward, one multi-threaded pass each way on CPU
//! `f32`. (`candle_nn::ops::softmax_last_dim` has no backward; the composed
//! `candle_nn::ops::softmax(x, D::Minus1)` takes five tensor passes forward and more backward.)
//!
//! Backward per row: `dx = y · (dy − Σ dy·y)`.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use super::host::{cpu_f32, storage_f32, to_candle, view_f32};
use super::simd::{self, vectorised};
use crate::error::Result;

/// `softmax(x)` over the last dimension, with gradients.
///
/// # Shapes
/// `[..., D]` → `[..., D]`.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.rank() > 0 && super::cuda_kernels(x) {
        return Ok(x.contiguous()?.apply_op1(Softmax)?);
    }
    if !cpu_f32(x) || x.rank() == 0 {
        return Ok(candle_nn::ops::softmax(x, D::Minus1)?);
    }
    Ok(x.contiguous()?.apply_op1(Softmax)?)
}

struct Softmax;

/// Softmax backward as an op of its own, `(y, dy) → dx`, for the GPU.
#[cfg(feature = "cuda")]
struct SoftmaxGrad;

#[cfg(feature = "cuda")]
impl candle_core::CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "noisycxr-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        super::cuda::cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        y: &candle_core::CudaStorage,
        yl: &Layout,
        dy: &candle_core::CudaStorage,
        dyl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::softmax_bwd(y, yl, dy, dyl)
    }
}

fn rows_per_task(d: usize) -> usize {
    ((1 << 14) / d.max(1)).max(1)
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "noisycxr-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = storage_f32(s, l, "softmax input")?;
        let d = l.dims().last().copied().unwrap_or(1).max(1);
        let mut y = super::alloc::overwritten_f32(x.len());
        let per = rows_per_task(d) * d;
        y.par_chunks_mut(per)
            .zip(x.par_chunks(per))
            .for_each(|(yc, xc)| {
                for (yr, xr) in yc.chunks_mut(d).zip(xc.chunks(d)) {
                    yr.copy_from_slice(xr);
                    softmax_row(yr, 1.0);
                }
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::softmax_fwd(s, l)
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        #[cfg(feature = "cuda")]
        if res.device().is_cuda() {
            return Ok(Some(res.apply_op2_no_bwd(&grad, &SoftmaxGrad)?));
        }
        let (yv, dyv) = (
            view_f32(res).map_err(to_candle)?,
            view_f32(&grad).map_err(to_candle)?,
        );
        let (ys, dy) = (yv.as_slice(), dyv.as_slice());
        let d = res.dims().last().copied().unwrap_or(1).max(1);
        let mut dx = super::alloc::overwritten_f32(ys.len());
        let per = rows_per_task(d) * d;
        dx.par_chunks_mut(per).enumerate().for_each(|(t, dc)| {
            for (i, dr) in dc.chunks_mut(d).enumerate() {
                let o = t * per + i * d;
                dr.copy_from_slice(&dy[o..o + d]);
                softmax_row_grad(&ys[o..o + d], dr, 1.0);
            }
        });
        Ok(Some(Tensor::from_vec(dx, res.shape(), res.device())?))
    }
}

vectorised! {
    /// `row ← softmax(scale · row)` in place (`scale` > 0), max-subtracted.
    pub(crate) fn softmax_row(row: &mut [f32], scale: f32) {
        let m = simd::max(row);
        // Two passes, so the exp loop vectorises (a running sum would not).
        for x in row.iter_mut() {
            *x = super::fastmath::exp((*x - m) * scale);
        }
        let inv = 1.0 / simd::sum(row);
        row.iter_mut().for_each(|x| *x *= inv);
    }

    /// Backward of [`softmax_row`]: `g ← scale · y ⊙ (g − ⟨y, g⟩)` in place, `y` the softmax
    /// output and `g` the gradient of the output on entry, of the input on return.
    pub(crate) fn softmax_row_grad(y: &[f32], g: &mut [f32], scale: f32) {
        let dot = simd::dot(y, g);
        for (d, &yv) in g.iter_mut().zip(y) {
            *d = scale * yv * (*d - dot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{max_rel_err, random};
    use candle_core::Var;

    #[test]
    fn matches_candle_softmax_with_gradients() {
        for shape in [vec![2usize, 3, 5, 7], vec![4, 197], vec![3, 1]] {
            let x = Var::from_tensor(&(random(&shape, 1) * 4.0).unwrap()).unwrap();
            let ours = softmax_last_dim(&x).unwrap();
            let refr = candle_nn::ops::softmax(&x, D::Minus1).unwrap();
            assert!(max_rel_err(&ours, &refr) < 1e-4, "forward {shape:?}");
            let up = random(&shape, 2);
            let g1 = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (refr * &up).unwrap().sum_all().unwrap().backward().unwrap();
            let e = max_rel_err(g1.get(&x).unwrap(), g2.get(&x).unwrap());
            assert!(e < 1e-4, "grad {shape:?}: rel err {e}");
        }
    }
}
