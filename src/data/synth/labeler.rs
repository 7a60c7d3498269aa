//! The simulated report labeler: turns a study's clean truth into CheXpert-style noisy cells.
//!
//! Per finding (all but `No Finding`), every training study's cell goes through four stages,
//! each a Bernoulli draw whose probability depends on the image:
//!
//! | truth | stage 1 | stage 2 | stage 3 | otherwise |
//! |-------|---------|---------|---------|-----------|
//! | positive, faintness `x = 1 - strength` | `-1.0` | blank (missed) | `0.0` (false negative) | `1.0` |
//! | negative, look-alike `x = mimic` | `-1.0` | `1.0` (false positive) | `0.0` (negation, x = 0) | blank |
//!
//! Stage probability of cell `i`: `sigmoid(b + slope * x_i)`, with `b` solved by bisection over
//! the cells that reach the stage so that their mean probability equals the finding's target rate
//! ([`super::config::NoiseConfig::rates`]). The stage-1 targets follow from the finding's
//! uncertain rate `U` and `P(truth | -1) = ppv` at the split's prevalence `π`:
//! `U * ppv / π` among positives and `U * (1 - ppv) / (1 - π)` among negatives (capped at 0.95
//! when a small split cannot hold them). `No Finding` is then derived the way CheXpert's labeler
//! does it: `1.0` when no pathology (Support Devices excluded) is `1.0` or `-1.0`, else blank.

use rand::Rng;
use serde::Serialize;

