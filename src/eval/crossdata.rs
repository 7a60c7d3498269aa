//! Cross-dataset evaluation: a model trained on one vocabulary (e.g. CheXpert's 14 findings)
//! scored on another dataset's labels (NIH ChestX-ray14, MIMIC-CXR) over the findings they
//! share.
//!
//! The name mapping comes from the data layer (e.g. NIH `Effusion` → CheXpert `Pleural
//! Effusion`); it is passed in as a function so this module does not depend on a reader.

use super::predictions::Predictions;
use crate::error::{Error, Result};

/// One finding both sides know: indices into the model's and the dataset's finding lists and
/// the model-side name used in reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFinding {
    pub model: usize,
    pub data: usize,
    pub name: String,
}

/// The findings shared by a model and a dataset, in the model's order. `to_model_name` maps a
/// dataset finding name to the model's name for it (`None` = no counterpart); identical names
/// need no entry in the mapping but must still be returned by it.
pub fn shared_findings(
    model_findings: &[String],
    data_findings: &[String],
    to_model_name: impl Fn(&str) -> Option<String>,
) -> Vec<SharedFinding> {
    let mut out: Vec<SharedFinding> = data_findings
        .iter()
        .enumerate()
        .filter_map(|(d, name)| {
            let m = to_model_name(name)?;
            let mi = model_findings.iter().position(|f| *f == m)?;
            Some(SharedFinding {
                model: mi,
                data: d,
                name: m,
            })
        })
        .collect();
    out.sort_by_key(|s| s.model);
    out
}

/// Predictions over the shared findings only: probabilities from the model's columns, targets
/// from the dataset's, named with the model's names.
///
/// # Shapes
/// `model_probs`: `[N, Km]`, `data_targets`: `[N, Kd]` → `[N, shared]`.
pub fn restrict(
    paths: Vec<String>,
    studies: Vec<String>,
    model_findings: &[String],
    model_probs: &[f64],
    data_findings: &[String],
    data_targets: &[Option<bool>],
    shared: &[SharedFinding],
) -> Result<Predictions> {
    let n = paths.len();
    let (km, kd) = (model_findings.len(), data_findings.len());
    if model_probs.len() != n * km || data_targets.len() != n * kd {
        return Err(Error::Other(format!(
            "cross-dataset: expected {n} x {km} probabilities and {n} x {kd} targets, got {} and {}",
            model_probs.len(),
            data_targets.len()
        )));
    }
    if shared.is_empty() {
        return Err(Error::Other(format!(
            "cross-dataset: the model's findings {model_findings:?} and the dataset's \
             {data_findings:?} share none; check the label mapping"
        )));
    }
    let mut probs = Vec::with_capacity(n * shared.len());
    let mut targets = Vec::with_capacity(n * shared.len());
    for i in 0..n {
        for s in shared {
            probs.push(model_probs[i * km + s.model]);
            targets.push(data_targets[i * kd + s.data]);
        }
    }
    Predictions::new(
        paths,
        studies,
        shared.iter().map(|s| s.name.clone()).collect(),
        probs,
        targets,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nih_labels_on_a_chexpert_model() {
        let model: Vec<String> = ["Cardiomegaly", "Edema", "Pleural Effusion"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let nih: Vec<String> = ["Effusion", "Hernia", "Cardiomegaly"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let map = |n: &str| match n {
            "Effusion" => Some("Pleural Effusion".to_string()),
            "Cardiomegaly" => Some(n.to_string()),
            _ => None,
        };
        let shared = shared_findings(&model, &nih, map);
        assert_eq!(
            shared,
            vec![
                SharedFinding {
                    model: 0,
                    data: 2,
                    name: "Cardiomegaly".into()
                },
                SharedFinding {
                    model: 2,
                    data: 0,
                    name: "Pleural Effusion".into()
                },
            ]
        );
        let p = restrict(
            vec!["a.png".into(), "b.png".into()],
            vec!["a".into(), "b".into()],
            &model,
            &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            &nih,
            &[
                Some(true),
                Some(false),
                None,
                Some(false),
                Some(false),
                Some(true),
            ],
            &shared,
        )
        .unwrap();
        assert_eq!(p.findings, vec!["Cardiomegaly", "Pleural Effusion"]);
        assert_eq!(p.probs, vec![0.1, 0.3, 0.4, 0.6]);
        assert_eq!(p.targets, vec![None, Some(true), Some(true), Some(false)]);
        assert!(restrict(vec![], vec![], &model, &[], &nih, &[], &[]).is_err());
    }
}
