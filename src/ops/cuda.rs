//! Our CUDA kernels (`src/ops/cuda/kernels.cu`, compiled to PTX by `build.rs` for
//! `--features cuda`): the fused AdamW update, the `f16` overflow check, and the forward and
//! backward of softmax and LayerNorm over the last dimension. Each reads and writes its tensors
//! in their own dtype (`f32`, `bf16`, `f16`) and computes in `f32`.
//!
//! Without them these run as candle ops on the GPU: about a dozen kernel launches per parameter
//! for AdamW (plus the `bf16` ↔ `f32` master casts), five to a dozen tensor passes for each norm
//! and softmax, with `f32` up-casts of every intermediate.

use std::sync::Arc;

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cuda_backend::cudarc::driver::{
    CudaStream, DevicePtr, LaunchConfig, PushKernelArg, SyncOnDrop,
};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{bail, CudaDevice, CudaStorage, DType, Layout, Shape, Storage, Tensor};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/noisycxr_kernels.ptx"));
const MODULE: &str = "noisycxr";
/// Rows per block of the warp-per-row kernels (`blockDim = (32, ROWS)`).
const ROWS: u32 = 8;
/// Rows per chunk of LayerNorm's column sums (`LN_CHUNK` in the kernel source).
const LN_CHUNK: usize = 64;

/// Whether `t` lives on a CUDA device in a dtype our kernels take.
pub fn supported(t: &Tensor) -> bool {
    t.device().is_cuda() && matches!(t.dtype(), DType::F32 | DType::BF16 | DType::F16)
}

/// The CPU side of a GPU-only backward op: an error (the CPU backward is fused into the forward
/// op's own `bwd`, so this is never reached).
pub(crate) fn cuda_only<T>(op: &str) -> candle_core::Result<T> {
    bail!("{op} runs on CUDA only (on the CPU the backward is fused into the forward op)")
}

/// The kernel-name suffix of a dtype.
fn suffix(dt: DType) -> candle_core::Result<&'static str> {
    Ok(match dt {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        d => bail!("noisycxr CUDA kernels take f32, bf16 or f16, not {d:?}"),
    })
}

/// The device address of element `offset` of `s` (which must be `f32`, `bf16` or `f16`) and the
/// guard that records its use on `stream` when dropped (keep it until after the launch).
fn addr<'a>(
    s: &'a CudaStorage,
    offset: usize,
    stream: &'a CudaStream,
) -> candle_core::Result<(u64, SyncOnDrop<'a>)> {
    let (ptr, guard, size) = match &s.slice {
        CudaStorageSlice::F32(x) => {
            let (p, g) = x.device_ptr(stream);
            (p, g, 4)
        }
        CudaStorageSlice::BF16(x) => {
            let (p, g) = x.device_ptr(stream);
            (p, g, 2)
        }
        CudaStorageSlice::F16(x) => {
            let (p, g) = x.device_ptr(stream);
            (p, g, 2)
        }
        _ => bail!(
            "noisycxr CUDA kernels take f32, bf16 or f16, not {:?}",
            s.dtype()
        ),
    };
    Ok((ptr + (offset * size) as u64, guard))
}

/// The first element's offset of a contiguous layout, or an error naming `what`.
fn start(l: &Layout, what: &str) -> candle_core::Result<usize> {
    match l.contiguous_offsets() {
        Some((a, _)) => Ok(a),
        None => bail!("{what}: expected a contiguous tensor"),
    }
}

/// `grid × 256` threads over `n` elements for a grid-stride loop.
fn elementwise(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 4096) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One warp per row.
fn per_row(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(ROWS as usize).max(1) as u32, 1, 1),
        block_dim: (32, ROWS, 1),
        shared_mem_bytes: 0,
    }
}

/// The CUDA storage of a tensor, read-locked.
fn cuda_storage<'a>(
    t: &'a Tensor,
    what: &str,
) -> candle_core::Result<(candle_core::StorageRef<'a>, &'a Layout)> {
    let (s, l) = t.storage_and_layout();
    if !matches!(&*s, Storage::Cuda(_)) {
        bail!(
            "{what}: expected a CUDA tensor, got one on {:?}",
            t.device().location()
        )
    }
    Ok((s, l))
}

