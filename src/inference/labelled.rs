//! Model probabilities paired with the labels of a CSV: same vocabulary (CheXpert, MIMIC-CXR)
//! or another one (NIH ChestX-ray14 on a CheXpert-named model), evaluated over the findings
//! both share through the data layer's name mapping (`Effusion` = `Pleural Effusion`).

use std::collections::HashMap;
use std::path::Path;

use crate::data::mapping::canonical;
use crate::data::source::{self, CsvSource};
use crate::data::{Dataset, Observation, Record};
use crate::error::{Error, Result};
use crate::eval::crossdata::{restrict, shared_findings};
use crate::eval::Predictions;

/// Predictions with reference labels, ready for [`crate::eval::evaluate`].
#[derive(Debug, Clone)]
pub struct Labelled {
    /// Over the shared findings, in the model's order and with the model's names.
    pub predictions: Predictions,
    /// The record of every row (for subgroups), in row order.
    pub records: Vec<Record>,
    /// True when the CSV names its findings differently from the model (cross-dataset).
    pub cross_dataset: bool,
    /// Model findings the CSV has no label column for (left out).
    pub unlabelled: Vec<String>,
}

/// Reads a labelled CSV of any supported format (told apart by its header: CheXpert,
/// MIMIC-CXR, NIH), every row, no filter; `images` defaults to the root a CheXpert-style CSV
/// implies. Rows the reader skipped are reported on stderr.
pub fn read_csv(csv: &Path, images: Option<&Path>) -> Result<Dataset> {
    let format = source::detect(csv)?;
    let images = match images {
        Some(i) => i.to_path_buf(),
        None => source::default_image_root(csv)?,
    };
    let ds = source::read(
        &CsvSource {
            csv: csv.to_path_buf(),
            images,
            split: None,
        },
        format,
    )?;
    if !ds.skipped.is_empty() {
        eprintln!(
            "{}: skipped {} rows (first: line {}: {})",
            csv.display(),
            ds.skipped.len(),
            ds.skipped[0].line,
            ds.skipped[0].reason
        );
    }
    if ds.records.is_empty() {
        return Err(Error::input(csv, "no usable rows"));
    }
    Ok(ds)
}

fn target(o: Observation) -> Option<bool> {
    match o {
        Observation::Positive => Some(true),
        Observation::Negative => Some(false),
        _ => None,
    }
}

/// Pairs `probs` (`[rows.len(), model_findings.len()]` row-major) with the labels of
/// `ds.records[rows[i]]`. Uncertain and blank labels are no label (an evaluation set gets no
/// uncertainty policy).
pub fn with_targets(
    ds: &Dataset,
    rows: &[usize],
    model_findings: &[String],
    probs: &[f64],
) -> Result<Labelled> {
    let shared = shared_findings(model_findings, &ds.findings, |n| {
        model_findings
            .iter()
            .find(|m| canonical(m) == canonical(n))
            .cloned()
    });
    if shared.is_empty() {
        return Err(Error::input(
            &ds.csv,
            format!(
                "none of the model's findings {model_findings:?} has a label column here \
                 ({:?}), even through the name mapping; is this the right CSV?",
                ds.findings
            ),
        ));
    }
    let records: Vec<Record> = rows.iter().map(|&i| ds.records[i].clone()).collect();
    let targets: Vec<Option<bool>> = records
        .iter()
        .flat_map(|r| r.labels.iter().map(|&o| target(o)))
        .collect();
    let predictions = restrict(
        records.iter().map(|r| r.path.clone()).collect(),
        records.iter().map(|r| r.study.clone()).collect(),
        model_findings,
        probs,
        &ds.findings,
        &targets,
        &shared,
    )?;
    let unlabelled = model_findings
        .iter()
        .filter(|f| !predictions.findings.contains(f))
        .cloned()
        .collect();
    Ok(Labelled {
        predictions,
        records,
        cross_dataset: ds.findings != model_findings,
        unlabelled,
    })
}

