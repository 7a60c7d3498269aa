//! Decision thresholds per finding, chosen on the tuning set (max F1, max MCC or Youden's J),
//! saved with the checkpoint, and the operating point they give on the reported set.
//!
//! A row is predicted positive when `score >= threshold`. Candidate thresholds are the
//! distinct scores of the tuning set (as scikit-learn's `roc_curve` thresholds); the highest
//! candidate attaining the maximum wins, and undefined values (e.g. MCC with an empty
//! margin) never win.

use serde::{Deserialize, Serialize};

use super::predictions::Predictions;
use crate::error::{Error, Result};

/// What a threshold maximises on the tuning set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// F1 = 2 TP / (2 TP + FP + FN).
    MaxF1,
    /// Matthews correlation coefficient.
    MaxMcc,
    /// Youden's J = sensitivity + specificity - 1.
    Youden,
}

impl Criterion {
    /// Parses `f1`, `mcc` or `youden` (as a config or CLI value).
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f1" | "max_f1" => Ok(Criterion::MaxF1),
            "mcc" | "max_mcc" => Ok(Criterion::MaxMcc),
            "youden" | "j" => Ok(Criterion::Youden),
            _ => Err(Error::Config(format!(
                "threshold criterion {s:?}: use f1, mcc or youden"
            ))),
        }
    }

    /// Value of the criterion at a confusion matrix; `None` where undefined.
    pub fn value(self, c: &Confusion) -> Option<f64> {
        match self {
            Criterion::MaxF1 => c.f1(),
            Criterion::MaxMcc => c.mcc(),
            Criterion::Youden => Some(c.sensitivity()? + c.specificity()? - 1.0),
        }
    }
}

/// Counts of one binary decision rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
}

impl Confusion {
    /// Counts at `threshold` (positive iff `score >= threshold`).
    ///
    /// # Shapes
    /// `scores`, `labels`: `[M]` (panics if they differ: a programming error).
    pub fn at(scores: &[f64], labels: &[bool], threshold: f64) -> Confusion {
        assert_eq!(scores.len(), labels.len());
        let mut c = Confusion::default();
        for (&s, &l) in scores.iter().zip(labels) {
            match (s >= threshold, l) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, false) => c.tn += 1,
                (false, true) => c.fn_ += 1,
            }
        }
        c
    }

    /// F1; `None` when there is nothing positive, predicted or true.
    pub fn f1(&self) -> Option<f64> {
        let d = 2 * self.tp + self.fp + self.fn_;
        (d > 0).then(|| 2.0 * self.tp as f64 / d as f64)
    }

    /// Matthews correlation; `None` when a margin is empty (scikit-learn returns 0 there).
    pub fn mcc(&self) -> Option<f64> {
        let (tp, fp, tn, fn_) = (
            self.tp as f64,
            self.fp as f64,
            self.tn as f64,
            self.fn_ as f64,
        );
        let d = (tp + fp) * (tp + fn_) * (tn + fp) * (tn + fn_);
        (d > 0.0).then(|| (tp * tn - fp * fn_) / d.sqrt())
    }

    /// Sensitivity (recall, TPR); `None` without positives.
    pub fn sensitivity(&self) -> Option<f64> {
        let d = self.tp + self.fn_;
        (d > 0).then(|| self.tp as f64 / d as f64)
    }

    /// Specificity (TNR); `None` without negatives.
    pub fn specificity(&self) -> Option<f64> {
        let d = self.tn + self.fp;
        (d > 0).then(|| self.tn as f64 / d as f64)
    }
}

