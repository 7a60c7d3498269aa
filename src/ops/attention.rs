//! Multi-head self-attention on the fused `qkv` projection, with a one-op forward and a one-op
//! backward on the CPU.
//!
//! The tensor-op version (reshape, permute, three `contiguous` copies for q, k and v, a scaled
//! copy of q, two batched matmuls, softmax, a transpose back) costs little forward but a lot
//! backward in candle: each of `qkv.get(0..3)` returns a zero-padded full-size gradient, three
//! of which are added, and every permute and copy returns one more. This op reads q, k and v in
//! place from `qkv` (strided GEMM views), keeps one `T x T` score matrix per head, and writes the
//! gradient of `qkv` directly. The backward recomputes the scores instead of storing them.
//!
//! Per image `b` and head `h` (`q`, `k`, `v`: `[T, hd]` views, `s = hd^-½`):
//! - forward: `P = softmax(s · q kᵀ)`, `o = P v`;
//! - backward: `dv = Pᵀ do`, `dP = do vᵀ`, `dS = s · P ⊙ (dP − rowsum(P ⊙ dP))`, `dq = dS k`,
//!   `dk = dSᵀ q`.
//!
//! Other devices and dtypes use the tensor-op version.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::host::{cpu_f32, storage_f32, to_candle, view_f32};
use super::sgemm::{sgemm, MatRef};
use super::softmax::{softmax_row, softmax_row_grad};
use crate::error::{Error, Result};

/// Self-attention of timm's `Attention` after its `qkv` linear layer, before `proj`.
///
/// # Shapes
/// `qkv`: `[B, T, 3·D]`, laid out as timm's `reshape(B, T, 3, heads, D / heads)` (all heads'
/// queries, then keys, then values) → `[B, T, D]`, heads concatenated.
pub fn attention(qkv: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, d3) = qkv.dims3()?;
    if heads == 0 || d3 % (3 * heads) != 0 {
        return Err(Error::Other(format!(
            "attention: qkv width {d3} is not 3 x heads ({heads}) x head size"
        )));
    }
    let d = d3 / 3;
    if !cpu_f32(qkv) {
        return composed(qkv, b, t, d, heads);
    }
    Ok(qkv.contiguous()?.apply_op1(Attention { heads })?)
}

/// The same computation in tensor ops (other devices, and the reference of the tests).
fn composed(qkv: &Tensor, b: usize, t: usize, d: usize, heads: usize) -> Result<Tensor> {
    let hd = d / heads;
    let qkv = qkv
        .reshape((b, t, 3, heads, hd))?
        .permute((2, 0, 3, 1, 4))?;
    attend(
        &qkv.get(0)?.contiguous()?,
        &qkv.get(1)?.contiguous()?,
        &qkv.get(2)?.contiguous()?,
    )
}

/// `softmax(q kᵀ / √hd) v` per image and head in tensor ops, heads concatenated.
///
/// # Shapes
/// `q`: `[B, heads, Tq, hd]`, `k`, `v`: `[B, heads, T, hd]` (contiguous) → `[B, Tq, heads·hd]`
pub(crate) fn attend(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (b, heads, tq, hd) = q.dims4()?;
    let q = (q * (hd as f64).powf(-0.5))?;
    let attn = q.matmul(&k.t()?.contiguous()?)?;
    let attn = super::softmax_last_dim(&attn)?;
    Ok(attn
        .matmul(v)?
        .transpose(1, 2)?
        .reshape((b, tq, heads * hd))?)
}

struct Attention {
    heads: usize,
}

/// Sizes of one call.
#[derive(Clone, Copy)]
struct Dims {
    t: usize,
    d: usize,
    hd: usize,
    scale: f32,
}

impl Dims {
    fn new(t: usize, d3: usize, heads: usize) -> Dims {
        let d = d3 / 3;
        let hd = d / heads;
        Dims {
            t,
            d,
            hd,
            scale: (hd as f32).powf(-0.5),
        }
    }

    /// Head `h`'s part `which` (0 = q, 1 = k, 2 = v) of one image's `qkv` rows `[T, 3D]`.
    fn part<'a>(&self, img: &'a [f32], which: usize, h: usize) -> MatRef<'a> {
        MatRef {
            data: &img[which * self.d + h * self.hd..],
            rows: self.t,
            cols: self.hd,
            rs: 3 * self.d,
            cs: 1,
        }
    }

    /// `p = softmax(scale · q kᵀ)` row by row, `p`: `[T, T]`.
    fn probs(&self, img: &[f32], h: usize, p: &mut [f32]) -> std::result::Result<(), String> {
        let t = self.t;
        sgemm(p, self.part(img, 0, h), self.part(img, 1, h).t(), false, 1)?;
        for row in p[..t * t].chunks_mut(t) {
            softmax_row(row, self.scale);
        }
        Ok(())
    }
}