fn as_cuda(s: &Storage) -> &CudaStorage {
    match s {
        Storage::Cuda(c) => c,
        // `cuda_storage` checked the variant.
        _ => unreachable!("checked by cuda_storage"),
    }
}

/// AdamW's per-parameter scalars, in the kernel's argument order (see `src/optim/adamw.rs`).
#[derive(Debug, Clone, Copy)]
pub struct AdamWScalars {
    pub keep: f32,
    pub gscale: f32,
    pub w1: f32,
    pub b2: f32,
    pub one_minus_b2: f32,
    pub neg_step_size: f32,
    pub bc2_sqrt: f32,
    pub eps: f32,
}

/// One fused AdamW update on the GPU: `p`, `m`, `v` (`f32`, contiguous, same length) are updated
/// in place from `g` (`f32`, or the `bf16`/`f16` of `mirror`), and when given, `mirror` (the
/// model's half-precision variable) receives the new `p` in its dtype — one launch instead of a
/// dozen candle ops and two casts.
pub fn adamw_update(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    mirror: Option<&Tensor>,
    k: AdamWScalars,
) -> candle_core::Result<()> {
    let n = p.elem_count();
    for (t, what) in [(g, "gradient"), (m, "exp_avg"), (v, "exp_avg_sq")] {
        if t.elem_count() != n {
            bail!(
                "adamw (CUDA): {what} has {} elements, the parameter {n}",
                t.elem_count()
            )
        }
    }
    for (t, what) in [(p, "parameter"), (m, "exp_avg"), (v, "exp_avg_sq")] {
        if t.dtype() != DType::F32 {
            bail!("adamw (CUDA): {what} is {:?}, expected f32", t.dtype())
        }
    }
    if let Some(ms) = mirror.map(|t| t.dtype()).filter(|&d| d != g.dtype()) {
        bail!(
            "adamw (CUDA): gradient {:?} and mirror {ms:?} differ",
            g.dtype()
        )
    }
    // The kernels are instantiated for a gradient and a mirror of one dtype.
    let sfx = suffix(g.dtype())?;
    let name = format!("adamw_{sfx}_{sfx}");
    let g = g.contiguous()?;
    let (ps, pl) = cuda_storage(p, "adamw parameter")?;
    let (gs, gl) = cuda_storage(&g, "adamw gradient")?;
    let (mst, ml) = cuda_storage(m, "adamw exp_avg")?;
    let (vs, vl) = cuda_storage(v, "adamw exp_avg_sq")?;
    let ps = as_cuda(&ps);
    let dev = ps.device().clone();
    let stream: Arc<CudaStream> = dev.cuda_stream();
    let (pp, _g1) = addr(ps, start(pl, "adamw parameter")?, &stream)?;
    let (gp, _g2) = addr(as_cuda(&gs), start(gl, "adamw gradient")?, &stream)?;
    let (mp, _g3) = addr(as_cuda(&mst), start(ml, "adamw exp_avg")?, &stream)?;
    let (vp, _g4) = addr(as_cuda(&vs), start(vl, "adamw exp_avg_sq")?, &stream)?;
    let mirror_store = match mirror {
        Some(t) => Some(cuda_storage(t, "adamw mirror")?),
        None => None,
    };
    let (mirror_ptr, _g5) = match &mirror_store {
        Some((s, l)) => {
            let (a, g) = addr(as_cuda(s), start(l, "adamw mirror")?, &stream)?;
            (a, Some(g))
        }
        None => (0u64, None),
    };
    let launch = dev.get_or_load_custom_func(&name, MODULE, PTX)?;
    let mut b = launch.builder();
    b.arg(&pp);
    b.arg(&gp);
    b.arg(&mp);
    b.arg(&vp);
    b.arg(&mirror_ptr);
    b.arg(&n);
    let s = [
        k.keep,
        k.gscale,
        k.w1,
        k.b2,
        k.one_minus_b2,
        k.neg_step_size,
        k.bc2_sqrt,
        k.eps,
    ];
    for x in &s {
        b.arg(x);
    }
    // SAFETY: the arguments match the kernel's signature; every pointer covers `n` elements.
    unsafe { b.launch(elementwise(n)) }.w()?;
    Ok(())
}

