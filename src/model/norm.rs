//! Normalisation layers written from differentiable candle ops: BatchNorm (with running
//! statistics in the buffer map), GroupNorm and LayerNorm (candle's fast `LayerNorm` has no
//! backward). In training on CPU f32 they run our fused kernels (`crate::ops`); elsewhere composed
//! candle ops. Statistics are computed in F32 whatever the input dtype.

use candle_core::{DType, Tensor, Var};

use super::init::Init;
use super::vars::Vb;
use crate::error::{Error, Result};

/// `BatchNorm2d` with PyTorch semantics: in training mode it normalises with the batch mean
/// and biased variance and updates `running_mean` / `running_var` (unbiased variance,
/// `momentum` 0.1); in eval mode it uses the running statistics.
///
/// Keys: `weight`, `bias` (params), `running_mean`, `running_var` (buffers).
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Var,
    pub running_var: Var,
    pub eps: f64,
    pub momentum: f64,
}

impl BatchNorm2d {
    pub fn new(vb: &Vb, c: usize) -> Result<Self> {
        Ok(BatchNorm2d {
            weight: vb.param(&[c], "weight", Init::Const(1.0))?,
            bias: vb.param(&[c], "bias", Init::Const(0.0))?,
            running_mean: vb.buffer(&[c], "running_mean", 0.0)?,
            running_var: vb.buffer(&[c], "running_var", 1.0)?,
            eps: 1e-5,
            momentum: 0.1,
        })
    }

    /// # Shapes
    /// `[N, C, H, W]` → `[N, C, H, W]`
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, train, false)
    }

    /// [`BatchNorm2d::forward`] followed by ReLU when `relu`; in training mode both run in one
    /// fused kernel ([`crate::ops::batch_norm2d_train`]).
    ///
    /// # Shapes
    /// `[N, C, H, W]` → `[N, C, H, W]`
    pub fn forward_act(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let dtype = x.dtype();
        let (n, c, h, w) = x.dims4()?;
        if train {
            let count = n * h * w;
            let out = crate::ops::batch_norm2d_train(x, &self.weight, &self.bias, self.eps, relu)?;
            let m = self.momentum;
            let unbias = count as f64 / (count as f64 - 1.0);
            let rm = self.running_mean.as_detached_tensor();
            let rv = self.running_var.as_detached_tensor();
            let mean = out.mean.to_dtype(rm.dtype())?;
            let var = out.var.to_dtype(rv.dtype())?;
            let new_rm = ((rm * (1.0 - m))? + (mean * m)?)?;
            let new_rv = ((rv * (1.0 - m))? + (var * (m * unbias))?)?;
            self.running_mean.set(&new_rm)?;
            self.running_var.set(&new_rv)?;
            Ok(out.y)
        } else {
            let rm = self
                .running_mean
                .as_detached_tensor()
                .reshape((1, c, 1, 1))?;
            let rv = self
                .running_var
                .as_detached_tensor()
                .reshape((1, c, 1, 1))?;
            let gamma = self.weight.to_dtype(DType::F32)?.reshape((1, c, 1, 1))?;
            let beta = self.bias.to_dtype(DType::F32)?.reshape((1, c, 1, 1))?;
            let scale = gamma.broadcast_div(&(rv + self.eps)?.sqrt()?)?;
            let shift = beta.broadcast_sub(&rm.broadcast_mul(&scale)?)?;
            let y = x
                .to_dtype(DType::F32)?
                .broadcast_mul(&scale)?
                .broadcast_add(&shift)?;
            let y = if relu { y.relu()? } else { y };
            Ok(y.to_dtype(dtype)?)
        }
    }
}

/// `GroupNorm(groups, C)`: per sample, mean and biased variance over each group of
/// `C / groups` channels and all positions; then a per-channel affine. Keys: `weight`, `bias`.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub groups: usize,
    pub eps: f64,
}

impl GroupNorm {
    pub fn new(vb: &Vb, groups: usize, c: usize, eps: f64) -> Result<Self> {
        if groups == 0 || c % groups != 0 {
            return Err(Error::Other(format!(
                "GroupNorm at {}: {c} channels do not split into {groups} groups",
                vb.path("weight")
            )));
        }
        Ok(GroupNorm {
            weight: vb.param(&[c], "weight", Init::Const(1.0))?,
            bias: vb.param(&[c], "bias", Init::Const(0.0))?,
            groups,
            eps,
        })
    }

    /// # Shapes
    /// `[N, C, H, W]` → `[N, C, H, W]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, false)
    }

    /// [`GroupNorm::forward`] followed by ReLU when `relu`, fused in one kernel
    /// ([`crate::ops::group_norm`]; composed candle ops off CPU `f32`).
    ///
    /// # Shapes
    /// `[N, C, H, W]` → `[N, C, H, W]`
    pub fn forward_act(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        crate::ops::group_norm(x, &self.weight, &self.bias, self.groups, self.eps, relu)
    }
}

/// LayerNorm over the last dimension (composed form, which has a backward). Keys: `weight`, `bias`.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(vb: &Vb, d: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: vb.param(&[d], "weight", Init::Const(1.0))?,
            bias: vb.param(&[d], "bias", Init::Const(0.0))?,
            eps,
        })
    }

    /// # Shapes
    /// `[..., D]` → `[..., D]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}
