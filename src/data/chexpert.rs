//! CheXpert (`CheXpert-v1.0` and `CheXpert-v1.0-small`) CSV reader.
//!
//! Header: `Path,Sex,Age,Frontal/Lateral,AP/PA,<14 findings>`, read by name so columns may come in
//! any order. `Path` is relative to the folder that *contains* `CheXpert-v1.0-small/`; patient and
//! study are parsed from it (`.../patient00001/study1/view1_frontal.jpg`). Label cells keep their
//! raw [`Observation`]. The noise lab writes this same format.

use std::path::{Path, PathBuf};

use super::csvio::{Table, Width};
use super::labels::{Observation, CHEXPERT_FINDINGS};
use super::record::{Dataset, DatasetKind, Projection, Record, Sex, View};
use crate::error::{Error, Result};

/// Row filters applied after reading; dropped rows are counted in [`Dataset::skipped`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filters {
    /// Keep frontal views only (the usual CheXpert training setup).
    pub frontal_only: bool,
    /// Keep only these projections (`AP`, `PA`, `LL`, `RL`); empty keeps all.
    pub projections: Vec<String>,
}

impl Filters {
    /// Applies the filters to `ds` in place.
    pub fn apply(&self, ds: &mut Dataset) -> Result<()> {
        if self.frontal_only {
            ds.retain("lateral view (frontal_only)", |r| {
                r.view != Some(View::Lateral)
            });
        }
        if !self.projections.is_empty() {
            let mut keep = Vec::new();
            for p in &self.projections {
                match Projection::parse(p) {
                    Some(Projection::Other) | None => {
                        return Err(Error::Config(format!(
                        "data.filters.projections: unknown projection {p:?}; use AP, PA, LL or RL"
                    )))
                    }
                    Some(q) => keep.push(q),
                }
            }
            ds.retain("projection not in filters.projections", |r| {
                r.projection.map(|p| keep.contains(&p)).unwrap_or(false)
            });
        }
        Ok(())
    }
}

/// Reads a CheXpert-format CSV. `image_root` is the folder record paths are relative to.
pub fn read(csv: &Path, image_root: &Path) -> Result<Dataset> {
    let t = Table::read(csv, Width::Exact)?;
    from_table(&t, image_root)
}

/// Builds the dataset from an already-parsed table.
pub fn from_table(t: &Table, image_root: &Path) -> Result<Dataset> {
    let paths = t.texts("Path")?;
    let sex = optional(t, "Sex")?;
    let age = optional(t, "Age")?;
    let fl = optional(t, "Frontal/Lateral")?;
    let appa = optional(t, "AP/PA")?;
    let labels: Vec<Vec<&str>> = CHEXPERT_FINDINGS
        .iter()
        .map(|f| t.texts(f))
        .collect::<Result<_>>()?;
    let mut records = Vec::with_capacity(t.n_rows());
    for i in 0..t.n_rows() {
        let line = t.line(i);
        let path = paths[i].trim();
        if path.is_empty() {
            return Err(Error::csv(
                &t.file,
                line,
                "empty Path cell; every row needs an image path",
            ));
        }
        let (patient, study) = patient_study(path).ok_or_else(|| {
            Error::csv(
                &t.file,
                line,
                format!(
                    "Path {path:?} does not contain .../patientNNNNN/studyN/...; \
                     CheXpert paths must keep the dataset's folder layout"
                ),
            )
        })?;
        let view = match fl.as_ref().map(|c| c[i].trim()) {
            None | Some("") => None,
            Some("Frontal") => Some(View::Frontal),
            Some("Lateral") => Some(View::Lateral),
            Some(other) => {
                return Err(Error::csv(
                    &t.file,
                    line,
                    format!("Frontal/Lateral value {other:?} is not Frontal or Lateral"),
                ))
            }
        };
        let age_v = match age.as_ref().map(|c| c[i].trim()) {
            None | Some("") => None,
            Some(a) => Some(a.parse::<f32>().map_err(|_| {
                Error::csv(&t.file, line, format!("Age value {a:?} is not a number"))
            })?),
        };
        let mut obs = Vec::with_capacity(CHEXPERT_FINDINGS.len());
        for (k, col) in labels.iter().enumerate() {
            obs.push(Observation::parse(col[i]).map_err(|m| {
                Error::csv(
                    &t.file,
                    line,
                    format!("column {:?}: {m}", CHEXPERT_FINDINGS[k]),
                )
            })?);
        }
        records.push(Record {
            path: path.to_string(),
            patient,
            study,
            sex: sex.as_ref().map(|c| Sex::parse(c[i])),
            age: age_v,
            view,
            projection: appa.as_ref().and_then(|c| Projection::parse(c[i])),
            labels: obs,
            line,
        });
    }
    Ok(Dataset {
        kind: DatasetKind::CheXpert,
        csv: t.file.clone(),
        image_root: image_root.to_path_buf(),
        findings: CHEXPERT_FINDINGS.iter().map(|s| s.to_string()).collect(),
        records,
        skipped: Vec::new(),
    })
}

fn optional<'a>(t: &'a Table, name: &str) -> Result<Option<Vec<&'a str>>> {
    if t.has(name) {
        t.texts(name).map(Some)
    } else {
        Ok(None)
    }
}

/// `(patient, study)` from a CheXpert path: `patient00001` and `patient00001/study1`.
pub fn patient_study(path: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = path.split(['/', '\\']).collect();
    let p = parts.iter().position(|c| c.starts_with("patient"))?;
    let s = parts.get(p + 1).filter(|c| c.starts_with("study"))?;
    Some((parts[p].to_string(), format!("{}/{}", parts[p], s)))
}

