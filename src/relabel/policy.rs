//! The relabel policy: which cells may change, the two cut-offs per finding, what to write
//! between them, hard or soft output, and study-level aggregation.
//!
//! For a cell the policy may change, with the model's probability `p` (in `[0, 1]`, calibrated
//! when the checkpoint has a temperature) and the finding's cut-offs `low < high`:
//!
//! | old cell           | `p ≥ high` | `p ≤ low` | otherwise (`between`)               |
//! |--------------------|------------|-----------|-------------------------------------|
//! | blank              | `1.0`      | `0.0`     | keep blank, or `-1.0` (`uncertain`) |
//! | `-1.0`             | `1.0`      | `0.0`     | keep `-1.0` either way              |
//! | `0.0` (only `all`) | `1.0`      | keep      | keep                                |
//! | `1.0` (only `all`) | keep       | `0.0`     | keep                                |
//!
//! Stated cells (`0.0`/`1.0`) are in scope only with `cells = "all"` and change only when the
//! model *confidently contradicts* them; `between` never touches them. With `output = "soft"`
//! every blank/uncertain cell in scope gets the probability itself (cut-offs unused), and a
//! stated cell gets it only where hard output would flip it.
//!
//! TOML (the lead embeds this struct under `[relabel]`):
//! ```toml
//! cells = "both"          # blank | uncertain | both | all
//! low = 0.1               # p <= low  -> 0.0
//! high = 0.9              # p >= high -> 1.0
//! between = "keep"        # keep | uncertain
//! output = "hard"         # hard | soft
//! aggregate = "none"      # none | max | mean (over a study's images)
//! findings = []           # CheXpert names to relabel; empty = every predicted finding
//! [cutoffs."Pleural Effusion"]
//! high = 0.8              # per-finding override of low and/or high
//! ```

use std::collections::BTreeMap;

use crate::data::labels::{chexpert_index, Observation};
use crate::error::{Error, Result};

/// Which cells the policy may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cells {
    /// Blank (not mentioned) cells only.
    Blank,
    /// Uncertain (`-1.0`) cells only (U-SelfTrained).
    Uncertain,
    /// Blank and uncertain cells.
    Both,
    /// Blank and uncertain cells, and stated `0.0`/`1.0` cells the model confidently contradicts.
    All,
}

impl Cells {
    /// Whether a cell holding `old` is in scope.
    pub fn covers(self, old: Observation) -> bool {
        matches!(
            (self, old),
            (Cells::All, _)
                | (Cells::Blank, Observation::Blank)
                | (Cells::Uncertain, Observation::Uncertain)
                | (Cells::Both, Observation::Blank | Observation::Uncertain)
        )
    }
}

/// What a blank cell becomes when `low < p < high` (hard output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Between {
    /// Leave the cell as it was.
    Keep,
    /// Write `-1.0` (a blank becomes uncertain; an uncertain cell stays uncertain).
    Uncertain,
}

/// Hard labels (`1.0`/`0.0`/`-1.0`) or the probability itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    Hard,
    /// Write `p` with 4 decimals. Such a CSV is *not* readable by the CheXpert reader, whose
    /// cells must be `1.0`/`0.0`/`-1.0`/empty; it is for soft-label training.
    Soft,
}

/// How the probabilities of a study's images are combined before the decision (CheXpert labels
/// are per study; MIMIC's label file has one row per study).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    /// Each row uses its own image's prediction (MIMIC: allowed only for one-image studies).
    None,
    /// Maximum over the study's predicted images, per finding.
    Max,
    /// Mean over the study's predicted images, per finding.
    Mean,
}

/// Per-finding override of the cut-offs; a missing side keeps the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cutoffs {
    pub low: Option<f32>,
    pub high: Option<f32>,
}

/// The relabel policy. See the module docs for the decision table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelabelPolicy {
    pub cells: Cells,
    /// Default lower cut-off (probability, `[0, 1]`): `p ≤ low` → `0.0`.
    pub low: f32,
    /// Default upper cut-off (probability, `[0, 1]`): `p ≥ high` → `1.0`.
    pub high: f32,
    pub between: Between,
    pub output: Output,
    pub aggregate: Aggregate,
    /// CheXpert finding names to relabel; empty = every finding the model predicts.
    pub findings: Vec<String>,
    /// Per-finding cut-offs by CheXpert name.
    pub cutoffs: BTreeMap<String, Cutoffs>,
}

