//! Pooling with a backward pass for every kernel / stride. candle's `max_pool2d` backward only
//! works when kernel == stride (ResNet's 3×3 stride-2 stem pool is not), so max pooling here
//! is composed from `narrow` / `reshape` / `maximum`, separably over height then width (max is
//! associative, so the 2-D window max equals the max of the 1-D maxima). Works on any device
//! and dtype. At exact ties the gradient is shared between the tied inputs (candle's
//! `maximum` rule); PyTorch gives it to one of them. Ties do not occur with real-valued inputs
//! except where ReLU zeroed them, whose gradient is zero anyway.

use candle_core::{DType, Tensor};

use super::layers::same_padding;
use crate::error::{Error, Result};

/// Padding of a pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolPad {
    /// Implicit −∞ padding of this many pixels on each side (PyTorch `MaxPool2d(padding=p)`).
    Fixed(usize),
    /// Dynamic "SAME" padding with −∞ (timm's `MaxPool2dSame`): output `ceil(size / stride)`.
    Same,
}

fn neg_inf_like(x: &Tensor, dim: usize, len: usize) -> Result<Tensor> {
    let mut shape = x.dims().to_vec();
    shape[dim] = len;
    Ok(Tensor::full(f32::NEG_INFINITY, shape, x.device())?.to_dtype(x.dtype())?)
}

/// Max over windows of `k` with stride `s` along `dim`, after −∞ padding `(before, after)`.
fn max_pool_1d(x: &Tensor, dim: usize, k: usize, s: usize, pad: (usize, usize)) -> Result<Tensor> {
    let l = x.dim(dim)?;
    let lp = l + pad.0 + pad.1;
    if lp < k || k == 0 || s == 0 {
        return Err(Error::Other(format!(
            "max pool: window {k} (stride {s}) does not fit a side of {l} (+{} / +{} padding)",
            pad.0, pad.1
        )));
    }
    let out = (lp - k) / s + 1;
    let need = k - 1 + s * out;
    let extra = need.saturating_sub(lp);
    let mut parts = Vec::with_capacity(3);
    if pad.0 > 0 {
        parts.push(neg_inf_like(x, dim, pad.0)?);
    }
    parts.push(x.clone());
    if pad.1 + extra > 0 {
        parts.push(neg_inf_like(x, dim, pad.1 + extra)?);
    }
    let xp = if parts.len() == 1 {
        x.clone()
    } else {
        Tensor::cat(&parts, dim)?
    };
    let mut acc: Option<Tensor> = None;
    for j in 0..k {
        let mut v = xp.narrow(dim, j, s * out)?;
        if s > 1 {
            let mut dims = v.dims().to_vec();
            dims[dim] = out;
            dims.insert(dim + 1, s);
            v = v.reshape(dims)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)?;
        }
        acc = Some(match acc {
            None => v,
            Some(a) => a.maximum(&v)?,
        });
    }
    acc.ok_or_else(|| Error::Other("max pool with an empty window".into()))
}

/// 2-D max pooling with a square window, PyTorch floor mode.
///
/// # Shapes
/// `[N, C, H, W]` → `[N, C, H', W']`, `H' = (H + 2p - k) / s + 1` (`Fixed(p)`) or
/// `ceil(H / s)` (`Same`).
pub fn max_pool2d(x: &Tensor, k: usize, s: usize, pad: PoolPad) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (ph, pw) = match pad {
        PoolPad::Fixed(p) => ((p, p), (p, p)),
        PoolPad::Same => (same_padding(h, k, s, 1), same_padding(w, k, s, 1)),
    };
    let y = max_pool_1d(x, 2, k, s, ph)?;
    max_pool_1d(&y, 3, k, s, pw)
}

/// Average pooling with window = stride = `k` (floor mode: trailing rows / columns that do not
/// fill a window are dropped, as PyTorch's `AvgPool2d(k, k)`).
///
/// # Shapes
/// `[N, C, H, W]` → `[N, C, H / k, W / k]`
pub fn avg_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (ho, wo) = (h / k, w / k);
    if ho == 0 || wo == 0 {
        return Err(Error::Other(format!(
            "avg pool: window {k} larger than input {h}x{w}"
        )));
    }
    let x = x.narrow(2, 0, ho * k)?.narrow(3, 0, wo * k)?;
    let dtype = x.dtype();
    let y = x
        .to_dtype(DType::F32)?
        .reshape((n, c, ho, k, wo, k))?
        .mean((3, 5))?;
    Ok(y.to_dtype(dtype)?)
}

/// Global average pooling.
///
/// # Shapes
/// `[N, C, H, W]` → `[N, C]`
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    Ok(x.to_dtype(DType::F32)?.mean((2, 3))?.to_dtype(dtype)?)
}
