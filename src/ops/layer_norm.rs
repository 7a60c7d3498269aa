//! LayerNorm over the last dimension with a fused multi-threaded CPU `f32` forward and
//! backward. candle's fast `LayerNorm` has no backward, and the composed
//! `candle_nn::ops::layer_norm_slow` costs about a dozen tensor passes forward and more
//! backward; this op makes one pass forward and one backward (plus a reduction for `dγ`, `dβ`).
//!
//! Backward per row, with `x̂ = (x − μ)·σ⁻¹`, `ĝ = dy·γ` and means over the row:
//! ```text
//! dx = σ⁻¹ · (ĝ − mean(ĝ) − x̂ · mean(ĝ·x̂))      dγ = Σ_rows dy·x̂      dβ = Σ_rows dy
//! ```

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::host::{cpu_f32, storage_f32, to_candle, view_f32};
use super::simd::{self, vectorised};
use crate::error::{Error, Result};

/// `y = (x − mean) / √(var + eps) · gamma + beta` over the last dimension (biased variance),
/// as `torch.nn.functional.layer_norm`. Gradients flow to all three inputs.
///
/// # Shapes
/// `x: [..., D]`, `gamma, beta: [D]` → `[..., D]`.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let d = x.dims().last().copied().unwrap_or(0);
    if gamma.dims() != [d] || beta.dims() != [d] || d == 0 {
        return Err(Error::Other(format!(
            "layer_norm: gamma {:?} and beta {:?} must be [{d}] for input {:?}",
            gamma.dims(),
            beta.dims(),
            x.dims()
        )));
    }
    let on_gpu = super::cuda_kernels(x)
        && gamma.device().same_device(x.device())
        && gamma.dtype() == x.dtype()
        && beta.dtype() == x.dtype();
    if !on_gpu && !(cpu_f32(x) && cpu_f32(gamma) && cpu_f32(beta)) {
        return Ok(candle_nn::ops::layer_norm_slow(x, gamma, beta, eps as f32)?);
    }
    let op = LayerNormOp {
        eps: eps as f32,
        stats: OnceLock::new(),
    };
    Ok(x.contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?)
}

struct LayerNormOp {
    eps: f32,
    /// Per row `(mean, 1/σ)` from the forward, for the backward.
    stats: OnceLock<Vec<(f32, f32)>>,
}

/// Rows per parallel work item.
fn rows_per_task(rows: usize, d: usize) -> usize {
    ((1 << 14) / d.max(1)).clamp(1, rows.max(1))
}

