//! Seeded augmentation: a random affine warp (rotation, translation, scale) and an optional
//! horizontal flip, off by default because a chest film's left and right are not symmetric
//! (heart, aortic knob, gastric bubble).
//!
//! The warp follows torchvision's `transforms.functional.affine` on tensors exactly (centre of
//! rotation at the image centre, clockwise angles, translation in pixels after rotation,
//! bilinear sampling with `align_corners=False` and zero (black) fill), so a torchvision recipe
//! carries over unchanged. Every draw comes from
//! [`keyed`](crate::rng::keyed)`(seed, Stream::Augment, epoch, sample)`: a sample's augmentation
//! depends on neither batch order nor thread count.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::data::image::Gray;
use crate::error::{Error, Result};
use crate::rng::{keyed, Stream};

/// Augmentation switches and ranges (the `[augment]` table of a config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Master switch; `false` leaves training images as evaluation sees them.
    pub enabled: bool,
    /// Rotation drawn from `U(-rotate_deg, rotate_deg)`, degrees (clockwise positive on screen).
    pub rotate_deg: f32,
    /// Translation drawn per axis from `U(-t, t) * size`, `t` a fraction of the side.
    pub translate: f32,
    /// Isotropic scale drawn from `U(scale[0], scale[1])`; `> 1` zooms in.
    pub scale: [f32; 2],
    /// Probability of a horizontal flip (0 by default: chest films are not mirror-symmetric).
    pub hflip: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            enabled: true,
            rotate_deg: 10.0,
            translate: 0.05,
            scale: [0.95, 1.05],
            hflip: 0.0,
        }
    }
}

impl AugmentConfig {
    /// No augmentation at all.
    pub fn off() -> Self {
        AugmentConfig {
            enabled: false,
            ..Default::default()
        }
    }

    /// Checks ranges; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !(0.0..=180.0).contains(&self.rotate_deg) {
            return bad(format!(
                "augment.rotate_deg = {} must be in 0..=180",
                self.rotate_deg
            ));
        }
        if !(0.0..=0.5).contains(&self.translate) {
            return bad(format!(
                "augment.translate = {} must be in 0..=0.5",
                self.translate
            ));
        }
        let [lo, hi] = self.scale;
        if !(lo > 0.0 && lo <= hi && hi <= 4.0) {
            return bad(format!(
                "augment.scale = [{lo}, {hi}] must satisfy 0 < lo <= hi <= 4"
            ));
        }
        if !(0.0..=1.0).contains(&self.hflip) {
            return bad(format!(
                "augment.hflip = {} must be a probability in 0..=1",
                self.hflip
            ));
        }
        Ok(())
    }

    /// Draws the transform of sample `sample` in `epoch` for a `size`×`size` image; `None` when
    /// augmentation is off.
    pub fn draw(&self, seed: u64, epoch: u64, sample: u64, size: usize) -> Option<Affine> {
        if !self.enabled {
            return None;
        }
        let mut rng = keyed(seed, Stream::Augment, epoch, sample);
        let mut uniform = |lo: f32, hi: f32| {
            let u: f32 = rng.random();
            lo + (hi - lo) * u
        };
        let angle = uniform(-self.rotate_deg, self.rotate_deg);
        let m = self.translate * size as f32;
        let tx = uniform(-m, m);
        let ty = uniform(-m, m);
        let scale = uniform(self.scale[0], self.scale[1]);
        let hflip = uniform(0.0, 1.0) < self.hflip;
        Some(Affine {
            angle_deg: angle,
            translate: [tx, ty],
            scale,
            hflip,
        })
    }
}

/// One drawn transform. Applied as: flip (if set) then the affine about the image centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    /// Degrees, clockwise as seen on screen (torchvision's `angle`).
    pub angle_deg: f32,
    /// Pixels `[x, y]` (torchvision's `translate`; `y` points down).
    pub translate: [f32; 2],
    /// Isotropic zoom factor.
    pub scale: f32,
    pub hflip: bool,
}

