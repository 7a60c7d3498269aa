//! Records: one image with its raw observations and metadata, before any policy is applied.

use std::path::PathBuf;

use super::labels::Observation;

/// Frontal or lateral view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum View {
    Frontal,
    Lateral,
}

/// Projection of the film (CheXpert's `AP/PA` column, MIMIC's and NIH's `ViewPosition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Projection {
    AP,
    PA,
    LL,
    RL,
    /// Any other spelling found in a file, e.g. MIMIC's `LATERAL` or `AP AXIAL`.
    Other,
}

impl Projection {
    /// Parses `AP`, `PA`, `LL`, `RL` (case-insensitive); empty → `None`; anything else → `Other`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "" => None,
            "AP" => Some(Projection::AP),
            "PA" => Some(Projection::PA),
            "LL" => Some(Projection::LL),
            "RL" => Some(Projection::RL),
            _ => Some(Projection::Other),
        }
    }

    /// Name as written in CheXpert's CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            Projection::AP => "AP",
            Projection::PA => "PA",
            Projection::LL => "LL",
            Projection::RL => "RL",
            Projection::Other => "other",
        }
    }
}

/// Patient sex as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Sex {
    Female,
    Male,
    Unknown,
}

impl Sex {
    /// `Female`/`F`, `Male`/`M` (case-insensitive); anything else is `Unknown`.
    pub fn parse(s: &str) -> Self {
        match s.trim().to_ascii_lowercase().as_str() {
            "female" | "f" => Sex::Female,
            "male" | "m" => Sex::Male,
            _ => Sex::Unknown,
        }
    }
}

/// One image and its raw label observations.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Image path as written in the CSV, relative to the dataset's image root.
    pub path: String,
    /// Patient identifier (CheXpert: `patient00001` from the path; MIMIC: `subject_id`).
    pub patient: String,
    /// Study identifier, unique across patients (CheXpert: `patient00001/study1`).
    pub study: String,
    pub sex: Option<Sex>,
    pub age: Option<f32>,
    pub view: Option<View>,
    pub projection: Option<Projection>,
    /// One observation per finding, in the order of [`Dataset::findings`].
    pub labels: Vec<Observation>,
    /// 1-based line of the CSV this record came from (the header is line 1).
    pub line: usize,
}

/// Which reader produced a dataset; decides how relabeled CSVs are written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DatasetKind {
    CheXpert,
    Mimic,
    Nih,
}

/// A row or image that was skipped, with the reason (reported, never silent).
#[derive(Debug, Clone, PartialEq)]
pub struct Skip {
    pub file: PathBuf,
    pub line: usize,
    pub reason: String,
}

/// A set of records read from one CSV.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub kind: DatasetKind,
    /// The CSV the records came from.
    pub csv: PathBuf,
    /// Folder that record paths are relative to.
    pub image_root: PathBuf,
    /// Finding names, in the order of every record's `labels`.
    pub findings: Vec<String>,
    pub records: Vec<Record>,
    /// Rows dropped by filters or tolerant reading, each with its reason.
    pub skipped: Vec<Skip>,
}

impl Dataset {
    /// Absolute (or root-relative) path of record `i`'s image.
    pub fn image_path(&self, i: usize) -> PathBuf {
        self.image_root.join(&self.records[i].path)
    }

    /// Number of distinct patients.
    pub fn n_patients(&self) -> usize {
        let mut p: Vec<&str> = self.records.iter().map(|r| r.patient.as_str()).collect();
        p.sort_unstable();
        p.dedup();
        p.len()
    }

    /// Keeps the records for which `keep` is true; the dropped ones are added to `skipped`
    /// with `reason`.
    pub fn retain(&mut self, reason: &str, mut keep: impl FnMut(&Record) -> bool) {
        let csv = self.csv.clone();
        let mut skipped = Vec::new();
        self.records.retain(|r| {
            let k = keep(r);
            if !k {
                skipped.push(Skip {
                    file: csv.clone(),
                    line: r.line,
                    reason: reason.to_string(),
                });
            }
            k
        });
        self.skipped.extend(skipped);
    }

    /// A copy holding only the records at `idx` (in that order); `skipped` is not carried.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        Dataset {
            kind: self.kind,
            csv: self.csv.clone(),
            image_root: self.image_root.clone(),
            findings: self.findings.clone(),
            records: idx.iter().map(|&i| self.records[i].clone()).collect(),
            skipped: Vec::new(),
        }
    }
}
