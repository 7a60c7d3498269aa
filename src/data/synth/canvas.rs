//! A grayscale drawing surface for the noise lab's films, with the few soft-edged primitives the
//! anatomy and the finding cues are made of.
//!
//! Coordinates are **normalised by the image width**: `x` in `[0, 1]` across, `y` in
//! `[0, height / width]` down, so shapes keep their proportions at any resolution. Intensities are
//! linear in `[0, 1]` (0 = air, black; 1 = metal, white) and primitives *add* to them.

/// Smooth Hermite step from 0 at `e0` to 1 at `e1`.
pub fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Distance from `(px, py)` to the segment `(ax, ay)`–`(bx, by)`.
pub fn seg_dist(px: f32, py: f32, ax: f32, ay: f32, bx: f32, by: f32) -> f32 {
    let (dx, dy) = (bx - ax, by - ay);
    let l2 = dx * dx + dy * dy;
    let t = if l2 > 0.0 {
        (((px - ax) * dx + (py - ay) * dy) / l2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (qx, qy) = (ax + t * dx - px, ay + t * dy - py);
    (qx * qx + qy * qy).sqrt()
}

/// An axis-aligned ellipse.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ellipse {
    pub cx: f32,
    pub cy: f32,
    pub rx: f32,
    pub ry: f32,
}

impl Ellipse {
    /// Normalised radius of a point: < 1 inside, 1 on the border.
    pub fn r(&self, x: f32, y: f32) -> f32 {
        let (u, v) = ((x - self.cx) / self.rx, (y - self.cy) / self.ry);
        (u * u + v * v).sqrt()
    }

    /// Soft inside-mask: 1 well inside, 0 outside, blending over `edge` (normalised radius).
    pub fn mask(&self, x: f32, y: f32, edge: f32) -> f32 {
        1.0 - smoothstep(1.0 - edge, 1.0 + edge, self.r(x, y))
    }

    /// Point at relative position `(u, v)` in `[-1, 1]²` of the bounding box.
    pub fn at(&self, u: f32, v: f32) -> (f32, f32) {
        (self.cx + u * self.rx, self.cy + v * self.ry)
    }

    /// Point on the border at angle `t` (radians, 0 = +x, π/2 = down).
    pub fn border(&self, t: f32) -> (f32, f32) {
        (self.cx + self.rx * t.cos(), self.cy + self.ry * t.sin())
    }
}

/// A `w`×`h` float image.
#[derive(Debug, Clone)]
pub struct Canvas {
    pub w: usize,
    pub h: usize,
    /// Row-major intensities, `h * w`.
    pub px: Vec<f32>,
}

impl Canvas {
    /// A canvas filled with `v`.
    pub fn new(w: usize, h: usize, v: f32) -> Self {
        Canvas {
            w,
            h,
            px: vec![v; w * h],
        }
    }

    /// Height in normalised units (`h / w`).
    pub fn height(&self) -> f32 {
        self.h as f32 / self.w as f32
    }

    /// One pixel in normalised units.
    pub fn pixel(&self) -> f32 {
        1.0 / self.w as f32
    }

    /// Adds `f(x, y)` to every pixel whose centre lies in the box `[x0, x1] × [y0, y1]`.
    pub fn add(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, f: impl Fn(f32, f32) -> f32) {
        let s = self.w as f32;
        let c0 = ((x0 * s).floor().max(0.0) as usize).min(self.w);
        let c1 = ((x1 * s).ceil().max(0.0) as usize).min(self.w);
        let r0 = ((y0 * s).floor().max(0.0) as usize).min(self.h);
        let r1 = ((y1 * s).ceil().max(0.0) as usize).min(self.h);
        for r in r0..r1 {
            let y = (r as f32 + 0.5) / s;
            let row = &mut self.px[r * self.w..(r + 1) * self.w];
            for (c, p) in row.iter_mut().enumerate().take(c1).skip(c0) {
                let x = (c as f32 + 0.5) / s;
                *p += f(x, y);
            }
        }
    }

    /// Multiplies every pixel whose centre lies in the box `[x0, x1] × [y0, y1]` by `f(x, y)`.
    pub fn mul(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, f: impl Fn(f32, f32) -> f32) {
        let s = self.w as f32;
        let c0 = ((x0 * s).floor().max(0.0) as usize).min(self.w);
        let c1 = ((x1 * s).ceil().max(0.0) as usize).min(self.w);
        let r0 = ((y0 * s).floor().max(0.0) as usize).min(self.h);
        let r1 = ((y1 * s).ceil().max(0.0) as usize).min(self.h);
        for r in r0..r1 {
            let y = (r as f32 + 0.5) / s;
            let row = &mut self.px[r * self.w..(r + 1) * self.w];
            for (c, p) in row.iter_mut().enumerate().take(c1).skip(c0) {
                let x = (c as f32 + 0.5) / s;
                *p *= f(x, y);
            }
        }
    }

    /// Adds `f` everywhere.
    pub fn add_all(&mut self, f: impl Fn(f32, f32) -> f32) {
        let h = self.height();
        self.add(0.0, 0.0, 1.0, h, f);
    }

    /// Soft-edged filled ellipse of amplitude `amp`, optionally multiplied by `mask`.
    pub fn ellipse(&mut self, e: Ellipse, amp: f32, edge: f32, mask: impl Fn(f32, f32) -> f32) {
        let m = 1.0 + edge;
        self.add(
            e.cx - e.rx * m,
            e.cy - e.ry * m,
            e.cx + e.rx * m,
            e.cy + e.ry * m,
            |x, y| amp * e.mask(x, y, edge) * mask(x, y),
        );
    }

    /// Gaussian blob with standard deviations `sx`, `sy`, multiplied by `mask`.
    pub fn gauss(
        &mut self,
        cx: f32,
        cy: f32,
        sx: f32,
        sy: f32,
        amp: f32,
        mask: impl Fn(f32, f32) -> f32,
    ) {
        self.add(
            cx - 3.0 * sx,
            cy - 3.0 * sy,
            cx + 3.0 * sx,
            cy + 3.0 * sy,
            |x, y| {
                let (u, v) = ((x - cx) / sx, (y - cy) / sy);
                amp * (-0.5 * (u * u + v * v)).exp() * mask(x, y)
            },
        );
    }

    /// A polyline of half-thickness `ht` with an anti-aliased edge, multiplied by `mask`.
    /// Overlapping segments do not add up.
    pub fn polyline(
        &mut self,
        pts: &[(f32, f32)],
        ht: f32,
        amp: f32,
        mask: impl Fn(f32, f32) -> f32,
    ) {
        if pts.len() < 2 {
            return;
        }
        let soft = self.pixel().max(ht * 0.5);
        let pad = ht + soft;
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for &(x, y) in pts {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
        self.add(x0 - pad, y0 - pad, x1 + pad, y1 + pad, |x, y| {
            let mut d = f32::MAX;
            for s in pts.windows(2) {
                d = d.min(seg_dist(x, y, s[0].0, s[0].1, s[1].0, s[1].1));
            }
            if d >= pad {
                0.0
            } else {
                amp * (1.0 - smoothstep(ht - soft * 0.5, ht + soft * 0.5, d)) * mask(x, y)
            }
        });
    }

    /// Separable [1, 2, 1] / 4 blur, `passes` times (edges clamp).
    pub fn blur(&mut self, passes: usize) {
        let (w, h) = (self.w, self.h);
        let mut tmp = vec![0f32; w * h];
        for _ in 0..passes {
            for r in 0..h {
                for c in 0..w {
                    let l = self.px[r * w + c.saturating_sub(1)];
                    let m = self.px[r * w + c];
                    let rr = self.px[r * w + (c + 1).min(w - 1)];
                    tmp[r * w + c] = 0.25 * l + 0.5 * m + 0.25 * rr;
                }
            }
            for r in 0..h {
                for c in 0..w {
                    let u = tmp[r.saturating_sub(1) * w + c];
                    let m = tmp[r * w + c];
                    let d = tmp[(r + 1).min(h - 1) * w + c];
                    self.px[r * w + c] = 0.25 * u + 0.5 * m + 0.25 * d;
                }
            }
        }
    }

    /// 8-bit pixels after `v -> clamp(gain * v + offset)^gamma`.
    pub fn to_u8(&self, gain: f32, offset: f32, gamma: f32) -> Vec<u8> {
        self.px
            .iter()
            .map(|&v| {
                let t = (gain * v + offset).clamp(0.0, 1.0).powf(gamma);
                (t * 255.0).round() as u8
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_land_where_asked() {
        let mut c = Canvas::new(100, 120, 0.0);
        c.ellipse(
            Ellipse {
                cx: 0.3,
                cy: 0.4,
                rx: 0.1,
                ry: 0.2,
            },
            1.0,
            0.01,
            |_, _| 1.0,
        );
        // pixel (30, 40) is the centre; (30, 65) is outside (ry = 20 px).
        assert!((c.px[40 * 100 + 30] - 1.0).abs() < 1e-6);
        assert_eq!(c.px[65 * 100 + 30], 0.0);
        assert_eq!(c.px[40 * 100 + 45], 0.0);
        let mut c = Canvas::new(50, 50, 0.0);
        c.polyline(&[(0.1, 0.5), (0.9, 0.5)], 0.03, 0.5, |_, _| 1.0);
        assert!((c.px[25 * 50 + 25] - 0.5).abs() < 1e-6);
        assert_eq!(c.px[10 * 50 + 25], 0.0);
        // A blur keeps the mean of a constant image and spreads a point.
        let mut c = Canvas::new(9, 9, 0.0);
        c.px[4 * 9 + 4] = 16.0;
        c.blur(1);
        assert!((c.px[4 * 9 + 4] - 4.0).abs() < 1e-6);
        assert!((c.px[3 * 9 + 3] - 1.0).abs() < 1e-6);
        assert!((c.px.iter().sum::<f32>() - 16.0).abs() < 1e-5);
    }
}
