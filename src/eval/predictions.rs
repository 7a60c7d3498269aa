//! Model outputs and reference labels of one evaluated set, the input of every metric.

use crate::data::{Dataset, Observation};
use crate::error::{Error, Result};

/// Probabilities and reference labels for `N` rows (images, or studies after aggregation) and
/// `K` findings.
///
/// # Shapes
/// - `paths`, `studies`: `[N]`
/// - `findings`: `[K]`, finding names exactly as in the CheXpert header (or the dataset's own)
/// - `probs`: `[N, K]` row-major, probabilities in `[0, 1]` (not logits)
/// - `targets`: `[N, K]` row-major; `None` = no usable label (blank, or uncertain on a set
///   without a policy), left out of every metric for that finding
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    pub paths: Vec<String>,
    pub studies: Vec<String>,
    pub findings: Vec<String>,
    pub probs: Vec<f64>,
    pub targets: Vec<Option<bool>>,
    /// Number of models whose probabilities were averaged (1 = single model).
    pub n_models: usize,
}

/// The labelled rows of one finding.
///
/// # Shapes
/// `scores`, `labels`, `rows` are all `[M]`, `M` = rows with a label for this finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub scores: Vec<f64>,
    pub labels: Vec<bool>,
    /// Row index (into [`Predictions::paths`]) of each entry.
    pub rows: Vec<usize>,
}

impl Column {
    /// Number of positive labels.
    pub fn n_pos(&self) -> usize {
        self.labels.iter().filter(|&&l| l).count()
    }

    /// Number of negative labels.
    pub fn n_neg(&self) -> usize {
        self.labels.len() - self.n_pos()
    }
}

impl Predictions {
    /// Builds and validates a set of predictions of a single model: every length must match
    /// and every probability must be finite and within `[0, 1]`.
    pub fn new(
        paths: Vec<String>,
        studies: Vec<String>,
        findings: Vec<String>,
        probs: Vec<f64>,
        targets: Vec<Option<bool>>,
    ) -> Result<Self> {
        let p = Predictions {
            paths,
            studies,
            findings,
            probs,
            targets,
            n_models: 1,
        };
        p.validate()?;
        Ok(p)
    }

    /// Predictions of a model with `findings` (probabilities `[N, K]` in record order) on the
    /// records of `ds`, with targets from the dataset's raw observations by finding name:
    /// positive → `true`, negative → `false`, uncertain and blank → `None` (an evaluation set
    /// gets no uncertainty policy; CheXpert's valid/test sets have 1.0/0.0 only). Model
    /// findings the dataset lacks get no targets (undefined, left out of means).
    pub fn from_dataset(ds: &Dataset, findings: &[String], probs: Vec<f64>) -> Result<Self> {
        let n = ds.records.len();
        let k = findings.len();
        let cols: Vec<Option<usize>> = findings
            .iter()
            .map(|f| ds.findings.iter().position(|d| d == f))
            .collect();
        if cols.iter().all(|c| c.is_none()) {
            return Err(Error::input(
                &ds.csv,
                format!(
                    "none of the model's findings {findings:?} is a column of this dataset \
                     ({:?}); for another vocabulary use eval::crossdata",
                    ds.findings
                ),
            ));
        }
        let mut targets = Vec::with_capacity(n * k);
        for r in &ds.records {
            for c in &cols {
                targets.push(c.and_then(|c| match r.labels.get(c) {
                    Some(Observation::Positive) => Some(true),
                    Some(Observation::Negative) => Some(false),
                    _ => None,
                }));
            }
        }
        Predictions::new(
            ds.records.iter().map(|r| r.path.clone()).collect(),
            ds.records.iter().map(|r| r.study.clone()).collect(),
            findings.to_vec(),
            probs,
            targets,
        )
    }

