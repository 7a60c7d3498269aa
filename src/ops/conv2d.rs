//! 2-D convolution (NCHW) with a fast CPU forward **and backward**: im2col + GEMM on the `gemm`
//! crate, parallel over the images of the batch.
//!
//! candle's own CPU conv2d backward computes the input gradient with a direct conv-transpose loop
//! and the weight gradient with a transposed conv2d; together they were 8.7 of the 10.5 s of a
//! ResNet-50 training step here. This op replaces all three passes:
//!
//! - forward: per image and group, `out[Cout_g, P] = W[Cout_g, K] @ col[K, P]`;
//! - input gradient: `dcol[K, P] = Wᵀ @ dout[Cout_g, P]`, then col2im (scatter-add);
//! - weight gradient: `dW[Cout_g, K] = Σ_images dout[Cout_g, P] @ colᵀ`, one partial sum per
//!   thread, then added.
//!
//! with `K = Cin/groups · kh · kw` and `P = Hout · Wout`. A 1x1 stride-1 unpadded convolution
//! uses the image itself as `col` (no copy). Padding may differ per side (timm's "SAME").
//!
//! 3×3 stride-1 "same" convolutions at least 64 channels wide and 8 pixels high and wide run
//! all three passes as Winograd F(2×2, 3×3) instead ([`super::winograd`]): 16 multiply-adds
//! per 2×2 output tile and channel pair instead of 36.
//!
//! With `--features cudnn`, CUDA tensors (`f32`, `bf16`, `f16`) run the same op on cuDNN
//! ([`super::cudnn`]): forward, input and weight gradients one cuDNN call each. Every other
//! device or dtype falls back to candle's `Tensor::conv2d` (padding first when it is
//! asymmetric), so CUDA keeps working through candle's kernels.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};

use super::host::storage_f32;
use super::sgemm::{sgemm, sgemm_strided, MatRef};
use super::simd::Isa;

use crate::error::{Error, Result};

/// Output channels (per group) below which the forward GEMM is computed transposed.
const NARROW_COUT: usize = 64;
/// Output pixels one GEMM should span: layers with fewer per image (the late stages: 7², 4², 2²)
/// put several images side by side in one GEMM (see [`Geom::block_images`]).
const BLOCK_COLS: usize = 256;
/// Channels (in and out) from which a 3×3 stride-1 "same" conv runs its forward and
/// gradients as Winograd F(2×2, 3×3) ([`super::winograd`]); narrower ones stay on im2col, where
/// the tile transforms weigh more against the multiplications saved (64: ResNet-50's narrowest,
/// where it was measured to pay; the tiny presets' 48-channel 8² conv, where it was not
/// measured to, stays on im2col).
const WINOGRAD_MIN_CHANNELS: usize = 64;
/// Image side from which Winograd pays: at ResNet-50's 7² the 2×2 tiles cover 8² (and the
/// transformed weights, 16/9 of the kernels, are as large as the activations), so im2col was
/// as fast there.
const WINOGRAD_MIN_SIZE: usize = 8;
/// Cap on the floats of one thread's im2col buffer when images are put side by side.
const MAX_BLOCK_FLOATS: usize = 1 << 22;

/// Geometry of a 2-D convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    /// `[vertical, horizontal]` stride, ≥ 1.
    pub stride: [usize; 2],
    /// Zero padding in pixels, `[top, bottom, left, right]`.
    pub padding: [usize; 4],
    /// `[vertical, horizontal]` dilation, ≥ 1.
    pub dilation: [usize; 2],
    /// Channel groups, ≥ 1; divides both `Cin` and `Cout`.
    pub groups: usize,
}

impl Conv2dParams {
    /// The same stride, padding and dilation on both axes and all sides (PyTorch's ints).
    pub fn new(stride: usize, padding: usize, dilation: usize, groups: usize) -> Self {
        Conv2dParams {
            stride: [stride; 2],
            padding: [padding; 4],
            dilation: [dilation; 2],
            groups,
        }
    }

    /// TensorFlow/timm "SAME" padding for an input of `h x w` and a `kh x kw` kernel: output
    /// `ceil(h / stride)`, the odd pixel of padding at the bottom/right.
    pub fn same(
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        stride: usize,
        dilation: usize,
        groups: usize,
    ) -> Self {
        let pad = |i: usize, k: usize| {
            let s = stride.max(1);
            let total = ((i.div_ceil(s)).saturating_sub(1) * s + (k.max(1) - 1) * dilation + 1)
                .saturating_sub(i);
            (total / 2, total - total / 2)
        };
        let (pt, pb) = pad(h, kh);
        let (pl, pr) = pad(w, kw);
        Conv2dParams {
            stride: [stride; 2],
            padding: [pt, pb, pl, pr],
            dilation: [dilation; 2],
            groups,
        }
    }

    /// `(padding, stride, dilation)` when all sides and both axes agree (what candle's own
    /// conv2d can express).
    fn symmetric(&self) -> Option<(usize, usize, usize)> {
        let [pt, pb, pl, pr] = self.padding;
        let sym = pt == pb
            && pt == pl
            && pt == pr
            && self.stride[0] == self.stride[1]
            && self.dilation[0] == self.dilation[1];
        sym.then_some((pt, self.stride[0], self.dilation[0]))
    }
}

/// Convolution of `x` with `w` (PyTorch semantics, no bias: add it after).
///
/// # Shapes
/// - `x`: `[N, Cin, H, W]`
/// - `w`: `[Cout, Cin / groups, kh, kw]`
/// - result: `[N, Cout, Hout, Wout]` with `Hout = (H + 2·padding − dilation·(kh − 1) − 1) / stride + 1`
///
/// Gradients flow to both `x` and `w` through candle's autograd (our kernels on CPU `f32`).
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
) -> Result<Tensor> {
    conv2d_with(x, w, &Conv2dParams::new(stride, padding, dilation, groups))
}

/// [`conv2d`] with per-axis stride/dilation and per-side padding.
///
/// # Shapes
/// As [`conv2d`], with `Hout = (H + top + bottom − dh·(kh − 1) − 1) / sh + 1` (same for `W`).
pub fn conv2d_with(x: &Tensor, w: &Tensor, p: &Conv2dParams) -> Result<Tensor> {
    Geom::new(x.dims(), w.dims(), p).map_err(Error::Other)?;
    let fast = x.device().is_cpu()
        && w.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32;
    if fast {
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        return Ok(x.apply_op2(&w, Conv2dOp { p: *p })?);
    }
    #[cfg(feature = "cudnn")]
    if super::cudnn::takes(x, w) {
        return cudnn(x, w, p);
    }
    fallback(x, w, p)
}

