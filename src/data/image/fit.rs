//! Fitting a decoded image into the model's square input: centre crop, pad or stretch, with
//! Pillow's antialiased bilinear filter (`Image.resize(..., BILINEAR, box=...)`, as
//! `fast_image_resize` implements it).

use fast_image_resize::images::{Image as FrImage, ImageRef, TypedImage, TypedImageRef};
use fast_image_resize::pixels::F32;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use super::{Gray, Pixels};
use crate::data::preprocess::{Preprocess, ResizeMode};
use crate::error::{Error, Result};

/// The spatial part of a [`Preprocess`]: output side and how the image is fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Output side in pixels (the output is `size`×`size`).
    pub size: usize,
    pub resize: ResizeMode,
}

impl From<&Preprocess> for Geometry {
    fn from(p: &Preprocess) -> Self {
        Geometry {
            size: p.size,
            resize: p.resize,
        }
    }
}

/// Placement of the resized image: which source box is resized into which output box.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Plan {
    /// Source box `(left, top, width, height)` in source pixels (may be fractional).
    src: (f64, f64, f64, f64),
    /// Output box `(left, top, width, height)` inside the `size`×`size` canvas.
    dst: (usize, usize, usize, usize),
}

impl Geometry {
    /// Whether a source of `w`×`h` pixels has at least the resolution the output needs, so that
    /// fitting only ever shrinks it (the test for reduced-scale JPEG decoding). `Crop` needs the
    /// short side ≥ `size`, `Pad` the long side, `Stretch` both sides.
    pub fn covers(&self, w: usize, h: usize) -> bool {
        match self.resize {
            ResizeMode::Crop => w.min(h) >= self.size,
            ResizeMode::Pad => w.max(h) >= self.size,
            ResizeMode::Stretch => w >= self.size && h >= self.size,
        }
    }

    fn plan(&self, w: usize, h: usize) -> Plan {
        let s = self.size;
        let (wf, hf) = (w as f64, h as f64);
        match self.resize {
            ResizeMode::Stretch => Plan {
                src: (0.0, 0.0, wf, hf),
                dst: (0, 0, s, s),
            },
            ResizeMode::Crop => {
                // The centred square of side min(w, h), possibly at a half-pixel offset.
                let side = wf.min(hf);
                Plan {
                    src: ((wf - side) / 2.0, (hf - side) / 2.0, side, side),
                    dst: (0, 0, s, s),
                }
            }
            ResizeMode::Pad => {
                // Long side → size, short side rounded, placed at floor((size - short) / 2).
                let (ow, oh) = if w >= h {
                    (s, ((hf * s as f64 / wf).round() as usize).clamp(1, s))
                } else {
                    (((wf * s as f64 / hf).round() as usize).clamp(1, s), s)
                };
                Plan {
                    src: (0.0, 0.0, wf, hf),
                    dst: ((s - ow) / 2, (s - oh) / 2, ow, oh),
                }
            }
        }
    }
}

/// Fits `img` into a `size`×`size` image (same pixel kind). An image already at the output size
/// whose fit is the identity is returned unchanged (no resampling).
///
/// # Shapes
/// `img`: `height`×`width` → `size`×`size`.
pub fn fit(img: &Gray, g: &Geometry) -> Result<Gray> {
    if img.width == 0 || img.height == 0 || g.size == 0 {
        return Err(Error::Other(format!(
            "cannot fit a {}x{} image into {}x{}",
            img.width, img.height, g.size, g.size
        )));
    }
    let s = g.size;
    if img.width == s && img.height == s {
        return Ok(img.clone());
    }
    let plan = g.plan(img.width, img.height);
    let (sl, st, sw, sh) = plan.src;
    let (dl, dt, dw, dh) = plan.dst;
    let opts = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(sl, st, sw, sh);
    let rerr = |e: &dyn std::fmt::Display| Error::Other(format!("resize: {e}"));
    let mut resizer = Resizer::new();
    let (w, h) = (img.width as u32, img.height as u32);
    match &img.pixels {
        Pixels::U8(d) => {
            let src = ImageRef::new(w, h, d, PixelType::U8).map_err(|e| rerr(&e))?;
            let mut dst = FrImage::new(dw as u32, dh as u32, PixelType::U8);
            resizer
                .resize(&src, &mut dst, &opts)
                .map_err(|e| rerr(&e))?;
            Ok(place(dst.buffer(), dw, dh, dl, dt, s, 0u8, Pixels::U8))
        }
        Pixels::F32(d) => {
            let px: Vec<F32> = d.iter().map(|&v| F32::new(v)).collect();
            let src = TypedImageRef::new(w, h, &px).map_err(|e| rerr(&e))?;
            let mut dst = TypedImage::<F32>::new(dw as u32, dh as u32);
            resizer
                .resize_typed(&src, &mut dst, &opts)
                .map_err(|e| rerr(&e))?;
            let out: Vec<f32> = dst.pixels().iter().map(|p| p.0).collect();
            Ok(place(&out, dw, dh, dl, dt, s, 0.0f32, Pixels::F32))
        }
    }
}