/// Copies a row-major `[T, hd]` block into columns `col..col + hd` of rows of width `width`.
fn scatter_cols(src: &[f32], dst: &mut [f32], hd: usize, width: usize, col: usize) {
    for (s, d) in src.chunks(hd).zip(dst.chunks_mut(width)) {
        d[col..col + hd].copy_from_slice(s);
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "noisycxr-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = storage_f32(s, l, "attention qkv")?;
        let (b, t, d3) = l.shape().dims3()?;
        let g = Dims::new(t, d3, self.heads);
        let mut out = super::alloc::overwritten_f32(b * t * g.d);
        out.par_chunks_mut((t * g.d).max(1))
            .zip(x.par_chunks((t * d3).max(1)))
            .try_for_each(|(o, img)| -> std::result::Result<(), String> {
                let mut p = vec![0f32; t * t];
                let mut oh = vec![0f32; t * g.hd];
                for h in 0..self.heads {
                    g.probs(img, h, &mut p)?;
                    let pm = MatRef::row_major(&p, t, t);
                    sgemm(&mut oh, pm, g.part(img, 2, h), false, 1)?;
                    scatter_cols(&oh, o, g.hd, g.d, h * g.hd);
                }
                Ok(())
            })
            .map_err(candle_core::Error::Msg)?;
        Ok((CpuStorage::F32(out), Shape::from((b, t, g.d))))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let (b, t, d3) = qkv.dims3()?;
        let g = Dims::new(t, d3, self.heads);
        let (xv, dov) = (
            view_f32(qkv).map_err(to_candle)?,
            view_f32(&grad).map_err(to_candle)?,
        );
        let (x, dout) = (xv.as_slice(), dov.as_slice());
        let mut dx = super::alloc::overwritten_f32(b * t * d3);
        dx.par_chunks_mut((t * d3).max(1))
            .zip(x.par_chunks((t * d3).max(1)))
            .zip(dout.par_chunks((t * g.d).max(1)))
            .try_for_each(
                |((dimg, img), dimg_out)| -> std::result::Result<(), String> {
                    let mut p = vec![0f32; t * t];
                    let mut dp = vec![0f32; t * t];
                    let mut blk = vec![0f32; t * g.hd];
                    for h in 0..self.heads {
                        g.probs(img, h, &mut p)?;
                        let d_o = MatRef {
                            data: &dimg_out[h * g.hd..],
                            rows: t,
                            cols: g.hd,
                            rs: g.d,
                            cs: 1,
                        };
                        // dv = Pᵀ do
                        sgemm(&mut blk, MatRef::row_major(&p, t, t).t(), d_o, false, 1)?;
                        scatter_cols(&blk, dimg, g.hd, d3, 2 * g.d + h * g.hd);
                        // dP = do vᵀ, then dS = scale · P ⊙ (dP − rowsum(P ⊙ dP)) in place.
                        sgemm(&mut dp, d_o, g.part(img, 2, h).t(), false, 1)?;
                        for (pr, dr) in p.chunks(t).zip(dp.chunks_mut(t)) {
                            softmax_row_grad(pr, dr, g.scale);
                        }
                        let ds = MatRef::row_major(&dp, t, t);
                        // dq = dS k, dk = dSᵀ q
                        sgemm(&mut blk, ds, g.part(img, 1, h), false, 1)?;
                        scatter_cols(&blk, dimg, g.hd, d3, h * g.hd);
                        sgemm(&mut blk, ds.t(), g.part(img, 0, h), false, 1)?;
                        scatter_cols(&blk, dimg, g.hd, d3, g.d + h * g.hd);
                    }
                    Ok(())
                },
            )
            .map_err(candle_core::Error::Msg)?;
        Ok(Some(Tensor::from_vec(dx, (b, t, d3), qkv.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{max_rel_err, random};
    use candle_core::Var;

    #[test]
    fn matches_the_tensor_op_version_with_gradients() -> Result<()> {
        for (b, t, heads, hd) in [(2, 5, 3, 4), (3, 17, 2, 8), (1, 1, 1, 2)] {
            let d3 = 3 * heads * hd;
            let x = Var::from_tensor(&(random(&[b, t, d3], 7) * 3.0)?)?;
            let ours = attention(&x, heads)?;
            let refr = composed(&x, b, t, heads * hd, heads)?;
            let e = max_rel_err(&ours, &refr);
            assert!(
                e < 1e-5,
                "forward rel err {e} at {b}x{t}, {heads} heads of {hd}"
            );
            let up = random(&[b, t, heads * hd], 8);
            let g1 = (ours * &up)?.sum_all()?.backward()?;
            let g2 = (refr * &up)?.sum_all()?.backward()?;
            let e = max_rel_err(g1.get(&x).unwrap(), g2.get(&x).unwrap());
            assert!(
                e < 1e-4,
                "grad rel err {e} at {b}x{t}, {heads} heads of {hd}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_width_that_does_not_split_into_heads_is_an_error() {
        let x = random(&[1, 2, 10], 1);
        assert!(attention(&x, 2).is_err());
    }
}
