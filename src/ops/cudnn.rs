//! cuDNN convolutions (`--features cudnn`): the forward pass and both gradients of
//! [`super::conv2d`]'s op on CUDA tensors in `f32`, `bf16` or `f16`, one cuDNN call each.
//!
//! Without this feature a CUDA convolution runs on candle's kernels: im2col + cuBLAS forward,
//! the input gradient as a stride-1 conv of the zero-dilated output gradient (vendored candle
//! patch 7), the weight gradient as a dilated conv of the transposed input with the transposed
//! gradient (which candle's cuDNN path does not take, its "kernel" not being contiguous). On an
//! H100 that made ResNet-50's `bf16` forward 58 ms against PyTorch's 10 (README).
//!
//! Arithmetic: `f32` accumulation for every dtype (PyTorch's choice for half types); tensor
//! cores allowed for `bf16`/`f16`, FMA only for `f32`, so `f32` convolutions stay `f32` like our
//! cuBLAS matmuls (PyTorch's default `torch.backends.cudnn.allow_tf32 = True` lets its `f32`
//! convolutions use TF32). The algorithm is cuDNN's first heuristic choice
//! (`cudnnGetConvolution*Algorithm_v7`, what PyTorch does with `cudnn.benchmark = False`), asked
//! once per shape and cached; as with PyTorch's default, it may be one whose gradients are summed
//! with atomics, so GPU results can differ in the last bits between runs.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cudnn::safe::{
    ConvBackwardData, ConvBackwardFilter, ConvForward, Cudnn,
};
use candle_core::cuda_backend::cudarc::cudnn::{sys, CudnnDataType};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr, ValidAsZeroBits};
use candle_core::cuda_backend::{CudaStorageSlice, DeviceId};
use candle_core::{bail, CudaDevice, CudaStorage, DType, Layout, Shape, Tensor, WithDType};

/// Which of a convolution's three products to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pass {
    /// `(x, w) → y`.
    Forward,
    /// `(w, dy) → dx`.
    Data,
    /// `(x, dy) → dw`.
    Filter,
}

/// A convolution's sizes as cuDNN takes them (NCHW, symmetric padding per axis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvShape {
    /// `[N, Cin, H, W]`.
    pub x: [usize; 4],
    /// `[Cout, Cin / groups, kh, kw]`.
    pub w: [usize; 4],
    /// `[N, Cout, Hout, Wout]`.
    pub y: [usize; 4],
    /// `[vertical, horizontal]` zero padding on each side.
    pub pad: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

/// Whether `x` and `w` can go through cuDNN: both on a CUDA device, in one of `f32`, `bf16`,
/// `f16`.
pub fn takes(x: &Tensor, w: &Tensor) -> bool {
    x.device().is_cuda()
        && w.device().same_device(x.device())
        && x.dtype() == w.dtype()
        && matches!(x.dtype(), DType::F32 | DType::BF16 | DType::F16)
}

/// Runs `pass` of the convolution `s` on two contiguous CUDA tensors of one dtype: `(x, w)` for
/// [`Pass::Forward`], `(w, dy)` for [`Pass::Data`], `(x, dy)` for [`Pass::Filter`]. Returns `y`,
/// `dx` or `dw` (shapes `s.y`, `s.x`, `s.w`).
pub fn conv2d(
    pass: Pass,
    s: &ConvShape,
    a: (&CudaStorage, &Layout),
    b: (&CudaStorage, &Layout),
) -> candle_core::Result<(CudaStorage, Shape)> {
    let (a_dims, b_dims, out) = match pass {
        Pass::Forward => (s.x, s.w, s.y),
        Pass::Data => (s.w, s.y, s.x),
        Pass::Filter => (s.x, s.y, s.w),
    };
    let oa = offset(a.1, &a_dims, pass, "first")?;
    let ob = offset(b.1, &b_dims, pass, "second")?;
    let dev = a.0.device().clone();
    let n = out.iter().product();
    let slice = match (&a.0.slice, &b.0.slice) {
        (CudaStorageSlice::F32(p), CudaStorageSlice::F32(q)) => {
            CudaStorageSlice::F32(run(pass, s, &p.slice(oa..), &q.slice(ob..), n, &dev)?)
        }
        (CudaStorageSlice::BF16(p), CudaStorageSlice::BF16(q)) => {
            CudaStorageSlice::BF16(run(pass, s, &p.slice(oa..), &q.slice(ob..), n, &dev)?)
        }
        (CudaStorageSlice::F16(p), CudaStorageSlice::F16(q)) => {
            CudaStorageSlice::F16(run(pass, s, &p.slice(oa..), &q.slice(ob..), n, &dev)?)
        }
        _ => bail!(
            "cuDNN conv2d takes two f32, bf16 or f16 tensors of one dtype, got {:?} and {:?}",
            a.0.dtype(),
            b.0.dtype()
        ),
    };
    Ok((
        CudaStorage { slice, device: dev },
        Shape::from(out.to_vec()),
    ))
}