/// Our op on CUDA through cuDNN (`--features cudnn`); padding that differs between the two sides
/// of an axis (timm's "SAME") is added to `x` first, as cuDNN pads symmetrically.
#[cfg(feature = "cudnn")]
fn cudnn(x: &Tensor, w: &Tensor, p: &Conv2dParams) -> Result<Tensor> {
    let [pt, pb, pl, pr] = p.padding;
    let (x, p) = if pt == pb && pl == pr {
        (x.clone(), *p)
    } else {
        let x = x.pad_with_zeros(2, pt, pb)?.pad_with_zeros(3, pl, pr)?;
        (
            x,
            Conv2dParams {
                padding: [0; 4],
                ..*p
            },
        )
    };
    Ok(x.contiguous()?
        .apply_op2(&w.contiguous()?, Conv2dOp { p })?)
}

/// Both gradients of [`conv2d_with`] for an upstream gradient `grad`, without autograd (for
/// benchmarks and tests; CPU `f32` only).
///
/// # Shapes
/// `x: [N, Cin, H, W]`, `w: [Cout, Cin/groups, kh, kw]`, `grad: [N, Cout, Hout, Wout]` →
/// `(dx: [N, Cin, H, W], dw: [Cout, Cin/groups, kh, kw])`.
pub fn conv2d_backward(
    x: &Tensor,
    w: &Tensor,
    grad: &Tensor,
    p: &Conv2dParams,
) -> Result<(Tensor, Tensor)> {
    Geom::new(x.dims(), w.dims(), p).map_err(Error::Other)?;
    let (x, w, grad) = (x.contiguous()?, w.contiguous()?, grad.contiguous()?);
    let gx = w.apply_op2_no_bwd(
        &grad,
        &Conv2dGradInput {
            p: *p,
            x_dims: dims4(&x)?,
        },
    )?;
    let gw = x.apply_op2_no_bwd(
        &grad,
        &Conv2dGradWeight {
            p: *p,
            w_dims: dims4(&w)?,
        },
    )?;
    Ok((gx, gw))
}

/// candle's own convolution, for devices and dtypes our kernel does not cover.
fn fallback(x: &Tensor, w: &Tensor, p: &Conv2dParams) -> Result<Tensor> {
    if let Some((pad, stride, dil)) = p.symmetric() {
        return Ok(x.conv2d(w, pad, stride, dil, p.groups)?);
    }
    if p.stride[0] != p.stride[1] || p.dilation[0] != p.dilation[1] {
        return Err(Error::Other(format!(
            "conv2d: per-axis stride {:?} / dilation {:?} is only implemented for CPU f32 \
             (got {:?} on {:?}); use equal values on both axes",
            p.stride,
            p.dilation,
            x.dtype(),
            x.device()
        )));
    }
    let [pt, pb, pl, pr] = p.padding;
    let x = x.pad_with_zeros(2, pt, pb)?.pad_with_zeros(3, pl, pr)?;
    Ok(x.conv2d(w, 0, p.stride[0], p.dilation[0], p.groups)?)
}

/// All sizes of one convolution, checked once.
#[derive(Debug, Clone, Copy)]
struct Geom {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    sh: usize,
    sw: usize,
    pt: usize,
    pl: usize,
    dh: usize,
    dw: usize,
    groups: usize,
    cin_g: usize,
    cout_g: usize,
    pointwise: bool,
}

impl Geom {
    fn new(xd: &[usize], wd: &[usize], p: &Conv2dParams) -> std::result::Result<Self, String> {
        let (&[n, cin, h, w], &[cout, cin_g, kh, kw]) = (xd, wd) else {
            return Err(format!(
                "conv2d: input must be [N, Cin, H, W] and weight [Cout, Cin/groups, kh, kw], \
                 got {xd:?} and {wd:?}"
            ));
        };
        let [sh, sw] = p.stride;
        let [dh, dw] = p.dilation;
        let [pt, pb, pl, pr] = p.padding;
        if sh == 0 || sw == 0 || dh == 0 || dw == 0 || p.groups == 0 {
            return Err(format!(
                "conv2d: stride, dilation and groups must be ≥ 1, got {p:?}"
            ));
        }
        if cout % p.groups != 0 || cin_g * p.groups != cin || kh == 0 || kw == 0 {
            return Err(format!(
                "conv2d: weight {wd:?} does not fit input {xd:?} with groups = {} \
                 (need Cin = groups · weight dim 1 and Cout divisible by groups)",
                p.groups
            ));
        }
        let span_h = dh * (kh - 1) + 1;
        let span_w = dw * (kw - 1) + 1;
        if h + pt + pb < span_h || w + pl + pr < span_w {
            return Err(format!(
                "conv2d: kernel {kh}x{kw} (dilation {dh}x{dw}) is larger than the padded \
                 input {xd:?} with padding {:?}",
                p.padding
            ));
        }
        let oh = (h + pt + pb - span_h) / sh + 1;
        let ow = (w + pl + pr - span_w) / sw + 1;
        let pointwise = kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt + pb + pl + pr == 0;
        Ok(Geom {
            n,
            cin,
            h,
            w,
            cout,
            kh,
            kw,
            oh,
            ow,
            sh,
            sw,
            pt,
            pl,
            dh,
            dw,
            groups: p.groups,
            cin_g,
            cout_g: cout / p.groups,
            pointwise,
        })
    }

    /// A 3×3 stride-1 conv with one pixel of padding on every side, ungrouped, at least
    /// [`WINOGRAD_MIN_CHANNELS`] wide and [`WINOGRAD_MIN_SIZE`] high and wide: its forward and
    /// both gradients run as Winograd F(2×2, 3×3).
    fn winograd(&self) -> Option<super::winograd::Shape> {
        let fits = self.kh == 3
            && self.kw == 3
            && self.sh == 1
            && self.sw == 1
            && self.dh == 1
            && self.dw == 1
            && self.pt == 1
            && self.pl == 1
            && self.oh == self.h
            && self.ow == self.w
            && self.groups == 1
            && self.cin.min(self.cout) >= WINOGRAD_MIN_CHANNELS
            && self.h.min(self.w) >= WINOGRAD_MIN_SIZE;
        fits.then_some(super::winograd::Shape {
            c: self.cin,
            k: self.cout,
            h: self.h,
            w: self.w,
        })
    }

