//! Decoding JPEG, PNG and DICOM files into one grayscale channel.
//!
//! The format is sniffed from the first bytes, not the file name (real datasets hold `.jpg` files
//! that are PNGs and DICOMs without an extension). Colour images are converted with Pillow's
//! `convert("L")` weights; an alpha channel is ignored (NIH ChestX-ray14's few RGBA files are
//! opaque). JPEGs can be decoded at a reduced scale (1/2, 1/4, 1/8 through the DCT, like Pillow's
//! `draft()`) when a [`Geometry`] says the model input needs fewer pixels: a 1024² film bound for
//! a 224² input is decoded at 256², which is most of the pipeline's speed.

use std::path::Path;

use super::fit::Geometry;
use super::{luma8, luma_f32, Gray};
use crate::error::{Error, Result};

/// File formats the pipeline reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    Dicom,
}

impl Format {
    /// Sniffs the format from the file's first bytes: JPEG `FF D8 FF`, PNG's 8-byte signature,
    /// DICOM's `DICM` at offset 128 (Part 10 files).
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Format::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Format::Png)
        } else if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
            Some(Format::Dicom)
        } else {
            None
        }
    }
}

/// Reads and decodes the image at `path`. With `geometry`, a JPEG may be decoded at a reduced
/// scale that still covers the model input (see [`Geometry::covers`]); other formats are always
/// decoded at full size.
pub fn decode_file(path: &Path, geometry: Option<&Geometry>) -> Result<Gray> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_bytes(&bytes, geometry, path)
}

/// Decodes an in-memory file; `path` only names it in errors.
///
/// Third-party decoders are run under `catch_unwind`: a file that makes one of them panic is
/// reported as an [`Error::Image`] like any other corrupt file.
pub fn decode_bytes(bytes: &[u8], geometry: Option<&Geometry>, path: &Path) -> Result<Gray> {
    let format = Format::sniff(bytes).ok_or_else(|| {
        Error::image(
            path,
            "not a JPEG, PNG or DICOM file (unrecognised first bytes); \
             convert it or drop it from the CSV",
        )
    })?;
    let run = || match format {
        Format::Jpeg => decode_jpeg(bytes, geometry, path, true),
        Format::Png => decode_png(bytes, path),
        Format::Dicom => super::dicom::decode_dicom(bytes, path),
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(r) => r,
        Err(_) => Err(Error::image(
            path,
            format!("the {format:?} decoder panicked on this file; it is probably corrupt"),
        )),
    }
}

/// Output side of a JPEG decoded at `scale / 8` of its size (libjpeg's rounding: ceiling).
fn scaled(len: usize, scale: usize) -> usize {
    (len * scale).div_ceil(8)
}

/// Decodes a JPEG with `jpeg-decoder` alone (its own DCT scaling when `geometry` allows it),
/// never our reduced-scale fast path: the baseline `noisycxr bench data` measures that path
/// against.
pub fn decode_jpeg_crate(bytes: &[u8], geometry: Option<&Geometry>, path: &Path) -> Result<Gray> {
    decode_jpeg(bytes, geometry, path, false)
}