/// The threshold maximising `criterion` over the distinct scores, with its value; `None` when
/// only one class is present (the finding is undefined) or no candidate is defined.
pub fn choose(scores: &[f64], labels: &[bool], criterion: Criterion) -> Option<(f64, f64)> {
    assert_eq!(scores.len(), labels.len());
    let n_pos = labels.iter().filter(|&&l| l).count() as u64;
    let n_neg = labels.len() as u64 - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut v: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    // Descending: lowering the threshold block by block moves rows to "predicted positive".
    v.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    let mut c = Confusion {
        tp: 0,
        fp: 0,
        tn: n_neg,
        fn_: n_pos,
    };
    let mut best: Option<(f64, f64)> = None;
    let mut s = 0;
    while s < v.len() {
        let t = v[s].0;
        while s < v.len() && v[s].0.total_cmp(&t).is_eq() {
            if v[s].1 {
                c.tp += 1;
                c.fn_ -= 1;
            } else {
                c.fp += 1;
                c.tn -= 1;
            }
            s += 1;
        }
        if let Some(x) = criterion.value(&c) {
            if best.is_none_or(|(_, b)| x > b) {
                best = Some((t, x));
            }
        }
    }
    best
}

/// Per-finding thresholds fitted on a tuning set; saved with the checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub criterion: Criterion,
    pub findings: Vec<String>,
    /// `None` for findings undefined on the tuning set.
    pub values: Vec<Option<f64>>,
}

/// F1, MCC, sensitivity and specificity of one finding at its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoint {
    pub finding: String,
    pub threshold: Option<f64>,
    pub confusion: Option<Confusion>,
    pub f1: Option<f64>,
    pub mcc: Option<f64>,
    pub sensitivity: Option<f64>,
    pub specificity: Option<f64>,
}

impl Thresholds {
    /// Chooses one threshold per finding on `tuning`.
    pub fn fit(tuning: &Predictions, criterion: Criterion) -> Thresholds {
        let values = (0..tuning.n_findings())
            .map(|k| {
                let c = tuning.column(k);
                choose(&c.scores, &c.labels, criterion).map(|x| x.0)
            })
            .collect();
        Thresholds {
            criterion,
            findings: tuning.findings.clone(),
            values,
        }
    }

