//! DICOM (Part 10) decoding to display-ready grayscale, as a radiologist's viewer would show it.
//!
//! Steps (DICOM PS3.3 C.11, the same order as pydicom's `apply_modality_lut` then
//! `apply_voi_lut`):
//! 1. the modality LUT: `value * RescaleSlope + RescaleIntercept`;
//! 2. the VOI LUT: the first VOI LUT Sequence table if present, else the first Window Center /
//!    Width with its VOI LUT Function (`LINEAR`, `LINEAR_EXACT`, `SIGMOID`), mapped to `[0, 1]`;
//!    with neither, a min–max stretch of the image to `[0, 1]`;
//! 3. `MONOCHROME1` (minimum = white) is inverted so that, as in `MONOCHROME2`, bone is bright.
//!
//! Compressed transfer syntaxes are decoded by `dicom-pixeldata`'s native codecs (JPEG baseline /
//! lossless, RLE). Only one-sample (grayscale) images are accepted; the first frame is used.

use std::path::Path;

use dicom_pixeldata::{
    PhotometricInterpretation, PixelDecoder, VoiLutFunction, WindowLevelTransform,
};

use super::Gray;
use crate::error::{Error, Result};

/// Decodes a DICOM file held in memory (`bytes` starts with the 128-byte preamble).
pub fn decode_dicom(bytes: &[u8], path: &Path) -> Result<Gray> {
    let derr =
        |what: &str, e: &dyn std::fmt::Display| Error::image(path, format!("DICOM {what}: {e}"));
    if bytes.len() < 132 {
        return Err(Error::image(path, "DICOM: file shorter than its preamble"));
    }
    let obj = dicom_object::OpenFileOptions::new()
        .from_reader(&bytes[128..])
        .map_err(|e| derr("header", &e))?;
    let pix = obj
        .decode_pixel_data()
        .map_err(|e| derr("pixel data", &e))?;
    if pix.samples_per_pixel() != 1 {
        return Err(Error::image(
            path,
            format!(
                "DICOM: {} samples per pixel ({}); only grayscale radiographs are supported",
                pix.samples_per_pixel(),
                pix.photometric_interpretation()
            ),
        ));
    }
    let (w, h) = (pix.columns() as usize, pix.rows() as usize);
    // Default options apply the modality LUT (rescale slope / intercept) and no VOI LUT.
    let mut v: Vec<f64> = pix
        .to_vec_frame::<f64>(0)
        .map_err(|e| derr("pixel values", &e))?;
    if v.len() < w * h {
        return Err(Error::image(
            path,
            format!("DICOM: {} pixel values for {w}x{h}", v.len()),
        ));
    }
    v.truncate(w * h);

    let table = pix
        .voi_lut_sequence()
        .map_err(|e| derr("VOI LUT Sequence", &e))?
        .and_then(|s| s.first());
    let window = pix
        .window()
        .map_err(|e| derr("window", &e))?
        .and_then(|s| s.first().copied());
    if let Some(lut) = table {
        // Values below the first mapped value take the first entry, above the end the last.
        let max = ((1u64 << lut.bits_stored.clamp(1, 16)) - 1) as f64;
        let n = lut.data.len();
        if n == 0 {
            return Err(Error::image(path, "DICOM: empty VOI LUT table"));
        }
        for x in v.iter_mut() {
            let i = (*x - lut.min_pixel_value as f64)
                .floor()
                .clamp(0.0, (n - 1) as f64) as usize;
            *x = lut.data[i] as f64 / max;
        }
    } else if let Some(win) = window {
        let function = pix
            .voi_lut_function()
            .map_err(|e| derr("VOI LUT Function", &e))?
            .and_then(|f| f.first().copied())
            .unwrap_or(VoiLutFunction::Linear);
        let t = WindowLevelTransform::new(function, win);
        for x in v.iter_mut() {
            *x = t.apply(*x, 1.0);
        }
    } else {
        let (lo, hi) = v
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        let span = hi - lo;
        for x in v.iter_mut() {
            *x = if span > 0.0 { (*x - lo) / span } else { 0.0 };
        }
    }
    let invert = *pix.photometric_interpretation() == PhotometricInterpretation::Monochrome1;
    let out: Vec<f32> = v
        .into_iter()
        .map(|x| {
            let x = x.clamp(0.0, 1.0) as f32;
            if invert {
                1.0 - x
            } else {
                x
            }
        })
        .collect();
    Gray::from_f32(w, h, out).ok_or_else(|| Error::image(path, "DICOM: pixel count mismatch"))
}

#[cfg(test)]
mod tests {
    use crate::data::image::decode_file;
    use crate::data::image::fixtures::{assert_matches, case};

    // Expected values: pydicom 3.0.2 `apply_voi_lut(apply_modality_lut(arr, ds), ds)` scaled from
    // pydicom's output range to [0, 1] (MONOCHROME1 then inverted; no VOI: min-max), written by
    // tests/fixtures/image/make_fixtures.py.
    #[test]
    fn dicom_luts_match_pydicom() {
        for name in [
            "mono1_window_dcm",
            "mono2_sigmoid_dcm",
            "mono2_signed_dcm",
            "mono2_lut_dcm",
        ] {
            let c = case(name);
            let img = decode_file(&c.file, None).unwrap();
            assert_matches(&img, &c, name);
        }
    }
}