fn decode_jpeg(bytes: &[u8], geometry: Option<&Geometry>, path: &Path, fast: bool) -> Result<Gray> {
    let jerr = |e: jpeg_decoder::Error| Error::image(path, format!("JPEG: {e}"));
    let mut dec = jpeg_decoder::Decoder::new(bytes);
    dec.read_info().map_err(jerr)?;
    let info = dec
        .info()
        .ok_or_else(|| Error::image(path, "JPEG: no frame header"))?;
    if let Some(g) = geometry {
        let (w, h) = (info.width as usize, info.height as usize);
        // Smallest DCT scale whose output still covers the model input.
        if let Some(s) = [1usize, 2, 4]
            .into_iter()
            .find(|&s| g.covers(scaled(w, s), scaled(h, s)))
        {
            // Grayscale sequential files (CheXpert, MIMIC) take the fast path.
            if let Some(r) = fast
                .then(|| super::jpeg_reduced::decode(bytes, s))
                .flatten()
            {
                return Gray::from_u8(r.width, r.height, r.data)
                    .ok_or_else(|| Error::image(path, "JPEG: reduced decode size mismatch"));
            }
            dec.scale(scaled(w, s) as u16, scaled(h, s) as u16)
                .map_err(jerr)?;
        }
    }
    let data = dec.decode().map_err(jerr)?;
    let info = dec
        .info()
        .ok_or_else(|| Error::image(path, "JPEG: no frame header"))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let n = w * h;
    let short = || {
        Error::image(
            path,
            "JPEG: decoder returned fewer pixels than the header says",
        )
    };
    use jpeg_decoder::PixelFormat as P;
    match info.pixel_format {
        P::L8 => {
            let mut data = data;
            data.truncate(n);
            Gray::from_u8(w, h, data).ok_or_else(short)
        }
        P::L16 => {
            // Big-endian 16-bit samples (lossless / 12-bit JPEG).
            let v: Vec<f32> = data
                .chunks_exact(2)
                .take(n)
                .map(|c| u16::from_be_bytes([c[0], c[1]]) as f32 / 65535.0)
                .collect();
            Gray::from_f32(w, h, v).ok_or_else(short)
        }
        P::RGB24 => {
            let v: Vec<u8> = data
                .chunks_exact(3)
                .take(n)
                .map(|c| luma8(c[0], c[1], c[2]))
                .collect();
            Gray::from_u8(w, h, v).ok_or_else(short)
        }
        P::CMYK32 => Err(Error::image(
            path,
            "CMYK JPEG is not a radiograph layout; convert it to grayscale",
        )),
    }
}