/// Whether any element of any of `ts` (CUDA, `f32`/`bf16`/`f16`) is an inf or NaN: one launch
/// per tensor into one device flag, read back once.
pub fn any_nonfinite(ts: &[Tensor]) -> candle_core::Result<bool> {
    let Some(first) = ts.first() else {
        return Ok(false);
    };
    let dev = match first.device() {
        candle_core::Device::Cuda(d) => d.clone(),
        d => bail!(
            "any_nonfinite: expected CUDA tensors, got {:?}",
            d.location()
        ),
    };
    let stream = dev.cuda_stream();
    let flag = dev.alloc_zeros::<i32>(1)?;
    for t in ts {
        let t = t.contiguous()?;
        let n = t.elem_count();
        if n == 0 {
            continue;
        }
        let (s, l) = cuda_storage(&t, "any_nonfinite")?;
        let (ptr, _g) = addr(as_cuda(&s), start(l, "any_nonfinite")?, &stream)?;
        let launch =
            dev.get_or_load_custom_func(&format!("nonfinite_{}", suffix(t.dtype())?), MODULE, PTX)?;
        let mut b = launch.builder();
        b.arg(&ptr);
        b.arg(&n);
        b.arg(&flag);
        // SAFETY: the arguments match the kernel's signature.
        unsafe { b.launch(elementwise(n)) }.w()?;
    }
    Ok(dev.clone_dtoh(&flag)?[0] != 0)
}

/// Rows and row length of a `[..., d]` layout.
fn rows_d(l: &Layout) -> (usize, usize) {
    let d = l.dims().last().copied().unwrap_or(1).max(1);
    (l.shape().elem_count() / d, d)
}

/// An uninitialised storage of `n` elements of `dt` on `dev`.
fn alloc(dev: &CudaDevice, n: usize, dt: DType) -> candle_core::Result<CudaStorage> {
    // SAFETY: every caller's kernels write all `n` elements before anything reads them.
    unsafe { dev.alloc_uninit(&Shape::from(n), dt) }
}

/// `softmax` over the last dimension of a contiguous `[..., d]` tensor.
pub fn softmax_fwd(s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
    let (rows, d) = rows_d(l);
    let dev = s.device().clone();
    let stream = dev.cuda_stream();
    let y = alloc(&dev, rows * d, s.dtype())?;
    {
        let (xp, _g1) = addr(s, start(l, "softmax input")?, &stream)?;
        let (yp, _g2) = addr(&y, 0, &stream)?;
        let launch = dev.get_or_load_custom_func(
            &format!("softmax_fwd_{}", suffix(s.dtype())?),
            MODULE,
            PTX,
        )?;
        let mut b = launch.builder();
        let di = d as i32;
        b.arg(&xp);
        b.arg(&yp);
        b.arg(&rows);
        b.arg(&di);
        // SAFETY: the arguments match the kernel's signature.
        unsafe { b.launch(per_row(rows)) }.w()?;
    }
    Ok((y, l.shape().clone()))
}

