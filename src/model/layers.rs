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
    let (_, _, h, wd) = x.dims4()?;
    let (kh, kw) = (w.dim(2)?, w.dim(3)?);
    // candle 0.11's conv2d backward derives the transposed conv's output padding from the
    // height alone and applies it to the width too, so a strided conv whose height and width
    // leave different remainders (e.g. 20×18 at stride 2) fails in backward. Pad / crop the
    // input explicitly so that both remainders are 0, and convolve without padding.
    let rem = |size: usize, k: usize| {
        (size + 2 * padding).saturating_sub(dilation * (k - 1) + 1) % stride
    };
    let y = if stride > 1 && rem(h, kh) != rem(wd, kw) {
        let fit = |x: &Tensor, dim: usize, size: usize, k: usize| -> Result<Tensor> {
            let out = (size + 2 * padding - dilation * (k - 1) - 1) / stride + 1;
            let need = (out - 1) * stride + dilation * (k - 1) + 1;
            let after = need.saturating_sub(size + padding);
            let xp = if padding + after > 0 {
                x.pad_with_zeros(dim, padding, after)?
            } else {
                x.clone()
            };
            Ok(xp.narrow(dim, 0, need)?)
        };
        let xp = fit(&fit(x, 2, h, kh)?, 3, wd, kw)?;
        xp.conv2d(w, 0, stride, dilation, groups)?
    } else {
        x.conv2d(w, padding, stride, dilation, groups)?
    };
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
    let mut y = x2.matmul(&w.t()?)?;
    if let Some(b) = bias {
        y = y.broadcast_add(b)?;
    }
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
                let x = if ph.0 == ph.1 && pw.0 == pw.1 && ph.0 == pw.0 {
                    // Symmetric: let the convolution pad.
                    return conv2d(
                        x,
                        &w,
                        self.bias.as_ref(),
                        self.stride,
                        ph.0,
                        self.dilation,
                        self.groups,
                    );
                } else {
                    pad2d(x, ph, pw)?
                };
                conv2d(
                    &x,
                    &w,
                    self.bias.as_ref(),
                    self.stride,
                    0,
                    self.dilation,
                    self.groups,
                )
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// A strided conv on a non-square input whose sides leave different remainders (20×17 at
    /// stride 2: the candle backward trap) gives the plain conv's output and input / kernel
    /// gradients equal to those of the equivalent 20×18 input (a zero column appended, which
    /// no window of the 9-wide output reaches), where candle's backward is right.
    #[test]
    fn strided_conv_backward_on_non_square_input() -> Result<()> {
        let x = Var::from_tensor(
            &Tensor::arange(0f32, 2.0 * 3.0 * 20.0 * 17.0, &Device::Cpu)?
                .reshape((2, 3, 20, 17))?
                .affine(0.01, 0.0)?
                .sin()?,
        )?;
        let w = Var::from_tensor(
            &Tensor::arange(0f32, 4.0 * 3.0 * 9.0, &Device::Cpu)?
                .reshape((4, 3, 3, 3))?
                .affine(0.1, 0.0)?
                .cos()?,
        )?;
        let y = conv2d(&x, &w, None, 2, 1, 1, 1)?;
        assert_eq!(y.dims(), &[2, 4, 10, 9]);
        let plain = x.conv2d(&w, 1, 2, 1, 1)?;
        assert_eq!((&y - &plain)?.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
        let g = y.sqr()?.sum_all()?.backward()?;
        assert_eq!(g.get(&x).expect("input grad").dims(), &[2, 3, 20, 17]);
        // Reference: pad the width to 18 (same remainder as the height), where candle's
        // backward is right, and drop the extra column of the input gradient.
        let x2 = Var::from_tensor(&x.pad_with_zeros(3, 0, 1)?)?;
        let y2 = x2.conv2d(&w, 1, 2, 1, 1)?;
        assert_eq!(y2.dims(), &[2, 4, 10, 9]);
        let g2 = y2.sqr()?.sum_all()?.backward()?;
        let d = (g.get(&x).unwrap() - g2.get(&x2).unwrap().narrow(3, 0, 17)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d < 1e-3, "{d}");
        let dw = (g.get(&w).unwrap() - g2.get(&w).unwrap())?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(dw < 1e-2, "{dw}");
        Ok(())
    }
}
