//! Training-mode BatchNorm over `[N, C, H, W]` (batch statistics), optionally fused with ReLU,
//! with a fused multi-threaded CPU `f32` forward and backward.
//!
//! Composed from candle ops, BatchNorm was the largest item of a ResNet-50 training step here
//! (about half of it): `mean_keepdim((0, 2, 3))` is a strided single-threaded reduction and the
//! backward of the broadcast ops repeats it several times. This op makes two passes forward
//! (statistics, then `y = x·scale + shift`) and two backward (per-channel sums of `dy` and
//! `dy·x̂`, then `dx`), parallel over channels and planes.
//!
//! Backward, with `x̂ = (x − μ)·σ⁻¹`, `M = N·H·W` and `dy` masked by `y > 0` when ReLU is fused:
//! ```text
//! dβ = Σ dy      dγ = Σ dy·x̂      dx = γ·σ⁻¹ · (dy − dβ/M − x̂ · dγ/M)
//! ```

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::host::{cpu_f32, storage_f32, to_candle, view_f32};
use super::norm_kernels::{apply_plane, dot_sums, grad_plane, sums_shifted};
use crate::error::{Error, Result};

/// Output of [`batch_norm2d_train`].
#[derive(Debug, Clone)]
pub struct BatchNormOut {
    /// Normalised (and activated) output, `[N, C, H, W]`, in `x`'s dtype.
    pub y: Tensor,
    /// Batch mean per channel, `[C]` `f32`, detached (for the running statistics).
    pub mean: Tensor,
    /// Biased batch variance per channel, `[C]` `f32`, detached. Multiply by `M / (M − 1)` for
    /// PyTorch's unbiased running variance.
    pub var: Tensor,
}

/// BatchNorm with batch statistics: `y = γ · (x − μ) / √(σ² + eps) + β`, then `max(y, 0)` when
/// `relu`. Gradients flow to `x`, `gamma` and `beta`.
///
/// # Shapes
/// `x: [N, C, H, W]`, `gamma, beta: [C]` → `y: [N, C, H, W]`, `mean, var: [C]`.
pub fn batch_norm2d_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<BatchNormOut> {
    let (n, c, h, w) = x.dims4()?;
    if gamma.dims() != [c] || beta.dims() != [c] {
        return Err(Error::Other(format!(
            "batch_norm2d: gamma {:?} and beta {:?} must be [{c}] for input {:?}",
            gamma.dims(),
            beta.dims(),
            x.dims()
        )));
    }
    let m = n * h * w;
    if m < 2 {
        return Err(Error::Other(format!(
            "BatchNorm in training mode needs more than one value per channel, got input {:?}; \
             use a batch of at least 2",
            x.dims()
        )));
    }
    let fast = cpu_f32(x) && cpu_f32(gamma) && cpu_f32(beta);
    if !fast {
        return composed(x, gamma, beta, eps, relu);
    }
    let x = x.contiguous()?;
    let (mean, var) = channel_stats(view_f32(&x)?.as_slice(), n, c, h * w);
    let invstd: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps).sqrt() as f32).collect();
    let op = BnApply {
        mean: Arc::new(mean.iter().map(|&v| v as f32).collect()),
        invstd: Arc::new(invstd),
        relu,
    };
    let y = x.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let dev = x.device();
    let mean: Vec<f32> = mean.iter().map(|&v| v as f32).collect();
    let var: Vec<f32> = var.iter().map(|&v| v as f32).collect();
    Ok(BatchNormOut {
        y,
        mean: Tensor::from_vec(mean, c, dev)?,
        var: Tensor::from_vec(var, c, dev)?,
    })
}

/// The same computation from differentiable candle ops (other devices and dtypes); statistics
/// in `f32` whatever the input dtype.
fn composed(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<BatchNormOut> {
    let c = x.dim(1)?;
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let mean = xf.mean_keepdim((0, 2, 3))?;
    let xc = xf.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim((0, 2, 3))?;
    let g = gamma.to_dtype(DType::F32)?.reshape((1, c, 1, 1))?;
    let b = beta.to_dtype(DType::F32)?.reshape((1, c, 1, 1))?;
    let scale = g.broadcast_div(&(&var + eps)?.sqrt()?)?;
    let mut y = xc.broadcast_mul(&scale)?.broadcast_add(&b)?;
    if relu {
        y = y.relu()?;
    }
    Ok(BatchNormOut {
        y: y.to_dtype(dtype)?,
        mean: mean.detach().flatten_all()?,
        var: var.detach().flatten_all()?,
    })
}

/// Per-channel mean and biased variance of `x[N, C, HW]`, in `f64`. Sums are shifted by the
/// channel's first value, which keeps `Σ(x−K)² − (Σ(x−K))²/M` accurate for large means.
fn channel_stats(x: &[f32], n: usize, c: usize, hw: usize) -> (Vec<f64>, Vec<f64>) {
    let m = (n * hw) as f64;
    let per: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let k = x[ch * hw];
            let (mut s, mut ss) = (0f64, 0f64);
            for i in 0..n {
                let plane = &x[(i * c + ch) * hw..][..hw];
                let (a, b) = sums_shifted(plane, k);
                s += a;
                ss += b;
            }
            let mean_shift = s / m;
            let var = (ss / m - mean_shift * mean_shift).max(0.0);
            (k as f64 + mean_shift, var)
        })
        .collect();
    per.into_iter().unzip()
}

/// `y = x·scale + shift` (and ReLU) with the batch statistics fixed at construction.
struct BnApply {
    mean: Arc<Vec<f32>>,
    invstd: Arc<Vec<f32>>,
    relu: bool,
}

