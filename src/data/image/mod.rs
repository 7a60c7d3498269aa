//! The image pipeline: decode (JPEG, PNG, DICOM) → fit to the model's square input (crop, pad or
//! stretch) → optional seeded augmentation → normalised `[C, H, W]` floats.
//!
//! Chest films are grayscale, so every decoder yields one channel ([`Gray`]); colour files are
//! converted with Pillow's `convert("L")` weights and channels are replicated only at the end
//! ([`normalize`]), as the model's [`Preprocess`](crate::data::preprocess::Preprocess) asks.

pub mod decode;
pub mod dicom;
pub mod fit;
mod jpeg_reduced;
pub mod normalize;

pub use decode::{decode_bytes, decode_file, Format};
pub use fit::{fit, Geometry};
pub use normalize::normalize_into;

/// Pixel storage of a grayscale image.
#[derive(Debug, Clone, PartialEq)]
pub enum Pixels {
    /// 8-bit samples; value `v` means `v / 255`.
    U8(Vec<u8>),
    /// Samples already scaled to `[0, 1]` (16-bit PNGs, DICOM after its LUTs).
    F32(Vec<f32>),
}

/// A grayscale image, row-major, `height` rows of `width` samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Gray {
    pub width: usize,
    pub height: usize,
    pub pixels: Pixels,
}

impl Gray {
    /// An 8-bit image; `None` when `data.len() != width * height`.
    pub fn from_u8(width: usize, height: usize, data: Vec<u8>) -> Option<Self> {
        (data.len() == width * height).then_some(Gray {
            width,
            height,
            pixels: Pixels::U8(data),
        })
    }

    /// A float image with values in `[0, 1]`; `None` when `data.len() != width * height`.
    pub fn from_f32(width: usize, height: usize, data: Vec<f32>) -> Option<Self> {
        (data.len() == width * height).then_some(Gray {
            width,
            height,
            pixels: Pixels::F32(data),
        })
    }

    /// Sample at `(x, y)` in `[0, 1]` (no bounds check beyond the slice's).
    #[inline]
    pub fn get(&self, x: usize, y: usize) -> f32 {
        let i = y * self.width + x;
        match &self.pixels {
            Pixels::U8(d) => d[i] as f32 * (1.0 / 255.0),
            Pixels::F32(d) => d[i],
        }
    }

    /// All samples as floats in `[0, 1]`.
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.pixels {
            Pixels::U8(d) => d.iter().map(|&v| v as f32 * (1.0 / 255.0)).collect(),
            Pixels::F32(d) => d.clone(),
        }
    }

    /// 8-bit samples (floats are rounded after clamping to `[0, 1]`).
    pub fn to_u8(&self) -> Vec<u8> {
        match &self.pixels {
            Pixels::U8(d) => d.clone(),
            Pixels::F32(d) => d
                .iter()
                .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
                .collect(),
        }
    }
}

/// Pillow's `convert("L")` for 8-bit RGB: `L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16`
/// (ITU-R 601-2 luma, `libImaging/Convert.c`).
#[inline]
pub fn luma8(r: u8, g: u8, b: u8) -> u8 {
    ((19595 * r as u32 + 38470 * g as u32 + 7471 * b as u32 + 0x8000) >> 16) as u8
}

/// The same weights for samples already in `[0, 1]`.
#[inline]
pub fn luma_f32(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// Test helpers: the committed fixtures of `tests/fixtures/image/` and their expected values.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::path::PathBuf;

    use super::Gray;

    /// Folder of the image fixtures.
    pub fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/image")
    }

    /// One case of `expected.json` (made by `make_fixtures.py`).
    pub struct Case {
        pub file: PathBuf,
        pub width: usize,
        pub height: usize,
        /// Expected samples in `[0, 1]`.
        pub values: Vec<f32>,
        /// Tolerance in the same units as `values`.
        pub tol: f32,
        pub raw: serde_json::Value,
    }

    pub fn case(name: &str) -> Case {
        let text = std::fs::read_to_string(dir().join("expected.json")).expect("expected.json");
        let all: serde_json::Value = serde_json::from_str(&text).expect("json");
        let c = all[name].clone();
        let scale = if c["kind"] == "u8" { 1.0 / 255.0 } else { 1.0 };
        Case {
            file: dir().join(c["file"].as_str().expect("file")),
            width: c["width"].as_u64().expect("width") as usize,
            height: c["height"].as_u64().expect("height") as usize,
            values: c["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|v| (v.as_f64().expect("number") * scale) as f32)
                .collect(),
            tol: (c["tol"].as_f64().expect("tol") * scale) as f32 + 1e-6,
            raw: c,
        }
    }

    /// Asserts `img` matches the case pixel for pixel within its tolerance (and on average
    /// within `mean_tol` when the case has one); returns the largest difference.
    pub fn assert_matches(img: &Gray, c: &Case, what: &str) -> f32 {
        assert_eq!((img.width, img.height), (c.width, c.height), "{what}: size");
        let got = img.to_f32();
        let mut worst = 0.0f32;
        let mut sum = 0.0f32;
        for (i, (g, e)) in got.iter().zip(&c.values).enumerate() {
            let d = (g - e).abs();
            assert!(
                d <= c.tol,
                "{what}: pixel {i} (x {}, y {}) = {g}, expected {e} (tol {})",
                i % c.width,
                i / c.width,
                c.tol
            );
            worst = worst.max(d);
            sum += d;
        }
        let mean = sum / got.len().max(1) as f32;
        if let Some(m) = c.raw["mean_tol"].as_f64() {
            let m = m as f32
                * if c.raw["kind"] == "u8" {
                    1.0 / 255.0
                } else {
                    1.0
                };
            assert!(mean <= m, "{what}: mean |diff| {mean} > {m}");
        }
        eprintln!("{what}: max |diff| {worst:.6}, mean {mean:.6}");
        worst
    }
}