    /// Checks shapes, finding names and probability values; errors name the row and finding.
    pub fn validate(&self) -> Result<()> {
        let n = self.paths.len();
        let k = self.findings.len();
        if k == 0 {
            return Err(Error::Other("predictions: no findings".into()));
        }
        if self.studies.len() != n {
            return Err(Error::Other(format!(
                "predictions: {} paths but {} study ids; give one study per row",
                n,
                self.studies.len()
            )));
        }
        if self.probs.len() != n * k || self.targets.len() != n * k {
            return Err(Error::Other(format!(
                "predictions: expected {n} x {k} = {} probabilities and targets, got {} and {}",
                n * k,
                self.probs.len(),
                self.targets.len()
            )));
        }
        if self.n_models == 0 {
            return Err(Error::Other(
                "predictions: n_models must be at least 1".into(),
            ));
        }
        for (i, f) in self.findings.iter().enumerate() {
            if self.findings[..i].contains(f) {
                return Err(Error::Other(format!(
                    "predictions: finding {f:?} appears twice; finding names must be unique"
                )));
            }
        }
        if let Some(i) = self
            .probs
            .iter()
            .position(|p| !p.is_finite() || *p < 0.0 || *p > 1.0)
        {
            return Err(Error::Other(format!(
                "predictions: row {} ({}) finding {:?} has probability {}; expected a finite \
                 value in [0, 1] (pass sigmoid(logit), not the logit)",
                i / k,
                self.paths[i / k],
                self.findings[i % k],
                self.probs[i]
            )));
        }
        Ok(())
    }

    /// Number of rows `N`.
    pub fn n_rows(&self) -> usize {
        self.paths.len()
    }

    /// Number of findings `K`.
    pub fn n_findings(&self) -> usize {
        self.findings.len()
    }

    /// Index of a finding by exact name.
    pub fn finding_index(&self, name: &str) -> Option<usize> {
        self.findings.iter().position(|f| f == name)
    }

    /// Probability of row `i`, finding `k`.
    pub fn prob(&self, i: usize, k: usize) -> f64 {
        self.probs[i * self.findings.len() + k]
    }

    /// Target of row `i`, finding `k`.
    pub fn target(&self, i: usize, k: usize) -> Option<bool> {
        self.targets[i * self.findings.len() + k]
    }

    /// The labelled rows of finding `k`, in row order.
    pub fn column(&self, k: usize) -> Column {
        let kk = self.findings.len();
        let mut c = Column {
            scores: Vec::new(),
            labels: Vec::new(),
            rows: Vec::new(),
        };
        for i in 0..self.paths.len() {
            if let Some(l) = self.targets[i * kk + k] {
                c.scores.push(self.probs[i * kk + k]);
                c.labels.push(l);
                c.rows.push(i);
            }
        }
        c
    }

    /// Dense study index of every row (studies numbered in order of first appearance) and the
    /// number of distinct studies.
    ///
    /// # Shapes
    /// Returns `([N], S)`.
    pub fn study_index(&self) -> (Vec<u32>, usize) {
        let mut map = std::collections::HashMap::with_capacity(self.studies.len());
        let idx = self
            .studies
            .iter()
            .map(|s| {
                let next = map.len() as u32;
                *map.entry(s.as_str()).or_insert(next)
            })
            .collect();
        (idx, map.len())
    }

    /// `"single model"` or `"ensemble of N"`, as shown in every table.
    pub fn model_label(&self) -> String {
        if self.n_models <= 1 {
            "single model".to_string()
        } else {
            format!("ensemble of {}", self.n_models)
        }
    }

    /// The rows at `idx`, in that order.
    pub fn select_rows(&self, idx: &[usize]) -> Predictions {
        let k = self.findings.len();
        Predictions {
            paths: idx.iter().map(|&i| self.paths[i].clone()).collect(),
            studies: idx.iter().map(|&i| self.studies[i].clone()).collect(),
            findings: self.findings.clone(),
            probs: idx
                .iter()
                .flat_map(|&i| self.probs[i * k..(i + 1) * k].iter().copied())
                .collect(),
            targets: idx
                .iter()
                .flat_map(|&i| self.targets[i * k..(i + 1) * k].iter().copied())
                .collect(),
            n_models: self.n_models,
        }
    }