/// The start of a contiguous operand of the expected dims.
fn offset(l: &Layout, dims: &[usize; 4], pass: Pass, which: &str) -> candle_core::Result<usize> {
    if l.dims() != dims {
        bail!(
            "cuDNN conv2d {pass:?}: {which} operand is {:?}, expected {dims:?}",
            l.dims()
        )
    }
    match l.contiguous_offsets() {
        Some((start, _)) => Ok(start),
        None => bail!("cuDNN conv2d {pass:?}: {which} operand is not contiguous"),
    }
}

/// A cached algorithm choice, per pass.
#[derive(Debug, Clone, Copy)]
enum Algo {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    Data(sys::cudnnConvolutionBwdDataAlgo_t),
    Filter(sys::cudnnConvolutionBwdFilterAlgo_t),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    device: DeviceId,
    dtype: DType,
    pass: Pass,
    shape: ConvShape,
}

// cuDNN handles are neither `Send` nor `Sync`, so each thread keeps its own (as candle does).
thread_local! {
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
    static ALGOS: RefCell<HashMap<Key, (Algo, usize)>> = RefCell::new(HashMap::new());
}

/// This thread's cuDNN handle on `dev`'s stream (loads libcudnn on first use).
fn handle(dev: &CudaDevice) -> candle_core::Result<Arc<Cudnn>> {
    HANDLES.with(|h| {
        if let Some(c) = h.borrow().get(&dev.id()) {
            return Ok(c.clone());
        }
        let c = Cudnn::new(dev.cuda_stream()).map_err(|e| {
            candle_core::Error::Msg(format!(
                "cuDNN could not start ({e:?}): put libcudnn.so.9 (a PyTorch CUDA wheel has it \
                 under site-packages/nvidia/cudnn/lib) on LD_LIBRARY_PATH, or build without \
                 --features cudnn"
            ))
        })?;
        h.borrow_mut().insert(dev.id(), c.clone());
        Ok(c)
    })
}

/// The cached `(algorithm, workspace bytes)` for `key`, or `pick()`'s, stored.
fn cached(
    key: Key,
    pick: impl FnOnce() -> candle_core::Result<(Algo, usize)>,
) -> candle_core::Result<(Algo, usize)> {
    if let Some(a) = ALGOS.with(|m| m.borrow().get(&key).copied()) {
        return Ok(a);
    }
    let a = pick()?;
    ALGOS.with(|m| m.borrow_mut().insert(key, a));
    Ok(a)
}

/// Sizes as cuDNN's `int`s.
fn ints<const K: usize>(d: [usize; K]) -> candle_core::Result<[i32; K]> {
    let mut out = [0i32; K];
    for (o, v) in out.iter_mut().zip(d) {
        *o = i32::try_from(v)
            .map_err(|_| candle_core::Error::Msg(format!("cuDNN conv2d: size {v} exceeds i32")))?;
    }
    Ok(out)
}