    /// The sizes as cuDNN takes them (an error for padding that differs between the sides of an
    /// axis, which [`cudnn`] removes before the op).
    #[cfg(feature = "cudnn")]
    fn cudnn(&self, p: &Conv2dParams) -> candle_core::Result<super::cudnn::ConvShape> {
        let [pt, pb, pl, pr] = p.padding;
        if pt != pb || pl != pr {
            candle_core::bail!("cuDNN conv2d: asymmetric padding {:?}", p.padding)
        }
        Ok(super::cudnn::ConvShape {
            x: [self.n, self.cin, self.h, self.w],
            w: [self.cout, self.cin_g, self.kh, self.kw],
            y: [self.n, self.cout, self.oh, self.ow],
            pad: [pt, pl],
            stride: [self.sh, self.sw],
            dilation: [self.dh, self.dw],
            groups: self.groups,
        })
    }

    /// That `dims` are this conv's output (gradient) dims.
    fn check_output(&self, dims: &[usize]) -> candle_core::Result<()> {
        if dims != [self.n, self.cout, self.oh, self.ow] {
            candle_core::bail!("noisycxr conv2d: output gradient {dims:?} does not match");
        }
        Ok(())
    }

    /// Rows of `col`: `Cin/groups · kh · kw`.
    fn k(&self) -> usize {
        self.cin_g * self.kh * self.kw
    }

    /// Output pixels per image.
    fn p(&self) -> usize {
        self.oh * self.ow
    }

    /// Images per GEMM ("block"): enough for about [`BLOCK_COLS`] output pixels, at most one
    /// thread's share of the batch (so that every thread gets a block) and within
    /// [`MAX_BLOCK_FLOATS`] of im2col buffer. 1 for layers with large outputs.
    fn block_images(&self, threads: usize) -> usize {
        let p = self.p().max(1);
        let per_thread = self.n.div_ceil(threads.max(1));
        let mem = MAX_BLOCK_FLOATS / (self.k().max(self.cout_g) * p).max(1);
        BLOCK_COLS.div_ceil(p).min(per_thread).min(mem).max(1)
    }

    /// A thread's buffers for blocks of `nb` images: the im2col matrix `[K, nb·P]` (for a
    /// pointwise conv: the gathered input or input gradient, `[Cin_g, nb·P]`; none when
    /// `nb = 1`), when `nb > 1` `[Cout_g, nb·P]` for the GEMM's output or the gathered output
    /// gradient, and the [`Geom::flat_tap`] table.
    fn scratch(&self, nb: usize) -> Scratch {
        let cols = nb * self.p();
        let col = match (self.pointwise, nb) {
            (true, 1) => 0,
            (true, _) => self.cin_g * cols,
            (false, _) => self.k() * cols,
        };
        let mat = if nb > 1 { self.cout_g * cols } else { 0 };
        Scratch {
            col: super::alloc::overwritten_f32(col),
            mat: super::alloc::overwritten_f32(mat),
            taps: (0..self.kh * self.kw)
                .map(|t| self.tap(t / self.kw, t % self.kw))
                .collect(),
        }
    }

    /// The output columns `[lo, hi)` whose input column `ox·sw + kj·dw − pl` lies inside the
    /// image.
    fn valid_cols(&self, kj: usize) -> (usize, usize) {
        let off = (kj * self.dw) as isize - self.pl as isize;
        let s = self.sw as isize;
        let lo = if off >= 0 { 0 } else { ((-off) + s - 1) / s };
        let rem = self.w as isize - off;
        let hi = if rem <= 0 { 0 } else { (rem + s - 1) / s };
        let hi = (hi as usize).min(self.ow);
        ((lo as usize).min(hi), hi)
    }

    /// How im2col and col2im copy tap `(ki, kj)`: as one run ([`Geom::flat_tap`]), through an
    /// index table when output rows are short, else row by row.
    fn tap(&self, ki: usize, kj: usize) -> Tap {
        if let Some(t) = self.flat_tap(ki, kj) {
            Tap::Flat(t)
        } else if self.ow <= TABLE_MAX_OW {
            Tap::Table(self.tap_table(ki, kj))
        } else {
            Tap::Rows
        }
    }

    /// For every output pixel `p`, the input pixel (`iy·W + ix`) tap `(ki, kj)` reads, or
    /// [`PAD`] where that lies in the padding.
    fn tap_table(&self, ki: usize, kj: usize) -> Vec<u32> {
        let mut idx = Vec::with_capacity(self.p());
        for oy in 0..self.oh {
            let iy = (oy * self.sh + ki * self.dh) as isize - self.pt as isize;
            for ox in 0..self.ow {
                let ix = (ox * self.sw + kj * self.dw) as isize - self.pl as isize;
                let inside =
                    (0..self.h as isize).contains(&iy) && (0..self.w as isize).contains(&ix);
                idx.push(if inside {
                    (iy as usize * self.w + ix as usize) as u32
                } else {
                    PAD
                });
            }
        }
        idx
    }

    /// Tap `(ki, kj)` of a stride-1 conv whose output rows are as wide as the input's
    /// (`ow = w`: "same" padding, e.g. every 3×3 stride-1 conv of a ResNet) reads the input at a
    /// fixed offset from the output index, so all its rows form one contiguous run; `None` for
    /// other convs.
    fn flat_tap(&self, ki: usize, kj: usize) -> Option<FlatTap> {
        if self.sh != 1 || self.sw != 1 || self.ow != self.w {
            return None;
        }
        let dy = (ki * self.dh) as isize - self.pt as isize;
        let dx = (kj * self.dw) as isize - self.pl as isize;
        let r0 = ((-dy).max(0) as usize).min(self.oh);
        let r1 = ((self.h as isize - dy).max(0) as usize).min(self.oh);
        let (lo, hi) = self.valid_cols(kj);
        let (a, b) = if r0 < r1 && lo < hi {
            (r0 * self.ow + lo, (r1 - 1) * self.ow + hi)
        } else {
            (0, 0)
        };
        Some(FlatTap {
            a,
            b,
            shift: dy * self.w as isize + dx,
            borders: (lo > 0 || hi < self.ow).then(|| {
                (r0..r1.saturating_sub(1))
                    .map(|oy| oy * self.ow + hi..(oy + 1) * self.ow + lo)
                    .collect()
            }),
        })
    }