impl Affine {
    /// The identity transform.
    pub fn identity() -> Self {
        Affine {
            angle_deg: 0.0,
            translate: [0.0, 0.0],
            scale: 1.0,
            hflip: false,
        }
    }

    /// Output→input map in centred coordinates `[a, b, c, d, e, f]`:
    /// `x_in = a x + b y + c`, `y_in = d x + e y + f`. torchvision's
    /// `_get_inverse_affine_matrix(center=[0, 0], angle, translate, scale, shear=0)`.
    fn inverse(&self) -> [f64; 6] {
        let rot = (self.angle_deg as f64).to_radians();
        let (s, c) = rot.sin_cos();
        let k = 1.0 / self.scale as f64;
        let (tx, ty) = (self.translate[0] as f64, self.translate[1] as f64);
        // Inverse rotation+scale of R = [[c, -s], [s, c]] is [[c, s], [-s, c]] / scale.
        let (a, b, d, e) = (c * k, s * k, -s * k, c * k);
        [a, b, a * -tx + b * -ty, d, e, d * -tx + e * -ty]
    }
}

/// Warps `src` (a `size`×`size` fitted image) with `t` into a new plane of floats in `[0, 1]`.
/// `None` returns the plain samples.
///
/// # Shapes
/// `src`: `H`×`W` → `[H * W]`.
pub fn apply(src: &Gray, t: Option<&Affine>) -> Vec<f32> {
    let plane = src.to_f32();
    let Some(t) = t else {
        return plane;
    };
    let (w, h) = (src.width, src.height);
    let m = t.inverse();
    let (hw, hh) = (w as f64 * 0.5, h as f64 * 0.5);
    // Flipping after the inverse map negates the sampled x.
    let sx = if t.hflip { -1.0 } else { 1.0 };
    let mut out = vec![0.0f32; w * h];
    for (oy, row) in out.chunks_exact_mut(w.max(1)).enumerate() {
        let yc = oy as f64 + 0.5 - hh;
        // Input position (pixel-index coordinates, align_corners = False) of output x = 0,
        // and its step per output pixel; f32 from here on, like torchvision's sampling grid.
        let x0 = (sx * (m[0] * (0.5 - hw) + m[1] * yc + m[2]) + hw - 0.5) as f32;
        let y0 = (m[3] * (0.5 - hw) + m[4] * yc + m[5] + hh - 0.5) as f32;
        let (dx, dy) = ((sx * m[0]) as f32, m[3] as f32);
        for (ox, o) in row.iter_mut().enumerate() {
            let (x, y) = (x0 + dx * ox as f32, y0 + dy * ox as f32);
            *o = bilinear_zero(&plane, w, h, x, y);
        }
    }
    out
}