/// Where a CheXpert-format dataset lives under a `--data` folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Folder that CSV paths are relative to (contains `CheXpert-v1.0-small/`).
    pub root: PathBuf,
    /// The `CheXpert-v1.0-small/` (or `CheXpert-v1.0/`) folder holding the CSVs.
    pub dir: PathBuf,
}

impl Layout {
    /// Finds `CheXpert-v1.0-small/` or `CheXpert-v1.0/` in `data`, or accepts `data` itself when
    /// it is such a folder.
    pub fn locate(data: &Path) -> Result<Layout> {
        for name in ["CheXpert-v1.0-small", "CheXpert-v1.0"] {
            let dir = data.join(name);
            if dir.join("train.csv").is_file() || dir.join("valid.csv").is_file() {
                return Ok(Layout {
                    root: data.to_path_buf(),
                    dir,
                });
            }
            if data.file_name().map(|f| f == name).unwrap_or(false)
                && data.join("train.csv").is_file()
            {
                return Ok(Layout {
                    root: data.parent().unwrap_or(Path::new(".")).to_path_buf(),
                    dir: data.to_path_buf(),
                });
            }
        }
        Err(Error::input(
            data,
            "no CheXpert-v1.0-small/ (or CheXpert-v1.0/) folder with train.csv or valid.csv here; \
             pass --data DIR pointing at the folder that contains it, or --csv FILE --images ROOT",
        ))
    }

    /// Path of a CSV in the dataset folder, e.g. `csv("train.csv")`.
    pub fn csv(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,Support Devices";

    fn ds(text: &str) -> Result<Dataset> {
        let t = Table::from_bytes(
            Path::new("train.csv"),
            text.as_bytes().to_vec(),
            Width::Exact,
        )?;
        from_table(&t, Path::new("/data"))
    }

    #[test]
    fn reads_rows_with_every_cell_form() {
        let text = format!(
            "{HEADER}\n\
             CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,,0.0,,,1.0\n\
             CheXpert-v1.0-small/train/patient00002/study2/view2_lateral.jpg,Male,87,Lateral,,,,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,\n"
        );
        let d = ds(&text).unwrap();
        assert_eq!(d.records.len(), 2);
        let r = &d.records[0];
        assert_eq!(r.patient, "patient00001");
        assert_eq!(r.study, "patient00001/study1");
        assert_eq!(r.sex, Some(Sex::Female));
        assert_eq!(r.age, Some(68.0));
        assert_eq!(r.view, Some(View::Frontal));
        assert_eq!(r.projection, Some(Projection::AP));
        assert_eq!(r.labels[0], Observation::Positive);
        assert_eq!(r.labels[1], Observation::Blank);
        assert_eq!(r.labels[10], Observation::Negative);
        let r = &d.records[1];
        assert_eq!(r.view, Some(View::Lateral));
        assert_eq!(r.projection, None);
        assert_eq!(r.labels[2], Observation::Uncertain);
        assert_eq!(r.labels[3], Observation::Positive);
        assert_eq!(r.labels[13], Observation::Blank);
        assert_eq!(r.line, 3);
    }

    #[test]
    fn columns_in_another_order_are_read_by_name() {
        let mut cols: Vec<&str> = HEADER.split(',').collect();
        cols.reverse();
        let mut vals = vec![""; 19];
        vals[18] = "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg"; // Path last
        vals[18 - 7] = "1.0"; // Cardiomegaly
        vals[18 - 15] = "0.0"; // Pleural Effusion
        let text = format!("{}\n{}\n", cols.join(","), vals.join(","));
        let d = ds(&text).unwrap();
        assert_eq!(d.records[0].labels[2], Observation::Positive);
        assert_eq!(d.records[0].labels[10], Observation::Negative);
        assert_eq!(d.records[0].labels[0], Observation::Blank);
    }

    #[test]
    fn bad_label_value_names_line_column_and_value() {
        let text = format!(
            "{HEADER}\nCheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,,,2.0,,,,,,,,,,,\n"
        );
        let e = ds(&text).unwrap_err().to_string();
        assert!(
            e.contains("train.csv:2:") && e.contains("Cardiomegaly") && e.contains("2.0"),
            "{e}"
        );
        assert_eq!(ds(&text).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn bad_path_and_age_are_errors() {
        let text = format!("{HEADER}\nimages/x.jpg,Female,68,Frontal,AP,,,,,,,,,,,,,,\n");
        assert!(ds(&text).unwrap_err().to_string().contains("patientNNNNN"));
        let text = format!(
            "{HEADER}\nCheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,old,Frontal,AP,,,,,,,,,,,,,,\n"
        );
        assert!(ds(&text).unwrap_err().to_string().contains("\"old\""));
    }

    #[test]
    fn filters_count_what_they_drop() {
        let text = format!(
            "{HEADER}\n\
             CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,,,,,,,,,,,,,,\n\
             CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg,Female,68,Lateral,,,,,,,,,,,,,,,\n\
             CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg,Male,50,Frontal,PA,,,,,,,,,,,,,,\n"
        );
        let mut d = ds(&text).unwrap();
        Filters {
            frontal_only: true,
            projections: vec![],
        }
        .apply(&mut d)
        .unwrap();
        assert_eq!(d.records.len(), 2);
        assert_eq!(d.skipped.len(), 1);
        assert_eq!(d.skipped[0].line, 3);
        Filters {
            frontal_only: false,
            projections: vec!["PA".into()],
        }
        .apply(&mut d)
        .unwrap();
        assert_eq!(d.records.len(), 1);
        assert_eq!(d.records[0].patient, "patient00003");
        assert!(Filters {
            frontal_only: false,
            projections: vec!["XX".into()]
        }
        .apply(&mut d)
        .is_err());
    }
}