    /// Operating points on `p` (the reported set), matching findings by name; findings of
    /// `p` without a threshold get `None` metrics.
    pub fn apply(&self, p: &Predictions) -> Vec<OperatingPoint> {
        (0..p.n_findings())
            .map(|k| {
                let name = &p.findings[k];
                let t = self
                    .findings
                    .iter()
                    .position(|f| f == name)
                    .and_then(|i| self.values[i]);
                let conf = t.map(|t| {
                    let c = p.column(k);
                    Confusion::at(&c.scores, &c.labels, t)
                });
                OperatingPoint {
                    finding: name.clone(),
                    threshold: t,
                    confusion: conf,
                    f1: conf.and_then(|c| c.f1()),
                    mcc: conf.and_then(|c| c.mcc()),
                    sensitivity: conf.and_then(|c| c.sensitivity()),
                    specificity: conf.and_then(|c| c.specificity()),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::fixtures::load;

    #[derive(serde::Deserialize)]
    struct At {
        threshold: f64,
        tp: u64,
        fp: u64,
        tn: u64,
        #[serde(rename = "fn")]
        fn_: u64,
        f1: Option<f64>,
        mcc: Option<f64>,
        sensitivity: Option<f64>,
        specificity: Option<f64>,
    }

    #[derive(serde::Deserialize)]
    struct Pick {
        threshold: f64,
        value: f64,
    }

    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        scores: Vec<f64>,
        labels: Vec<bool>,
        at: Vec<At>,
        picks: std::collections::HashMap<String, Pick>,
    }

    fn same(a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (Some(x), Some(y)) => (x - y).abs() < 1e-9,
            (None, None) => true,
            _ => false,
        }
    }

    #[test]
    fn metrics_and_choices_match_sklearn() {
        let cases: Vec<Case> = load(include_str!("../../tests/fixtures/eval/thresholds.json"));
        for c in &cases {
            for a in &c.at {
                let m = Confusion::at(&c.scores, &c.labels, a.threshold);
                assert_eq!(
                    (m.tp, m.fp, m.tn, m.fn_),
                    (a.tp, a.fp, a.tn, a.fn_),
                    "{}",
                    c.name
                );
                assert!(same(m.f1(), a.f1), "{} f1 at {}", c.name, a.threshold);
                assert!(same(m.mcc(), a.mcc), "{} mcc at {}", c.name, a.threshold);
                assert!(same(m.sensitivity(), a.sensitivity), "{}", c.name);
                assert!(same(m.specificity(), a.specificity), "{}", c.name);
            }
            for (key, crit) in [
                ("f1", Criterion::MaxF1),
                ("mcc", Criterion::MaxMcc),
                ("youden", Criterion::Youden),
            ] {
                let want = &c.picks[key];
                let (t, v) = choose(&c.scores, &c.labels, crit).unwrap();
                assert_eq!(t, want.threshold, "{} {key}", c.name);
                assert!((v - want.value).abs() < 1e-9, "{} {key}", c.name);
            }
        }
    }

    #[test]
    fn hand_checked_thresholds() {
        // Scores 0.1 0.35 0.4 0.4 0.4 0.8 0.9 with labels 0 1 0 1 0 1 1 (4 positives).
        // t=0.9: TP1 FP0 -> F1 2/5=0.4, J 0.25; t=0.8: TP2 -> F1 4/6, J 0.5;
        // t=0.4: TP3 FP2 -> F1 6/9, J 1/12; t=0.35: TP4 FP2 -> F1 8/10 = 0.8, J 1/3;
        // t=0.1: TP4 FP3 -> F1 8/11. Max F1 at 0.35, max J at 0.8.
        let s = [0.1, 0.35, 0.4, 0.4, 0.4, 0.8, 0.9];
        let l = [false, true, false, true, false, true, true];
        assert_eq!(choose(&s, &l, Criterion::MaxF1), Some((0.35, 0.8)));
        assert_eq!(choose(&s, &l, Criterion::Youden).map(|x| x.0), Some(0.8));
        assert_eq!(choose(&s, &[false; 7], Criterion::MaxF1), None);
        // Fit on a tuning set, apply to a reported set by finding name.
        let tune = Predictions::new(
            (0..7).map(|i| format!("t{i}")).collect(),
            (0..7).map(|i| format!("s{i}")).collect(),
            vec!["Edema".into()],
            s.to_vec(),
            l.iter().map(|&x| Some(x)).collect(),
        )
        .unwrap();
        let th = Thresholds::fit(&tune, Criterion::MaxF1);
        assert_eq!(th.values, vec![Some(0.35)]);
        let test = Predictions::new(
            vec!["a".into(), "b".into(), "c".into(), "d".into()],
            vec!["a".into(), "b".into(), "c".into(), "d".into()],
            vec!["Cardiomegaly".into(), "Edema".into()],
            vec![0.9, 0.35, 0.9, 0.34, 0.9, 0.2, 0.9, 0.6],
            vec![
                Some(true),
                Some(true),
                Some(false),
                Some(true),
                Some(true),
                Some(false),
                None,
                Some(false),
            ],
        )
        .unwrap();
        let op = th.apply(&test);
        assert_eq!(op[0].threshold, None);
        assert_eq!(op[0].f1, None);
        // Edema: 0.35 (pos) -> TP, 0.34 (pos) -> FN, 0.2 (neg) -> TN, 0.6 (neg) -> FP.
        assert_eq!(
            op[1].confusion,
            Some(Confusion {
                tp: 1,
                fp: 1,
                tn: 1,
                fn_: 1
            })
        );
        assert_eq!(
            (op[1].sensitivity, op[1].specificity, op[1].f1),
            (Some(0.5), Some(0.5), Some(0.5))
        );
        assert_eq!(op[1].mcc, Some(0.0));
        let json = serde_json::to_string(&th).unwrap();
        assert_eq!(serde_json::from_str::<Thresholds>(&json).unwrap(), th);
        assert!(Criterion::parse("youden").is_ok() && Criterion::parse("auc").is_err());
    }
}
