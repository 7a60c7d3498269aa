//! GroupNorm over `[N, C, H, W]`, optionally fused with ReLU, with a fused multi-threaded CPU
//! `f32` forward and backward (the hybrid's ResNetV2 stem and stages). Composed from candle
//! ops, its per-channel affine's backward is a strided single-threaded reduction over
//! `(0, 2, 3)`; here each `(sample, group)` block is processed in one task.
//!
//! Per block of `M = C/G · H · W` values, with `x̂ = (x − μ)·σ⁻¹`, `ĝ = dy·γ_c` (`dy` masked by
//! `y > 0` when ReLU is fused) and means over the block:
//! ```text
//! dx = σ⁻¹ · (ĝ − mean(ĝ) − x̂ · mean(ĝ·x̂))      dγ_c = Σ dy·x̂      dβ_c = Σ dy
//! ```

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use super::host::{cpu_f32, storage_f32, to_candle, view_f32};
use super::norm_kernels::{apply_plane, dot_sums, grad_plane, sums_shifted};
use crate::error::{Error, Result};

/// GroupNorm (`torch.nn.GroupNorm(groups, C, eps)`), then `max(y, 0)` when `relu`. Gradients
/// flow to `x`, `gamma` and `beta`.
///
/// # Shapes
/// `x: [N, C, H, W]`, `gamma, beta: [C]` → `[N, C, H, W]`.
pub fn group_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let (_, c, _, _) = x.dims4()?;
    if groups == 0 || c % groups != 0 || gamma.dims() != [c] || beta.dims() != [c] {
        return Err(Error::Other(format!(
            "group_norm: {c} channels must split into {groups} groups and gamma {:?} / beta {:?} \
             must be [{c}]",
            gamma.dims(),
            beta.dims()
        )));
    }
    if !(cpu_f32(x) && cpu_f32(gamma) && cpu_f32(beta)) {
        return composed(x, gamma, beta, groups, eps, relu);
    }
    let op = GroupNormOp {
        groups,
        eps: eps as f32,
        relu,
        stats: OnceLock::new(),
    };
    Ok(x.contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?)
}

/// The same from differentiable candle ops (other devices and dtypes), statistics in `f32`.
fn composed(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let dtype = x.dtype();
    let (n, c, h, w) = x.dims4()?;
    let xf = x.to_dtype(DType::F32)?.reshape((n, groups, ()))?;
    let mean = xf.mean_keepdim(D::Minus1)?;
    let xc = xf.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .reshape((n, c, h, w))?;
    let g = gamma.to_dtype(DType::F32)?.reshape((1, c, 1, 1))?;
    let b = beta.to_dtype(DType::F32)?.reshape((1, c, 1, 1))?;
    let mut y = xn.broadcast_mul(&g)?.broadcast_add(&b)?;
    if relu {
        y = y.relu()?;
    }
    Ok(y.to_dtype(dtype)?)
}

struct GroupNormOp {
    groups: usize,
    eps: f32,
    relu: bool,
    /// Per `(sample, group)`: `(mean, 1/σ)`, from the forward.
    stats: OnceLock<Vec<(f32, f32)>>,
}

