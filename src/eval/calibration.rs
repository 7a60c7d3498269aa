//! Calibration: reliability bins, expected calibration error (ECE), and per-finding
//! temperature scaling fitted on the tuning set (saved with the checkpoint).
//!
//! Label smoothing, mixup and uncertain→0.5 targets all move calibration, and relabel
//! thresholds depend on it, so it is measured on every evaluated set.

use serde::{Deserialize, Serialize};

use super::predictions::Predictions;
use crate::error::{Error, Result};

/// One equal-width probability bin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    pub lo: f64,
    pub hi: f64,
    pub count: usize,
    /// Mean predicted probability; `None` for an empty bin.
    pub mean_prob: Option<f64>,
    /// Fraction of positives; `None` for an empty bin.
    pub frac_pos: Option<f64>,
}

/// Bin edges as numpy's `linspace(0, 1, n_bins + 1)` computes them.
fn edges(n_bins: usize) -> Vec<f64> {
    let step = 1.0 / n_bins as f64;
    let mut e: Vec<f64> = (0..=n_bins).map(|i| i as f64 * step).collect();
    e[n_bins] = 1.0;
    e
}

/// Reliability diagram bins: `n_bins` equal-width bins over `[0, 1]`, with scikit-learn's
/// `calibration_curve(strategy="uniform")` assignment (a probability on an inner edge goes to
/// the lower bin; the first bin is closed, `[0, e1]`).
///
/// # Shapes
/// `probs`, `labels`: `[M]`; returns `[n_bins]`.
pub fn reliability(probs: &[f64], labels: &[bool], n_bins: usize) -> Vec<ReliabilityBin> {
    assert_eq!(probs.len(), labels.len());
    let n_bins = n_bins.max(1);
    let e = edges(n_bins);
    let inner = &e[1..n_bins];
    let (mut count, mut sum_p, mut sum_y) =
        (vec![0usize; n_bins], vec![0.0; n_bins], vec![0.0; n_bins]);
    for (&p, &y) in probs.iter().zip(labels) {
        // numpy searchsorted(side="left"): number of inner edges strictly below p.
        let b = inner.partition_point(|&x| x < p);
        count[b] += 1;
        sum_p[b] += p;
        sum_y[b] += y as u8 as f64;
    }
    (0..n_bins)
        .map(|b| ReliabilityBin {
            lo: e[b],
            hi: e[b + 1],
            count: count[b],
            mean_prob: (count[b] > 0).then(|| sum_p[b] / count[b] as f64),
            frac_pos: (count[b] > 0).then(|| sum_y[b] / count[b] as f64),
        })
        .collect()
}

/// Expected calibration error over reliability bins: `Σ_b (n_b / n) |frac_pos_b -
/// mean_prob_b|`; `None` for an empty set.
pub fn ece(bins: &[ReliabilityBin]) -> Option<f64> {
    let n: usize = bins.iter().map(|b| b.count).sum();
    if n == 0 {
        return None;
    }
    Some(
        bins.iter()
            .filter_map(|b| Some(b.count as f64 / n as f64 * (b.frac_pos? - b.mean_prob?).abs()))
            .sum(),
    )
}

/// Probabilities are clipped to `[EPS, 1 - EPS]` before the logit (a saturated sigmoid
/// would give an infinite logit).
const EPS: f64 = 1e-12;

