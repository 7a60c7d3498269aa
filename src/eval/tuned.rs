//! What is fitted on the tuning set and saved with a checkpoint (`best/calibration.json`):
//! per-finding temperatures and per-finding decision thresholds for each criterion.
//!
//! Thresholds are fitted twice — on the raw probabilities and on the temperature-scaled ones —
//! so that `eval --no-calibration` uses thresholds on the same scale as the scores it
//! evaluates (temperature scaling is monotone per finding, but mapping a threshold through it
//! would round, and a row scored exactly at the threshold could change side).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::calibration::Temperatures;
use super::predictions::Predictions;
use super::thresholds::{Criterion, Thresholds};
use crate::error::{Error, Result};

/// File name inside a checkpoint folder.
pub const TUNED_FILE: &str = "calibration.json";
const FORMAT: u32 = 1;

/// Every criterion a checkpoint saves thresholds for, in file order.
pub const CRITERIA: [Criterion; 3] = [Criterion::MaxF1, Criterion::MaxMcc, Criterion::Youden];

/// `calibration.json`: temperatures and thresholds fitted on a tuning set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tuned {
    /// Format version (1).
    pub format: u32,
    /// The tuning set they were fitted on (its CSV path).
    pub tuning_set: String,
    /// Rows of the tuning set that were predicted.
    pub n_rows: usize,
    /// The model's findings, in output order (after the head layout's probabilities).
    pub findings: Vec<String>,
    /// Per-finding temperature `T`: calibrated `p' = sigmoid(logit(p) / T)`.
    pub temperatures: Temperatures,
    /// Thresholds on the raw probabilities, one entry per criterion of [`CRITERIA`].
    pub thresholds: Vec<Thresholds>,
    /// Thresholds on the temperature-scaled probabilities, one entry per criterion.
    pub thresholds_calibrated: Vec<Thresholds>,
}

impl Tuned {
    /// Fits temperatures and thresholds (every criterion, raw and calibrated) on `tuning`,
    /// the model's probabilities on the tuning set with its labels.
    pub fn fit(tuning: &Predictions, tuning_set: &str) -> Tuned {
        let temperatures = Temperatures::fit(tuning);
        let scaled = temperatures.apply(tuning);
        Tuned {
            format: FORMAT,
            tuning_set: tuning_set.to_string(),
            n_rows: tuning.n_rows(),
            findings: tuning.findings.clone(),
            thresholds: CRITERIA
                .iter()
                .map(|&c| Thresholds::fit(tuning, c))
                .collect(),
            thresholds_calibrated: CRITERIA
                .iter()
                .map(|&c| Thresholds::fit(&scaled, c))
                .collect(),
            temperatures,
        }
    }

    /// The thresholds of `criterion`, on the calibrated or the raw scale.
    pub fn thresholds_for(&self, criterion: Criterion, calibrated: bool) -> Option<&Thresholds> {
        let set = if calibrated {
            &self.thresholds_calibrated
        } else {
            &self.thresholds
        };
        set.iter().find(|t| t.criterion == criterion)
    }

    /// Checks the format, temperatures and that every list covers the same findings.
    pub fn validate(&self) -> Result<()> {
        if self.format != FORMAT {
            return Err(Error::Config(format!(
                "calibration format {} is not supported (expected {FORMAT})",
                self.format
            )));
        }
        self.temperatures.validate()?;
        if self.temperatures.findings != self.findings {
            return Err(Error::Config(
                "temperatures.findings differ from findings".into(),
            ));
        }
        for t in self.thresholds.iter().chain(&self.thresholds_calibrated) {
            if t.findings != self.findings || t.values.len() != self.findings.len() {
                return Err(Error::Config(format!(
                    "thresholds ({}) do not cover the findings {:?}",
                    t.criterion.name(),
                    self.findings
                )));
            }
            if let Some(v) = t.values.iter().flatten().find(|v| !v.is_finite()) {
                return Err(Error::Config(format!(
                    "thresholds ({}): value {v} is not finite",
                    t.criterion.name()
                )));
            }
        }
        Ok(())
    }