/// Softmax backward `dx = y · (dy − Σ dy·y)` from the output `y` and its gradient `dy`.
pub fn softmax_bwd(
    y: &CudaStorage,
    yl: &Layout,
    dy: &CudaStorage,
    dyl: &Layout,
) -> candle_core::Result<(CudaStorage, Shape)> {
    let (rows, d) = rows_d(yl);
    if dyl.shape() != yl.shape() || dy.dtype() != y.dtype() {
        bail!(
            "softmax backward: gradient {:?} for output {:?}",
            dyl.shape(),
            yl.shape()
        )
    }
    let dev = y.device().clone();
    let stream = dev.cuda_stream();
    let dx = alloc(&dev, rows * d, y.dtype())?;
    {
        let (yp, _g1) = addr(y, start(yl, "softmax output")?, &stream)?;
        let (gp, _g2) = addr(dy, start(dyl, "softmax gradient")?, &stream)?;
        let (xp, _g3) = addr(&dx, 0, &stream)?;
        let launch = dev.get_or_load_custom_func(
            &format!("softmax_bwd_{}", suffix(y.dtype())?),
            MODULE,
            PTX,
        )?;
        let mut b = launch.builder();
        let di = d as i32;
        b.arg(&yp);
        b.arg(&gp);
        b.arg(&xp);
        b.arg(&rows);
        b.arg(&di);
        // SAFETY: the arguments match the kernel's signature.
        unsafe { b.launch(per_row(rows)) }.w()?;
    }
    Ok((dx, yl.shape().clone()))
}

/// LayerNorm forward over the last dimension: `x: [..., d]`, `gamma, beta: [d]`, one dtype.
pub fn layer_norm_fwd(
    x: (&CudaStorage, &Layout),
    gamma: (&CudaStorage, &Layout),
    beta: (&CudaStorage, &Layout),
    eps: f32,
) -> candle_core::Result<(CudaStorage, Shape)> {
    let (rows, d) = rows_d(x.1);
    let dt = x.0.dtype();
    if gamma.0.dtype() != dt || beta.0.dtype() != dt {
        bail!("layer_norm (CUDA): input, gamma and beta must share a dtype")
    }
    let dev = x.0.device().clone();
    let stream = dev.cuda_stream();
    let y = alloc(&dev, rows * d, dt)?;
    {
        let (xp, _g1) = addr(x.0, start(x.1, "layer_norm input")?, &stream)?;
        let (gp, _g2) = addr(gamma.0, start(gamma.1, "layer_norm gamma")?, &stream)?;
        let (bp, _g3) = addr(beta.0, start(beta.1, "layer_norm beta")?, &stream)?;
        let (yp, _g4) = addr(&y, 0, &stream)?;
        let launch =
            dev.get_or_load_custom_func(&format!("layer_norm_fwd_{}", suffix(dt)?), MODULE, PTX)?;
        let mut b = launch.builder();
        let di = d as i32;
        b.arg(&xp);
        b.arg(&gp);
        b.arg(&bp);
        b.arg(&yp);
        b.arg(&rows);
        b.arg(&di);
        b.arg(&eps);
        // SAFETY: the arguments match the kernel's signature.
        unsafe { b.launch(per_row(rows)) }.w()?;
    }
    Ok((y, x.1.shape().clone()))
}