fn logit(p: f64) -> f64 {
    let p = p.clamp(EPS, 1.0 - EPS);
    (p / (1.0 - p)).ln()
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Smallest and largest temperature [`fit_temperature`] returns.
pub const TEMPERATURE_RANGE: (f64, f64) = (0.01, 100.0);

/// `p` rescaled by temperature `t`: `sigmoid(logit(p) / t)`.
pub fn apply_temperature(p: f64, t: f64) -> f64 {
    sigmoid(logit(p) / t)
}

/// The temperature `T` minimising the binary NLL of `sigmoid(logit(p) / T)`, within
/// [`TEMPERATURE_RANGE`]; `None` when only one class is present.
///
/// The NLL is convex in `a = 1/T` (a one-parameter logistic regression without bias), so a
/// Newton iteration safeguarded by bisection on the bracket finds the optimum to machine
/// precision; an optimum outside the range (perfect separation, or scores anti-correlated
/// with the labels) is clamped to its end.
pub fn fit_temperature(probs: &[f64], labels: &[bool]) -> Option<f64> {
    assert_eq!(probs.len(), labels.len());
    let n_pos = labels.iter().filter(|&&l| l).count();
    if n_pos == 0 || n_pos == labels.len() {
        return None;
    }
    let z: Vec<f64> = probs.iter().map(|&p| logit(p)).collect();
    let y: Vec<f64> = labels.iter().map(|&l| l as u8 as f64).collect();
    let grad_hess = |a: f64| {
        let (mut g, mut h) = (0.0, 0.0);
        for (&zi, &yi) in z.iter().zip(&y) {
            let s = sigmoid(a * zi);
            g += (s - yi) * zi;
            h += s * (1.0 - s) * zi * zi;
        }
        (g, h)
    };
    let (t_min, t_max) = TEMPERATURE_RANGE;
    let (mut lo, mut hi) = (1.0 / t_max, 1.0 / t_min);
    if grad_hess(lo).0 >= 0.0 {
        return Some(t_max);
    }
    if grad_hess(hi).0 <= 0.0 {
        return Some(t_min);
    }
    let mut a = 1.0;
    for _ in 0..200 {
        let (g, h) = grad_hess(a);
        if g > 0.0 {
            hi = a;
        } else {
            lo = a;
        }
        let newton = a - g / h;
        let next = if h > 0.0 && newton > lo && newton < hi {
            newton
        } else {
            (lo * hi).sqrt()
        };
        let done = (next - a).abs() <= 1e-15 * a || hi - lo <= 1e-15 * hi;
        a = next;
        if done {
            break;
        }
    }
    Some(1.0 / a)
}

/// Per-finding temperatures fitted on a tuning set; saved with the checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Temperatures {
    pub findings: Vec<String>,
    /// `None` for findings undefined on the tuning set (left unscaled).
    pub values: Vec<Option<f64>>,
}

impl Temperatures {
    /// Fits one temperature per finding on the labelled rows of `tuning`.
    pub fn fit(tuning: &Predictions) -> Temperatures {
        let values = (0..tuning.n_findings())
            .map(|k| {
                let c = tuning.column(k);
                fit_temperature(&c.scores, &c.labels)
            })
            .collect();
        Temperatures {
            findings: tuning.findings.clone(),
            values,
        }
    }

    /// Checks every temperature is finite and positive (e.g. after loading a checkpoint).
    pub fn validate(&self) -> Result<()> {
        if self.findings.len() != self.values.len() {
            return Err(Error::Config(format!(
                "temperatures: {} findings but {} values",
                self.findings.len(),
                self.values.len()
            )));
        }
        for (f, v) in self.findings.iter().zip(&self.values) {
            if let Some(t) = v {
                if !(t.is_finite() && *t > 0.0) {
                    return Err(Error::Config(format!(
                        "temperatures.values[{f:?}] = {t}: a temperature must be finite and > 0"
                    )));
                }
            }
        }
        Ok(())
    }

    /// `p` with every probability rescaled by its finding's temperature (matched by name;
    /// findings without one are left as they are).
    pub fn apply(&self, p: &Predictions) -> Predictions {
        let mut out = p.clone();
        let k = p.n_findings();
        for (j, name) in p.findings.iter().enumerate() {
            let Some(t) = self
                .findings
                .iter()
                .position(|f| f == name)
                .and_then(|i| self.values[i])
            else {
                continue;
            };
            for i in 0..p.n_rows() {
                out.probs[i * k + j] = apply_temperature(p.probs[i * k + j], t);
            }
        }
        out
    }
}

/// Calibration of one finding on the evaluated set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingCalibration {
    pub finding: String,
    pub ece: Option<f64>,
    pub bins: Vec<ReliabilityBin>,
}