impl Default for RelabelPolicy {
    fn default() -> Self {
        RelabelPolicy {
            cells: Cells::Both,
            low: 0.1,
            high: 0.9,
            between: Between::Keep,
            output: Output::Hard,
            aggregate: Aggregate::None,
            findings: Vec::new(),
            cutoffs: BTreeMap::new(),
        }
    }
}

/// The decision for one cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// The cell stays as it was (out of scope, between the cut-offs, or already that value).
    Keep,
    /// Write this observation (never `Blank`).
    Hard(Observation),
    /// Write this probability.
    Soft(f32),
}

impl RelabelPolicy {
    /// Checks every field; errors name it (`relabel.<field>`).
    pub fn validate(&self) -> Result<()> {
        check_pair("relabel", self.low, self.high)?;
        for f in &self.findings {
            if chexpert_index(f).is_none() {
                return Err(Error::Config(format!(
                    "relabel.findings: {f:?} is not a CheXpert finding name (e.g. \"Pleural Effusion\")"
                )));
            }
        }
        for f in self.cutoffs.keys() {
            if chexpert_index(f).is_none() {
                return Err(Error::Config(format!(
                    "relabel.cutoffs.{f:?}: not a CheXpert finding name (e.g. \"Pleural Effusion\")"
                )));
            }
            let (low, high) = self.cutoffs_for(f);
            check_pair(&format!("relabel.cutoffs.{f:?}"), low, high)?;
        }
        if self.output == Output::Soft && self.between == Between::Uncertain {
            return Err(Error::Config(
                "relabel.between = \"uncertain\" applies to output = \"hard\" only; soft output \
                 writes the probability between the cut-offs"
                    .into(),
            ));
        }
        Ok(())
    }

    /// `(low, high)` for `finding`: its override where given, else the defaults.
    pub fn cutoffs_for(&self, finding: &str) -> (f32, f32) {
        let c = self.cutoffs.get(finding).copied().unwrap_or_default();
        (c.low.unwrap_or(self.low), c.high.unwrap_or(self.high))
    }

    /// Whether `finding` is relabeled at all (given that the model predicts it).
    pub fn relabels(&self, finding: &str) -> bool {
        self.findings.is_empty() || self.findings.iter().any(|f| f == finding)
    }

    /// The decision for a cell of `finding` holding `old`, given probability `p`.
    pub fn decide(&self, finding: &str, old: Observation, p: f32) -> Decision {
        if !self.cells.covers(old) {
            return Decision::Keep;
        }
        let (low, high) = self.cutoffs_for(finding);
        let hard = if p >= high {
            Some(Observation::Positive)
        } else if p <= low {
            Some(Observation::Negative)
        } else {
            None
        };
        let stated = matches!(old, Observation::Positive | Observation::Negative);
        match self.output {
            Output::Soft => {
                if !stated || hard.is_some_and(|h| h != old) {
                    Decision::Soft(p)
                } else {
                    Decision::Keep
                }
            }
            Output::Hard => match hard {
                Some(h) if h != old => Decision::Hard(h),
                Some(_) => Decision::Keep,
                None => match (old, self.between) {
                    (Observation::Blank, Between::Uncertain) => {
                        Decision::Hard(Observation::Uncertain)
                    }
                    _ => Decision::Keep,
                },
            },
        }
    }
}

