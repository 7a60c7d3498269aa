//! Renders a study's film from its clean truth: patient anatomy, one visual cue per present
//! finding (scaled by its strength), look-alikes on some negatives, then exposure, blur and
//! quantum noise.
//!
//! Opacities are drawn as a loss of lung air (a *density* d in [0, 1]: 1 = soft tissue, the lung
//! field's contrast is 0.32 intensity units); bone, metal and the pneumothorax rim are additive.
//! Cues, roughly from easy to hard at the 64 px training size (sizes in image widths; `s` =
//! strength, `m` = look-alike strength):
//!
//! | finding | cue | look-alike on negatives |
//! |---|---|---|
//! | Support Devices | bright tubes, lines, pacemaker, ECG leads (0.3 + 0.3 s) | button / jewellery disc |
//! | Pleural Effusion | fluid at a lung base with a meniscus (height 0.03–0.15) | slightly blunted angle |
//! | Cardiomegaly | heart 5–35 % wider (normal spread ±7 %; AP films +6 %) | larger normal heart |
//! | Edema | bilateral perihilar haze + Kerley lines (d 0.15 + 0.35 s) | faint perihilar haze |
//! | Consolidation | dense lobar patch with air bronchograms (d 0.25 + 0.6 s) | soft-tissue overlap |
//! | Pneumothorax | dark pleural rim without markings + pleural line | skin fold line |
//! | Atelectasis | raised hemidiaphragm (1–5 %) + plate-like band | thin scar line |
//! | Lung Opacity | hazy patch (d 0.15 + 0.35 s); parents of children show the children's cues | breast shadow |
//! | Enlarged Cardiomediastinum | upper mediastinum up to 70 % wider | rotation (15 %) |
//! | Lung Lesion | small sharp nodule, radius 0.012–0.03 (d 0.3 + 0.7 s) | bilateral nipple shadows |
//! | Pneumonia | patchy blobs clustered on the consolidation (d 0.15 + 0.35 s) | faint patches |
//! | Pleural Other | thickened pleura along the lateral wall | thin companion line |
//! | Fracture | gap and step in one rib + callus (0.04 + 0.08 s) | healed callus |

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::canvas::{smoothstep, Canvas, Ellipse};
use super::truth::{idx::*, purpose, study_rng, StudyTruth};
use crate::data::record::Projection;

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    rng.sample::<f64, _>(StandardNormal) as f32
}