/// Bilinear sample of a `w`×`h` plane at fractional pixel position `(x, y)`; taps outside the
/// image count as 0 (PyTorch `grid_sample(padding_mode="zeros")`).
#[inline(always)]
fn bilinear_zero(p: &[f32], w: usize, h: usize, x: f32, y: f32) -> f32 {
    // floor() without a libm call (the baseline x86-64 target has no SSE4.1 `roundss`).
    let floor = |v: f32| {
        let t = v as i64;
        t - ((v < t as f32) as i64)
    };
    let (x0, y0) = (floor(x), floor(y));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let (wi, hi) = (w as i64, h as i64);
    if (x0 as u64) < (wi - 1) as u64 && (y0 as u64) < (hi - 1) as u64 {
        // Interior: all four taps inside.
        let i = y0 as usize * w + x0 as usize;
        let (a, b) = (p[i], p[i + 1]);
        let (c, d) = (p[i + w], p[i + w + 1]);
        let top = a + (b - a) * fx;
        let bottom = c + (d - c) * fx;
        return top + (bottom - top) * fy;
    }
    if x0 < -1 || y0 < -1 || x0 >= wi || y0 >= hi {
        return 0.0;
    }
    let tap = |xx: i64, yy: i64| {
        if xx < 0 || yy < 0 || xx >= wi || yy >= hi {
            0.0
        } else {
            p[yy as usize * w + xx as usize]
        }
    };
    let top = tap(x0, y0) * (1.0 - fx) + tap(x0 + 1, y0) * fx;
    let bottom = tap(x0, y0 + 1) * (1.0 - fx) + tap(x0 + 1, y0 + 1) * fx;
    top * (1.0 - fy) + bottom * fy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::image::decode_file;
    use crate::data::image::fixtures::dir;

    // Expected planes: torchvision 0.29.2 `F.affine(img, angle, translate, scale, shear=0,
    // interpolation=BILINEAR)` after `F.hflip` when set (torch 2.15.0);
    // tests/fixtures/image/make_affine.py.
    #[test]
    fn warp_matches_torchvision_affine() {
        let text = std::fs::read_to_string(dir().join("affine.json")).unwrap();
        let j: serde_json::Value = serde_json::from_str(&text).unwrap();
        let img = decode_file(&dir().join(j["file"].as_str().unwrap()), None).unwrap();
        for c in j["cases"].as_array().unwrap() {
            let t = Affine {
                angle_deg: c["angle"].as_f64().unwrap() as f32,
                translate: [
                    c["translate"][0].as_f64().unwrap() as f32,
                    c["translate"][1].as_f64().unwrap() as f32,
                ],
                scale: c["scale"].as_f64().unwrap() as f32,
                hflip: c["hflip"].as_bool().unwrap(),
            };
            let got = apply(&img, Some(&t));
            let want: Vec<f32> = c["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(got.len(), want.len());
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst < 1e-5, "{t:?}: max |diff| {worst}");
        }
    }

    #[test]
    fn draws_are_keyed_by_seed_epoch_and_sample() {
        let cfg = AugmentConfig::default();
        let a = cfg.draw(1, 2, 3, 224).unwrap();
        assert_eq!(Some(a), cfg.draw(1, 2, 3, 224));
        assert_ne!(Some(a), cfg.draw(1, 2, 4, 224));
        assert_ne!(Some(a), cfg.draw(1, 3, 3, 224));
        assert_ne!(Some(a), cfg.draw(2, 2, 3, 224));
        assert_eq!(AugmentConfig::off().draw(1, 2, 3, 224), None);
    }

    #[test]
    fn draws_stay_in_their_ranges_and_flip_is_off_by_default() {
        let cfg = AugmentConfig::default();
        let (mut lo, mut hi) = (f32::MAX, f32::MIN);
        for i in 0..2000 {
            let t = cfg.draw(9, 0, i, 200).unwrap();
            assert!(t.angle_deg.abs() <= cfg.rotate_deg);
            assert!(t.translate.iter().all(|v| v.abs() <= cfg.translate * 200.0));
            assert!(t.scale >= cfg.scale[0] && t.scale <= cfg.scale[1]);
            assert!(!t.hflip);
            lo = lo.min(t.angle_deg);
            hi = hi.max(t.angle_deg);
        }
        // The whole range is used, not a corner of it.
        assert!(lo < -9.0 && hi > 9.0, "{lo}..{hi}");
        let flips = AugmentConfig {
            hflip: 0.5,
            ..Default::default()
        };
        let n = (0..2000)
            .filter(|&i| flips.draw(9, 0, i, 200).unwrap().hflip)
            .count();
        assert!((900..1100).contains(&n), "{n} flips of 2000");
    }

    #[test]
    fn validate_names_the_field() {
        let bad = AugmentConfig {
            scale: [1.2, 1.0],
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("augment.scale"));
        let bad = AugmentConfig {
            hflip: 1.5,
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("augment.hflip"));
        let e = toml::from_str::<AugmentConfig>("rotate = 3").unwrap_err();
        assert!(e.to_string().contains("rotate"), "{e}");
    }
}