/// ECE and reliability bins of every finding (labelled rows only).
pub fn calibration_table(p: &Predictions, n_bins: usize) -> Vec<FindingCalibration> {
    (0..p.n_findings())
        .map(|k| {
            let c = p.column(k);
            let bins = reliability(&c.scores, &c.labels, n_bins);
            FindingCalibration {
                finding: p.findings[k].clone(),
                ece: ece(&bins),
                bins,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::fixtures::load;

    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        probs: Vec<f64>,
        labels: Vec<bool>,
        n_bins: usize,
        counts: Vec<usize>,
        prob_true: Vec<f64>,
        prob_pred: Vec<f64>,
        ece: f64,
        temperature: f64,
        nll_at_temperature: f64,
    }

    fn nll(probs: &[f64], labels: &[bool], t: f64) -> f64 {
        probs
            .iter()
            .zip(labels)
            .map(|(&p, &y)| {
                let q = logit(p) / t;
                let m = if y { -q } else { q };
                // log(1 + exp(m)), stably
                m.max(0.0) + (-m.abs()).exp().ln_1p()
            })
            .sum()
    }

    #[test]
    fn bins_ece_and_temperature_match_sklearn_scipy() {
        let cases: Vec<Case> = load(include_str!("../../tests/fixtures/eval/calibration.json"));
        for c in &cases {
            let bins = reliability(&c.probs, &c.labels, c.n_bins);
            assert_eq!(
                bins.iter().map(|b| b.count).collect::<Vec<_>>(),
                c.counts,
                "{}",
                c.name
            );
            let full: Vec<&ReliabilityBin> = bins.iter().filter(|b| b.count > 0).collect();
            assert_eq!(full.len(), c.prob_true.len(), "{}", c.name);
            for (b, (t, p)) in full.iter().zip(c.prob_true.iter().zip(&c.prob_pred)) {
                assert!((b.frac_pos.unwrap() - t).abs() < 1e-9, "{}", c.name);
                assert!((b.mean_prob.unwrap() - p).abs() < 1e-9, "{}", c.name);
            }
            assert!((ece(&bins).unwrap() - c.ece).abs() < 1e-9, "{}", c.name);
            let t = fit_temperature(&c.probs, &c.labels).unwrap();
            // scipy's bounded Brent stops on x tolerance; ours solves the gradient exactly, so
            // compare relatively and check ours is no worse in NLL.
            assert!(
                (t - c.temperature).abs() < 1e-6 * c.temperature,
                "{}: T {t} vs scipy {}",
                c.name,
                c.temperature
            );
            assert!(
                nll(&c.probs, &c.labels, t) <= c.nll_at_temperature + 1e-9,
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn hand_checked_temperature() {
        // Logit +ln3 or -ln3 (p = 0.75 / 0.25) with labels 3:1 agreeing: already calibrated,
        // T = 1. With 9:1 agreement the optimum has sigmoid(ln3 / T) = 0.9, i.e.
        // T = ln 3 / ln 9 = 0.5.
        let mut p = Vec::new();
        let mut l = Vec::new();
        for (prob, pos, neg) in [(0.75, 3, 1), (0.25, 1, 3)] {
            for _ in 0..pos {
                p.push(prob);
                l.push(true);
            }
            for _ in 0..neg {
                p.push(prob);
                l.push(false);
            }
        }
        assert!((fit_temperature(&p, &l).unwrap() - 1.0).abs() < 1e-12);
        let mut p = Vec::new();
        let mut l = Vec::new();
        for (prob, pos, neg) in [(0.75, 9, 1), (0.25, 1, 9)] {
            for _ in 0..pos {
                p.push(prob);
                l.push(true);
            }
            for _ in 0..neg {
                p.push(prob);
                l.push(false);
            }
        }
        assert!((fit_temperature(&p, &l).unwrap() - 0.5).abs() < 1e-12);
        // Perfect separation: clamped to the smallest temperature. One class: undefined.
        assert_eq!(
            fit_temperature(&[0.2, 0.8], &[false, true]),
            Some(TEMPERATURE_RANGE.0)
        );
        assert_eq!(fit_temperature(&[0.2, 0.8], &[true, true]), None);
        assert!((apply_temperature(0.75, 0.5) - 0.9).abs() < 1e-12);
        // Fit/apply through Predictions.
        let pr = Predictions::new(
            (0..p.len()).map(|i| format!("r{i}")).collect(),
            (0..p.len()).map(|i| format!("s{i}")).collect(),
            vec!["Edema".into()],
            p.clone(),
            l.iter().map(|&x| Some(x)).collect(),
        )
        .unwrap();
        let temps = Temperatures::fit(&pr);
        temps.validate().unwrap();
        let scaled = temps.apply(&pr);
        assert!((scaled.probs[0] - 0.9).abs() < 1e-9);
        let before = calibration_table(&pr, 10)[0].ece.unwrap();
        let after = calibration_table(&scaled, 10)[0].ece.unwrap();
        // Before: bins at 0.25 (frac 0.1) and 0.75 (frac 0.9): ECE 0.15; after: 0.
        assert!(
            (before - 0.15).abs() < 1e-12 && after < 1e-9,
            "{before} {after}"
        );
        let bad = Temperatures {
            findings: vec!["Edema".into()],
            values: vec![Some(-1.0)],
        };
        assert!(bad.validate().unwrap_err().to_string().contains("Edema"));
    }
}