    /// Fills `col[K, P]` (row stride `ld`) for group `grp` of one image `x[Cin, H, W]`;
    /// `flat` holds [`Geom::tap`] of every tap (row-major `kh x kw`).
    fn im2col(&self, x: &[f32], grp: usize, col: &mut [f32], ld: usize, flat: &[Tap]) {
        let (p, hw, isa) = (self.p(), self.h * self.w, Isa::get());
        for c in 0..self.cin_g {
            let xc = &x[(grp * self.cin_g + c) * hw..][..hw];
            for ki in 0..self.kh {
                for kj in 0..self.kw {
                    let row = (c * self.kh + ki) * self.kw + kj;
                    let dst = &mut col[row * ld..][..p];
                    let t = match &flat[ki * self.kw + kj] {
                        Tap::Table(idx) => {
                            for (d, &i) in dst.iter_mut().zip(idx) {
                                *d = xc.get(i as usize).copied().unwrap_or(0.0);
                            }
                            continue;
                        }
                        Tap::Flat(t) => Some(t),
                        Tap::Rows => None,
                    };
                    if let Some(t) = t {
                        // One copy for all rows; the border pixels it takes from the
                        // neighbouring rows are then zeroed.
                        dst[..t.a].fill(0.0);
                        dst[t.b..].fill(0.0);
                        if t.a < t.b {
                            let s0 = (t.a as isize + t.shift) as usize;
                            dst[t.a..t.b].copy_from_slice(&xc[s0..s0 + (t.b - t.a)]);
                        }
                        for r in t.borders.iter().flatten() {
                            zero_short(&mut dst[r.clone()]);
                        }
                        continue;
                    }
                    let (lo, hi) = self.valid_cols(kj);
                    let ix0 = (lo * self.sw + kj * self.dw) as isize - self.pl as isize;
                    for oy in 0..self.oh {
                        let d = &mut dst[oy * self.ow..(oy + 1) * self.ow];
                        let iy = (oy * self.sh + ki * self.dh) as isize - self.pt as isize;
                        if iy < 0 || iy >= self.h as isize || lo >= hi {
                            d.fill(0.0);
                            continue;
                        }
                        let xr = &xc[iy as usize * self.w..(iy as usize + 1) * self.w];
                        zero_short(&mut d[..lo]);
                        zero_short(&mut d[hi..]);
                        let ix0 = ix0 as usize;
                        if self.sw == 1 {
                            d[lo..hi].copy_from_slice(&xr[ix0..ix0 + (hi - lo)]);
                        } else {
                            gather_strided(&xr[ix0..], self.sw, &mut d[lo..hi], isa);
                        }
                    }
                }
            }
        }
    }

    /// Adds `col[K, P]` (row stride `ld`) back into group `grp` of one image gradient
    /// `gx[Cin, H, W]`.
    /// `col` is scratch: entries that map outside the image may be overwritten.
    fn col2im(&self, col: &mut [f32], ld: usize, grp: usize, gx: &mut [f32], flat: &[Tap]) {
        let (hw, isa) = (self.h * self.w, Isa::get());
        for c in 0..self.cin_g {
            let gc = &mut gx[(grp * self.cin_g + c) * hw..][..hw];
            for ki in 0..self.kh {
                for kj in 0..self.kw {
                    let row = (c * self.kh + ki) * self.kw + kj;
                    let src = &mut col[row * ld..][..self.p()];
                    let t = match &flat[ki * self.kw + kj] {
                        Tap::Table(idx) => {
                            // Within one tap no two output pixels read the same input pixel.
                            for (&v, &i) in src.iter().zip(idx) {
                                if let Some(g) = gc.get_mut(i as usize) {
                                    *g += v;
                                }
                            }
                            continue;
                        }
                        Tap::Flat(t) => Some(t),
                        Tap::Rows => None,
                    };
                    if let Some(t) = t {
                        // Zero the entries that fall outside the image, then one contiguous
                        // add for all rows (adding those zeros changes nothing).
                        for r in t.borders.iter().flatten() {
                            zero_short(&mut src[r.clone()]);
                        }
                        if t.a < t.b {
                            let g0 = (t.a as isize + t.shift) as usize;
                            let n = t.b - t.a;
                            for (g, v) in gc[g0..g0 + n].iter_mut().zip(&src[t.a..t.b]) {
                                *g += v;
                            }
                        }
                        continue;
                    }
                    let src = &*src;
                    let (lo, hi) = self.valid_cols(kj);
                    if lo >= hi {
                        continue;
                    }
                    let ix0 = ((lo * self.sw + kj * self.dw) as isize - self.pl as isize) as usize;
                    for oy in 0..self.oh {
                        let iy = (oy * self.sh + ki * self.dh) as isize - self.pt as isize;
                        if iy < 0 || iy >= self.h as isize {
                            continue;
                        }
                        let s = &src[oy * self.ow + lo..oy * self.ow + hi];
                        let gr = &mut gc[iy as usize * self.w..(iy as usize + 1) * self.w];
                        if self.sw == 1 {
                            for (g, v) in gr[ix0..ix0 + (hi - lo)].iter_mut().zip(s) {
                                *g += v;
                            }
                        } else {
                            add_strided(s, self.sw, &mut gr[ix0..], isa);
                        }
                    }
                }
            }
        }
    }