/// Labels for predictions read from a file (e.g. `predictions.csv` of an earlier `eval`,
/// whose targets are empty): rows are matched to `ds` by `Path`; a path the CSV lacks is an
/// error naming it.
pub fn attach_targets(p: &Predictions, ds: &Dataset, what: &str) -> Result<Labelled> {
    let by_path: HashMap<&str, usize> = ds
        .records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.path.as_str(), i))
        .collect();
    let rows = p
        .paths
        .iter()
        .map(|path| {
            by_path.get(path.as_str()).copied().ok_or_else(|| {
                Error::input(
                    &ds.csv,
                    format!(
                        "{what} has a row for {path:?}, which this CSV does not list; compare \
                         predictions made on the same CSV"
                    ),
                )
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    let mut l = with_targets(ds, &rows, &p.findings, &p.probs)?;
    l.predictions.n_models = p.n_models;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::record::{DatasetKind, View};
    use Observation::{Blank as B, Negative as N, Positive as P, Uncertain as U};

    fn nih_like() -> Dataset {
        let rec = |i: usize, labels: Vec<Observation>| Record {
            path: format!("images/{i:08}_000.png"),
            patient: i.to_string(),
            study: format!("{i:08}_000"),
            sex: None,
            age: None,
            view: Some(View::Frontal),
            projection: None,
            labels,
            line: i + 2,
        };
        Dataset {
            kind: DatasetKind::Nih,
            csv: "Data_Entry_2017.csv".into(),
            image_root: ".".into(),
            findings: vec!["Effusion".into(), "Hernia".into(), "Cardiomegaly".into()],
            records: vec![
                rec(0, vec![P, N, N]),
                rec(1, vec![N, P, U]),
                rec(2, vec![N, N, P]),
            ],
            skipped: vec![],
        }
    }

    #[test]
    fn nih_csv_on_a_chexpert_model_uses_the_shared_findings() {
        let ds = nih_like();
        let model: Vec<String> = ["Cardiomegaly", "Edema", "Pleural Effusion"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // Rows 2 and 0 only (row 1's image was unreadable), model probabilities [2, 3].
        let l = with_targets(&ds, &[0, 2], &model, &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]).unwrap();
        let p = &l.predictions;
        assert!(l.cross_dataset);
        assert_eq!(p.findings, vec!["Cardiomegaly", "Pleural Effusion"]);
        assert_eq!(l.unlabelled, vec!["Edema"]);
        assert_eq!(
            p.paths,
            vec!["images/00000000_000.png", "images/00000002_000.png"]
        );
        assert_eq!(p.probs, vec![0.1, 0.3, 0.4, 0.6]);
        assert_eq!(
            p.targets,
            vec![Some(false), Some(true), Some(true), Some(false)]
        );
        // From a file: matched by path, in the file's order; an unknown path names itself.
        let mut file = p.clone();
        file.paths.reverse();
        file.probs = vec![0.4, 0.6, 0.1, 0.3];
        file.targets = vec![None; 4];
        let l = attach_targets(&file, &ds, "a.csv").unwrap();
        assert_eq!(l.predictions.targets[0], Some(true));
        file.paths[0] = "images/elsewhere.png".into();
        let e = attach_targets(&file, &ds, "a.csv").unwrap_err().to_string();
        assert!(e.contains("elsewhere.png") && e.contains("a.csv"), "{e}");
        // No shared finding at all.
        let none = vec!["Fracture".to_string()];
        assert!(with_targets(&ds, &[0], &none, &[0.5]).is_err());
    }

    #[test]
    fn same_vocabulary_is_not_cross_dataset_and_uncertain_is_unlabelled() {
        let mut ds = nih_like();
        ds.findings = vec!["A".into(), "B".into(), "C".into()];
        let f = ds.findings.clone();
        let l = with_targets(&ds, &[1], &f, &[0.2, 0.5, 0.9]).unwrap();
        assert!(!l.cross_dataset && l.unlabelled.is_empty());
        assert_eq!(l.predictions.targets, vec![Some(false), Some(true), None]);
        let _ = B;
    }
}
