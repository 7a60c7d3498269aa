//! Convolution and linear layers. Every convolution in the zoo goes through [`conv2d`] and
//! every dense layer through [`linear`], so a faster kernel can be swapped in at one place.

use candle_core::{Tensor, D};

use super::init::{torch_bias, Init};
use super::vars::Vb;
use crate::error::Result;

/// 2-D convolution, PyTorch semantics (symmetric zero padding).
///
/// # Shapes
/// - `x`: `[N, C_in, H, W]`, `w`: `[C_out, C_in / groups, kh, kw]`, `bias`: `[C_out]`
/// - returns `[N, C_out, (H + 2p - d(kh-1) - 1)/s + 1, (W + ...)/s + 1]`
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
) -> Result<Tensor> {
    let p = crate::ops::Conv2dParams::new(stride, padding, dilation, groups);
    conv2d_with(x, w, bias, &p)
}

/// [`conv2d`] with per-side padding (`[top, bottom, left, right]`), e.g. TensorFlow "SAME".
/// Every convolution of the zoo goes through here: [`crate::ops::conv2d_with`] (im2col + GEMM
/// forward and backward on CPU `f32`, candle's conv elsewhere).
///
/// # Shapes
/// As [`conv2d`], with the padding per side.
pub fn conv2d_with(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    p: &crate::ops::Conv2dParams,
) -> Result<Tensor> {
    let y = crate::ops::conv2d_with(x, w, p)?;
    match bias {
        None => Ok(y),
        Some(b) => Ok(y.broadcast_add(&b.reshape((1, (), 1, 1))?)?),
    }
}

/// Dense layer `x · wᵀ + b` over the last dimension.
///
/// # Shapes
/// - `x`: `[..., in]`, `w`: `[out, in]`, `bias`: `[out]` → `[..., out]`
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let din = *dims.last().unwrap_or(&0);
    let x2 = x.reshape(((), din))?;
    let y = match bias {
        Some(b) => crate::ops::linear_bias(&x2, w, b)?,
        None => x2.matmul(&w.t()?)?,
    };
    let mut out_dims = dims;
    if let Some(last) = out_dims.last_mut() {
        *last = w.dim(0)?;
    }
    Ok(y.reshape(out_dims)?)
}

/// TensorFlow-style "SAME" padding of one spatial side: `(before, after)` so that the output
/// has `ceil(size / stride)` positions (timm's `pad_same`).
pub fn same_padding(size: usize, kernel: usize, stride: usize, dilation: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let needed = (out.saturating_sub(1)) * stride + (kernel - 1) * dilation + 1;
    let pad = needed.saturating_sub(size);
    (pad / 2, pad - pad / 2)
}

/// Zero-pads height and width by `(top, bottom)` and `(left, right)`.
pub fn pad2d(x: &Tensor, h: (usize, usize), w: (usize, usize)) -> Result<Tensor> {
    let mut x = x.clone();
    if h != (0, 0) {
        x = x.pad_with_zeros(2, h.0, h.1)?;
    }
    if w != (0, 0) {
        x = x.pad_with_zeros(3, w.0, w.1)?;
    }
    Ok(x)
}

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Symmetric zero padding of this many pixels (PyTorch).
    Fixed(usize),
    /// Dynamic "SAME" padding computed from the input size (timm's `Conv2dSame`).
    Same,
}

/// A 2-D convolution with its weights (`{prefix}.weight`, optional `{prefix}.bias`).
/// With `standardize = Some(eps)` the weight is standardised per output channel on every
/// forward (timm's `StdConv2d`: `(w - mean) / sqrt(var + eps)`, biased variance), differentiably.
#[derive(Debug, Clone)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: usize,
    pub padding: Padding,
    pub dilation: usize,
    pub groups: usize,
    pub standardize: Option<f64>,
}

/// Options of [`Conv2d::new`].
#[derive(Debug, Clone, Copy)]
pub struct ConvCfg {
    pub stride: usize,
    pub padding: Padding,
    pub bias: bool,
    pub groups: usize,
    pub init: Init,
    pub standardize: Option<f64>,
}

