//! Dropout and drop-path (stochastic depth) drawing from our seeded RNG, so training runs are
//! reproducible. A draw is keyed by `(seed, Stream::Dropout, step, site)`: `step` counts
//! training forwards of the model, `site` identifies the layer (a hash of its key prefix).

use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::Tensor;
use rand::Rng;

use crate::error::Result;
use crate::rng::{keyed, Stream};

/// What a forward pass needs to know: training or not, and which draws to use.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub train: bool,
    pub seed: u64,
    pub step: u64,
}

/// A model's training-forward counter (keys dropout draws).
#[derive(Debug, Default)]
pub struct StepCounter(AtomicU64);

impl StepCounter {
    /// The context of one forward; advances the counter when `train`.
    pub fn ctx(&self, seed: u64, train: bool) -> Ctx {
        let step = if train {
            self.0.fetch_add(1, Ordering::Relaxed)
        } else {
            self.0.load(Ordering::Relaxed)
        };
        Ctx { train, seed, step }
    }

    pub fn set(&self, step: u64) {
        self.0.store(step, Ordering::Relaxed)
    }
}

/// Keep-mask scaled by `1 / (1 - p)`, as a tensor of `shape` in `x`'s dtype and device.
fn mask(x: &Tensor, shape: &[usize], p: f32, ctx: Ctx, site: u64) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut rng = keyed(ctx.seed, Stream::Dropout, ctx.step, site);
    let keep = 1.0 - p;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            if rng.random::<f32>() < keep {
                1.0 / keep
            } else {
                0.0
            }
        })
        .collect();
    Ok(Tensor::from_vec(data, shape, x.device())?.to_dtype(x.dtype())?)
}

/// Element-wise dropout with probability `p` in training mode; identity otherwise.
///
/// # Shapes
/// any → same
pub fn dropout(x: &Tensor, p: f32, ctx: Ctx, site: u64) -> Result<Tensor> {
    if !ctx.train || p <= 0.0 {
        return Ok(x.clone());
    }
    let m = mask(x, x.dims(), p, ctx, site)?;
    Ok(x.mul(&m)?)
}

/// Drop-path: zeroes whole samples of a residual branch with probability `p` (training only).
///
/// # Shapes
/// `[N, ...]` → same
pub fn drop_path(x: &Tensor, p: f32, ctx: Ctx, site: u64) -> Result<Tensor> {
    if !ctx.train || p <= 0.0 {
        return Ok(x.clone());
    }
    let mut shape = vec![1usize; x.rank()];
    shape[0] = x.dim(0)?;
    let m = mask(x, &shape, p, ctx, site)?;
    Ok(x.broadcast_mul(&m)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn dropout_honours_train_flag_and_is_reproducible() -> Result<()> {
        let x = Tensor::ones((4, 1000), candle_core::DType::F32, &Device::Cpu)?;
        let eval = Ctx {
            train: false,
            seed: 1,
            step: 0,
        };
        assert_eq!(
            dropout(&x, 0.5, eval, 3)?.sum_all()?.to_scalar::<f32>()?,
            4000.0
        );
        let tr = Ctx {
            train: true,
            seed: 1,
            step: 0,
        };
        let a = dropout(&x, 0.25, tr, 3)?.flatten_all()?.to_vec1::<f32>()?;
        let b = dropout(&x, 0.25, tr, 3)?.flatten_all()?.to_vec1::<f32>()?;
        let c = dropout(&x, 0.25, Ctx { step: 1, ..tr }, 3)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(a, b);
        assert_ne!(a, c);
        let zeros = a.iter().filter(|v| **v == 0.0).count() as f32 / a.len() as f32;
        assert!((zeros - 0.25).abs() < 0.03, "dropped fraction {zeros}");
        assert!(a
            .iter()
            .all(|v| *v == 0.0 || (*v - 1.0 / 0.75).abs() < 1e-6));
        let d = drop_path(&x, 0.5, tr, 9)?.to_vec2::<f32>()?;
        for row in d {
            assert!(
                row.iter().all(|v| *v == row[0]),
                "drop-path drops whole samples"
            );
        }
        Ok(())
    }
}