    /// The column matrix `[K, nb·P]` of group `grp` for the `nb` images in `x` (image `j` in
    /// columns `j·P..(j+1)·P`): the image itself for a pointwise conv of one image, else
    /// gathered or im2col'd into `buf` (`flat`: see [`Geom::im2col`]).
    fn col<'a>(
        &self,
        x: &'a [f32],
        nb: usize,
        grp: usize,
        buf: &'a mut [f32],
        flat: &[Tap],
    ) -> MatRef<'a> {
        let (p, chw) = (self.p(), self.cin * self.h * self.w);
        let cols = nb * p;
        if self.pointwise && nb == 1 {
            return MatRef::row_major(&x[grp * self.cin_g * p..][..self.cin_g * p], self.cin_g, p);
        }
        if self.pointwise {
            gather(x, chw, grp * self.cin_g, self.cin_g, p, nb, buf);
            return MatRef::row_major(&buf[..self.cin_g * cols], self.cin_g, cols);
        }
        for j in 0..nb {
            self.im2col(&x[j * chw..][..chw], grp, &mut buf[j * p..], cols, flat);
        }
        MatRef::row_major(&buf[..self.k() * cols], self.k(), cols)
    }

    /// Rows `grp·Cout_g..` of the output gradients of the `nb` images in `gout`, as one
    /// `[Cout_g, nb·P]` matrix: the image's own rows when `nb = 1`, else gathered into `buf`.
    fn gout<'a>(&self, gout: &'a [f32], nb: usize, grp: usize, buf: &'a mut [f32]) -> MatRef<'a> {
        let (p, rows) = (self.p(), self.cout_g);
        if nb == 1 {
            return MatRef::row_major(&gout[grp * rows * p..][..rows * p], rows, p);
        }
        gather(gout, self.cout * p, grp * rows, rows, p, nb, buf);
        MatRef::row_major(&buf[..rows * nb * p], rows, nb * p)
    }

    /// Forward for a block of `nb` images: `out[nb, Cout, P]` from `x[nb, Cin, H, W]`.
    fn forward_block(
        &self,
        x: &[f32],
        wt: &[f32],
        out: &mut [f32],
        nb: usize,
        s: &mut Scratch,
        threads: usize,
    ) -> std::result::Result<(), String> {
        let (k, p) = (self.k(), self.p());
        let cols = nb * p;
        for grp in 0..self.groups {
            let wg = MatRef::row_major(
                &wt[grp * self.cout_g * k..][..self.cout_g * k],
                self.cout_g,
                k,
            );
            let col = self.col(x, nb, grp, &mut s.col, &s.taps);
            let dst = if nb == 1 {
                &mut out[grp * self.cout_g * p..][..self.cout_g * p]
            } else {
                &mut s.mat[..self.cout_g * cols]
            };
            if self.cout_g < NARROW_COUT {
                // Few output channels: a short, wide product fills the GEMM microkernel badly
                // (its tile is 64 rows); compute `outᵀ = colᵀ Wᵀ` (P rows) and write it
                // through the destination strides straight into the `[Cout_g, nb·P]` layout.
                sgemm_strided(dst, 1, cols, col.t(), wg.t(), false, threads)?;
            } else {
                sgemm(dst, wg, col, false, threads)?;
            }
            if nb > 1 {
                scatter(
                    &s.mat,
                    self.cout * p,
                    grp * self.cout_g,
                    self.cout_g,
                    p,
                    nb,
                    out,
                );
            }
        }
        Ok(())
    }

    /// Input gradient for a block of `nb` images: `gx[nb, Cin, H, W]` from `gout[nb, Cout, P]`;
    /// `gx` must be zeroed by the caller unless the conv is pointwise (which overwrites it).
    fn grad_input_block(
        &self,
        gout: &[f32],
        wt: &[f32],
        gx: &mut [f32],
        nb: usize,
        s: &mut Scratch,
        threads: usize,
    ) -> std::result::Result<(), String> {
        let (k, p, chw) = (self.k(), self.p(), self.cin * self.h * self.w);
        let cols = nb * p;
        for grp in 0..self.groups {
            let wg = MatRef::row_major(
                &wt[grp * self.cout_g * k..][..self.cout_g * k],
                self.cout_g,
                k,
            );
            let g = self.gout(gout, nb, grp, &mut s.mat);
            if self.pointwise && nb == 1 {
                let dst = &mut gx[grp * self.cin_g * p..][..self.cin_g * p];
                sgemm(dst, wg.t(), g, false, threads)?;
            } else if self.pointwise {
                let dcol = &mut s.col[..self.cin_g * cols];
                sgemm(dcol, wg.t(), g, false, threads)?;
                scatter(dcol, chw, grp * self.cin_g, self.cin_g, p, nb, gx);
            } else {
                let dcol = &mut s.col[..k * cols];
                sgemm(dcol, wg.t(), g, false, threads)?;
                for j in 0..nb {
                    let gxj = &mut gx[j * chw..][..chw];
                    self.col2im(&mut dcol[j * p..], cols, grp, gxj, &s.taps);
                }
            }
        }
        Ok(())
    }

    /// Adds (or writes, when `!accumulate`) the weight gradient of a block of `nb` images into
    /// `gw[Cout, K]`.
    #[allow(clippy::too_many_arguments)]
    fn grad_weight_block(
        &self,
        x: &[f32],
        gout: &[f32],
        gw: &mut [f32],
        nb: usize,
        s: &mut Scratch,
        accumulate: bool,
        threads: usize,
    ) -> std::result::Result<(), String> {
        let k = self.k();
        let Scratch {
            col: cbuf,
            mat,
            taps,
        } = s;
        for grp in 0..self.groups {
            let g = self.gout(gout, nb, grp, mat);
            let col = self.col(x, nb, grp, cbuf, taps);
            let dst = &mut gw[grp * self.cout_g * k..][..self.cout_g * k];
            if k > self.cout_g {
                // `dWᵀ = col goutᵀ` (K rows), written through the strides. The GEMM runs its
                // long reduction (over pixels) up to 2.6x faster with the larger of `K` and
                // `Cout_g` as its rows: 64 output channels by a 3x3 conv's K = 576 ran at 67
                // GFLOP/s one way and 175 the other on one core here.
                sgemm_strided(dst, 1, k, col, g.t(), accumulate, threads)?;
            } else {
                sgemm(dst, g, col.t(), accumulate, threads)?;
            }
        }
        Ok(())
    }

    /// Runs `f(scratch, first image, block, threads)` over `out` (`n` images of `item` floats)
    /// cut into blocks of [`Geom::block_images`] ([`super::blocks::for_blocks`]).
    fn for_blocks(
        &self,
        out: &mut [f32],
        item: usize,
        f: impl Fn(&mut Scratch, usize, &mut [f32], usize) -> std::result::Result<(), String> + Sync,
    ) -> std::result::Result<(), String> {
        let threads = super::num_threads();
        let nb = self.block_images(threads);
        super::blocks::for_blocks(out, item, nb, threads, || self.scratch(nb), f)
    }
}

/// How one kernel tap's rows of the column matrix are copied (see [`Geom::tap`]).
enum Tap {
    Flat(FlatTap),
    /// [`Geom::tap_table`].
    Table(Vec<u32>),
    Rows,
}

/// Output rows at most this wide go through an index table ([`Geom::tap_table`]) rather than
/// row by row, where the set-up of each row (bounds, padding, the stride-2 gather's dispatch)
/// outweighed copying its few pixels: the small late-stage images, and the `*_tiny` presets
/// (a `resnet_tiny` step about 7 % faster on a Zen 3). 8 is not tuned: wider rows reach the
/// SIMD stride-2 gather.
const TABLE_MAX_OW: usize = 8;

/// A padding pixel in a [`Geom::tap_table`] (any index past the plane reads as 0).
const PAD: u32 = u32::MAX;