impl Default for ConvCfg {
    fn default() -> Self {
        ConvCfg {
            stride: 1,
            padding: Padding::Fixed(0),
            bias: false,
            groups: 1,
            init: Init::KaimingNormalFanOut,
            standardize: None,
        }
    }
}

impl Conv2d {
    /// Creates `weight` `[c_out, c_in / groups, k, k]` (and `bias` `[c_out]`) under `vb`.
    pub fn new(vb: &Vb, c_in: usize, c_out: usize, k: usize, cfg: ConvCfg) -> Result<Self> {
        let weight = vb.param(&[c_out, c_in / cfg.groups, k, k], "weight", cfg.init)?;
        let bias = if cfg.bias {
            Some(vb.param(&[c_out], "bias", torch_bias(c_in / cfg.groups * k * k))?)
        } else {
            None
        };
        Ok(Conv2d {
            weight,
            bias,
            stride: cfg.stride,
            padding: cfg.padding,
            dilation: 1,
            groups: cfg.groups,
            standardize: cfg.standardize,
        })
    }

    /// The weight actually convolved (standardised when configured).
    pub fn effective_weight(&self) -> Result<Tensor> {
        match self.standardize {
            None => Ok(self.weight.clone()),
            Some(eps) => standardize_weight(&self.weight, eps),
        }
    }

    /// # Shapes
    /// `[N, C_in, H, W]` → `[N, C_out, H', W']`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.effective_weight()?;
        match self.padding {
            Padding::Fixed(p) => conv2d(
                x,
                &w,
                self.bias.as_ref(),
                self.stride,
                p,
                self.dilation,
                self.groups,
            ),
            Padding::Same => {
                let (_, _, h, wd) = x.dims4()?;
                let k = w.dim(2)?;
                let ph = same_padding(h, k, self.stride, self.dilation);
                let pw = same_padding(wd, w.dim(3)?, self.stride, self.dilation);
                let p = crate::ops::Conv2dParams {
                    stride: [self.stride; 2],
                    padding: [ph.0, ph.1, pw.0, pw.1],
                    dilation: [self.dilation; 2],
                    groups: self.groups,
                };
                conv2d_with(x, &w, self.bias.as_ref(), &p)
            }
        }
    }
}

/// Weight standardisation: per output channel, `(w - mean) / sqrt(var + eps)` with the biased
/// variance over `(C_in, kh, kw)` (timm's `StdConv2d`, which calls `F.batch_norm` on the weight).
/// Computed in F32.
pub fn standardize_weight(w: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = w.dtype();
    let dims = w.dims().to_vec();
    let w2 = w
        .to_dtype(candle_core::DType::F32)?
        .reshape((dims[0], ()))?;
    let mean = w2.mean_keepdim(D::Minus1)?;
    let c = w2.broadcast_sub(&mean)?;
    let var = c.sqr()?.mean_keepdim(D::Minus1)?;
    let out = c.broadcast_div(&(var + eps)?.sqrt()?)?;
    Ok(out.reshape(dims)?.to_dtype(dtype)?)
}

/// A dense layer (`{prefix}.weight` `[out, in]`, `{prefix}.bias` `[out]`).
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Weight with `init`, bias with `bias_init` (`None`: no bias).
    pub fn new(
        vb: &Vb,
        d_in: usize,
        d_out: usize,
        init: Init,
        bias_init: Option<Init>,
    ) -> Result<Self> {
        let weight = vb.param(&[d_out, d_in], "weight", init)?;
        let bias = match bias_init {
            Some(bi) => Some(vb.param(&[d_out], "bias", bi)?),
            None => None,
        };
        Ok(Linear { weight, bias })
    }

    /// PyTorch's default `nn.Linear` initialisation.
    pub fn torch(vb: &Vb, d_in: usize, d_out: usize) -> Result<Self> {
        Self::new(vb, d_in, d_out, Init::TorchDefault, Some(torch_bias(d_in)))
    }

    /// # Shapes
    /// `[..., in]` → `[..., out]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear(x, &self.weight, self.bias.as_ref())
    }
}