vectorised! {
    /// `(mean, 1/σ)` of one row.
    fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
        let n = row.len() as f32;
        let mean = simd::sum(row) / n;
        let var = simd::sum_map(row, |v| (v - mean) * (v - mean)) / n;
        (mean, 1.0 / (var + eps).sqrt())
    }

    /// One row forward: `y = (x − mean) / σ · γ + β`; returns `(mean, 1/σ)`.
    fn forward_row(y: &mut [f32], x: &[f32], g: &[f32], b: &[f32], eps: f32) -> (f32, f32) {
        let (mean, inv) = row_stats(x, eps);
        for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(g).zip(b) {
            *y = (x - mean) * inv * g + b;
        }
        (mean, inv)
    }

    /// One row backward: writes `dx` and adds this row's terms to `dg`, `db`. `xhat`, `gh`:
    /// scratch of the row's length.
    fn backward_row(
        dx: &mut [f32],
        x: &[f32],
        dy: &[f32],
        g: &[f32],
        stats: (f32, f32),
        sums: (&mut [f32], &mut [f32]),
        scratch: (&mut [f32], &mut [f32]),
    ) {
        let ((mean, inv), (dg, db), (xhat, gh)) = (stats, sums, scratch);
        let n = x.len() as f32;
        for (((xh, h), &x), (&dy, &g)) in xhat.iter_mut().zip(gh.iter_mut()).zip(x).zip(dy.iter().zip(g)) {
            *xh = (x - mean) * inv;
            *h = dy * g;
        }
        for (((dg, db), &dy), &xh) in dg.iter_mut().zip(db.iter_mut()).zip(dy).zip(xhat.iter()) {
            *dg += dy * xh;
            *db += dy;
        }
        let c1 = simd::sum(gh) / n;
        let c2 = simd::dot(gh, xhat) / n;
        for ((dx, &h), &xh) in dx.iter_mut().zip(gh.iter()).zip(xhat.iter()) {
            *dx = inv * (h - c1 - xh * c2);
        }
    }
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "noisycxr-layer-norm"
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
        let x = storage_f32(s1, l1, "layer_norm input")?;
        let g = storage_f32(s2, l2, "layer_norm gamma")?;
        let b = storage_f32(s3, l3, "layer_norm beta")?;
        let d = g.len();
        let rows = x.len() / d;
        let per = rows_per_task(rows, d);
        let mut y = super::alloc::overwritten_f32(x.len());
        let mut stats = vec![(0f32, 0f32); rows];
        y.par_chunks_mut(per * d)
            .zip(x.par_chunks(per * d))
            .zip(stats.par_chunks_mut(per))
            .for_each(|((yc, xc), sc)| {
                for ((yr, xr), s) in yc.chunks_mut(d).zip(xc.chunks(d)).zip(sc.iter_mut()) {
                    *s = forward_row(yr, xr, g, b, self.eps);
                }
            });
        let _ = self.stats.set(stats);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::layer_norm_fwd((s1, l1), (s2, l2), (s3, l3), self.eps)
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            let d = gamma.elem_count();
            let n = x.elem_count();
            let all = x.apply_op3_no_bwd(gamma, &grad, &LayerNormGrad { eps: self.eps })?;
            return Ok((
                Some(all.narrow(0, 0, n)?.reshape(x.shape())?),
                Some(all.narrow(0, n, d)?),
                Some(all.narrow(0, n + d, d)?),
            ));
        }
        let (xv, dyv, gv) = (
            view_f32(x).map_err(to_candle)?,
            view_f32(&grad).map_err(to_candle)?,
            view_f32(gamma).map_err(to_candle)?,
        );
        let (xs, dy, g) = (xv.as_slice(), dyv.as_slice(), gv.as_slice());
        let d = g.len();
        let rows = xs.len() / d;
        let fresh;
        let stats: &Vec<(f32, f32)> = match self.stats.get() {
            Some(s) => s,
            None => {
                fresh = xs
                    .chunks(d)
                    .map(|r| row_stats(r, self.eps))
                    .collect::<Vec<_>>();
                &fresh
            }
        };
        let per = rows_per_task(rows, d);
        let mut dx = super::alloc::overwritten_f32(xs.len());
        let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(per * d)
            .enumerate()
            .map(|(t, dxc)| {
                let (mut dg, mut db) = (vec![0f32; d], vec![0f32; d]);
                let (mut xhat, mut gh) = (vec![0f32; d], vec![0f32; d]);
                for (i, dxr) in dxc.chunks_mut(d).enumerate() {
                    let r = t * per + i;
                    backward_row(
                        dxr,
                        &xs[r * d..(r + 1) * d],
                        &dy[r * d..(r + 1) * d],
                        g,
                        stats[r],
                        (&mut dg, &mut db),
                        (&mut xhat, &mut gh),
                    );
                }
                (dg, db)
            })
            .collect();
        let (mut dg, mut db) = (vec![0f32; d], vec![0f32; d]);
        for (pg, pb) in &partials {
            for j in 0..d {
                dg[j] += pg[j];
                db[j] += pb[j];
            }
        }
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dg, d, dev)?),
            Some(Tensor::from_vec(db, d, dev)?),
        ))
    }
}

/// LayerNorm backward as an op of its own for the GPU: `(x, γ, dy) → [dx, dγ, dβ]` flattened
/// into one tensor of `x.len() + 2·d` elements (a custom op has one output).
#[cfg(feature = "cuda")]
struct LayerNormGrad {
    eps: f32,
}

#[cfg(feature = "cuda")]
impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "noisycxr-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        super::cuda::cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::layer_norm_bwd((s1, l1), (s2, l2), (s3, l3), self.eps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{max_rel_err, random};
    use candle_core::Var;

    #[test]
    fn matches_layer_norm_slow_with_gradients() {
        for (shape, offset) in [
            (vec![2usize, 7, 16], 0.0),
            (vec![5, 33], 3.0),
            (vec![1, 1, 8], 0.0),
        ] {
            let d = *shape.last().unwrap();
            let x = Var::from_tensor(&(random(&shape, 1) + offset).unwrap()).unwrap();
            let g = Var::from_tensor(&(random(&[d], 2) + 1.0).unwrap()).unwrap();
            let b = Var::from_tensor(&random(&[d], 3)).unwrap();
            let ours = layer_norm(&x, &g, &b, 1e-6).unwrap();
            let refr = candle_nn::ops::layer_norm_slow(&x, &g, &b, 1e-6).unwrap();
            assert!(max_rel_err(&ours, &refr) < 1e-4, "forward {shape:?}");
            let up = random(&shape, 4);
            let g1 = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (refr * &up).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, v) in [("x", &x), ("gamma", &g), ("beta", &b)] {
                let e = max_rel_err(g1.get(v).unwrap(), g2.get(v).unwrap());
                assert!(e < 1e-4, "{name} grad {shape:?}: rel err {e}");
            }
        }
    }
}