/// A tap of a stride-1 "same" conv as one contiguous run ([`Geom::flat_tap`]): output indices
/// `a..b` read input `a + shift..b + shift` (empty when the tap never touches the image); the
/// `borders` ranges inside it (the last columns of one row and the first of the next) lie
/// outside the image and must read as zero.
struct FlatTap {
    a: usize,
    b: usize,
    shift: isize,
    borders: Option<Vec<std::ops::Range<usize>>>,
}

/// One thread's buffers (see [`Geom::scratch`]).
struct Scratch {
    col: Vec<f32>,
    mat: Vec<f32>,
    /// [`Geom::tap`] of every tap, worked out once per op call rather than per image.
    taps: Vec<Tap>,
}

/// Zeroes `s`, which is mostly one or two floats long (the border pixels of a row): direct
/// stores rather than a `memset` call for each.
#[inline(always)]
fn zero_short(s: &mut [f32]) {
    match s {
        [] => {}
        [a] => *a = 0.0,
        [a, b] => {
            *a = 0.0;
            *b = 0.0;
        }
        _ => s.fill(0.0),
    }
}

/// `dst[j] = src[j·stride]` for every `j < dst.len()`: one output row of a strided conv's
/// im2col, in AVX-512 or AVX2 for stride 2 (the ResNet stem and downsampling convs) when the
/// CPU has it (`isa`, read once by the caller).
#[inline(always)]
fn gather_strided(src: &[f32], stride: usize, dst: &mut [f32], isa: Isa) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: the CPU has AVX-512F.
        Isa::Avx512 if stride == 2 => return unsafe { super::avx512::evens(src, dst) },
        // SAFETY: the CPU has AVX2 and FMA. (Rows under 8 stay in the inlined loop below:
        // the call would cost more than it saves.)
        Isa::Avx2 if stride == 2 && dst.len() >= 8 => {
            return unsafe { super::avx2::evens(src, dst) };
        }
        _ => {}
    }
    // Indexed, not `step_by`: rows here are a few pixels, and the iterator's set-up showed.
    for (j, v) in dst.iter_mut().enumerate() {
        *v = src[j * stride];
    }
}

/// The adjoint of [`gather_strided`], for col2im: `dst[j·stride] += src[j]`.
#[inline(always)]
fn add_strided(src: &[f32], stride: usize, dst: &mut [f32], isa: Isa) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: the CPU has AVX-512F.
        Isa::Avx512 if stride == 2 => return unsafe { super::avx512::add_evens(src, dst) },
        // SAFETY: the CPU has AVX2 and FMA.
        Isa::Avx2 if stride == 2 && src.len() >= 8 => {
            return unsafe { super::avx2::add_evens(src, dst) };
        }
        _ => {}
    }
    for (j, v) in src.iter().enumerate() {
        dst[j * stride] += v;
    }
}

/// Copies rows `r0..r0 + rows` (each `p` long) of `nb` consecutive items of `item` floats in
/// `src` side by side into `dst[rows, nb·p]`: item `j` goes to columns `j·p..(j+1)·p`.
fn gather(src: &[f32], item: usize, r0: usize, rows: usize, p: usize, nb: usize, dst: &mut [f32]) {
    let cols = nb * p;
    for j in 0..nb {
        for r in 0..rows {
            dst[r * cols + j * p..][..p].copy_from_slice(&src[j * item + (r0 + r) * p..][..p]);
        }
    }
}

/// The inverse of [`gather`]: writes `src[rows, nb·p]` back into the items' rows.
fn scatter(src: &[f32], item: usize, r0: usize, rows: usize, p: usize, nb: usize, dst: &mut [f32]) {
    let cols = nb * p;
    for j in 0..nb {
        for r in 0..rows {
            dst[j * item + (r0 + r) * p..][..p].copy_from_slice(&src[r * cols + j * p..][..p]);
        }
    }
}

fn geom(xd: &[usize], wd: &[usize], p: &Conv2dParams) -> candle_core::Result<Geom> {
    Geom::new(xd, wd, p).map_err(candle_core::Error::Msg)
}

/// Forward op; its backward calls [`Conv2dGradInput`] and [`Conv2dGradWeight`].
struct Conv2dOp {
    p: Conv2dParams,
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "noisycxr-conv2d"
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let s = geom(l1.dims(), l2.dims(), &self.p)?.cudnn(&self.p)?;
        super::cudnn::conv2d(super::cudnn::Pass::Forward, &s, (s1, l1), (s2, l2))
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = geom(l1.dims(), l2.dims(), &self.p)?;
        let x = storage_f32(s1, l1, "conv2d input")?;
        let wt = storage_f32(s2, l2, "conv2d weight")?;
        let (chw, op) = (g.cin * g.h * g.w, g.cout * g.p());
        // Every group's GEMM writes its whole block (no accumulation).
        let mut out = super::alloc::overwritten_f32(g.n * op);
        let shape = Shape::from((g.n, g.cout, g.oh, g.ow));
        if let Some(s) = g.winograd() {
            let u = super::winograd::weight_transform(wt, g.cout, g.cin, false);
            super::winograd::conv(x, &u, g.n, s, &mut out).map_err(candle_core::Error::Msg)?;
            return Ok((CpuStorage::F32(out), shape));
        }
        let res = g.for_blocks(&mut out, op, |s, i, o, threads| {
            let m = o.len() / op.max(1);
            g.forward_block(&x[i * chw..][..m * chw], wt, o, m, s, threads)
        });
        res.map_err(candle_core::Error::Msg)?;
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let gx = if x.track_op() {
            Some(w.apply_op2_no_bwd(
                &grad,
                &Conv2dGradInput {
                    p: self.p,
                    x_dims: dims4(x)?,
                },
            )?)
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(x.apply_op2_no_bwd(
                &grad,
                &Conv2dGradWeight {
                    p: self.p,
                    w_dims: dims4(w)?,
                },
            )?)
        } else {
            None
        };
        Ok((gx, gw))
    }
}

fn dims4(t: &Tensor) -> candle_core::Result<[usize; 4]> {
    let (a, b, c, d) = t.dims4()?;
    Ok([a, b, c, d])
}

/// Input gradient: `(w, dout) → dx`.
struct Conv2dGradInput {
    p: Conv2dParams,
    x_dims: [usize; 4],
}