/// Mean and `1/σ` of a block, shifted by its first value, accumulated in `f64`.
fn block_stats(v: &[f32], eps: f32) -> (f32, f32) {
    let k = v[0];
    let (s, ss) = sums_shifted(v, k);
    let m = v.len() as f64;
    let mean_shift = s / m;
    let var = (ss / m - mean_shift * mean_shift).max(0.0);
    (
        (k as f64 + mean_shift) as f32,
        1.0 / (var as f32 + eps).sqrt(),
    )
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "noisycxr-group-norm"
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
        let x = storage_f32(s1, l1, "group_norm input")?;
        let g = storage_f32(s2, l2, "group_norm gamma")?;
        let b = storage_f32(s3, l3, "group_norm beta")?;
        let (_, c, h, w) = l1.shape().dims4()?;
        let (hw, cg) = (h * w, c / self.groups);
        let block = (cg * hw).max(1);
        let mut y = super::alloc::overwritten_f32(x.len());
        let stats: Vec<(f32, f32)> = y
            .par_chunks_mut(block)
            .zip(x.par_chunks(block))
            .enumerate()
            .map(|(blk, (yb, xb))| {
                let (mean, inv) = block_stats(xb, self.eps);
                let c0 = (blk % self.groups) * cg;
                for j in 0..cg {
                    let scale = g[c0 + j] * inv;
                    let shift = b[c0 + j] - mean * scale;
                    let (yp, xp) = (&mut yb[j * hw..(j + 1) * hw], &xb[j * hw..(j + 1) * hw]);
                    apply_plane(yp, xp, scale, shift, self.relu);
                }
                (mean, inv)
            })
            .collect();
        let _ = self.stats.set(stats);
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
        let (hw, cg, groups) = (h * w, c / self.groups, self.groups);
        let block = (cg * hw).max(1);
        let grad = grad.contiguous()?;
        let (xv, dyv, yv, gv) = (
            view_f32(x).map_err(to_candle)?,
            view_f32(&grad).map_err(to_candle)?,
            view_f32(res).map_err(to_candle)?,
            view_f32(gamma).map_err(to_candle)?,
        );
        let (xs, dy, ys, g) = (xv.as_slice(), dyv.as_slice(), yv.as_slice(), gv.as_slice());
        let fresh;
        let stats: &Vec<(f32, f32)> = match self.stats.get() {
            Some(s) => s,
            None => {
                fresh = xs
                    .chunks(block)
                    .map(|b| block_stats(b, self.eps))
                    .collect::<Vec<_>>();
                &fresh
            }
        };
        let relu = self.relu;
        let m = block as f32;
        let mut dx = super::alloc::overwritten_f32(xs.len());
        // Per block: dx, and per channel (Σ dy·x̂, Σ dy).
        let per_channel: Vec<Vec<(f32, f32)>> = dx
            .par_chunks_mut(block)
            .enumerate()
            .map(|(blk, db)| {
                let (mean, inv) = stats[blk];
                let c0 = (blk % groups) * cg;
                let o = blk * block;
                let (xb, gb, yb) = (&xs[o..o + block], &dy[o..o + block], &ys[o..o + block]);
                let plane = |j: usize| j * hw..(j + 1) * hw;
                let mask = |j: usize| relu.then(|| &yb[plane(j)]);
                let mut sums = Vec::with_capacity(cg);
                let (mut a1, mut a2) = (0f32, 0f32);
                for j in 0..cg {
                    // Σ dy·x̂ = inv · Σ dy·(x − mean)
                    let (sd, sxc) = dot_sums(&gb[plane(j)], &xb[plane(j)], mask(j), mean);
                    let (sxh, sd) = (sxc as f32 * inv, sd as f32);
                    a1 += sd * g[c0 + j];
                    a2 += sxh * g[c0 + j];
                    sums.push((sxh, sd));
                }
                let (a1, a2) = (a1 / m, a2 / m);
                for j in 0..cg {
                    // inv · (dy·γ − a1 − x̂·a2) = a·dy + b·x + k
                    let a = inv * g[c0 + j];
                    let b = -inv * inv * a2;
                    let k = -inv * a1 - b * mean;
                    let r = plane(j);
                    grad_plane(
                        &mut db[r.clone()],
                        &gb[r.clone()],
                        &xb[r],
                        mask(j),
                        (a, b, k),
                    );
                }
                sums
            })
            .collect();
        let (mut dg, mut dbeta) = (vec![0f32; c], vec![0f32; c]);
        for (blk, sums) in per_channel.iter().enumerate() {
            let c0 = (blk % groups) * cg;
            for (j, (sxh, sd)) in sums.iter().enumerate() {
                dg[c0 + j] += sxh;
                dbeta[c0 + j] += sd;
            }
        }
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, (n, c, h, w), dev)?),
            Some(Tensor::from_vec(dg, c, dev)?),
            Some(Tensor::from_vec(dbeta, c, dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{max_rel_err, random};
    use candle_core::Var;

    #[test]
    fn matches_composed_group_norm_with_gradients() {
        for (shape, groups, relu, offset) in [
            (vec![2usize, 6, 5, 7], 3usize, false, 0.0),
            (vec![3, 8, 4, 4], 2, true, 0.0),
            (vec![2, 4, 3, 3], 4, true, 50.0),
            (vec![1, 6, 1, 1], 1, false, 0.0),
        ] {
            let c = shape[1];
            let x = Var::from_tensor(&(random(&shape, 1) + offset).unwrap()).unwrap();
            let g = Var::from_tensor(&(random(&[c], 2) + 1.0).unwrap()).unwrap();
            let b = Var::from_tensor(&random(&[c], 3)).unwrap();
            let ours = group_norm(&x, &g, &b, groups, 1e-5, relu).unwrap();
            let refr = composed(&x, &g, &b, groups, 1e-5, relu).unwrap();
            assert!(max_rel_err(&ours, &refr) < 1e-4, "forward {shape:?}");
            let up = random(&shape, 4);
            let g1 = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (refr * &up).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, v) in [("x", &x), ("gamma", &g), ("beta", &b)] {
                let e = max_rel_err(g1.get(v).unwrap(), g2.get(v).unwrap());
                assert!(
                    e < 1e-4,
                    "{name} grad {shape:?} groups {groups} relu {relu}: rel err {e}"
                );
            }
        }
    }
}
