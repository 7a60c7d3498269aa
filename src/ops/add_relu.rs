//! `relu(a + b)`, the end of every residual block, as one multi-threaded CPU pass with a one-pass
//! backward. In candle it is a single-threaded add, a relu, and a backward of four tensor ops
//! (`ge`, `zeros_like`, `to_dtype`, `mul`) plus a gradient copy per input.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::host::{cpu_f32, storage_f32, to_candle, view_f32};
use super::simd::vectorised;
use crate::error::Result;

const CHUNK: usize = 1 << 14;

/// `max(a + b, 0)`, with gradients for both inputs (zero where the output is zero, as PyTorch).
///
/// # Shapes
/// `a`, `b`: the same shape → that shape.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !(cpu_f32(a) && cpu_f32(b)) || a.dims() != b.dims() {
        return Ok((a + b)?.relu()?);
    }
    Ok(a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)?)
}

struct AddRelu;

vectorised! {
    /// `y = max(a + b, 0)`.
    fn forward(y: &mut [f32], a: &[f32], b: &[f32]) {
        for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
            *y = (a + b).max(0.0);
        }
    }

    /// `d = g` where `y > 0`, else 0.
    fn backward(d: &mut [f32], y: &[f32], g: &[f32]) {
        for ((d, &y), &g) in d.iter_mut().zip(y).zip(g) {
            *d = if y > 0.0 { g } else { 0.0 };
        }
    }
}

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "noisycxr-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b) = (
            storage_f32(s1, l1, "add_relu a")?,
            storage_f32(s2, l2, "add_relu b")?,
        );
        let mut y = super::alloc::overwritten_f32(a.len());
        y.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(yc, (ac, bc))| forward(yc, ac, bc));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (yv, gv) = (
            view_f32(res).map_err(to_candle)?,
            view_f32(&grad).map_err(to_candle)?,
        );
        let (ys, gs) = (yv.as_slice(), gv.as_slice());
        let mut d = super::alloc::overwritten_f32(ys.len());
        d.par_chunks_mut(CHUNK)
            .zip(ys.par_chunks(CHUNK).zip(gs.par_chunks(CHUNK)))
            .for_each(|(dc, (yc, gc))| backward(dc, yc, gc));
        let d = Tensor::from_vec(d, res.shape(), res.device())?;
        Ok((Some(d.clone()), Some(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{max_rel_err, random};
    use candle_core::Var;

    #[test]
    fn matches_candle_add_then_relu_with_gradients() -> Result<()> {
        let a = Var::from_tensor(&random(&[2, 3, 5, 7], 1))?;
        let b = Var::from_tensor(&random(&[2, 3, 5, 7], 2))?;
        let ours = add_relu(&a, &b)?;
        let refr = (a.as_tensor() + b.as_tensor())?.relu()?;
        assert_eq!(max_rel_err(&ours, &refr), 0.0);
        let up = random(&[2, 3, 5, 7], 3);
        let g1 = (ours * &up)?.sum_all()?.backward()?;
        let g2 = (refr * &up)?.sum_all()?.backward()?;
        for v in [&a, &b] {
            let e = max_rel_err(g1.get(v).unwrap(), g2.get(v).unwrap());
            assert_eq!(e, 0.0, "gradient differs");
        }
        Ok(())
    }
}