/// LayerNorm backward: one flat tensor `[dx (rows·d), dγ (d), dβ (d)]` in the input's dtype,
/// from `x: [..., d]`, `gamma: [d]` and `dy` shaped like `x`. The column sums are taken over
/// chunks of 64 rows, then the chunks in order, so the result does not depend on scheduling.
pub fn layer_norm_bwd(
    x: (&CudaStorage, &Layout),
    gamma: (&CudaStorage, &Layout),
    dy: (&CudaStorage, &Layout),
    eps: f32,
) -> candle_core::Result<(CudaStorage, Shape)> {
    let (rows, d) = rows_d(x.1);
    let dt = x.0.dtype();
    if gamma.0.dtype() != dt || dy.0.dtype() != dt || dy.1.shape() != x.1.shape() {
        bail!("layer_norm backward (CUDA): gradient, input and gamma must share dtype and shape")
    }
    let sfx = suffix(dt)?;
    let dev = x.0.device().clone();
    let stream = dev.cuda_stream();
    let total = rows * d + 2 * d;
    let out = alloc(&dev, total, dt)?;
    let chunks = rows.div_ceil(LN_CHUNK).max(1);
    let stats = alloc(&dev, 2 * rows.max(1), DType::F32)?;
    let partial = alloc(&dev, 2 * chunks * d, DType::F32)?;
    let di = d as i32;
    {
        let (xp, _g1) = addr(x.0, start(x.1, "layer_norm input")?, &stream)?;
        let (gp, _g2) = addr(gamma.0, start(gamma.1, "layer_norm gamma")?, &stream)?;
        let (dyp, _g3) = addr(dy.0, start(dy.1, "layer_norm gradient")?, &stream)?;
        let (dxp, _g4) = addr(&out, 0, &stream)?;
        let (dgp, _g5) = addr(&out, rows * d, &stream)?;
        let (dbp, _g6) = addr(&out, rows * d + d, &stream)?;
        let (sp, _g7) = addr(&stats, 0, &stream)?;
        let (pgp, _g8) = addr(&partial, 0, &stream)?;
        let (pbp, _g9) = addr(&partial, chunks * d, &stream)?;

        let rows_k = dev.get_or_load_custom_func(&format!("layer_norm_bwd_{sfx}"), MODULE, PTX)?;
        let mut b = rows_k.builder();
        for a in [&xp, &gp, &dyp, &dxp, &sp] {
            b.arg(a);
        }
        b.arg(&rows);
        b.arg(&di);
        b.arg(&eps);
        // SAFETY: the arguments match the kernel's signature.
        unsafe { b.launch(per_row(rows)) }.w()?;

        let cols = dev.get_or_load_custom_func(&format!("layer_norm_cols_{sfx}"), MODULE, PTX)?;
        let mut b = cols.builder();
        for a in [&xp, &dyp, &sp, &pgp, &pbp] {
            b.arg(a);
        }
        b.arg(&rows);
        b.arg(&di);
        let cfg = LaunchConfig {
            grid_dim: (d.div_ceil(32) as u32, chunks as u32, 1),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match the kernel's signature.
        unsafe { b.launch(cfg) }.w()?;

        let sum = dev.get_or_load_custom_func(&format!("sum_chunks_{sfx}"), MODULE, PTX)?;
        let mut b = sum.builder();
        for a in [&pgp, &pbp, &dgp, &dbp] {
            b.arg(a);
        }
        let ci = chunks as i32;
        b.arg(&ci);
        b.arg(&di);
        let cfg = LaunchConfig {
            grid_dim: (d.div_ceil(256) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match the kernel's signature.
        unsafe { b.launch(cfg) }.w()?;
    }
    Ok((out, Shape::from(total)))
}

/// GPU machines only (`--features cuda`; each test is skipped without a device): every kernel
/// against our CPU `f32` ops (themselves checked against candle's), gradients included.
#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use crate::ops::testutil::{gpu, max_rel_err, random};

    /// Tolerance of a dtype against `f32` (its rounding, a few ulps).
    fn tol(dt: DType) -> f32 {
        match dt {
            DType::F32 => 1e-4,
            DType::F16 => 4e-3,
            _ => 3e-2,
        }
    }

    /// `f` on the CPU in `f32` and on the GPU in each dtype, outputs and input gradients
    /// (with the same upstream gradient) compared.
    fn compare(
        shapes: &[Vec<usize>],
        f: impl Fn(&[Tensor]) -> crate::error::Result<Tensor>,
        what: &str,
    ) {
        let Some(dev) = gpu() else { return };
        let xs: Vec<Tensor> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| (random(s, 40 + i as u64) * 2.0).unwrap())
            .collect();
        let cpu_vars: Vec<Var> = xs.iter().map(|x| Var::from_tensor(x).unwrap()).collect();
        let cpu_in: Vec<Tensor> = cpu_vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = f(&cpu_in).unwrap();
        let up = random(y.dims(), 99);
        let gc = (&y * &up).unwrap().sum_all().unwrap().backward().unwrap();
        for dt in [DType::F32, DType::BF16, DType::F16] {
            let vars: Vec<Var> = xs
                .iter()
                .map(|x| {
                    Var::from_tensor(&x.to_dtype(dt).unwrap().to_device(&dev).unwrap()).unwrap()
                })
                .collect();
            let ins: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
            let yg = f(&ins).unwrap();
            assert_eq!(yg.dtype(), dt);
            let e = max_rel_err(&yg.to_device(&Device::Cpu).unwrap(), &y);
            assert!(e < tol(dt), "{what} {dt:?} forward: rel err {e}");
            let upg = up.to_dtype(dt).unwrap().to_device(&dev).unwrap();
            let gg = (yg * upg).unwrap().sum_all().unwrap().backward().unwrap();
            for (i, (vg, vc)) in vars.iter().zip(&cpu_vars).enumerate() {
                let a = gg.get(vg).unwrap().to_device(&Device::Cpu).unwrap();
                let b = gc.get(vc).unwrap();
                let e = max_rel_err(&a, b);
                assert!(
                    e < 4.0 * tol(dt),
                    "{what} {dt:?} gradient of input {i}: rel err {e}"
                );
            }
        }
    }

    #[test]
    fn softmax_matches_cpu() {
        for shape in [vec![3usize, 5, 197], vec![64, 17], vec![2, 1000]] {
            compare(
                &[shape.clone()],
                |x| crate::ops::softmax_last_dim(&x[0]),
                &format!("softmax {shape:?}"),
            );
        }
    }

    #[test]
    fn layer_norm_matches_cpu() {
        // 130 rows: three chunks of the column sums, the last one partial.
        for (rows, d) in [(130usize, 768usize), (7, 33), (1, 192)] {
            compare(
                &[vec![rows, d], vec![d], vec![d]],
                |x| crate::ops::layer_norm(&x[0], &x[1], &x[2], 1e-6),
                &format!("layer_norm {rows}x{d}"),
            );
        }
    }

    /// cuDNN's forward and both gradients against our CPU conv (`--features cudnn`): a ResNet
    /// stem, ResNet's 3×3 and strided 1×1, a grouped dilated conv and timm's "SAME" stride-2
    /// padding (asymmetric, padded before cuDNN).
    #[cfg(feature = "cudnn")]
    #[test]
    fn cudnn_conv_matches_cpu() {
        use crate::ops::Conv2dParams;
        let cases = [
            ([2, 3, 19, 17], [8, 3, 7, 7], Conv2dParams::new(2, 3, 1, 1)),
            ([2, 16, 9, 9], [16, 16, 3, 3], Conv2dParams::new(1, 1, 1, 1)),
            ([2, 16, 9, 9], [32, 16, 1, 1], Conv2dParams::new(2, 0, 1, 1)),
            ([2, 16, 9, 9], [16, 4, 3, 3], Conv2dParams::new(1, 2, 2, 4)),
            (
                [2, 8, 10, 11],
                [8, 8, 3, 3],
                Conv2dParams::same(10, 11, 3, 3, 2, 1, 1),
            ),
        ];
        for (x, w, p) in cases {
            compare(
                &[x.to_vec(), w.to_vec()],
                |t| crate::ops::conv2d_with(&t[0], &t[1], &p),
                &format!("cuDNN conv2d {x:?} * {w:?} {p:?}"),
            );
        }
    }

    #[test]
    fn nonfinite_flags_inf_and_nan_only() {
        let Some(dev) = gpu() else { return };
        let ok = random(&[1000], 1).to_device(&dev).unwrap();
        for dt in [DType::F32, DType::BF16, DType::F16] {
            let ok = ok.to_dtype(dt).unwrap();
            assert!(!super::any_nonfinite(&[ok.clone(), ok.clone()]).unwrap());
            for bad in [f32::INFINITY, f32::NAN] {
                let mut v = vec![0.5f32; 777];
                v[776] = bad;
                let t = Tensor::new(v.as_slice(), &dev)
                    .unwrap()
                    .to_dtype(dt)
                    .unwrap();
                assert!(
                    super::any_nonfinite(&[ok.clone(), t]).unwrap(),
                    "{dt:?} {bad}"
                );
            }
        }
    }
}