/// Copies a `dw`×`dh` block to `(dl, dt)` of a `s`×`s` canvas filled with `fill` (black).
#[allow(clippy::too_many_arguments)]
fn place<T: Copy>(
    block: &[T],
    dw: usize,
    dh: usize,
    dl: usize,
    dt: usize,
    s: usize,
    fill: T,
    wrap: fn(Vec<T>) -> Pixels,
) -> Gray {
    let out = if (dw, dh) == (s, s) {
        block[..s * s].to_vec()
    } else {
        let mut out = vec![fill; s * s];
        for y in 0..dh {
            out[(dt + y) * s + dl..(dt + y) * s + dl + dw]
                .copy_from_slice(&block[y * dw..(y + 1) * dw]);
        }
        out
    };
    Gray {
        width: s,
        height: s,
        pixels: wrap(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::image::decode_file;
    use crate::data::image::fixtures::{assert_matches, case};

    // Expected pixels: Pillow 13.0.0 `resize((S, S), BILINEAR, box=centred square)` (crop),
    // `resize((S, S), BILINEAR)` (stretch), and `resize` of the long side to S pasted centred on
    // black (pad); tests/fixtures/image/make_fixtures.py. One level of rounding tolerance.
    #[test]
    fn fit_matches_pillow_bilinear() {
        for name in ["fit_crop", "fit_stretch", "fit_pad", "fit_pad_tall"] {
            let c = case(name);
            let resize = match c.raw["resize"].as_str().unwrap() {
                "crop" => ResizeMode::Crop,
                "pad" => ResizeMode::Pad,
                _ => ResizeMode::Stretch,
            };
            let g = Geometry {
                size: c.raw["size"].as_u64().unwrap() as usize,
                resize,
            };
            let img = decode_file(&c.file, None).unwrap();
            let out = fit(&img, &g).unwrap();
            assert_matches(&out, &c, name);
        }
    }

    #[test]
    fn float_images_fit_like_u8_ones() {
        // The F32 path must place and filter exactly like the U8 path (up to u8 rounding).
        let img = decode_file(&case("gray8_png").file, None).unwrap();
        let f = Gray::from_f32(img.width, img.height, img.to_f32()).unwrap();
        for resize in [ResizeMode::Crop, ResizeMode::Pad, ResizeMode::Stretch] {
            let g = Geometry { size: 20, resize };
            let a = fit(&img, &g).unwrap().to_f32();
            let b = fit(&f, &g).unwrap().to_f32();
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(worst <= 1.0 / 255.0 + 1e-6, "{resize:?}: {worst}");
        }
    }

    #[test]
    fn image_at_input_size_is_not_resampled() {
        let img = Gray::from_u8(3, 3, vec![0, 10, 20, 30, 40, 50, 60, 70, 80]).unwrap();
        for resize in [ResizeMode::Crop, ResizeMode::Pad, ResizeMode::Stretch] {
            assert_eq!(fit(&img, &Geometry { size: 3, resize }).unwrap(), img);
        }
    }
}
