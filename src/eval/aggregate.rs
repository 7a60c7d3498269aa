//! Study-level aggregation (max or mean over a study's images, as the CheXpert competition
//! scores studies) and ensembles (several models' probabilities averaged).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::predictions::Predictions;
use crate::error::{Error, Result};

/// How a study's image probabilities combine into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    Max,
    Mean,
}

impl Aggregation {
    /// Parses `max` or `mean`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "max" => Ok(Aggregation::Max),
            "mean" => Ok(Aggregation::Mean),
            _ => Err(Error::Config(format!(
                "study aggregation {s:?}: use max or mean"
            ))),
        }
    }
}

/// One row per study, in order of first appearance.
///
/// Probabilities are the max or mean over the study's images. Targets must agree across a
/// study's images (CheXpert's validation labels are per study, laterals repeat them); an
/// image without a label takes its study's label, and two images with opposite labels are an
/// error naming the study and finding. `Path` of a study row is its first image's path.
///
/// # Shapes
/// `[N, K]` → `[S, K]`.
pub fn study_level(p: &Predictions, how: Aggregation) -> Result<Predictions> {
    let (idx, s) = p.study_index();
    let k = p.n_findings();
    let mut first = vec![usize::MAX; s];
    let mut count = vec![0usize; s];
    let mut probs = vec![
        match how {
            Aggregation::Max => f64::NEG_INFINITY,
            Aggregation::Mean => 0.0,
        };
        s * k
    ];
    let mut targets: Vec<Option<bool>> = vec![None; s * k];
    for (i, &g) in idx.iter().enumerate() {
        let g = g as usize;
        if first[g] == usize::MAX {
            first[g] = i;
        }
        count[g] += 1;
        for j in 0..k {
            let v = p.prob(i, j);
            let d = &mut probs[g * k + j];
            match how {
                Aggregation::Max => *d = d.max(v),
                Aggregation::Mean => *d += v,
            }
            match (targets[g * k + j], p.target(i, j)) {
                (Some(a), Some(b)) if a != b => {
                    return Err(Error::Other(format!(
                        "study {}: images {} and {} have opposite {:?} labels; study-level \
                         evaluation needs one label per study (evaluate per image instead)",
                        p.studies[i], p.paths[first[g]], p.paths[i], p.findings[j]
                    )))
                }
                (None, Some(b)) => targets[g * k + j] = Some(b),
                _ => {}
            }
        }
    }
    if how == Aggregation::Mean {
        for g in 0..s {
            for j in 0..k {
                probs[g * k + j] /= count[g] as f64;
            }
        }
    }
    let mut out = Predictions::new(
        first.iter().map(|&i| p.paths[i].clone()).collect(),
        first.iter().map(|&i| p.studies[i].clone()).collect(),
        p.findings.clone(),
        probs,
        targets,
    )?;
    out.n_models = p.n_models;
    Ok(out)
}

