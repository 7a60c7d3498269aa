//! Findings, raw observations and the disease hierarchy.
//!
//! A CheXpert-style label cell holds one of four *raw observations*. They are kept apart here —
//! positive, negative, uncertain (`-1`) and blank (not mentioned) — because the uncertainty
//! policies (U-Ignore, U-Zeros, U-Ones, U-LSR, U-MultiClass) need `-1` and blank separately.
//! No policy is applied in the data layer.

use std::fmt;

/// The 14 CheXpert observations, in the column order of CheXpert's CSV header.
pub const CHEXPERT_FINDINGS: [&str; 14] = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
];

/// The five CheXpert competition tasks (the "5" of the 5-task mean AUROC).
pub const COMPETITION_TASKS: [&str; 5] = [
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
];

/// Parent → child pairs of the disease hierarchy: a positive child implies a positive parent
/// (Pneumonia ⇒ Consolidation ⇒ Lung Opacity; Cardiomegaly ⇒ Enlarged Cardiomediastinum).
pub const HIERARCHY: [(&str, &str); 7] = [
    ("Lung Opacity", "Edema"),
    ("Lung Opacity", "Consolidation"),
    ("Lung Opacity", "Pneumonia"),
    ("Lung Opacity", "Lung Lesion"),
    ("Lung Opacity", "Atelectasis"),
    ("Consolidation", "Pneumonia"),
    ("Enlarged Cardiomediastinum", "Cardiomegaly"),
];

/// Index of a CheXpert finding name in [`CHEXPERT_FINDINGS`].
pub fn chexpert_index(name: &str) -> Option<usize> {
    CHEXPERT_FINDINGS.iter().position(|f| *f == name)
}

/// One raw label cell as the report labeler wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Observation {
    /// `1.0`: the finding is mentioned as present.
    Positive,
    /// `0.0`: the finding is mentioned as absent.
    Negative,
    /// `-1.0`: the finding is mentioned with uncertainty.
    Uncertain,
    /// Empty cell: the finding is not mentioned.
    Blank,
}

impl Observation {
    /// Parses a cell: `1`, `1.0`, `0`, `0.0`, `-0.0`, `-1`, `-1.0` (any float spelling of those
    /// values) or empty/whitespace. Anything else (e.g. `2.0`, `yes`, `nan`) is `Err` with a hint.
    pub fn parse(cell: &str) -> Result<Self, String> {
        let t = cell.trim();
        if t.is_empty() {
            return Ok(Observation::Blank);
        }
        match t.parse::<f64>() {
            Ok(v) if v == 1.0 => Ok(Observation::Positive),
            Ok(v) if v == 0.0 => Ok(Observation::Negative),
            Ok(v) if v == -1.0 => Ok(Observation::Uncertain),
            _ => Err(format!(
                "label value {cell:?} is not one of 1.0 (positive), 0.0 (negative), \
                 -1.0 (uncertain) or empty (not mentioned); fix the cell"
            )),
        }
    }

    /// The cell text CheXpert writes for this observation (`1.0`, `0.0`, `-1.0`, empty).
    pub fn as_cell(self) -> &'static str {
        match self {
            Observation::Positive => "1.0",
            Observation::Negative => "0.0",
            Observation::Uncertain => "-1.0",
            Observation::Blank => "",
        }
    }

    /// Index used by count tables: blank, uncertain, negative, positive (DESIGN.md §2 order).
    pub fn slot(self) -> usize {
        match self {
            Observation::Blank => 0,
            Observation::Uncertain => 1,
            Observation::Negative => 2,
            Observation::Positive => 3,
        }
    }
}

impl fmt::Display for Observation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Observation::Positive => "positive",
            Observation::Negative => "negative",
            Observation::Uncertain => "uncertain",
            Observation::Blank => "blank",
        };
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_cell_form() {
        for (cell, want) in [
            ("1.0", Observation::Positive),
            ("1", Observation::Positive),
            (" 1.00 ", Observation::Positive),
            ("0.0", Observation::Negative),
            ("0", Observation::Negative),
            ("-0.0", Observation::Negative),
            ("-1.0", Observation::Uncertain),
            ("-1", Observation::Uncertain),
            ("", Observation::Blank),
            ("  ", Observation::Blank),
        ] {
            assert_eq!(Observation::parse(cell), Ok(want), "cell {cell:?}");
        }
        for bad in ["2.0", "yes", "nan", "0.5", "-2"] {
            let e = Observation::parse(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn cells_round_trip() {
        for o in [
            Observation::Positive,
            Observation::Negative,
            Observation::Uncertain,
            Observation::Blank,
        ] {
            assert_eq!(Observation::parse(o.as_cell()), Ok(o));
        }
    }

    #[test]
    fn hierarchy_and_tasks_name_real_findings() {
        for (p, c) in HIERARCHY {
            assert!(chexpert_index(p).is_some() && chexpert_index(c).is_some());
        }
        for t in COMPETITION_TASKS {
            assert!(chexpert_index(t).is_some());
        }
    }
}