fn check_pair(field: &str, low: f32, high: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&low) || !(0.0..=1.0).contains(&high) || low >= high {
        return Err(Error::Config(format!(
            "{field}: cut-offs low = {low} and high = {high} must satisfy 0 <= low < high <= 1 \
             (probabilities)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Observation::{Blank as B, Negative as N, Positive as P, Uncertain as U};

    fn policy(toml_text: &str) -> RelabelPolicy {
        let p: RelabelPolicy = toml::from_str(toml_text).unwrap();
        p.validate().unwrap();
        p
    }

    #[test]
    fn cutoffs_are_inclusive_and_between_keeps() {
        let p = policy("low = 0.2\nhigh = 0.8");
        let f = "Edema";
        assert_eq!(p.decide(f, B, 0.8), Decision::Hard(P));
        assert_eq!(p.decide(f, B, 0.2), Decision::Hard(N));
        assert_eq!(p.decide(f, B, 0.5), Decision::Keep);
        assert_eq!(p.decide(f, U, 0.95), Decision::Hard(P));
        assert_eq!(p.decide(f, U, 0.0), Decision::Hard(N));
        assert_eq!(p.decide(f, U, 0.79), Decision::Keep);
        // Default scope is blank + uncertain: stated cells are protected even when contradicted.
        assert_eq!(p.decide(f, P, 0.0), Decision::Keep);
        assert_eq!(p.decide(f, N, 1.0), Decision::Keep);
    }

    #[test]
    fn between_uncertain_marks_blanks_only() {
        let p = policy("between = \"uncertain\"");
        assert_eq!(p.decide("Edema", B, 0.5), Decision::Hard(U));
        assert_eq!(p.decide("Edema", U, 0.5), Decision::Keep);
        let p = policy("between = \"uncertain\"\ncells = \"all\"");
        assert_eq!(p.decide("Edema", P, 0.5), Decision::Keep);
        assert_eq!(p.decide("Edema", N, 0.5), Decision::Keep);
    }

    #[test]
    fn scopes_protect_what_they_exclude() {
        let blank = policy("cells = \"blank\"");
        let unc = policy("cells = \"uncertain\"");
        let all = policy("cells = \"all\"");
        assert_eq!(blank.decide("Edema", U, 0.99), Decision::Keep);
        assert_eq!(blank.decide("Edema", B, 0.99), Decision::Hard(P));
        assert_eq!(unc.decide("Edema", B, 0.99), Decision::Keep);
        assert_eq!(unc.decide("Edema", U, 0.01), Decision::Hard(N));
        // `all`: only confident contradictions of stated cells.
        assert_eq!(all.decide("Edema", P, 0.05), Decision::Hard(N));
        assert_eq!(all.decide("Edema", P, 0.95), Decision::Keep);
        assert_eq!(all.decide("Edema", N, 0.95), Decision::Hard(P));
        assert_eq!(all.decide("Edema", N, 0.05), Decision::Keep);
    }

    #[test]
    fn per_finding_overrides_apply_by_name() {
        let p = policy("[cutoffs.\"Pleural Effusion\"]\nhigh = 0.6");
        assert_eq!(p.cutoffs_for("Pleural Effusion"), (0.1, 0.6));
        assert_eq!(p.cutoffs_for("Edema"), (0.1, 0.9));
        assert_eq!(p.decide("Pleural Effusion", B, 0.7), Decision::Hard(P));
        assert_eq!(p.decide("Edema", B, 0.7), Decision::Keep);
    }

    #[test]
    fn soft_output_writes_probabilities() {
        let p = policy("output = \"soft\"\ncells = \"all\"");
        assert_eq!(p.decide("Edema", B, 0.5), Decision::Soft(0.5));
        assert_eq!(p.decide("Edema", U, 0.95), Decision::Soft(0.95));
        assert_eq!(p.decide("Edema", P, 0.5), Decision::Keep);
        assert_eq!(p.decide("Edema", P, 0.05), Decision::Soft(0.05));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = |t: &str| -> String {
            match toml::from_str::<RelabelPolicy>(t) {
                Ok(p) => p.validate().unwrap_err().to_string(),
                Err(e) => e.to_string(),
            }
        };
        assert!(err("low = 0.9\nhigh = 0.1").contains("relabel: cut-offs"));
        assert!(err("high = 1.5").contains("high = 1.5"));
        assert!(err("findings = [\"Effusion\"]").contains("relabel.findings"));
        let e = err("[cutoffs.Edema]\nlow = 0.95");
        assert!(e.contains("relabel.cutoffs.\"Edema\""), "{e}");
        assert!(err("[cutoffs.Foo]\nlow = 0.2").contains("relabel.cutoffs.\"Foo\""));
        assert!(err("output = \"soft\"\nbetween = \"uncertain\"").contains("relabel.between"));
        assert!(err("threshold = 0.5").contains("threshold"));
        assert!(err("cells = \"some\"").contains("some"));
    }
}
