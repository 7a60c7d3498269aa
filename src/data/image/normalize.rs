//! From `[0, 1]` grayscale samples to the model's normalised input planes.

use crate::data::preprocess::Preprocess;
use crate::error::{Error, Result};

/// Writes `(v - mean[c]) / std[c]` for every channel `c` of `p` into `out`, replicating the
/// grayscale plane into each channel (ImageNet-style 3-channel weights see gray as R = G = B).
///
/// # Shapes
/// `plane`: `[H * W]` with values in `[0, 1]`; `out`: `[C * H * W]`, `C = p.channels`.
pub fn normalize_into(plane: &[f32], p: &Preprocess, out: &mut [f32]) -> Result<()> {
    let n = plane.len();
    if out.len() != n * p.channels || p.mean.len() != p.channels || p.std.len() != p.channels {
        return Err(Error::Other(format!(
            "normalize: {} output values for {} channels of {n} pixels (mean {}, std {})",
            out.len(),
            p.channels,
            p.mean.len(),
            p.std.len()
        )));
    }
    for (c, dst) in out.chunks_exact_mut(n).enumerate() {
        let (m, inv) = (p.mean[c], 1.0 / p.std[c]);
        for (d, &v) in dst.iter_mut().zip(plane) {
            *d = (v - m) * inv;
        }
    }
    Ok(())
}