impl CustomOp2 for Conv2dGradInput {
    fn name(&self) -> &'static str {
        "noisycxr-conv2d-grad-input"
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        // `cudnn::conv2d` checks `dy` (`l2`) against the shape.
        let s = geom(&self.x_dims, l1.dims(), &self.p)?.cudnn(&self.p)?;
        super::cudnn::conv2d(super::cudnn::Pass::Data, &s, (s1, l1), (s2, l2))
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = geom(&self.x_dims, l1.dims(), &self.p)?;
        g.check_output(l2.dims())?;
        let wt = storage_f32(s1, l1, "conv2d weight")?;
        let gout = storage_f32(s2, l2, "conv2d output gradient")?;
        let (chw, op) = (g.cin * g.h * g.w, g.cout * g.p());
        if let Some(s) = g.winograd() {
            // The same conv from the output gradient back: kernels rotated, channels swapped.
            let u = super::winograd::weight_transform(wt, g.cout, g.cin, true);
            let mut gx = super::alloc::overwritten_f32(g.n * chw);
            let back = super::winograd::Shape {
                c: s.k,
                k: s.c,
                ..s
            };
            super::winograd::conv(gout, &u, g.n, back, &mut gx).map_err(candle_core::Error::Msg)?;
            return Ok((CpuStorage::F32(gx), Shape::from(self.x_dims.to_vec())));
        }
        // A pointwise conv's GEMMs write every input gradient; col2im adds into zeros, which
        // each block writes itself (in parallel, while its part is in cache).
        let mut gx = super::alloc::overwritten_f32(g.n * chw);
        let res = g.for_blocks(&mut gx, chw, |s, i, d, threads| {
            if !g.pointwise {
                d.fill(0.0);
            }
            let m = d.len() / chw.max(1);
            g.grad_input_block(&gout[i * op..][..m * op], wt, d, m, s, threads)
        });
        res.map_err(candle_core::Error::Msg)?;
        Ok((CpuStorage::F32(gx), Shape::from(self.x_dims.to_vec())))
    }
}

/// Weight gradient: `(x, dout) → dw`.
struct Conv2dGradWeight {
    p: Conv2dParams,
    w_dims: [usize; 4],
}