/// One cuDNN convolution call of `pass` into a new slice of `n` elements.
fn run<T>(
    pass: Pass,
    s: &ConvShape,
    a: &CudaView<'_, T>,
    b: &CudaView<'_, T>,
    n: usize,
    dev: &CudaDevice,
) -> candle_core::Result<CudaSlice<T>>
where
    T: CudnnDataType + DeviceRepr + ValidAsZeroBits + WithDType,
{
    use sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION;
    use sys::cudnnMathType_t::{CUDNN_FMA_MATH, CUDNN_TENSOR_OP_MATH};
    use sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;

    let cudnn = handle(dev)?;
    let mut conv = cudnn.create_conv2d::<f32>(
        ints(s.pad)?,
        ints(s.stride)?,
        ints(s.dilation)?,
        CUDNN_CROSS_CORRELATION,
    )?;
    conv.set_math_type(if T::DTYPE == DType::F32 {
        CUDNN_FMA_MATH
    } else {
        CUDNN_TENSOR_OP_MATH
    })?;
    if s.groups > 1 {
        conv.set_group_count(s.groups as i32)?;
    }
    let x = cudnn.create_4d_tensor::<T>(CUDNN_TENSOR_NCHW, ints(s.x)?)?;
    let w = cudnn.create_4d_filter::<T>(CUDNN_TENSOR_NCHW, ints(s.w)?)?;
    let y = cudnn.create_4d_tensor::<T>(CUDNN_TENSOR_NCHW, ints(s.y)?)?;
    let key = Key {
        device: dev.id(),
        dtype: T::DTYPE,
        pass,
        shape: *s,
    };
    // SAFETY: cuDNN writes every element of `out` (`beta = 0`: nothing is read from it).
    let mut out = unsafe { dev.alloc::<T>(n)? };
    let scale = (T::from_f64(1.0), T::from_f64(0.0));
    match pass {
        Pass::Forward => {
            let op = ConvForward {
                conv: &conv,
                x: &x,
                w: &w,
                y: &y,
            };
            let (algo, bytes) = cached(key, || {
                let a = op.pick_algorithm()?;
                Ok((Algo::Forward(a), op.get_workspace_size(a)?))
            })?;
            let Algo::Forward(algo) = algo else {
                bail!("cuDNN conv2d: cached algorithm of another pass")
            };
            let mut ws = workspace(dev, bytes)?;
            // SAFETY: `a` is `x` and `b` is `w`, both of the descriptors' dtype and sizes
            // (checked by `conv2d`); `out` holds `y`'s elements.
            unsafe { op.launch(algo, ws.as_mut(), scale, a, b, &mut out)? };
        }
        Pass::Data => {
            let op = ConvBackwardData {
                conv: &conv,
                dx: &x,
                w: &w,
                dy: &y,
            };
            let (algo, bytes) = cached(key, || {
                let a = op.pick_algorithm()?;
                Ok((Algo::Data(a), op.get_workspace_size(a)?))
            })?;
            let Algo::Data(algo) = algo else {
                bail!("cuDNN conv2d: cached algorithm of another pass")
            };
            let mut ws = workspace(dev, bytes)?;
            // SAFETY: `a` is `w` and `b` is `dy`; `out` holds `dx`'s elements.
            unsafe { op.launch(algo, ws.as_mut(), scale, &mut out, a, b)? };
        }
        Pass::Filter => {
            let op = ConvBackwardFilter {
                conv: &conv,
                x: &x,
                dw: &w,
                dy: &y,
            };
            let (algo, bytes) = cached(key, || {
                let a = op.pick_algorithm()?;
                Ok((Algo::Filter(a), op.get_workspace_size(a)?))
            })?;
            let Algo::Filter(algo) = algo else {
                bail!("cuDNN conv2d: cached algorithm of another pass")
            };
            let mut ws = workspace(dev, bytes)?;
            // SAFETY: `a` is `x` and `b` is `dy`; `out` holds `dw`'s elements.
            unsafe { op.launch(algo, ws.as_mut(), scale, a, &mut out, b)? };
        }
    }
    Ok(out)
}

/// A scratch buffer of `bytes` for cuDNN (none when it needs none).
fn workspace(dev: &CudaDevice, bytes: usize) -> candle_core::Result<Option<CudaSlice<u8>>> {
    if bytes == 0 {
        return Ok(None);
    }
    // SAFETY: cuDNN's scratch space; nothing reads it before cuDNN writes it.
    Ok(Some(unsafe { dev.alloc::<u8>(bytes)? }))
}
