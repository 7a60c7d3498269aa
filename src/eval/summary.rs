//! The per-finding table (AUROC, AP, counts) and the two means the field reports: over the 5
//! CheXpert competition tasks and over all defined findings, each with the findings it covers.

use serde::{Deserialize, Serialize};

use rayon::prelude::*;

use super::auroc::auroc_and_ap;
use super::predictions::Predictions;
use crate::data::COMPETITION_TASKS;

/// Metrics of one finding on the evaluated set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingMetrics {
    pub finding: String,
    /// `None` when only one class is labelled (undefined; left out of the means).
    pub auroc: Option<f64>,
    /// `None` when no positive is labelled.
    pub ap: Option<f64>,
    pub n_pos: usize,
    pub n_neg: usize,
    /// Rows without a label for this finding.
    pub n_unlabelled: usize,
}

/// A mean AUROC and exactly which findings it averages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mean {
    /// `None` when no finding it should cover is defined.
    pub value: Option<f64>,
    /// Findings averaged, in table order.
    pub covers: Vec<String>,
    /// Findings it would cover but left out, each with the reason.
    pub left_out: Vec<(String, String)>,
}

/// Per-finding table plus the competition-task and all-findings means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub per_finding: Vec<FindingMetrics>,
    /// Mean over the 5 competition tasks (those present and defined).
    pub mean_competition: Mean,
    /// Mean over all findings with a defined AUROC.
    pub mean_all: Mean,
}

impl Mean {
    /// Mean of `values[k]` over the finding indices in `covers_idx`; `None` if any is
    /// undefined or the list is empty. Used on bootstrap resamples, where the finding list is
    /// fixed by the point estimate.
    pub fn of(values: &[Option<f64>], covers_idx: &[usize]) -> Option<f64> {
        if covers_idx.is_empty() {
            return None;
        }
        let mut s = 0.0;
        for &k in covers_idx {
            s += values[k]?;
        }
        Some(s / covers_idx.len() as f64)
    }
}

/// Which finding indices each mean covers, given per-finding AUROCs (`None` = undefined) and
/// the finding names.
///
/// Returns `(competition, all)` as index lists plus their [`Mean`] records.
pub fn mean_covers(
    findings: &[String],
    aurocs: &[Option<f64>],
) -> (Vec<usize>, Vec<usize>, Mean, Mean) {
    let undefined = "AUROC undefined (one class only)".to_string();
    let mut comp_idx = Vec::new();
    let mut comp_out = Vec::new();
    for task in COMPETITION_TASKS {
        match findings.iter().position(|f| f == task) {
            Some(k) if aurocs[k].is_some() => comp_idx.push(k),
            Some(_) => comp_out.push((task.to_string(), undefined.clone())),
            None => comp_out.push((task.to_string(), "not among the model's findings".into())),
        }
    }
    comp_idx.sort_unstable();
    let all_idx: Vec<usize> = (0..findings.len())
        .filter(|&k| aurocs[k].is_some())
        .collect();
    let all_out = (0..findings.len())
        .filter(|&k| aurocs[k].is_none())
        .map(|k| (findings[k].clone(), undefined.clone()))
        .collect();
    let mk = |idx: &[usize], out| Mean {
        value: Mean::of(aurocs, idx),
        covers: idx.iter().map(|&k| findings[k].clone()).collect(),
        left_out: out,
    };
    let comp = mk(&comp_idx, comp_out);
    let all = mk(&all_idx, all_out);
    (comp_idx, all_idx, comp, all)
}

/// Computes the per-finding table and both means.
pub fn summarize(p: &Predictions) -> Summary {
    let per_finding: Vec<FindingMetrics> = (0..p.n_findings())
        .into_par_iter()
        .map(|k| {
            let c = p.column(k);
            let (auroc, ap) = auroc_and_ap(&c.scores, &c.labels);
            FindingMetrics {
                finding: p.findings[k].clone(),
                auroc,
                ap,
                n_pos: c.n_pos(),
                n_neg: c.n_neg(),
                n_unlabelled: p.n_rows() - c.labels.len(),
            }
        })
        .collect();
    let aurocs: Vec<Option<f64>> = per_finding.iter().map(|m| m.auroc).collect();
    let (_, _, mean_competition, mean_all) = mean_covers(&p.findings, &aurocs);
    Summary {
        per_finding,
        mean_competition,
        mean_all,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_cover_defined_findings_only() {
        // Cardiomegaly undefined (only negatives), Fracture undefined, Edema/Atelectasis fine;
        // Consolidation and Pleural Effusion are not among the findings at all.
        let findings: Vec<String> = [
            "Atelectasis",
            "Cardiomegaly",
            "Edema",
            "Fracture",
            "Pneumonia",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let t = |v: bool| Some(v);
        let targets = vec![
            t(true),
            t(false),
            t(true),
            None,
            t(true), //
            t(false),
            t(false),
            t(false),
            None,
            t(false), //
            t(true),
            t(false),
            t(false),
            t(false),
            t(false),
        ];
        let probs = vec![
            0.9, 0.1, 0.6, 0.5, 0.2, //
            0.2, 0.3, 0.7, 0.5, 0.4, //
            0.4, 0.5, 0.1, 0.5, 0.6,
        ];
        let p = Predictions::new(
            vec!["a".into(), "b".into(), "c".into()],
            vec!["s1".into(), "s2".into(), "s3".into()],
            findings,
            probs,
            targets,
        )
        .unwrap();
        let s = summarize(&p);
        // Atelectasis: positives 0.9, 0.4 vs negative 0.2 -> 1.0. Edema: positive 0.6 vs
        // negatives 0.7, 0.1 -> 0.5. Pneumonia: positive 0.2 vs 0.4, 0.6 -> 0.0.
        assert_eq!(s.per_finding[0].auroc, Some(1.0));
        assert_eq!(s.per_finding[1].auroc, None);
        assert_eq!(s.per_finding[2].auroc, Some(0.5));
        assert_eq!(s.per_finding[3].auroc, None);
        assert_eq!(s.per_finding[3].n_unlabelled, 2);
        assert_eq!(s.per_finding[4].auroc, Some(0.0));
        assert_eq!(s.mean_competition.covers, vec!["Atelectasis", "Edema"]);
        assert_eq!(s.mean_competition.value, Some(0.75));
        assert_eq!(s.mean_competition.left_out.len(), 3);
        assert!(s.mean_competition.left_out[0].1.contains("undefined"));
        assert_eq!(s.mean_all.covers, vec!["Atelectasis", "Edema", "Pneumonia"]);
        assert_eq!(s.mean_all.value, Some(0.5));
        assert_eq!(
            s.mean_all
                .left_out
                .iter()
                .map(|x| x.0.as_str())
                .collect::<Vec<_>>(),
            vec!["Cardiomegaly", "Fracture"]
        );
        assert_eq!(Mean::of(&[Some(1.0), None], &[0, 1]), None);
        assert_eq!(Mean::of(&[Some(1.0), None], &[]), None);
    }
}