impl CustomOp3 for BnApply {
    fn name(&self) -> &'static str {
        "noisycxr-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = storage_f32(s1, l1, "batch_norm input")?;
        let g = storage_f32(s2, l2, "batch_norm gamma")?;
        let b = storage_f32(s3, l3, "batch_norm beta")?;
        let (_, c, h, w) = l1.shape().dims4()?;
        let hw = h * w;
        let mut y = super::alloc::overwritten_f32(x.len());
        y.par_chunks_mut(hw.max(1))
            .zip(x.par_chunks(hw.max(1)))
            .enumerate()
            .for_each(|(plane, (yp, xp))| {
                let ch = plane % c;
                let scale = g[ch] * self.invstd[ch];
                let shift = b[ch] - self.mean[ch] * scale;
                apply_plane(yp, xp, scale, shift, self.relu);
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let hw = h * w;
        let m = (n * hw) as f32;
        let grad = grad.contiguous()?;
        let (mean, invstd) = (&self.mean, &self.invstd);
        let relu = self.relu;
        let (xv, dyv, yv, gv) = (
            view_f32(x).map_err(to_candle)?,
            view_f32(&grad).map_err(to_candle)?,
            view_f32(res).map_err(to_candle)?,
            view_f32(gamma).map_err(to_candle)?,
        );
        let (xs, dy, ys, g) = (xv.as_slice(), dyv.as_slice(), yv.as_slice(), gv.as_slice());
        // Pass 1: per channel Σ dy and Σ dy·(x − μ).
        let sums: Vec<(f32, f32)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mut s, mut sx) = (0f64, 0f64);
                for i in 0..n {
                    let o = (i * c + ch) * hw;
                    let yp = relu.then(|| &ys[o..o + hw]);
                    let (a, b) = dot_sums(&dy[o..o + hw], &xs[o..o + hw], yp, mean[ch]);
                    s += a;
                    sx += b;
                }
                (s as f32, sx as f32)
            })
            .collect();
        let dbeta: Vec<f32> = sums.iter().map(|s| s.0).collect();
        let dgamma: Vec<f32> = sums
            .iter()
            .zip(invstd.iter())
            .map(|(s, i)| s.1 * i)
            .collect();
        // Pass 2: dx = a·dy + b·x + k per channel.
        let coef: Vec<(f32, f32, f32)> = (0..c)
            .map(|ch| {
                let is = invstd[ch];
                let a = g[ch] * is;
                let b = -a * is * is * sums[ch].1 / m;
                let k = -a * sums[ch].0 / m - b * mean[ch];
                (a, b, k)
            })
            .collect();
        let mut dx = super::alloc::overwritten_f32(xs.len());
        dx.par_chunks_mut(hw.max(1))
            .enumerate()
            .for_each(|(plane, d)| {
                let o = plane * hw;
                let yp = relu.then(|| &ys[o..o + hw]);
                grad_plane(d, &dy[o..o + hw], &xs[o..o + hw], yp, coef[plane % c]);
            });
        let out = (dx, dgamma, dbeta);
        let (dx, dgamma, dbeta) = out;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, (n, c, h, w), dev)?),
            Some(Tensor::from_vec(dgamma, c, dev)?),
            Some(Tensor::from_vec(dbeta, c, dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{max_rel_err, random};
    use candle_core::Var;

    /// Against the composed candle form (PyTorch's formula; candle's gradients of each op
    /// are exact), forward, running-statistic inputs and all three gradients.
    fn check(shape: &[usize], relu: bool, offset: f32) {
        let c = shape[1];
        let x = Var::from_tensor(&(random(shape, 1) + offset as f64).unwrap()).unwrap();
        let g = Var::from_tensor(&(random(&[c], 2) + 1.0).unwrap()).unwrap();
        let b = Var::from_tensor(&random(&[c], 3)).unwrap();
        let ours = batch_norm2d_train(&x, &g, &b, 1e-5, relu).unwrap();
        let refr = composed(&x, &g, &b, 1e-5, relu).unwrap();
        assert!(max_rel_err(&ours.y, &refr.y) < 1e-4, "y {shape:?}");
        assert!(max_rel_err(&ours.mean, &refr.mean) < 1e-4, "mean {shape:?}");
        assert!(max_rel_err(&ours.var, &refr.var) < 1e-4, "var {shape:?}");
        let up = random(shape, 4);
        let g1 = (ours.y * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (refr.y * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, v) in [("x", &x), ("gamma", &g), ("beta", &b)] {
            let e = max_rel_err(g1.get(v).unwrap(), g2.get(v).unwrap());
            assert!(e < 1e-4, "{name} grad {shape:?} relu={relu}: rel err {e}");
        }
    }

    #[test]
    fn matches_composed_batch_norm_with_gradients() {
        check(&[4, 3, 5, 7], false, 0.0);
        check(&[2, 5, 9, 9], true, 0.0);
        check(&[3, 2, 1, 1], true, 0.3); // a 1x1 map (ResNet's last stage at small sizes)
        check(&[2, 4, 6, 6], false, 100.0); // large mean: shifted sums stay accurate
    }

    #[test]
    fn rejects_bad_shapes_and_single_values() {
        let x = random(&[1, 3, 1, 1], 5);
        let g = random(&[3], 6);
        assert!(batch_norm2d_train(&x, &g, &g, 1e-5, false)
            .unwrap_err()
            .to_string()
            .contains("more than one value"));
        let x = random(&[2, 4, 2, 2], 5);
        assert!(batch_norm2d_train(&x, &g, &g, 1e-5, false).is_err());
    }
}