use super::config::{NoiseConfig, FINDING_SPECS};
use super::truth::{idx, purpose, study_rng, StudyTruth, K};
use crate::data::labels::{Observation, CHEXPERT_FINDINGS};

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Solves `mean_i sigmoid(b + slope * x_i) = target` for `b` (bisection, 200 steps).
/// Returns `-inf` for a target of 0 (never) and `+inf` for 1 (always).
pub fn solve_bias(x: &[f64], slope: f64, target: f64) -> f64 {
    if target <= 0.0 || x.is_empty() {
        return f64::NEG_INFINITY;
    }
    if target >= 1.0 {
        return f64::INFINITY;
    }
    let mean = |b: f64| x.iter().map(|xi| sigmoid(b + slope * xi)).sum::<f64>() / x.len() as f64;
    let (mut lo, mut hi) = (-60.0, 60.0);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mean(mid) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The clean cells of a study (`1.0`/`0.0` for all 14 findings).
pub fn clean_labels(s: &StudyTruth) -> [Observation; K] {
    s.truth.map(|t| {
        if t {
            Observation::Positive
        } else {
            Observation::Negative
        }
    })
}

/// Realised noise of one finding over a labelled split (cells = studies).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FindingNoise {
    pub finding: String,
    /// Studies whose truth is positive / negative.
    pub n_positive: usize,
    pub n_negative: usize,
    /// Noisy cell counts: blank, `-1.0`, `0.0`, `1.0` (DESIGN.md §2 order).
    pub counts: [usize; 4],
    /// Fraction of cells that are `-1.0`.
    pub uncertain_rate: f64,
    /// P(truth = 1 | `-1.0`); `None` without any `-1.0`.
    pub uncertain_ppv: Option<f64>,
    /// P(blank | truth 1, not `-1`).
    pub miss_rate: Option<f64>,
    /// P(`0.0` | truth 1, mentioned, not `-1`).
    pub false_negative_rate: Option<f64>,
    /// P(`1.0` | truth 0, not `-1`).
    pub false_positive_rate: Option<f64>,
    /// P(`0.0` | truth 0, not `-1`, not `1.0`).
    pub negation_rate: Option<f64>,
    /// P(truth = 0 | blank): blanks are mostly, not all, negatives.
    pub blank_npv: Option<f64>,
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// Measures the noise of `noisy` against the truth of `studies`, one row per finding.
pub fn measure(studies: &[StudyTruth], noisy: &[[Observation; K]]) -> Vec<FindingNoise> {
    use Observation::*;
    (0..K)
        .map(|j| {
            let mut f = FindingNoise {
                finding: CHEXPERT_FINDINGS[j].to_string(),
                ..Default::default()
            };
            // Cells reaching each stage, and those that fired there.
            let (mut unc_pos, mut pos_rest, mut pos_blank, mut pos_zero) = (0, 0, 0, 0);
            let (mut neg_rest, mut neg_one, mut neg_rest2, mut neg_zero, mut blank_neg) =
                (0, 0, 0, 0, 0);
            for (s, l) in studies.iter().zip(noisy) {
                let o = l[j];
                f.counts[o.slot()] += 1;
                if s.truth[j] {
                    f.n_positive += 1;
                    match o {
                        Uncertain => unc_pos += 1,
                        Blank => pos_blank += 1,
                        Negative => pos_zero += 1,
                        Positive => {}
                    }
                    if o != Uncertain {
                        pos_rest += 1;
                    }
                } else {
                    f.n_negative += 1;
                    match o {
                        Uncertain => {}
                        Positive => neg_one += 1,
                        Negative => neg_zero += 1,
                        Blank => blank_neg += 1,
                    }
                    if o != Uncertain {
                        neg_rest += 1;
                    }
                    if matches!(o, Negative | Blank) {
                        neg_rest2 += 1;
                    }
                }
            }
            let pos_mentioned = pos_rest - pos_blank;
            let n = f.n_positive + f.n_negative;
            f.uncertain_rate = f.counts[1] as f64 / n.max(1) as f64;
            f.uncertain_ppv = ratio(unc_pos, f.counts[1]);
            f.miss_rate = ratio(pos_blank, pos_rest);
            f.false_negative_rate = ratio(pos_zero, pos_mentioned);
            f.false_positive_rate = ratio(neg_one, neg_rest);
            f.negation_rate = ratio(neg_zero, neg_rest2);
            f.blank_npv = ratio(blank_neg, f.counts[0]);
            f
        })
        .collect()
}

/// Labels the studies of one split with the noisy labeler. Draws are keyed by each study's
/// `(split, patient, study)`, and the biases depend on the whole split, so the result is the same
/// whatever the thread count or order.
pub fn label_split(
    seed: u64,
    noise: &NoiseConfig,
    studies: &[StudyTruth],
) -> Vec<[Observation; K]> {
    let n = studies.len();
    let mut out = vec![[Observation::Blank; K]; n];
    // Three uniforms per (study, finding), drawn once.
    let uniforms: Vec<[[f64; 3]; K]> = studies
        .iter()
        .map(|s| {
            let mut rng = study_rng(
                seed,
                s.split,
                s.patient_in_split,
                s.study_no,
                purpose::LABELER,
            );
            let mut u = [[0f64; 3]; K];
            for cell in u.iter_mut() {
                for v in cell.iter_mut() {
                    *v = rng.random();
                }
            }
            u
        })
        .collect();
    let slope = noise.faintness_slope;
    for (k, _) in FINDING_SPECS.iter().enumerate() {
        let j = k + 1;
        let r = noise.rates(k);
        let pos: Vec<usize> = (0..n).filter(|&i| studies[i].truth[j]).collect();
        let neg: Vec<usize> = (0..n).filter(|&i| !studies[i].truth[j]).collect();
        let pi = pos.len() as f64 / n.max(1) as f64;
        let up = if pi > 0.0 {
            (r.uncertain * r.uncertain_ppv / pi).min(0.95)
        } else {
            0.0
        };
        let un = if pi < 1.0 {
            (r.uncertain * (1.0 - r.uncertain_ppv) / (1.0 - pi)).min(0.95)
        } else {
            0.0
        };
        let faint = |i: usize| 1.0 - studies[i].strength[j] as f64;
        let mimic = |i: usize| studies[i].mimic[j] as f64;
        // Positives: -1, blank, 0.0, else 1.0.
        let rest = stage(
            &pos,
            up,
            slope,
            &faint,
            |i| uniforms[i][j][0],
            |i| out[i][j] = Observation::Uncertain,
        );
        let rest = stage(
            &rest,
            r.miss,
            slope,
            &faint,
            |i| uniforms[i][j][1],
            |i| out[i][j] = Observation::Blank,
        );
        let rest = stage(
            &rest,
            r.false_negative,
            slope,
            &faint,
            |i| uniforms[i][j][2],
            |i| out[i][j] = Observation::Negative,
        );
        for i in rest {
            out[i][j] = Observation::Positive;
        }
        // Negatives: -1, 1.0, 0.0, else blank.
        let rest = stage(
            &neg,
            un,
            slope,
            &mimic,
            |i| uniforms[i][j][0],
            |i| out[i][j] = Observation::Uncertain,
        );
        let rest = stage(
            &rest,
            r.false_positive,
            slope,
            &mimic,
            |i| uniforms[i][j][1],
            |i| out[i][j] = Observation::Positive,
        );
        let rest = stage(
            &rest,
            r.negation,
            0.0,
            &mimic,
            |i| uniforms[i][j][2],
            |i| out[i][j] = Observation::Negative,
        );
        for i in rest {
            out[i][j] = Observation::Blank;
        }
    }
    for row in out.iter_mut() {
        let any = (1..idx::SUPPORT_DEVICES)
            .any(|j| matches!(row[j], Observation::Positive | Observation::Uncertain));
        row[idx::NO_FINDING] = if any {
            Observation::Blank
        } else {
            Observation::Positive
        };
    }
    out
}

/// One labeler stage: each cell in `cells` fires with `sigmoid(b + slope * x(i))`, `b` solved so
/// the mean is `target`; fired cells are passed to `fire`, the others returned.
fn stage(
    cells: &[usize],
    target: f64,
    slope: f64,
    x: &dyn Fn(usize) -> f64,
    u: impl Fn(usize) -> f64,
    mut fire: impl FnMut(usize),
) -> Vec<usize> {
    let xs: Vec<f64> = cells.iter().map(|&i| x(i)).collect();
    let b = solve_bias(&xs, slope, target);
    let mut rest = Vec::with_capacity(cells.len());
    for (&i, xi) in cells.iter().zip(&xs) {
        if u(i) < sigmoid(b + slope * xi) {
            fire(i);
        } else {
            rest.push(i);
        }
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::config::SynthConfig;
    use crate::data::synth::truth::{sample_split, Split};

    #[test]
    fn bias_solver_hits_the_target_mean() {
        let x: Vec<f64> = (0..101).map(|i| i as f64 / 100.0).collect();
        for (slope, t) in [(0.0, 0.3), (4.0, 0.05), (-3.0, 0.9), (10.0, 0.5)] {
            let b = solve_bias(&x, slope, t);
            let m = x.iter().map(|xi| sigmoid(b + slope * xi)).sum::<f64>() / x.len() as f64;
            assert!((m - t).abs() < 1e-9, "slope {slope} target {t}: {m}");
        }
        // slope 0: the closed form logit(t).
        let b = solve_bias(&x, 0.0, 0.3);
        assert!((b - (0.3f64 / 0.7).ln()).abs() < 1e-9);
        assert_eq!(solve_bias(&x, 1.0, 0.0), f64::NEG_INFINITY);
    }

    #[test]
    fn faint_cues_are_noisier_and_no_finding_is_derived() {
        let cfg = SynthConfig::default();
        let st = sample_split(&cfg, Split::Train, 6000, 1);
        let noisy = label_split(cfg.seed, &cfg.noise, &st);
        // Among true positives, missed (blank) cells have fainter cues than kept positives.
        let j = idx::EFFUSION;
        let mean_strength = |o: Observation| {
            let v: Vec<f32> = st
                .iter()
                .zip(&noisy)
                .filter(|(s, l)| s.truth[j] && l[j] == o)
                .map(|(s, _)| s.strength[j])
                .collect();
            v.iter().sum::<f32>() / v.len() as f32
        };
        assert!(mean_strength(Observation::Blank) + 0.15 < mean_strength(Observation::Positive));
        for l in &noisy {
            assert!(matches!(l[0], Observation::Positive | Observation::Blank));
            let any =
                (1..13).any(|j| matches!(l[j], Observation::Positive | Observation::Uncertain));
            assert_eq!(l[0] == Observation::Positive, !any);
        }
        // With slope 0 the stages are uniform: strengths of missed and kept positives agree.
        let flat = NoiseConfig {
            faintness_slope: 0.0,
            ..cfg.noise.clone()
        };
        let noisy = label_split(cfg.seed, &flat, &st);
        let m = measure(&st, &noisy);
        assert!(m[j].miss_rate.unwrap() > 0.05);
    }

    #[test]
    fn realised_noise_rates_match_the_flags() {
        // Non-default flags; each finding's realised rate must match its scaled target and the
        // means over the 13 labelled findings must match the flags (binomial tolerance).
        let noise = NoiseConfig {
            uncertain_rate: 0.05,
            miss_rate: 0.2,
            false_negative_rate: 0.08,
            false_positive_rate: 0.03,
            negation_rate: 0.15,
            faintness_slope: 3.0,
        };
        let cfg = SynthConfig {
            noise: noise.clone(),
            ..SynthConfig::default()
        };
        let st = sample_split(&cfg, Split::Train, 30_000, 1);
        let m = measure(&st, &label_split(5, &noise, &st));
        let close = |got: f64, want: f64, n: usize, what: &str| {
            let se = (want * (1.0 - want) / n as f64).sqrt();
            assert!(
                (got - want).abs() <= 4.0 * se + 1e-3,
                "{what}: got {got:.4}, want {want:.4} (n {n})"
            );
        };
        let mut means = [0f64; 5];
        for k in 0..13 {
            let f = &m[k + 1];
            let r = noise.rates(k);
            let n = f.n_positive + f.n_negative;
            close(
                f.uncertain_rate,
                r.uncertain,
                n,
                &format!("{} uncertain", f.finding),
            );
            let n_unc = f.counts[1];
            close(
                f.uncertain_ppv.unwrap(),
                r.uncertain_ppv,
                n_unc,
                &format!("{} P(truth|-1)", f.finding),
            );
            let pos_rest =
                f.n_positive - (f.uncertain_ppv.unwrap() * n_unc as f64).round() as usize;
            close(
                f.miss_rate.unwrap(),
                r.miss,
                pos_rest,
                &format!("{} miss", f.finding),
            );
            close(
                f.false_positive_rate.unwrap(),
                r.false_positive,
                f.n_negative / 2,
                &format!("{} fp", f.finding),
            );
            means[0] += f.uncertain_rate / 13.0;
            means[1] += f.miss_rate.unwrap() / 13.0;
            means[2] += f.false_negative_rate.unwrap() / 13.0;
            means[3] += f.false_positive_rate.unwrap() / 13.0;
            means[4] += f.negation_rate.unwrap() / 13.0;
        }
        let flags = [
            noise.uncertain_rate,
            noise.miss_rate,
            noise.false_negative_rate,
            noise.false_positive_rate,
            noise.negation_rate,
        ];
        for (got, want) in means.iter().zip(flags) {
            assert!(
                (got - want).abs() < 0.1 * want,
                "mean rate {got:.4} vs flag {want:.4}"
            );
        }
        // Blanks are mostly, not all, negatives.
        let eff = &m[10];
        let npv = eff.blank_npv.unwrap();
        assert!(npv > 0.7 && npv < 0.99, "P(neg | blank) = {npv}");
    }
}