impl CustomOp2 for Conv2dGradWeight {
    fn name(&self) -> &'static str {
        "noisycxr-conv2d-grad-weight"
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        // `cudnn::conv2d` checks `dy` (`l2`) against the shape.
        let s = geom(l1.dims(), &self.w_dims, &self.p)?.cudnn(&self.p)?;
        super::cudnn::conv2d(super::cudnn::Pass::Filter, &s, (s1, l1), (s2, l2))
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = geom(l1.dims(), &self.w_dims, &self.p)?;
        g.check_output(l2.dims())?;
        let x = storage_f32(s1, l1, "conv2d input")?;
        let gout = storage_f32(s2, l2, "conv2d output gradient")?;
        if let Some(s) = g.winograd() {
            let gw =
                super::winograd::grad_weight(x, gout, g.n, s).map_err(candle_core::Error::Msg)?;
            return Ok((CpuStorage::F32(gw), Shape::from(self.w_dims.to_vec())));
        }
        let (chw, op, wlen) = (g.cin * g.h * g.w, g.cout * g.p(), g.cout * g.k());
        let threads = super::num_threads();
        let nb = g.block_images(threads);
        let gw = super::blocks::sum_blocks(
            g.n,
            nb,
            threads,
            wlen,
            || g.scratch(nb),
            |acc, s, b, m, accumulate, threads| {
                let (xb, gb) = (&x[b * chw..][..m * chw], &gout[b * op..][..m * op]);
                g.grad_weight_block(xb, gb, acc, m, s, accumulate, threads)
            },
        )
        .map_err(candle_core::Error::Msg)?;
        Ok((CpuStorage::F32(gw), Shape::from(self.w_dims.to_vec())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{max_rel_err, random};
    use candle_core::Var;

    /// Forward, input gradient and weight gradient against candle's own conv2d (whose gradients
    /// match PyTorch within 5e-5, DESIGN §8), with a random upstream gradient.
    fn check(
        x_shape: &[usize],
        w_shape: &[usize],
        stride: usize,
        pad: usize,
        dil: usize,
        groups: usize,
    ) {
        let x = Var::from_tensor(&random(x_shape, 1)).unwrap();
        let w = Var::from_tensor(&random(w_shape, 2)).unwrap();
        let ours = conv2d(&x, &w, stride, pad, dil, groups).unwrap();
        let reference = x.conv2d(&w, pad, stride, dil, groups).unwrap();
        assert_eq!(ours.dims(), reference.dims());
        let e = max_rel_err(&ours, &reference);
        assert!(e < 1e-4, "forward {x_shape:?} {w_shape:?}: rel err {e}");
        let up = random(reference.dims(), 3);
        let g_ours = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let g_ref = (reference * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, v) in [("input", &x), ("weight", &w)] {
            let e = max_rel_err(g_ours.get(v).unwrap(), g_ref.get(v).unwrap());
            assert!(
                e < 1e-4,
                "{name} grad {x_shape:?} {w_shape:?} s{stride} p{pad}: rel err {e}"
            );
        }
    }

    #[test]
    fn matches_candle_conv2d_forward_and_gradients() {
        // (x, w, stride, padding, dilation, groups); batches of 1 and 3 cover both schedules.
        check(&[2, 8, 9, 9], &[6, 8, 1, 1], 1, 0, 1, 1); // pointwise
        check(&[3, 8, 9, 7], &[6, 8, 1, 1], 2, 0, 1, 1); // strided 1x1 downsample, non-square
        check(&[2, 4, 10, 10], &[5, 4, 3, 3], 1, 1, 1, 1); // 3x3 s1 p1
                                                           // 3x3 s2 p1, odd non-square size. (candle's own backward fails on 11x10 here: it takes
                                                           // the conv-transpose output padding from the height only — a shape-mismatch error.)
        check(&[3, 4, 11, 9], &[5, 4, 3, 3], 2, 1, 1, 1);
        check(&[2, 3, 20, 18], &[4, 3, 7, 7], 2, 3, 1, 1); // ResNet stem 7x7 s2 p3
        check(&[1, 2, 9, 75], &[3, 2, 7, 7], 2, 3, 1, 1); // stride-2 rows of 38: 16 + 16 + 6
        check(&[1, 4, 12, 9], &[6, 4, 3, 3], 1, 2, 2, 1); // dilation 2, batch 1
        check(&[2, 6, 8, 8], &[4, 3, 3, 3], 1, 1, 1, 2); // grouped
                                                         // Output rows of at most TABLE_MAX_OW pixels go through index tables, wider ones row
                                                         // by row: a "valid" dilated conv (3 wide), and a "valid" stride-1 conv 18 wide.
        check(&[2, 3, 9, 7], &[4, 3, 3, 3], 1, 0, 2, 1);
        check(&[1, 2, 5, 20], &[3, 2, 3, 3], 1, 0, 1, 1);
        check(&[2, 3, 32, 32], &[8, 3, 16, 16], 16, 0, 1, 1); // ViT patch embedding
                                                              // ≥ NARROW_COUT output channels per group: the untransposed GEMMs.
        check(&[2, 5, 6, 6], &[64, 5, 3, 3], 1, 1, 1, 1);
        check(&[2, 8, 5, 5], &[128, 4, 1, 1], 1, 0, 1, 2); // grouped, 64 per group
                                                           // The weight gradient's orientation follows K vs Cout_g: K = 72 > 64 (transposed, wide)
                                                           // and K = 2 < 20 (untransposed, narrow).
        check(&[2, 8, 6, 6], &[64, 8, 3, 3], 1, 1, 1, 1);
        check(&[3, 2, 6, 5], &[20, 2, 1, 1], 1, 0, 1, 1);
        // Winograd F(2x2, 3x3): odd and even sizes, a batch of one, blocks of images.
        for (x, w) in [
            ([3, 64, 9, 8], [72, 64, 3, 3]),
            ([1, 80, 8, 11], [64, 80, 3, 3]),
        ] {
            assert!(Geom::new(&x, &w, &Conv2dParams::new(1, 1, 1, 1))
                .unwrap()
                .winograd()
                .is_some());
            check(&x, &w, 1, 1, 1, 1);
        }
    }

    /// Small outputs put several images side by side in one GEMM ([`Geom::block_images`]):
    /// full and partial blocks, pointwise (gathered), grouped, both GEMM orientations.
    #[test]
    fn blocks_of_images_match_candle_conv2d() {
        for threads in [1, 2] {
            let g = Geom::new(
                &[7, 6, 4, 4],
                &[10, 6, 3, 3],
                &Conv2dParams::new(1, 1, 1, 1),
            )
            .unwrap();
            assert!(g.block_images(threads) > 1, "{threads} threads");
        }
        check(&[7, 6, 4, 4], &[10, 6, 3, 3], 1, 1, 1, 1); // 7 images: a partial last block
        check(&[8, 6, 4, 4], &[70, 6, 3, 3], 2, 1, 1, 1);
        check(&[9, 6, 3, 3], &[5, 6, 1, 1], 1, 0, 1, 1); // pointwise, narrow
        check(&[8, 6, 2, 2], &[72, 6, 1, 1], 1, 0, 1, 1); // pointwise, wide
        check(&[6, 6, 5, 5], &[4, 3, 3, 3], 2, 1, 1, 2); // grouped
        check(&[5, 8, 3, 3], &[128, 4, 1, 1], 1, 0, 1, 2); // grouped pointwise, 64 per group
    }

    /// Stride-1 "same" convs copy each tap in one run ([`Geom::flat_tap`]), including taps that
    /// miss the image entirely (1×1 and 1-pixel-high inputs, dilation) and wider padding.
    #[test]
    fn stride_one_same_convs_match_candle_conv2d() {
        check(&[2, 3, 1, 1], &[4, 3, 3, 3], 1, 1, 1, 1);
        check(&[2, 3, 1, 5], &[4, 3, 3, 3], 1, 1, 1, 1);
        check(&[2, 3, 6, 5], &[4, 3, 5, 5], 1, 2, 1, 1);
        check(&[2, 3, 7, 7], &[4, 3, 3, 3], 1, 2, 2, 1); // dilation 2, padding 2
        check(&[2, 3, 4, 4], &[4, 3, 3, 3], 1, 4, 4, 1); // dilated taps beyond the image
    }

    #[test]
    fn same_padding_matches_explicit_zero_padding() {
        // timm's StdConv2dSame on 224² with a 7x7 stride-2 kernel pads 2 top/left, 3 bottom/right.
        let p = Conv2dParams::same(224, 224, 7, 7, 2, 1, 1);
        assert_eq!(p.padding, [2, 3, 2, 3]);
        let p = Conv2dParams::same(13, 10, 3, 3, 2, 1, 1);
        let x = Var::from_tensor(&random(&[2, 3, 13, 10], 4)).unwrap();
        let w = Var::from_tensor(&random(&[4, 3, 3, 3], 5)).unwrap();
        let ours = conv2d_with(&x, &w, &p).unwrap();
        let [pt, pb, pl, pr] = p.padding;
        let xp = x
            .pad_with_zeros(2, pt, pb)
            .unwrap()
            .pad_with_zeros(3, pl, pr)
            .unwrap();
        let reference = xp.conv2d(&w, 0, 2, 1, 1).unwrap();
        assert_eq!(ours.dims(), &[2, 4, 7, 5]);
        assert!(max_rel_err(&ours, &reference) < 1e-4);
        let up = random(reference.dims(), 6);
        let g1 = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (reference * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&x, &w] {
            assert!(max_rel_err(g1.get(v).unwrap(), g2.get(v).unwrap()) < 1e-4);
        }
    }

    #[test]
    fn plain_input_gets_no_gradient_and_bad_shapes_are_errors() {
        let x = random(&[1, 3, 8, 8], 7);
        let w = Var::from_tensor(&random(&[2, 3, 3, 3], 8)).unwrap();
        let g = conv2d(&x, &w, 1, 1, 1, 1)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(&x).is_none());
        assert!(g.get(&w).is_some());
        let bad = random(&[2, 4, 3, 3], 9);
        let err = conv2d(&x, &bad, 1, 1, 1, 1).unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
        assert!(conv2d(&x, &w, 0, 1, 1, 1).is_err());
        assert!(conv2d(&x, &random(&[2, 3, 11, 11], 9), 1, 1, 1, 1).is_err());
    }

    #[test]
    fn non_f32_falls_back_to_candle() {
        let x = random(&[1, 2, 6, 6], 10).to_dtype(DType::F64).unwrap();
        let w = random(&[3, 2, 3, 3], 11).to_dtype(DType::F64).unwrap();
        let ours = conv2d(&x, &w, 1, 1, 1, 1).unwrap();
        let reference = x.conv2d(&w, 1, 1, 1, 1).unwrap();
        let d = (ours - reference)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(d.to_scalar::<f64>().unwrap(), 0.0);
    }
}