/// The probability average of several models' predictions on the same set.
///
/// Rows are matched by path (the first set's order is kept); every model must cover the same
/// paths with the same findings, studies and targets. `n_models` of the result is the sum of
/// the inputs' (an ensemble of ensembles counts its members).
pub fn ensemble(models: &[Predictions]) -> Result<Predictions> {
    let Some(first) = models.first() else {
        return Err(Error::Other("ensemble: no predictions given".into()));
    };
    let n = first.n_rows();
    let k = first.n_findings();
    let mut sum = first.probs.clone();
    let pos: HashMap<&str, usize> = first
        .paths
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    if pos.len() != n {
        return Err(Error::Other(
            "ensemble: a path appears twice in the first model's predictions; paths must be unique"
                .into(),
        ));
    }
    for (m, other) in models.iter().enumerate().skip(1) {
        if other.findings != first.findings {
            return Err(Error::Other(format!(
                "ensemble: model {} has findings {:?}, model 1 has {:?}; ensemble models of the \
                 same findings",
                m + 1,
                other.findings,
                first.findings
            )));
        }
        if other.n_rows() != n {
            return Err(Error::Other(format!(
                "ensemble: model {} has {} rows, model 1 has {n}; predict on the same CSV",
                m + 1,
                other.n_rows()
            )));
        }
        let mut seen = vec![false; n];
        for i in 0..n {
            let Some(&r) = pos.get(other.paths[i].as_str()) else {
                return Err(Error::Other(format!(
                    "ensemble: model {} has row {} that model 1 lacks; predict on the same CSV",
                    m + 1,
                    other.paths[i]
                )));
            };
            if seen[r] {
                return Err(Error::Other(format!(
                    "ensemble: model {} lists {} twice",
                    m + 1,
                    other.paths[i]
                )));
            }
            seen[r] = true;
            if other.studies[i] != first.studies[r] {
                return Err(Error::Other(format!(
                    "ensemble: {} is in study {} for model {} but {} for model 1",
                    other.paths[i],
                    other.studies[i],
                    m + 1,
                    first.studies[r]
                )));
            }
            for j in 0..k {
                if other.target(i, j) != first.target(r, j) {
                    return Err(Error::Other(format!(
                        "ensemble: {} {:?} has target {:?} for model {} but {:?} for model 1",
                        other.paths[i],
                        first.findings[j],
                        other.target(i, j),
                        m + 1,
                        first.target(r, j)
                    )));
                }
                sum[r * k + j] += other.prob(i, j);
            }
        }
    }
    let mut out = first.clone();
    let m = models.len() as f64;
    for (o, s) in out.probs.iter_mut().zip(&sum) {
        *o = (s / m).clamp(0.0, 1.0);
    }
    out.n_models = models.iter().map(|p| p.n_models).sum();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(paths: &[&str], probs: Vec<f64>) -> Predictions {
        // Studies: "p1/s1" holds a frontal and a lateral; "p2/s1" one image.
        let studies = paths
            .iter()
            .map(|p| p.rsplit_once('/').unwrap().0.to_string())
            .collect();
        let targets = paths
            .iter()
            .flat_map(|p| {
                if p.starts_with("p1") {
                    [Some(true), None]
                } else {
                    [Some(false), Some(true)]
                }
            })
            .collect();
        Predictions::new(
            paths.iter().map(|s| s.to_string()).collect(),
            studies,
            vec!["Edema".into(), "Cardiomegaly".into()],
            probs,
            targets,
        )
        .unwrap()
    }

    #[test]
    fn study_max_and_mean() {
        let p = set(
            &["p1/s1/frontal", "p1/s1/lateral", "p2/s1/frontal"],
            vec![0.2, 0.9, 0.6, 0.3, 0.5, 0.4],
        );
        let mx = study_level(&p, Aggregation::Max).unwrap();
        assert_eq!(mx.paths, vec!["p1/s1/frontal", "p2/s1/frontal"]);
        assert_eq!(mx.studies, vec!["p1/s1", "p2/s1"]);
        assert_eq!(mx.probs, vec![0.6, 0.9, 0.5, 0.4]);
        assert_eq!(mx.targets, vec![Some(true), None, Some(false), Some(true)]);
        let mn = study_level(&p, Aggregation::Mean).unwrap();
        assert!((mn.probs[0] - 0.4).abs() < 1e-15 && (mn.probs[1] - 0.6).abs() < 1e-15);
        // Opposite labels inside one study are refused with the study named.
        let mut bad = p.clone();
        bad.targets[2] = Some(false);
        let e = study_level(&bad, Aggregation::Max).unwrap_err().to_string();
        assert!(e.contains("p1/s1") && e.contains("Edema"), "{e}");
    }

    #[test]
    fn ensemble_averages_by_path() {
        let a = set(
            &["p1/s1/frontal", "p2/s1/frontal"],
            vec![0.2, 0.9, 0.6, 0.3],
        );
        let b = set(
            &["p2/s1/frontal", "p1/s1/frontal"],
            vec![0.8, 0.1, 0.4, 0.5],
        );
        let e = ensemble(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(e.n_models, 2);
        assert_eq!(e.model_label(), "ensemble of 2");
        let want = [0.3, 0.7, 0.7, 0.2];
        for (g, w) in e.probs.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{:?}", e.probs);
        }
        let c = set(
            &["p1/s1/frontal", "p3/s1/frontal"],
            vec![0.2, 0.9, 0.6, 0.3],
        );
        assert!(ensemble(&[a.clone(), c])
            .unwrap_err()
            .to_string()
            .contains("p3/s1/frontal"));
        assert!(ensemble(&[]).is_err());
        assert_eq!(ensemble(&[a.clone()]).unwrap(), a);
    }
}
