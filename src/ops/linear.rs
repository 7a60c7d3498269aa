//! Fully connected layer `y = x Wᵀ + b` as one CPU op with a one-op backward.
//!
//! In candle it is a matmul, a broadcast add (one more pass, single-threaded), and a backward
//! whose weight gradient comes out transposed (`(xᵀ dy)ᵀ`, one more copy) and whose bias
//! gradient is a reduction. Here the forward is one GEMM into rows pre-filled with the bias,
//! and the backward writes `dx = dy W`, `dW = dyᵀ x` (already `[out, in]`) and `db = Σ_rows dy`.
//! Other devices and dtypes use candle's ops.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::host::{cpu_f32, storage_f32, to_candle, view_f32};
use super::sgemm::{sgemm, MatRef};
use super::simd::vectorised;
use crate::error::{Error, Result};

/// `x Wᵀ + b` on rows (`crate::model::layers::linear` flattens leading dims into them).
///
/// # Shapes
/// `x`: `[N, in]`, `w`: `[out, in]`, `b`: `[out]` → `[N, out]`.
pub fn linear_bias(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (_, din) = x.dims2()?;
    let (dout, win) = w.dims2()?;
    if win != din || b.dims() != [dout] {
        return Err(Error::Other(format!(
            "linear: input {:?}, weight {:?}, bias {:?} do not fit",
            x.dims(),
            w.dims(),
            b.dims()
        )));
    }
    if cpu_f32(x) && cpu_f32(w) && cpu_f32(b) {
        Ok(x.contiguous()?
            .apply_op3(&w.contiguous()?, &b.contiguous()?, Linear)?)
    } else {
        Ok(x.matmul(&w.t()?)?.broadcast_add(b)?)
    }
}

struct Linear;

vectorised! {
    /// `db[j] += Σ_i g[i, j]` over the rows of `g` (width `db.len()`).
    fn column_sums(db: &mut [f32], g: &[f32]) {
        for row in g.chunks(db.len().max(1)) {
            for (d, &g) in db.iter_mut().zip(row) {
                *d += g;
            }
        }
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "noisycxr-linear"
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
        let (m, k) = l1.shape().dims2()?;
        let (n, _) = l2.shape().dims2()?;
        let x = storage_f32(s1, l1, "linear input")?;
        let w = storage_f32(s2, l2, "linear weight")?;
        let b = storage_f32(s3, l3, "linear bias")?;
        let mut y = super::alloc::overwritten_f32(m * n);
        // Rows start as the bias (the GEMM adds into them), filled in parallel: single-threaded,
        // this copy was 3 % of a `vit_tiny` step.
        let n1 = n.max(1);
        y.par_chunks_mut(n1 * (1usize << 14).div_ceil(n1))
            .for_each(|c| {
                for row in c.chunks_mut(n1) {
                    row.copy_from_slice(b);
                }
            });
        let (xm, wm) = (MatRef::row_major(x, m, k), MatRef::row_major(w, n, k));
        sgemm(&mut y, xm, wm.t(), true, super::num_threads()).map_err(candle_core::Error::Msg)?;
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (m, k) = x.dims2()?;
        let (n, _) = w.dims2()?;
        let (xv, wv, gv) = (
            view_f32(x).map_err(to_candle)?,
            view_f32(w).map_err(to_candle)?,
            view_f32(&grad).map_err(to_candle)?,
        );
        let (xm, wm, dy) = (
            MatRef::row_major(xv.as_slice(), m, k),
            MatRef::row_major(wv.as_slice(), n, k),
            MatRef::row_major(gv.as_slice(), m, n),
        );
        let threads = super::num_threads();
        let mut dx = super::alloc::overwritten_f32(m * k);
        sgemm(&mut dx, dy, wm, false, threads).map_err(candle_core::Error::Msg)?;
        let mut dw = super::alloc::overwritten_f32(n * k);
        sgemm(&mut dw, dy.t(), xm, false, threads).map_err(candle_core::Error::Msg)?;
        let mut db = vec![0f32; n];
        column_sums(&mut db, gv.as_slice());
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, (m, k), dev)?),
            Some(Tensor::from_vec(dw, (n, k), dev)?),
            Some(Tensor::from_vec(db, n, dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{max_rel_err, random};
    use candle_core::Var;

    #[test]
    fn matches_candle_matmul_plus_bias_with_gradients() -> Result<()> {
        let x = Var::from_tensor(&random(&[21, 20], 1))?;
        let w = Var::from_tensor(&random(&[11, 20], 2))?;
        let b = Var::from_tensor(&random(&[11], 3))?;
        let ours = linear_bias(&x, &w, &b)?;
        let refr = x.matmul(&w.t()?)?.broadcast_add(&b)?;
        assert!(max_rel_err(&ours, &refr) < 1e-5);
        let up = random(&[21, 11], 4);
        let g1 = (ours * &up)?.sum_all()?.backward()?;
        let g2 = (refr * &up)?.sum_all()?.backward()?;
        for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
            let e = max_rel_err(g1.get(v).unwrap(), g2.get(v).unwrap());
            assert!(e < 1e-4, "{name}: grad rel err {e}");
        }
        Ok(())
    }

    #[test]
    fn shapes_that_do_not_fit_are_an_error() {
        let x = random(&[2, 5], 1);
        assert!(linear_bias(&x, &random(&[3, 4], 2), &random(&[3], 3)).is_err());
        assert!(linear_bias(&x, &random(&[3, 5], 2), &random(&[4], 3)).is_err());
    }
}