fn decode_png(bytes: &[u8], path: &Path) -> Result<Gray> {
    use image::DynamicImage as D;
    let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
        .map_err(|e| Error::image(path, format!("PNG: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let ch = img.color().channel_count() as usize;
    let gray = match img {
        D::ImageLuma8(b) => Gray::from_u8(w, h, b.into_raw()),
        D::ImageLumaA8(b) => Gray::from_u8(w, h, gray8(&b.into_raw(), ch)),
        D::ImageRgb8(b) => Gray::from_u8(w, h, gray8(&b.into_raw(), ch)),
        D::ImageRgba8(b) => Gray::from_u8(w, h, gray8(&b.into_raw(), ch)),
        D::ImageLuma16(b) => Gray::from_f32(w, h, gray16(&b.into_raw(), ch)),
        D::ImageLumaA16(b) => Gray::from_f32(w, h, gray16(&b.into_raw(), ch)),
        D::ImageRgb16(b) => Gray::from_f32(w, h, gray16(&b.into_raw(), ch)),
        D::ImageRgba16(b) => Gray::from_f32(w, h, gray16(&b.into_raw(), ch)),
        other => {
            return Err(Error::image(
                path,
                format!("PNG: unsupported pixel layout {:?}", other.color()),
            ))
        }
    };
    gray.ok_or_else(|| Error::image(path, "PNG: pixel buffer does not match its size"))
}

/// Interleaved 8-bit samples with `ch` channels (gray, gray+alpha, RGB, RGBA) → gray; alpha is
/// ignored.
fn gray8(raw: &[u8], ch: usize) -> Vec<u8> {
    match ch {
        1 | 2 => raw.iter().step_by(ch).copied().collect(),
        _ => raw
            .chunks_exact(ch)
            .map(|c| luma8(c[0], c[1], c[2]))
            .collect(),
    }
}

/// The same for 16-bit samples, scaled to `[0, 1]`.
fn gray16(raw: &[u16], ch: usize) -> Vec<f32> {
    let f = |v: u16| v as f32 / 65535.0;
    match ch {
        1 | 2 => raw.iter().step_by(ch).map(|&v| f(v)).collect(),
        _ => raw
            .chunks_exact(ch)
            .map(|c| luma_f32(f(c[0]), f(c[1]), f(c[2])))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::image::fixtures::{assert_matches, case};
    use crate::data::image::Pixels;
    use crate::data::preprocess::ResizeMode;

    // Expected pixels: Pillow 13.0.0 (`Image.open(...)`, `.convert("L")`, `.draft(...)`),
    // written by tests/fixtures/image/make_fixtures.py.
    #[test]
    fn jpeg_and_png_decode_like_pillow() {
        for name in [
            "gray_jpg",
            "rgb_jpg",
            "gray8_png",
            "rgb8_png",
            "rgba8_png",
            "la8_png",
            "gray16_png",
        ] {
            let c = case(name);
            let img = decode_file(&c.file, None).unwrap();
            assert_matches(&img, &c, name);
        }
    }

    #[test]
    fn sixteen_bit_png_keeps_its_precision() {
        let c = case("gray16_png");
        let img = decode_file(&c.file, None).unwrap();
        assert!(matches!(img.pixels, Pixels::F32(_)));
        // Distinct 16-bit levels that 8 bits would merge stay distinct.
        let mut v = img.to_f32();
        v.sort_by(f32::total_cmp);
        v.dedup();
        assert!(v.len() > 256, "only {} levels", v.len());
    }

    #[test]
    fn jpeg_reduced_scale_decode_matches_pillow_draft() {
        // A 160x120 JPEG bound for a 40-px centre crop: 1/4 (40x30) would not cover the crop's
        // 40-px short side, so 1/2 (80x60) is chosen, as Pillow's draft("L", (80, 60)) does.
        let c = case("big_jpg_half");
        let g = Geometry {
            size: c.raw["crop"].as_u64().unwrap() as usize,
            resize: ResizeMode::Crop,
        };
        let img = decode_file(&c.file, Some(&g)).unwrap();
        assert_matches(&img, &c, "big_jpg_half");
        // Pad needs only the long side: 1/4 (40x30) covers a 40-px padded input.
        let pad = Geometry {
            size: 40,
            resize: ResizeMode::Pad,
        };
        let small = decode_file(&c.file, Some(&pad)).unwrap();
        assert_eq!((small.width, small.height), (40, 30));
        // Larger than the file: decoded at full size.
        let big = Geometry {
            size: 500,
            resize: ResizeMode::Crop,
        };
        let full = decode_file(&c.file, Some(&big)).unwrap();
        assert_eq!((full.width, full.height), (160, 120));
    }

    #[test]
    fn reduced_scales_restart_markers_and_progressive_match_pillow_draft() {
        // 1/4 and 1/8 of a 157x117 film with restart markers every 5 blocks (fast path), and
        // 1/2 of the same film saved progressive (jpeg-decoder's scaled IDCT: looser tolerance).
        for name in ["odd_rst_quarter", "odd_rst_eighth", "odd_prog_half"] {
            let c = case(name);
            let g = Geometry {
                size: c.raw["crop"].as_u64().unwrap() as usize,
                resize: ResizeMode::Crop,
            };
            let img = decode_file(&c.file, Some(&g)).unwrap();
            assert_matches(&img, &c, name);
        }
    }

    #[test]
    fn a_truncated_file_never_takes_the_fast_path() {
        let bytes = std::fs::read(case("big_jpg_half").file).unwrap();
        assert!(super::super::jpeg_reduced::decode(&bytes, 2).is_some());
        for cut in [bytes.len() / 2, bytes.len() - 40, 300] {
            assert!(
                super::super::jpeg_reduced::decode(&bytes[..cut], 2).is_none(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn bad_files_are_errors_not_panics() {
        let p = Path::new("x.jpg");
        let e = decode_bytes(b"hello", None, p).unwrap_err();
        assert!(e.to_string().contains("not a JPEG, PNG or DICOM"), "{e}");
        // A truncated JPEG and a truncated PNG.
        let jpg = std::fs::read(case("gray_jpg").file).unwrap();
        assert!(decode_bytes(&jpg[..jpg.len() / 3], None, p).is_err());
        let png = std::fs::read(case("gray8_png").file).unwrap();
        let e = decode_bytes(&png[..png.len() / 2], None, Path::new("y.png")).unwrap_err();
        assert!(e.to_string().contains("y.png"), "{e}");
        // Missing file: an I/O error naming the path.
        let e = decode_file(Path::new("/nonexistent/z.png"), None).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/z.png"), "{e}");
    }
}