fn uniform(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

/// One lung field; `lat` is +1 when the lung's lateral side is towards +x in the image.
#[derive(Debug, Clone, Copy)]
struct Lung {
    e: Ellipse,
    lat: f32,
}

impl Lung {
    fn mask(&self, x: f32, y: f32) -> f32 {
        self.e.mask(x, y, 0.04)
    }

    /// A point inside the lung at relative `(u, v)`, `u` measured towards the lateral side.
    fn at(&self, u: f32, v: f32) -> (f32, f32) {
        self.e.at(u * self.lat, v)
    }

    fn bottom(&self) -> f32 {
        self.e.cy + self.e.ry
    }
}

/// The body a film shows before findings are added.
#[derive(Debug, Clone)]
struct Anatomy {
    lateral: bool,
    body: Ellipse,
    lungs: Vec<Lung>,
    heart: Ellipse,
    /// Upper mediastinum: centre x, half-width, top and bottom y.
    med: (f32, f32, f32, f32),
    /// Rib centre lines (frontal views only).
    ribs: Vec<Vec<(f32, f32)>>,
}

/// Patient-level anatomy (shared by a patient's studies) with study-level positioning jitter.
fn anatomy(seed: u64, st: &StudyTruth, lateral: bool, height: f32) -> Anatomy {
    let mut pr = study_rng(seed, st.split, st.patient_in_split, 0, purpose::ANATOMY);
    let mut sr = study_rng(
        seed,
        st.split,
        st.patient_in_split,
        st.study_no,
        purpose::ANATOMY,
    );
    let size = 1.0 + 0.05 * normal(&mut pr); // thorax size
    let heart_w = 1.0 + 0.07 * normal(&mut pr); // normal heart-size spread
    let med_w = 1.0 + 0.08 * normal(&mut pr);
    let insp = 1.0 + 0.05 * normal(&mut sr); // depth of inspiration
    let dx = 0.015 * normal(&mut sr); // positioning
    let dy = 0.015 * normal(&mut sr);
    let cy = height * 0.5 + dy;
    if lateral {
        let lung = Lung {
            e: Ellipse {
                cx: 0.52 + dx,
                cy: cy - 0.04,
                rx: 0.27 * size,
                ry: 0.32 * size * insp,
            },
            lat: 1.0,
        };
        return Anatomy {
            lateral,
            body: Ellipse {
                cx: 0.5 + dx,
                cy: cy + 0.05,
                rx: 0.43 * size,
                ry: 0.55,
            },
            heart: Ellipse {
                cx: 0.37 + dx,
                cy: cy + 0.13,
                rx: 0.12 * heart_w,
                ry: 0.14 * heart_w,
            },
            lungs: vec![lung],
            med: (0.5 + dx, 0.0, 0.0, 0.0),
            ribs: vec![],
        };
    }
    let ry = 0.31 * size * insp;
    let right = Lung {
        e: Ellipse {
            cx: 0.31 + dx,
            cy: cy - 0.03,
            rx: 0.155 * size,
            ry,
        },
        lat: -1.0,
    };
    let left = Lung {
        e: Ellipse {
            cx: 0.69 + dx,
            cy: cy - 0.01,
            rx: 0.15 * size,
            ry: ry * 0.97,
        },
        lat: 1.0,
    };
    let heart = Ellipse {
        cx: 0.535 + dx,
        cy: left.bottom() - 0.11,
        rx: 0.13 * heart_w * size,
        ry: 0.11 * size,
    };
    let top = right.e.cy - right.e.ry + 0.02;
    let med = (
        0.5 + dx,
        0.05 * med_w * size,
        top,
        heart.cy - heart.ry * 0.6,
    );
    let mut ribs = Vec::new();
    for lung in [&right, &left] {
        for i in 0..9 {
            let y0 = lung.e.cy - lung.e.ry * 0.9 + i as f32 * lung.e.ry * 0.2;
            let pts: Vec<(f32, f32)> = (0..=8)
                .map(|t| {
                    let u = t as f32 / 8.0; // 0 at the spine, 1 lateral
                    let x = med.0 + lung.lat * (0.03 + u * (lung.e.rx * 2.0 + 0.02));
                    let y = y0 + 0.10 * u * u - 0.02 * u;
                    (x, y)
                })
                .collect();
            ribs.push(pts);
        }
    }
    Anatomy {
        lateral,
        body: Ellipse {
            cx: 0.5 + dx,
            cy: cy + 0.12,
            rx: 0.46 * size,
            ry: 0.62,
        },
        lungs: vec![right, left],
        heart,
        med,
        ribs,
    }
}

/// Contrast between aerated lung and soft tissue (intensity units).
const AIR_CONTRAST: f32 = 0.32;

/// A film under construction: additive `tissue` (bone, devices, soft tissue) and the fraction of
/// `air` left in each pixel of the lung fields. Opacities (fluid, consolidation, heart) *remove*
/// air multiplicatively, so overlapping opacities saturate at soft-tissue density instead of
/// adding up. Final intensity = `tissue - AIR_CONTRAST * air`.
struct Film {
    tissue: Canvas,
    air: Canvas,
}

impl Film {
    /// Removes the fraction `d(x, y)` in [0, 1] of the air in the box.
    fn densify(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, d: impl Fn(f32, f32) -> f32) {
        self.air
            .mul(x0, y0, x1, y1, |x, y| 1.0 - d(x, y).clamp(0.0, 1.0));
    }

    fn densify_ellipse(&mut self, e: Ellipse, d: f32, edge: f32) {
        let m = 1.0 + edge;
        self.densify(
            e.cx - e.rx * m,
            e.cy - e.ry * m,
            e.cx + e.rx * m,
            e.cy + e.ry * m,
            |x, y| d * e.mask(x, y, edge),
        );
    }

    fn densify_gauss(&mut self, cx: f32, cy: f32, sx: f32, sy: f32, d: f32) {
        self.densify(
            cx - 3.0 * sx,
            cy - 3.0 * sy,
            cx + 3.0 * sx,
            cy + 3.0 * sy,
            |x, y| {
                let (u, v) = ((x - cx) / sx, (y - cy) / sy);
                d * (-0.5 * (u * u + v * v)).exp()
            },
        );
    }

    fn densify_line(&mut self, pts: &[(f32, f32)], ht: f32, d: f32) {
        // Rasterise the line on a scratch canvas, then remove air under it.
        let mut scratch = Canvas::new(self.air.w, self.air.h, 0.0);
        scratch.polyline(pts, ht, 1.0, |_, _| 1.0);
        for (a, l) in self.air.px.iter_mut().zip(&scratch.px) {
            *a *= 1.0 - (d * l).clamp(0.0, 1.0);
        }
    }
}

/// Renders one image of a study (frontal or lateral) as 8-bit grayscale pixels, row-major.
///
/// `w`×`h` in pixels. The result depends only on `(seed, study key, lateral, w, h)`.
pub fn render(seed: u64, st: &StudyTruth, lateral: bool, w: usize, h: usize) -> Vec<u8> {
    let mut f = Film {
        tissue: Canvas::new(w, h, 0.05),
        air: Canvas::new(w, h, 0.0),
    };
    let mut a = anatomy(seed, st, lateral, f.tissue.height());
    let view_key = if lateral { 1 << 20 } else { 0 };
    let key = st.study_no | view_key;
    let mut cr = study_rng(seed, st.split, st.patient_in_split, key, purpose::CUES);
    let mut tr = study_rng(seed, st.split, st.patient_in_split, key, purpose::TEXTURE);

    // Geometry changes first (they reshape the anatomy before it is drawn).
    let (s, m) = (st.strength, st.mimic);
    let mut heart_scale = 1.0 + 0.12 * m[CARDIOMEGALY];
    if st.own_cue[CARDIOMEGALY] {
        heart_scale = 1.05 + 0.30 * s[CARDIOMEGALY];
    }
    if st.projection == Projection::AP && !lateral {
        heart_scale *= 1.06; // AP magnification: a built-in look-alike
    }
    a.heart.rx *= heart_scale;
    if lateral {
        a.heart.ry *= 1.0 + 0.5 * (heart_scale - 1.0);
    }
    let mut med_scale = 1.0 + 0.15 * m[ECM];
    if st.own_cue[ECM] {
        med_scale = 1.1 + 0.6 * s[ECM];
    }
    a.med.1 *= med_scale;

    draw_base(&mut f, &a, &mut tr);
    draw_cues(&mut f, &a, st, &mut cr);

    let mut c = f.tissue;
    for (p, air) in c.px.iter_mut().zip(&f.air.px) {
        *p -= AIR_CONTRAST * air;
    }
    // Exposure, detector blur and quantum noise.
    let passes = (w / 160).max(1);
    c.blur(passes);
    let sigma = 0.012 + 0.006 * tr.random::<f32>();
    for p in c.px.iter_mut() {
        *p += sigma * normal(&mut tr);
    }
    let gain = 1.0 + 0.08 * normal(&mut tr);
    let offset = 0.03 * normal(&mut tr);
    let gamma = 1.0 + 0.08 * normal(&mut tr);
    c.to_u8(gain, offset, gamma.clamp(0.7, 1.3))
}

fn draw_base(f: &mut Film, a: &Anatomy, r: &mut ChaCha8Rng) {
    let body = a.body;
    let lateral = a.lateral;
    let body_mask = move |x: f32, y: f32| {
        let b = body.mask(x, y, 0.03);
        if lateral {
            return b;
        }
        // neck
        let neck =
            (1.0 - smoothstep(0.08, 0.1, (x - 0.5).abs())) * (1.0 - smoothstep(0.15, 0.2, y));
        b.max(neck)
    };
    f.tissue.add_all(|x, y| 0.48 * body_mask(x, y));
    for lung in &a.lungs {
        let l = *lung;
        f.air.ellipse(l.e, 1.0, 0.04, |_, _| 1.0);
    }
    let lungs = a.lungs.clone();
    let in_lungs = move |x: f32, y: f32| lungs.iter().map(|l| l.mask(x, y)).fold(0.0, f32::max);
    // Vessels: branches fanning out from each hilum.
    for lung in &a.lungs {
        let (hx, hy) = lung.at(-0.55, 0.0);
        for _ in 0..8 {
            let ang = uniform(r, -1.3, 1.3);
            let mut pts = vec![(hx, hy)];
            let (mut x, mut y) = (hx, hy);
            let step = lung.e.rx * 0.25;
            let mut t = ang;
            for _ in 0..5 {
                t += 0.3 * normal(r);
                x += lung.lat * step * t.cos();
                y += step * t.sin() * 1.3;
                pts.push((x, y));
            }
            f.tissue.polyline(&pts, 0.004, 0.05, in_lungs.clone());
        }
    }
    // Upper mediastinum (soft tissue between the lungs), heart, spine.
    let (mx, mw, mt, mb) = a.med;
    if !a.lateral {
        f.densify(mx - mw - 0.02, mt - 0.02, mx + mw + 0.02, mb, |x, y| {
            (1.0 - smoothstep(mw - 0.01, mw + 0.01, (x - mx).abs())) * smoothstep(mt - 0.02, mt, y)
        });
    }
    f.densify_ellipse(a.heart, 1.0, 0.05);
    f.tissue.ellipse(a.heart, 0.03, 0.05, |_, _| 1.0);
    let h = f.tissue.height();
    let (sx, sw, amp) = if a.lateral {
        (0.79, 0.055, 0.14)
    } else {
        (mx, 0.035, 0.08)
    };
    f.tissue
        .add(sx - sw - 0.01, 0.0, sx + sw + 0.01, h, |x, y| {
            amp * (1.0 - smoothstep(sw - 0.005, sw + 0.005, (x - sx).abs())) * body_mask(x, y)
        });
    // Ribs and clavicles.
    for rib in &a.ribs {
        f.tissue.polyline(rib, 0.008, 0.07, body_mask);
    }
    if !a.lateral {
        for lat in [-1.0f32, 1.0] {
            let pts = [
                (0.5 + lat * 0.05, 0.16),
                (0.5 + lat * 0.18, 0.12),
                (0.5 + lat * 0.32, 0.11),
            ];
            f.tissue.polyline(&pts, 0.012, 0.12, |_, _| 1.0);
        }
    }
}

/// Picks one of the lungs (frontal: either side).
fn pick(a: &Anatomy, r: &mut ChaCha8Rng) -> Lung {
    let i = r.random_range(0..a.lungs.len());
    a.lungs[i]
}

fn draw_cues(f: &mut Film, a: &Anatomy, st: &StudyTruth, r: &mut ChaCha8Rng) {
    let (s, m, own) = (st.strength, st.mimic, st.own_cue);

    // Pleural Effusion: fluid with a meniscus (higher laterally), one or both bases.
    if own[EFFUSION] || m[EFFUSION] > 0.0 {
        let (h, both) = if own[EFFUSION] {
            (0.03 + 0.12 * s[EFFUSION], r.random::<f32>() < 0.4)
        } else {
            (0.012 * m[EFFUSION] + 0.008, false)
        };
        let first = pick(a, r);
        for lung in a.lungs.iter().filter(|l| both || l.lat == first.lat) {
            let l = *lung;
            let level = l.bottom() - h;
            f.densify(
                l.e.cx - l.e.rx,
                level - h,
                l.e.cx + l.e.rx,
                l.bottom(),
                |x, y| {
                    let u = (((x - l.e.cx) * l.lat / l.e.rx) + 1.0) * 0.5; // 0 medial, 1 lateral
                    let ym = level - 0.8 * h * u * u;
                    smoothstep(ym - 0.006, ym + 0.006, y)
                },
            );
        }
    }

    // Edema: bilateral perihilar haze + Kerley B lines at the lateral bases.
    if own[EDEMA] || m[EDEMA] > 0.0 {
        let d = if own[EDEMA] {
            0.15 + 0.35 * s[EDEMA]
        } else {
            0.15 * m[EDEMA]
        };
        for lung in &a.lungs {
            let l = *lung;
            let (hx, hy) = l.at(-0.4, 0.05);
            f.densify_gauss(hx, hy, l.e.rx * 0.55, l.e.ry * 0.45, d);
            if own[EDEMA] {
                for i in 0..4 {
                    let (x, y) = l.at(0.92, 0.45 + 0.1 * i as f32);
                    f.densify_line(&[(x, y), (x - l.lat * 0.035, y)], 0.002, 0.8 * d);
                }
            }
        }
    }

    // Consolidation (also under every Pneumonia): dense lobar patch + air bronchograms.
    let mut cons_site = None;
    if own[CONSOLIDATION] || m[CONSOLIDATION] > 0.0 {
        let l = pick(a, r);
        let (x, y) = l.at(uniform(r, -0.3, 0.6), uniform(r, 0.0, 0.6));
        let e = Ellipse {
            cx: x,
            cy: y,
            rx: uniform(r, 0.05, 0.08),
            ry: uniform(r, 0.04, 0.07),
        };
        if own[CONSOLIDATION] {
            let d = 0.25 + 0.6 * s[CONSOLIDATION];
            f.densify_ellipse(e, d, 0.3);
            for _ in 0..2 {
                let t = uniform(r, 0.0, std::f32::consts::TAU);
                let pts = [(x, y), (x + 0.6 * e.rx * t.cos(), y + 0.6 * e.ry * t.sin())];
                f.tissue
                    .polyline(&pts, 0.003, -0.3 * d * AIR_CONTRAST, move |xx, yy| {
                        l.mask(xx, yy)
                    });
            }
            cons_site = Some((l, e));
        } else {
            f.densify_ellipse(e, 0.2 * m[CONSOLIDATION], 0.6);
        }
    }

    // Pneumonia: patchy blobs clustered on the consolidation.
    if own[PNEUMONIA] || m[PNEUMONIA] > 0.0 {
        let e = match cons_site {
            Some((_, e)) => e,
            None => {
                let l = pick(a, r);
                let (x, y) = l.at(uniform(r, -0.3, 0.6), uniform(r, -0.2, 0.6));
                Ellipse {
                    cx: x,
                    cy: y,
                    rx: 0.06,
                    ry: 0.06,
                }
            }
        };
        let d = if own[PNEUMONIA] {
            0.15 + 0.35 * s[PNEUMONIA]
        } else {
            0.15 * m[PNEUMONIA].max(0.2)
        };
        for _ in 0..r.random_range(4..8) {
            let (x, y) = e.at(uniform(r, -1.3, 1.3), uniform(r, -1.3, 1.3));
            let sd = uniform(r, 0.008, 0.016);
            f.densify_gauss(x, y, sd, sd, d);
        }
    }

    // Atelectasis: raised hemidiaphragm (volume loss) + plate-like band; look-alike: scar line.
    if own[ATELECTASIS] || m[ATELECTASIS] > 0.0 {
        let l = pick(a, r);
        let (x, y) = l.at(uniform(r, -0.4, 0.5), uniform(r, 0.35, 0.65));
        let half = uniform(r, 0.04, 0.07);
        let tilt = uniform(r, -0.015, 0.015);
        let band = [(x - half, y - tilt), (x + half, y + tilt)];
        if own[ATELECTASIS] {
            f.densify_line(&band, 0.006, 0.25 + 0.5 * s[ATELECTASIS]);
            let lift = 0.01 + 0.04 * s[ATELECTASIS];
            let raised = Ellipse {
                cy: l.e.cy - lift,
                ..l.e
            };
            let top = l.bottom() - 2.0 * lift - 0.05;
            f.densify(
                l.e.cx - l.e.rx,
                top,
                l.e.cx + l.e.rx,
                l.bottom(),
                |xx, yy| 1.0 - raised.mask(xx, yy, 0.04),
            );
        } else {
            f.densify_line(&band, 0.003, 0.25 * m[ATELECTASIS]);
        }
    }

    // Lung Opacity (own cue): a hazy patch; look-alike: bilateral breast shadows.
    if own[LUNG_OPACITY] {
        let l = pick(a, r);
        let (x, y) = l.at(uniform(r, -0.5, 0.6), uniform(r, -0.5, 0.6));
        let sd = uniform(r, 0.04, 0.07);
        f.densify_gauss(x, y, sd, sd * 1.2, 0.15 + 0.35 * s[LUNG_OPACITY]);
    } else if m[LUNG_OPACITY] > 0.0 {
        for lung in &a.lungs {
            let (x, y) = lung.at(0.5, 0.75);
            f.densify_gauss(x, y, 0.08, 0.05, 0.2 * m[LUNG_OPACITY]);
        }
    }

    // Lung Lesion: one or two small sharp nodules; look-alike: symmetric nipple shadows.
    if own[LUNG_LESION] {
        let n = if r.random::<f32>() < 0.8 { 1 } else { 2 };
        for _ in 0..n {
            let l = pick(a, r);
            let (x, y) = l.at(uniform(r, -0.4, 0.7), uniform(r, -0.7, 0.6));
            let rad = uniform(r, 0.012, 0.03);
            let e = Ellipse {
                cx: x,
                cy: y,
                rx: rad,
                ry: rad,
            };
            f.densify_ellipse(e, 0.3 + 0.7 * s[LUNG_LESION], 0.15);
        }
    } else if m[LUNG_LESION] > 0.0 && !a.lateral {
        let v = uniform(r, 0.45, 0.65);
        for lung in &a.lungs {
            let (x, y) = lung.at(0.45, v);
            let e = Ellipse {
                cx: x,
                cy: y,
                rx: 0.012,
                ry: 0.012,
            };
            f.densify_ellipse(e, 0.4 * m[LUNG_LESION], 0.3);
        }
    }

    // Pneumothorax: dark apical-lateral rim (collapsed lung edge, no markings) + pleural line;
    // look-alike: a skin fold line with no dark rim.
    if own[PNEUMOTHORAX] || m[PNEUMOTHORAX] > 0.0 {
        let l = pick(a, r);
        let d = if own[PNEUMOTHORAX] {
            0.02 + 0.06 * s[PNEUMOTHORAX]
        } else {
            0.03
        };
        let collapsed = Ellipse {
            cx: l.e.cx - l.lat * d * 0.5,
            cy: l.e.cy + d * 0.5,
            rx: l.e.rx - d * 0.6,
            ry: l.e.ry - d * 0.6,
        };
        let (x0, x1) = (l.e.cx - l.e.rx, l.e.cx + l.e.rx);
        let (y0, y1) = (l.e.cy - l.e.ry, l.e.cy + 0.3 * l.e.ry);
        let line = 0.004f32;
        let pleural_line = move |x: f32, y: f32| {
            let edge = (collapsed.r(x, y) - 1.0).abs() * collapsed.rx.min(collapsed.ry);
            1.0 - smoothstep(line * 0.5, line * 1.5, edge)
        };
        if own[PNEUMOTHORAX] {
            let amp = 0.04 + 0.08 * s[PNEUMOTHORAX];
            f.tissue.add(x0, y0, x1, y1, |x, y| {
                let rim = l.mask(x, y) * (1.0 - collapsed.mask(x, y, 0.02));
                let up = 1.0 - smoothstep(l.e.cy, l.e.cy + 0.3 * l.e.ry, y);
                up * l.mask(x, y) * (-amp * rim + 0.8 * amp * pleural_line(x, y))
            });
        } else {
            let amp = 0.05 * m[PNEUMOTHORAX];
            f.tissue.add(x0, y0, x1, y1, |x, y| {
                let up = 1.0 - smoothstep(l.e.cy - 0.3 * l.e.ry, l.e.cy, y);
                amp * up * pleural_line(x, y) * l.mask(x, y)
            });
        }
    }

    // Pleural Other: thickened pleura along the lateral wall.
    if own[PLEURAL_OTHER] || m[PLEURAL_OTHER] > 0.0 {
        let l = pick(a, r);
        let t0 = uniform(r, -1.2, 0.2);
        let t1 = t0 + uniform(r, 0.5, 1.0);
        let pts: Vec<(f32, f32)> = (0..=10)
            .map(|i| {
                let t = t0 + (t1 - t0) * i as f32 / 10.0;
                let (x, y) = l.e.border(t);
                let x = l.e.cx + (x - l.e.cx) * l.lat; // mirror to the lateral side
                (l.e.cx + (x - l.e.cx) * 0.97, y)
            })
            .collect();
        if own[PLEURAL_OTHER] {
            f.densify_line(
                &pts,
                0.006 + 0.006 * s[PLEURAL_OTHER],
                0.3 + 0.5 * s[PLEURAL_OTHER],
            );
        } else {
            f.densify_line(&pts, 0.0025, 0.3 * m[PLEURAL_OTHER]);
        }
    }

    // Fracture: gap and step in one rib with callus; look-alike: healed callus only.
    if (own[FRACTURE] || m[FRACTURE] > 0.0) && !a.ribs.is_empty() {
        let rib = &a.ribs[r.random_range(0..a.ribs.len())];
        let t = r.random_range(3..rib.len() - 1);
        let (p, q) = (rib[t - 1], rib[t]);
        let (x, y) = ((p.0 + q.0) * 0.5, (p.1 + q.1) * 0.5);
        let (dx, dy) = (q.0 - p.0, q.1 - p.1);
        let n = (dx * dx + dy * dy).sqrt().max(1e-6);
        let (nx, ny) = (-dy / n, dx / n);
        if own[FRACTURE] {
            let amp = 0.04 + 0.08 * s[FRACTURE];
            let gap = [
                (x - 0.012 * nx, y - 0.012 * ny),
                (x + 0.012 * nx, y + 0.012 * ny),
            ];
            f.tissue.polyline(&gap, 0.003, -amp, |_, _| 1.0);
            f.tissue.polyline(
                &[(x, y + 0.006), (q.0, q.1 + 0.006)],
                0.006,
                0.7 * amp,
                |_, _| 1.0,
            );
            f.tissue.gauss(x, y, 0.008, 0.008, 0.8 * amp, |_, _| 1.0);
        } else {
            f.tissue
                .gauss(x, y, 0.008, 0.008, 0.05 * m[FRACTURE], |_, _| 1.0);
        }
    }

    // Support devices: tubes, lines, pacemaker, ECG leads; look-alike: a button or jewellery.
    let c = &mut f.tissue;
    if own[SUPPORT_DEVICES] {
        let amp = 0.3 + 0.3 * s[SUPPORT_DEVICES];
        let mx = a.med.0;
        let n = r.random_range(1..4);
        for _ in 0..n {
            match r.random_range(0..5) {
                0 => {
                    // endotracheal tube
                    let tip = uniform(r, 0.22, 0.32);
                    c.polyline(&[(mx, 0.0), (mx + 0.005, tip)], 0.005, amp, |_, _| 1.0);
                }
                1 => {
                    // central venous line from a subclavian vein towards the heart
                    let side = if r.random::<bool>() { 1.0 } else { -1.0 };
                    let (hx, hy) = (a.heart.cx - 0.05, a.heart.cy - a.heart.ry);
                    let pts = [(mx + side * 0.3, 0.12), (mx + side * 0.12, 0.17), (hx, hy)];
                    c.polyline(&pts, 0.003, amp, |_, _| 1.0);
                }
                2 => {
                    // pacemaker generator and lead
                    let (px, py) = (mx + uniform(r, 0.22, 0.3), uniform(r, 0.12, 0.2));
                    let e = Ellipse {
                        cx: px,
                        cy: py,
                        rx: 0.035,
                        ry: 0.025,
                    };
                    c.ellipse(e, 0.6, 0.1, |_, _| 1.0);
                    let pts = [(px, py), (mx + 0.05, 0.3), (a.heart.cx, a.heart.cy + 0.03)];
                    c.polyline(&pts, 0.0025, amp, |_, _| 1.0);
                }
                3 => {
                    // nasogastric tube down the oesophagus into the stomach
                    let hgt = c.height();
                    let pts = [
                        (mx - 0.01, 0.0),
                        (mx - 0.005, 0.6 * hgt),
                        (mx + 0.1, 0.95 * hgt),
                    ];
                    c.polyline(&pts, 0.004, amp * 0.8, |_, _| 1.0);
                }
                _ => {
                    // ECG electrodes with wires
                    for _ in 0..r.random_range(2..4) {
                        let (x, y) = (uniform(r, 0.15, 0.85), uniform(r, 0.1, 0.9) * c.height());
                        let e = Ellipse {
                            cx: x,
                            cy: y,
                            rx: 0.014,
                            ry: 0.014,
                        };
                        c.ellipse(e, amp, 0.2, |_, _| 1.0);
                        let wire = [(x, y), (x + uniform(r, -0.1, 0.1), y + 0.15)];
                        c.polyline(&wire, 0.002, amp * 0.6, |_, _| 1.0);
                    }
                }
            }
        }
    } else if m[SUPPORT_DEVICES] > 0.0 {
        let (x, y) = (uniform(r, 0.3, 0.7), uniform(r, 0.05, 0.2));
        let e = Ellipse {
            cx: x,
            cy: y,
            rx: 0.01,
            ry: 0.01,
        };
        c.ellipse(e, 0.35 * m[SUPPORT_DEVICES], 0.2, |_, _| 1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::config::SynthConfig;
    use crate::data::synth::truth::{sample_split, Split};

    /// Largest absolute difference between two renders, in 8-bit levels.
    fn max_diff(a: &[u8], b: &[u8]) -> i32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (*x as i32 - *y as i32).abs())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn every_cue_changes_the_image_and_renders_are_deterministic() {
        let cfg = SynthConfig::default();
        let st = sample_split(&cfg, Split::Train, 40, 1);
        let base = {
            let mut b = st[0].clone();
            b.truth = [false; 14];
            b.truth[0] = true;
            b.own_cue = [false; 14];
            b.strength = [0.0; 14];
            b.mimic = [0.0; 14];
            b.projection = Projection::PA;
            b
        };
        let (w, h) = (96, 110);
        let plain = render(7, &base, false, w, h);
        assert_eq!(plain, render(7, &base, false, w, h));
        assert_eq!(plain.len(), w * h);
        for j in 1..14 {
            let mut b = base.clone();
            b.truth[j] = true;
            b.own_cue[j] = true;
            b.strength[j] = 1.0;
            let img = render(7, &b, false, w, h);
            let d = max_diff(&plain, &img);
            assert!(
                d >= 12,
                "finding {j}: cue changes the image by only {d} levels"
            );
        }
    }
}