    /// Checks that `other` holds the same rows, studies, findings and targets in the same
    /// order (needed for paired comparisons and ensembles).
    pub fn check_same_rows(&self, other: &Predictions, what: &str) -> Result<()> {
        if self.findings != other.findings {
            return Err(Error::Other(format!(
                "{what}: the two prediction sets have different findings ({:?} vs {:?})",
                self.findings, other.findings
            )));
        }
        if self.paths.len() != other.paths.len() {
            return Err(Error::Other(format!(
                "{what}: {} rows vs {} rows; evaluate both on the same CSV",
                self.paths.len(),
                other.paths.len()
            )));
        }
        for i in 0..self.paths.len() {
            if self.paths[i] != other.paths[i] || self.studies[i] != other.studies[i] {
                return Err(Error::Other(format!(
                    "{what}: row {i} is {} ({}) in one set and {} ({}) in the other; \
                     evaluate both on the same CSV",
                    self.paths[i], self.studies[i], other.paths[i], other.studies[i]
                )));
            }
        }
        if let Some(j) = (0..self.targets.len()).find(|&j| self.targets[j] != other.targets[j]) {
            let k = self.findings.len();
            return Err(Error::Other(format!(
                "{what}: row {} ({}) finding {:?} has target {:?} in one set and {:?} in the \
                 other; use the same labels",
                j / k,
                self.paths[j / k],
                self.findings[j % k],
                self.targets[j],
                other.targets[j]
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Predictions {
        Predictions::new(
            vec!["a/s1/v1".into(), "a/s1/v2".into(), "b/s1/v1".into()],
            vec!["a/s1".into(), "a/s1".into(), "b/s1".into()],
            vec!["Edema".into(), "Cardiomegaly".into()],
            vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            vec![Some(true), None, Some(false), Some(true), None, Some(false)],
        )
        .unwrap()
    }

    #[test]
    fn columns_keep_labelled_rows_only() {
        let p = tiny();
        let c = p.column(1);
        assert_eq!(c.scores, vec![0.4, 0.6]);
        assert_eq!(c.labels, vec![true, false]);
        assert_eq!(c.rows, vec![1, 2]);
        assert_eq!((c.n_pos(), c.n_neg()), (1, 1));
        assert_eq!(p.study_index(), (vec![0, 0, 1], 2));
        assert_eq!(p.model_label(), "single model");
        let q = p.select_rows(&[2, 0]);
        assert_eq!(q.paths, vec!["b/s1/v1", "a/s1/v1"]);
        assert_eq!(q.probs, vec![0.5, 0.6, 0.1, 0.2]);
        assert_eq!(q.targets, vec![None, Some(false), Some(true), None]);
    }

    #[test]
    fn rejects_bad_shapes_and_values() {
        let mut p = tiny();
        p.probs[3] = 1.5;
        let e = p.validate().unwrap_err().to_string();
        assert!(
            e.contains("a/s1/v2") && e.contains("Cardiomegaly") && e.contains("1.5"),
            "{e}"
        );
        let mut p = tiny();
        p.probs[0] = f64::NAN;
        assert!(p.validate().is_err());
        let mut p = tiny();
        p.studies.pop();
        assert!(p.validate().is_err());
        let mut p = tiny();
        p.findings[1] = "Edema".into();
        assert!(p.validate().unwrap_err().to_string().contains("twice"));
        let mut q = tiny();
        q.targets[5] = Some(true);
        let e = tiny()
            .check_same_rows(&q, "compare")
            .unwrap_err()
            .to_string();
        assert!(e.contains("b/s1/v1") && e.contains("Cardiomegaly"), "{e}");
    }
}