    /// Writes `dir/calibration.json`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        crate::provenance::write_json(&dir.join(TUNED_FILE), self)
    }

    /// Reads `dir/calibration.json`; `Ok(None)` when the checkpoint has none (an interrupted
    /// run, or one trained before calibration was saved).
    pub fn load(dir: &Path) -> Result<Option<Tuned>> {
        let p = dir.join(TUNED_FILE);
        if !p.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        let t: Tuned = serde_json::from_str(&text)
            .map_err(|e| Error::input(&p, format!("not a noisycxr calibration.json: {e}")))?;
        t.validate().map_err(|e| Error::input(&p, e.to_string()))?;
        Ok(Some(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::calibration::fit_temperature;
    use crate::eval::thresholds::choose;

    /// Two findings; the second is undefined on the tuning set (no positive).
    fn tuning() -> Predictions {
        let s = [0.9, 0.8, 0.7, 0.6, 0.55, 0.4, 0.3, 0.2];
        let l = [true, true, false, true, false, true, false, false];
        let mut probs = Vec::new();
        let mut targets = Vec::new();
        for i in 0..8 {
            probs.extend([s[i], 0.5]);
            targets.extend([Some(l[i]), Some(false)]);
        }
        Predictions::new(
            (0..8).map(|i| format!("p{i}")).collect(),
            (0..8).map(|i| format!("s{i}")).collect(),
            vec!["Edema".into(), "Fracture".into()],
            probs,
            targets,
        )
        .unwrap()
    }

    #[test]
    fn fit_uses_the_tested_fitters_on_both_scales_and_round_trips() {
        let p = tuning();
        let t = Tuned::fit(&p, "valid.csv");
        let c = p.column(0);
        // The same numbers the (sklearn-checked) building blocks give on this column.
        let temp = fit_temperature(&c.scores, &c.labels).unwrap();
        assert_eq!(t.temperatures.values, vec![Some(temp), None]);
        let raw_f1 = choose(&c.scores, &c.labels, Criterion::MaxF1).unwrap().0;
        assert_eq!(
            t.thresholds_for(Criterion::MaxF1, false).unwrap().values,
            vec![Some(raw_f1), None]
        );
        // F1 by hand on the raw scores: at 0.4 TP 4, FP 2, FN 0 → 8/10 = 0.8, the maximum
        // (at 0.6: TP 3, FP 1, FN 1 → 0.75).
        assert_eq!(raw_f1, 0.4);
        let scaled = t.temperatures.apply(&p).column(0);
        let cal = choose(&scaled.scores, &scaled.labels, Criterion::MaxF1)
            .unwrap()
            .0;
        assert_eq!(
            t.thresholds_for(Criterion::MaxF1, true).unwrap().values[0],
            Some(cal)
        );
        assert!(t.thresholds_for(Criterion::Youden, true).is_some());
        let dir = tempfile::tempdir().unwrap();
        t.save(dir.path()).unwrap();
        // serde_json (without its `float_roundtrip` feature) may read a float back one ulp
        // off; everything else round-trips exactly.
        let back = Tuned::load(dir.path()).unwrap().unwrap();
        let close = |a: &[Option<f64>], b: &[Option<f64>]| {
            a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| match (x, y) {
                    (Some(x), Some(y)) => (x - y).abs() <= 4.0 * f64::EPSILON * x.abs(),
                    (None, None) => true,
                    _ => false,
                })
        };
        assert!(close(&back.temperatures.values, &t.temperatures.values));
        for (x, y) in back
            .thresholds
            .iter()
            .chain(&back.thresholds_calibrated)
            .zip(t.thresholds.iter().chain(&t.thresholds_calibrated))
        {
            assert_eq!((x.criterion, &x.findings), (y.criterion, &y.findings));
            assert!(close(&x.values, &y.values), "{x:?} vs {y:?}");
        }
        assert_eq!(
            (&back.findings, &back.tuning_set, back.n_rows),
            (&t.findings, &t.tuning_set, t.n_rows)
        );
        // Absent file: None; a bad temperature: an error naming the file.
        assert_eq!(Tuned::load(&dir.path().join("nothing")).unwrap(), None);
        let mut bad = t;
        bad.temperatures.values[0] = Some(-1.0);
        bad.save(dir.path()).unwrap();
        let e = Tuned::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("calibration.json") && e.contains("-1"), "{e}");
    }
}
