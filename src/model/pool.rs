//! Pooling with a backward pass for every kernel / stride. candle's `max_pool2d` backward only
//! works when kernel == stride (ResNet's 3×3 stride-2 stem pool is not).
//!
//! Max pooling has two implementations with the same semantics:
//! - CPU, F32: a custom op ([`MaxPool2dOp`]) with a direct forward that records where each
//!   output came from and a backward that sends each output's gradient there (the first maximum
//!   of its window, PyTorch's rule), in parallel over planes.
//! - any other device / dtype: composed from `narrow` / `reshape` / `maximum`, separably over
//!   height then width (the 2-D window max equals the max of the 1-D maxima). At exact ties the
//!   gradient is shared between the tied inputs (candle's `maximum` rule). Ties do not occur
//!   with real-valued inputs except where ReLU zeroed them, whose gradient is zero anyway.

use std::ops::Range;
use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::layers::same_padding;
use crate::error::{Error, Result};
use crate::ops::host::{storage_f32, to_candle, view_f32};

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
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let op = MaxPool2dOp::new(h, w, k, s, ph.0, pw.0, ph.1, pw.1)?;
        return Ok(x.apply_op1(op)?);
    }
    max_pool2d_composed(x, k, s, ph, pw)
}

/// The device-independent composition (see the module docs).
pub fn max_pool2d_composed(
    x: &Tensor,
    k: usize,
    s: usize,
    ph: (usize, usize),
    pw: (usize, usize),
) -> Result<Tensor> {
    let y = max_pool_1d(x, 2, k, s, ph)?;
    max_pool_1d(&y, 3, k, s, pw)
}

/// CPU F32 max pooling with −∞ padding `(top, left)` (bottom / right padding only widens the
/// output count). The forward records each output's source index; the backward sends each
/// output's gradient there (the first maximum of its window, PyTorch's rule).
#[derive(Debug)]
pub struct MaxPool2dOp {
    k: usize,
    s: usize,
    pt: usize,
    pl: usize,
    oh: usize,
    ow: usize,
    /// Per output, the index within its input plane of the value it took ([`NO_INPUT`] for a
    /// window entirely in the padding), from the forward.
    argmax: OnceLock<Vec<u32>>,
}

/// The source index of an output whose window holds only padding.
const NO_INPUT: u32 = u32::MAX;

impl MaxPool2dOp {
    #[allow(clippy::too_many_arguments)]
    fn new(
        h: usize,
        w: usize,
        k: usize,
        s: usize,
        pt: usize,
        pl: usize,
        pb: usize,
        pr: usize,
    ) -> Result<Self> {
        if k == 0 || s == 0 || h + pt + pb < k || w + pl + pr < k || pt >= k || pl >= k {
            return Err(Error::Other(format!(
                "max pool: window {k} (stride {s}) does not fit {h}x{w} with padding ({pt},{pl},{pb},{pr})"
            )));
        }
        if h * w >= NO_INPUT as usize {
            return Err(Error::Other(format!(
                "max pool: a {h}x{w} plane is too large (at most 2^32 - 1 pixels)"
            )));
        }
        Ok(MaxPool2dOp {
            k,
            s,
            pt,
            pl,
            oh: (h + pt + pb - k) / s + 1,
            ow: (w + pl + pr - k) / s + 1,
            argmax: OnceLock::new(),
        })
    }

    /// The input rows (or columns) covered by output row (or column) `o` along a side of `len`
    /// with leading padding `pad`.
    fn span(&self, o: usize, pad: usize, len: usize) -> Range<usize> {
        let start = (o * self.s).saturating_sub(pad);
        let end = (o * self.s + self.k).saturating_sub(pad).min(len);
        start..end.max(start)
    }

