//! Shared machinery of the fused CPU updates: an in-place op that hands a parameter's and its
//! gradient's `f32` memory to a closure, and moment buffers that live in plain host memory on
//! that path (a tensor elsewhere).

use std::cell::RefCell;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Tensor, Var};

use crate::error::{Error, Result};

/// Elements per parallel work item (64 KiB of `f32`): large enough to amortise rayon's
/// scheduling, small enough to balance two to sixteen threads on a 1M-element tensor.
pub(crate) const CHUNK: usize = 1 << 14;

/// Whether `var` can be updated by a fused host kernel.
pub(crate) fn host_f32(var: &Var) -> bool {
    var.device().is_cpu() && var.dtype() == DType::F32 && var.is_contiguous()
}

type Kernel<'a> = Box<dyn FnOnce(&mut [f32], &[f32]) -> std::result::Result<(), String> + 'a>;

struct Update<'a> {
    f: RefCell<Option<Kernel<'a>>>,
}

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        "noisycxr-optimizer-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let dtypes = (s1.dtype(), s2.dtype());
        let (CpuStorage::F32(p), CpuStorage::F32(g)) = (s1, s2) else {
            candle_core::bail!(
                "optimizer update: expected f32 parameter and gradient, got {dtypes:?}"
            )
        };
        let (Some((pa, pb)), Some((ga, gb))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("optimizer update: parameter and gradient must be contiguous")
        };
        if pb - pa != gb - ga {
            candle_core::bail!(
                "optimizer update: parameter has {} elements, gradient {}",
                pb - pa,
                gb - ga
            )
        }
        let Some(f) = self.f.borrow_mut().take() else {
            candle_core::bail!("optimizer update: kernel already used")
        };
        f(&mut p[pa..pb], &g[ga..gb]).map_err(candle_core::Error::Msg)
    }
}

/// Runs `f(param, grad)` on the host memory of `var` (CPU `f32`, contiguous) and `grad`.
pub(crate) fn update_host<'a>(
    var: &Var,
    grad: &Tensor,
    f: impl FnOnce(&mut [f32], &[f32]) -> std::result::Result<(), String> + 'a,
) -> Result<()> {
    let grad = grad
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .contiguous()?;
    let op = Update {
        f: RefCell::new(Some(Box::new(f))),
    };
    var.as_tensor().inplace_op2(&grad, &op)?;
    Ok(())
}

/// A per-parameter state buffer (moment, momentum).
#[derive(Debug, Clone)]
pub(crate) enum Buf {
    /// Host memory for the fused CPU `f32` path.
    Host(Vec<f32>),
    /// A tensor on the parameter's device and dtype (candle-ops path).
    Dev(Tensor),
}

impl Buf {
    pub(crate) fn zeros(var: &Var) -> Result<Buf> {
        Ok(if host_f32(var) {
            Buf::Host(vec![0.0; var.elem_count()])
        } else {
            Buf::Dev(var.as_tensor().zeros_like()?)
        })
    }

    /// A buffer holding a copy of `t` (for SGD's first momentum), in `var`'s layout.
    pub(crate) fn copy_of(var: &Var, t: &Tensor) -> Result<Buf> {
        Ok(if host_f32(var) {
            Buf::Host(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
        } else {
            Buf::Dev(t.to_dtype(var.dtype())?.to_device(var.device())?.copy()?)
        })
    }

    /// The buffer as a CPU tensor of the parameter's shape (for checkpoints).
    pub(crate) fn to_tensor(&self, var: &Var) -> Result<Tensor> {
        Ok(match self {
            Buf::Host(v) => Tensor::from_slice(v, var.shape(), &Device::Cpu)?,
            Buf::Dev(t) => t.to_device(&Device::Cpu)?,
        })
    }

    /// The host slice, or an error naming `what` if this is a device buffer.
    pub(crate) fn host_mut(&mut self, what: &str) -> Result<&mut [f32]> {
        match self {
            Buf::Host(v) => Ok(v),
            Buf::Dev(_) => Err(Error::Other(format!(
                "optimizer: {what} lives on the device but the update ran on the host"
            ))),
        }
    }

    pub(crate) fn dev(&self, var: &Var) -> Result<Tensor> {
        Ok(match self {
            Buf::Host(v) => {
                Tensor::from_slice(v, var.shape(), var.device())?.to_dtype(var.dtype())?
            }
            Buf::Dev(t) => t.clone(),
        })
    }
}
