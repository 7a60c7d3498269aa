//! Label mapping across vocabularies: which findings of two datasets are the same finding, so a
//! model trained on CheXpert-named findings can be scored on NIH or MIMIC files over the
//! findings they share, and a dataset can be re-expressed in another's column order.
//!
//! Canonical names are CheXpert's. MIMIC-CXR uses CheXpert's 14 names (in another column order;
//! its reader already returns CheXpert order). NIH ChestX-ray14 shares 7 findings with CheXpert:
//! Atelectasis, Cardiomegaly, Consolidation, Edema, Pneumonia, Pneumothorax, and `Effusion` =
//! `Pleural Effusion`. NIH's `Mass` and `Nodule` are both kinds of CheXpert's `Lung Lesion` but
//! neither equals it, so they are *not* mapped (a union would be a guess about the labelers).

use super::labels::Observation;
use super::record::Dataset;

/// `(name in another vocabulary, CheXpert name)` pairs that differ only in spelling.
pub const SYNONYMS: [(&str, &str); 1] = [("Effusion", "Pleural Effusion")];

/// The CheXpert name of a finding (`Effusion` → `Pleural Effusion`); other names unchanged.
pub fn canonical(name: &str) -> &str {
    SYNONYMS
        .iter()
        .find(|(from, _)| *from == name)
        .map(|(_, to)| *to)
        .unwrap_or(name)
}

/// A finding present in two vocabularies.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Shared {
    /// Canonical (CheXpert) name.
    pub name: String,
    /// Index in the first vocabulary (e.g. the model's outputs).
    pub a: usize,
    /// Index in the second vocabulary (e.g. the dataset's labels).
    pub b: usize,
}

/// Findings of `a` that `b` also has (equal canonical names), in `a`'s order.
pub fn shared<S: AsRef<str>, T: AsRef<str>>(a: &[S], b: &[T]) -> Vec<Shared> {
    a.iter()
        .enumerate()
        .filter_map(|(i, x)| {
            let cx = canonical(x.as_ref());
            b.iter()
                .position(|y| canonical(y.as_ref()) == cx)
                .map(|j| Shared {
                    name: cx.to_string(),
                    a: i,
                    b: j,
                })
        })
        .collect()
}

/// `ds` re-expressed in the `target` vocabulary (e.g. NIH in [`super::CHEXPERT_FINDINGS`]
/// order): each target finding takes the observation of the source finding with the same
/// canonical name. Target findings the source lacks are [`Observation::Blank`] and are returned
/// as the second value, so callers can mask them out rather than let an uncertainty policy read
/// "blank" as "negative". Source findings the target lacks are dropped. `skipped` is kept.
pub fn remap<S: AsRef<str>>(ds: &Dataset, target: &[S]) -> (Dataset, Vec<String>) {
    let src: Vec<Option<usize>> = target
        .iter()
        .map(|t| {
            let ct = canonical(t.as_ref());
            ds.findings.iter().position(|f| canonical(f) == ct)
        })
        .collect();
    let unmapped = target
        .iter()
        .zip(&src)
        .filter(|(_, s)| s.is_none())
        .map(|(t, _)| t.as_ref().to_string())
        .collect();
    let mut out = ds.clone();
    out.findings = target.iter().map(|t| t.as_ref().to_string()).collect();
    for (r, orig) in out.records.iter_mut().zip(&ds.records) {
        r.labels = src
            .iter()
            .map(|s| s.map(|k| orig.labels[k]).unwrap_or(Observation::Blank))
            .collect();
    }
    (out, unmapped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::nih::NIH_FINDINGS;
    use crate::data::record::{DatasetKind, Record, View};
    use crate::data::CHEXPERT_FINDINGS;

    #[test]
    fn nih_shares_seven_findings_with_chexpert() {
        let s = shared(&CHEXPERT_FINDINGS, &NIH_FINDINGS);
        let names: Vec<&str> = s.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Cardiomegaly",
                "Edema",
                "Consolidation",
                "Pneumonia",
                "Atelectasis",
                "Pneumothorax",
                "Pleural Effusion"
            ]
        );
        let eff = s.iter().find(|x| x.name == "Pleural Effusion").unwrap();
        assert_eq!(
            (CHEXPERT_FINDINGS[eff.a], NIH_FINDINGS[eff.b]),
            ("Pleural Effusion", "Effusion")
        );
        for x in &s {
            assert_eq!(
                canonical(CHEXPERT_FINDINGS[x.a]),
                canonical(NIH_FINDINGS[x.b])
            );
        }
        assert_eq!(shared(&CHEXPERT_FINDINGS, &CHEXPERT_FINDINGS).len(), 14);
    }

    #[test]
    fn remap_moves_columns_and_reports_gaps() {
        let mut labels = vec![Observation::Negative; 14];
        labels[2] = Observation::Positive; // Effusion
        labels[4] = Observation::Positive; // Mass
        let ds = Dataset {
            kind: DatasetKind::Nih,
            csv: "Data_Entry_2017.csv".into(),
            image_root: ".".into(),
            findings: NIH_FINDINGS.iter().map(|s| s.to_string()).collect(),
            records: vec![Record {
                path: "images/00000001_000.png".into(),
                patient: "1".into(),
                study: "00000001_000".into(),
                sex: None,
                age: None,
                view: Some(View::Frontal),
                projection: None,
                labels,
                line: 2,
            }],
            skipped: vec![],
        };
        let (m, gaps) = remap(&ds, &CHEXPERT_FINDINGS);
        assert_eq!(m.findings.len(), 14);
        let l = &m.records[0].labels;
        assert_eq!(l[10], Observation::Positive); // Pleural Effusion
        assert_eq!(l[2], Observation::Negative); // Cardiomegaly
        assert_eq!(l[4], Observation::Blank); // Lung Lesion: Mass is not mapped
        assert_eq!(gaps.len(), 7);
        assert!(
            gaps.contains(&"Lung Lesion".to_string()) && gaps.contains(&"No Finding".to_string())
        );
        assert!(!gaps.contains(&"Pleural Effusion".to_string()));
    }
}