    /// One plane: `out[oy, ox]` and the index of the first maximum of its window in `arg`.
    ///
    /// Columns whose window lies inside the plane are done a window offset at a time across the
    /// whole output row (a loop the compiler vectorises); the edge columns one window at a time.
    fn plane(&self, x: &[f32], h: usize, w: usize, out: &mut [f32], arg: &mut [u32]) {
        let (k, s, pl, ow) = (self.k, self.s, self.pl, self.ow);
        // Interior columns: ox·s ≥ pl and ox·s − pl + k ≤ w.
        let lo = pl.div_ceil(s).min(ow);
        let hi = if w + pl >= k {
            ((w + pl - k) / s + 1).min(ow)
        } else {
            0
        }
        .max(lo);
        for oy in 0..self.oh {
            let rows = self.span(oy, self.pt, h);
            let (orow, arow) = (
                &mut out[oy * ow..(oy + 1) * ow],
                &mut arg[oy * ow..(oy + 1) * ow],
            );
            for ox in (0..lo).chain(hi..ow) {
                let cols = self.span(ox, pl, w);
                let (mut bi, mut bv) = (NO_INPUT, f32::NEG_INFINITY);
                for y in rows.clone() {
                    for xi in cols.clone() {
                        let v = x[y * w + xi];
                        if replaces(bi == NO_INPUT, v, bv) {
                            (bi, bv) = ((y * w + xi) as u32, v);
                        }
                    }
                }
                (orow[ox], arow[ox]) = (bv, bi);
            }
            if lo == hi {
                continue;
            }
            let (ov, ai) = (&mut orow[lo..hi], &mut arow[lo..hi]);
            let mut first = true;
            #[cfg(target_arch = "x86_64")]
            let isa = if s == 1 || s == 2 {
                crate::ops::simd::Isa::get()
            } else {
                crate::ops::simd::Isa::Portable
            };
            for y in rows {
                for dx in 0..k {
                    // Input index of column `lo`'s window tap `dx` in row `y`.
                    let start = y * w + lo * s + dx - pl;
                    let taps = &x[start..start + (hi - lo - 1) * s + 1];
                    // SAFETY (both unsafe calls): the CPU has the instruction set; stride 1
                    // or 2; `taps` covers every output.
                    #[cfg(target_arch = "x86_64")]
                    match isa {
                        crate::ops::simd::Isa::Avx512 => unsafe {
                            crate::ops::avx512::window_tap(ov, ai, taps, s, start as u32, first)
                        },
                        crate::ops::simd::Isa::Avx2 => unsafe {
                            crate::ops::avx2::window_tap(ov, ai, taps, s, start as u32, first)
                        },
                        crate::ops::simd::Isa::Portable => {
                            window_tap(ov, ai, taps, s, start as u32, first)
                        }
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    window_tap(ov, ai, taps, s, start as u32, first);
                    first = false;
                }
            }
        }
    }
}

/// PyTorch's max-pool rule: value `v` replaces the window's best `best` when nothing was taken
/// yet, when it is larger, or when it is NaN.
#[inline(always)]
fn replaces(none_yet: bool, v: f32, best: f32) -> bool {
    none_yet || v > best || v.is_nan()
}

crate::ops::simd::vectorised! {
    /// One window tap across a row of outputs: output `j` sees `taps[j·s]` (input index
    /// `start + j·s`) and keeps it if it is the first tap, larger, or NaN (PyTorch's rule).
    pub(crate) fn window_tap(best: &mut [f32], idx: &mut [u32], taps: &[f32], s: usize, start: u32, first: bool) {
        for (j, (b, i)) in best.iter_mut().zip(idx.iter_mut()).enumerate() {
            let v = taps[j * s];
            if replaces(first, v, *b) {
                (*b, *i) = (v, start + (j * s) as u32);
            }
        }
    }
}

impl CustomOp1 for MaxPool2dOp {
    fn name(&self) -> &'static str {
        "noisycxr-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let x = storage_f32(s, l, "max pool input")?;
        let per = (self.oh * self.ow).max(1);
        let mut out = crate::ops::alloc::overwritten_f32(n * c * per);
        let mut arg = vec![0u32; out.len()];
        out.par_chunks_mut(per)
            .zip(arg.par_chunks_mut(per))
            .enumerate()
            .for_each(|(p, (o, a))| self.plane(&x[p * h * w..(p + 1) * h * w], h, w, o, a));
        let _ = self.argmax.set(arg);
        Ok((CpuStorage::F32(out), Shape::from((n, c, self.oh, self.ow))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (n, c, h, w) = arg.dims4()?;
        let per = self.oh * self.ow;
        let Some(src) = self.argmax.get() else {
            candle_core::bail!("max pool backward before its forward")
        };
        let grad = grad_res.contiguous()?;
        let gv = view_f32(&grad).map_err(to_candle)?;
        let g = gv.as_slice();
        if g.len() != n * c * per || src.len() != g.len() {
            candle_core::bail!(
                "max pool backward: gradient has {} values, expected {}",
                g.len(),
                n * c * per
            )
        }
        let mut out = vec![0f32; n * c * h * w];
        out.par_chunks_mut((h * w).max(1))
            .zip(g.par_chunks(per.max(1)).zip(src.par_chunks(per.max(1))))
            .for_each(|(gi, (go, si))| {
                for (&i, &v) in si.iter().zip(go) {
                    if i != NO_INPUT {
                        gi[i as usize] += v;
                    }
                }
            });
        Ok(Some(Tensor::from_vec(out, (n, c, h, w), arg.device())?))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn grads_of(x: &Var, y: &Tensor) -> Result<Vec<f32>> {
        let w = Tensor::arange(0f32, y.elem_count() as f32, &Device::Cpu)?
            .reshape(y.shape())?
            .cos()?;
        let g = (y * w)?.sum_all()?.backward()?;
        Ok(g.get(x.as_tensor())
            .expect("gradient")
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    #[test]
    fn cpu_op_and_composition_agree_forward_and_backward() -> Result<()> {
        // Distinct values (no ties): a permutation of 0..n scaled.
        for (h, w, k, s, pad) in [
            (9, 7, 3, 2, PoolPad::Fixed(1)),
            (8, 8, 3, 2, PoolPad::Same),
            (7, 9, 3, 2, PoolPad::Same),
            (6, 6, 2, 2, PoolPad::Fixed(0)),
            (12, 16, 3, 1, PoolPad::Fixed(1)),
            (10, 21, 3, 2, PoolPad::Fixed(1)),
        ] {
            let n = 2 * 3 * h * w;
            let v: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % n) as f32 / n as f32 - 0.5)
                .collect();
            let x = Var::from_vec(v, (2, 3, h, w), &Device::Cpu)?;
            let fast = max_pool2d(&x, k, s, pad)?;
            let (ph, pw) = match pad {
                PoolPad::Fixed(p) => ((p, p), (p, p)),
                PoolPad::Same => (same_padding(h, k, s, 1), same_padding(w, k, s, 1)),
            };
            let slow = max_pool2d_composed(&x, k, s, ph, pw)?;
            assert_eq!(fast.dims(), slow.dims());
            if pad == PoolPad::Same {
                assert_eq!(fast.dims()[2..], [h.div_ceil(s), w.div_ceil(s)]);
            }
            assert_eq!(
                fast.flatten_all()?.to_vec1::<f32>()?,
                slow.flatten_all()?.to_vec1::<f32>()?
            );
            let gf = grads_of(&x, &fast)?;
            let gs = grads_of(&x, &slow)?;
            for (a, b) in gf.iter().zip(&gs) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
        Ok(())
    }
}
