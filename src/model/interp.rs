//! Resampling a ViT position embedding to another token grid, as timm does on load
//! (`resample_abs_pos_embed`: prefix tokens kept, the grid resized with
//! `F.interpolate(mode='bicubic', antialias=True, align_corners=False)`). PyTorch's
//! anti-aliased bicubic is PIL's separable filter: Keys' cubic with a = −0.5, support widened
//! by the scale when shrinking, weights clipped at the borders and renormalised.
//! Load-time only (plain Rust on `Vec<f32>`), so no backward is needed.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// For each output index: `(first input index, weights)`.
fn weights_1d(input: usize, output: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = input as f64 / output as f64;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    (0..output)
        .map(|i| {
            let center = scale * (i as f64 + 0.5);
            // `as i64` truncates toward zero, like the C++ static_cast.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(input as i64).max(0) as usize;
            let mut w: Vec<f64> = (xmin..xmax.max(xmin))
                .map(|j| cubic((j as f64 - center + 0.5) * invscale))
                .collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            (xmin, w)
        })
        .collect()
}

/// Anti-aliased bicubic resize of a channels-last grid.
///
/// # Shapes
/// `src`: `h · w · c` values laid out `[h, w, c]` → `[nh, nw, c]`
pub fn resize_bicubic_aa(
    src: &[f32],
    h: usize,
    w: usize,
    c: usize,
    nh: usize,
    nw: usize,
) -> Vec<f32> {
    let wx = weights_1d(w, nw);
    let wy = weights_1d(h, nh);
    // Horizontal pass: [h, nw, c].
    let mut tmp = vec![0f64; h * nw * c];
    for y in 0..h {
        for (ox, (x0, ws)) in wx.iter().enumerate() {
            for (j, wt) in ws.iter().enumerate() {
                let s = &src[(y * w + x0 + j) * c..(y * w + x0 + j + 1) * c];
                let d = &mut tmp[(y * nw + ox) * c..(y * nw + ox + 1) * c];
                for k in 0..c {
                    d[k] += wt * s[k] as f64;
                }
            }
        }
    }
    // Vertical pass: [nh, nw, c].
    let mut out = vec![0f32; nh * nw * c];
    for (oy, (y0, ws)) in wy.iter().enumerate() {
        for ox in 0..nw {
            let d = &mut out[(oy * nw + ox) * c..(oy * nw + ox + 1) * c];
            for k in 0..c {
                let mut acc = 0f64;
                for (j, wt) in ws.iter().enumerate() {
                    acc += wt * tmp[((y0 + j) * nw + ox) * c + k];
                }
                d[k] = acc as f32;
            }
        }
    }
    out
}

/// Resamples a position embedding `[1, prefix + g², D]` to `[1, prefix + new_grid², D]`,
/// keeping the `prefix` (class) tokens as they are. Returns F32 on `device`.
pub fn resample_pos_embed(
    pe: &Tensor,
    prefix: usize,
    new_grid: usize,
    device: &Device,
) -> Result<Tensor> {
    let (one, t, d) = pe.dims3()?;
    let n = t.checked_sub(prefix).unwrap_or(0);
    let g = (n as f64).sqrt().round() as usize;
    if one != 1 || g * g != n || g == 0 {
        return Err(Error::Other(format!(
            "pos_embed of shape {:?} is not [1, {prefix} + g², D] with a square grid",
            pe.dims()
        )));
    }
    let pe = pe.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
    let pre = pe.narrow(1, 0, prefix)?;
    let grid: Vec<f32> = pe.narrow(1, prefix, n)?.flatten_all()?.to_vec1()?;
    let out = resize_bicubic_aa(&grid, g, g, d, new_grid, new_grid);
    let out = Tensor::from_vec(out, (1, new_grid * new_grid, d), &Device::Cpu)?;
    Ok(Tensor::cat(&[&pre, &out], 1)?.to_device(device)?)
}
