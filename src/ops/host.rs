//! Access to the host memory of CPU `f32` tensors and storages, for our kernels.

use candle_core::{CpuStorage, DType, Layout, Storage, StorageRef, Tensor};

use crate::error::{Error, Result};

/// Whether `t` lives on the CPU as `f32` (the dtype our kernels cover).
pub(crate) fn cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// The contiguous `f32` data of a CPU storage, inside a custom op.
pub(crate) fn storage_f32<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("noisycxr op: {what} must be f32")
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("noisycxr op: {what} must be contiguous")
    };
    Ok(&v[a..b])
}

/// A read guard on a contiguous CPU `f32` tensor's memory.
pub(crate) struct F32View<'a> {
    guard: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl F32View<'_> {
    pub(crate) fn as_slice(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.end],
            _ => &[],
        }
    }
}

/// Read access to `t`'s memory; `t` must be a contiguous CPU `f32` tensor (call
/// `.contiguous()` first).
pub(crate) fn view_f32(t: &Tensor) -> Result<F32View<'_>> {
    let (guard, layout) = t.storage_and_layout();
    let ok = matches!(&*guard, Storage::Cpu(CpuStorage::F32(_)));
    match (ok, layout.contiguous_offsets()) {
        (true, Some((start, end))) => Ok(F32View { guard, start, end }),
        _ => Err(Error::Other(format!(
            "internal: expected a contiguous CPU f32 tensor, got {:?} {:?} (contiguous: {})",
            t.dtype(),
            t.device(),
            layout.is_contiguous()
        ))),
    }
}

/// Converts our error into candle's, for use inside custom ops.
pub(crate) fn to_candle(e: Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}
