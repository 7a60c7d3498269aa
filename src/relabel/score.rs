//! Scoring a relabel against the truth on the noise lab: the noisy `train.csv` (before), the
//! relabeled CSV (after) and `train_clean.csv` (truth, `1.0`/`0.0` everywhere), same rows in the
//! same order.
//!
//! # Definitions (per finding; "cells" = all rows of that finding's column)
//! - A cell is **wrong** when its observation disagrees with the truth, reading a **blank as
//!   negative** (what U-Zeros training sees) and counting **`-1` as always wrong** (it asserts
//!   nothing). So wrong = stated `0`/`1` cells ≠ truth + blanks whose truth is positive + all `-1`.
//! - **Noise rate** = wrong / cells. Because this folds three kinds of error together, the parts
//!   are also reported apart: `stated_wrong` / `stated` (flips among `0`/`1` cells),
//!   `blank_positive` / `blank` (positives hidden by "not mentioned"), and `uncertain` (with
//!   `uncertain_positive`, how many of them are truly positive).
//! - A **changed** cell holds a different observation after than before. It **became right** when
//!   its new value is `0`/`1` equal to the truth (or blank with a negative truth), **became
//!   wrong** when that new value disagrees, and **became uncertain** when it is `-1`.
//! - **Fixed** = wrong before and right after; **broken** = right before and wrong after (under the
//!   noise definition, so `wrong_after = wrong_before − fixed + broken`).
//!
//! Soft-output CSVs hold probabilities, not observations, and cannot be scored here.

use std::path::Path;

use crate::data::chexpert;
use crate::data::labels::Observation;
use crate::data::record::Dataset;
use crate::error::{Error, Result};

/// One CSV's cells of one finding against the truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CellCounts {
    pub cells: usize,
    /// Cells stating `0.0` or `1.0`.
    pub stated: usize,
    /// Stated cells that disagree with the truth.
    pub stated_wrong: usize,
    pub blank: usize,
    /// Blank cells whose truth is positive.
    pub blank_positive: usize,
    pub uncertain: usize,
    /// Uncertain cells whose truth is positive.
    pub uncertain_positive: usize,
    /// `stated_wrong + blank_positive + uncertain`.
    pub wrong: usize,
}

impl CellCounts {
    fn add(&mut self, obs: Observation, truth: bool) {
        self.cells += 1;
        match obs {
            Observation::Positive | Observation::Negative => {
                self.stated += 1;
                if (obs == Observation::Positive) != truth {
                    self.stated_wrong += 1;
                }
            }
            Observation::Blank => {
                self.blank += 1;
                self.blank_positive += usize::from(truth);
            }
            Observation::Uncertain => {
                self.uncertain += 1;
                self.uncertain_positive += usize::from(truth);
            }
        }
        self.wrong = self.stated_wrong + self.blank_positive + self.uncertain;
    }

    fn merge(&mut self, o: &CellCounts) {
        self.cells += o.cells;
        self.stated += o.stated;
        self.stated_wrong += o.stated_wrong;
        self.blank += o.blank;
        self.blank_positive += o.blank_positive;
        self.uncertain += o.uncertain;
        self.uncertain_positive += o.uncertain_positive;
        self.wrong += o.wrong;
    }

    /// `wrong / cells` (0 when there are no cells).
    pub fn noise_rate(&self) -> f64 {
        ratio(self.wrong, self.cells)
    }

    /// `stated_wrong / stated`, `None` when nothing is stated.
    pub fn stated_noise_rate(&self) -> Option<f64> {
        (self.stated > 0).then(|| ratio(self.stated_wrong, self.stated))
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Whether `obs` is right for `truth` under the noise definition (blank = negative, -1 wrong).
fn is_right(obs: Observation, truth: bool) -> bool {
    match obs {
        Observation::Positive => truth,
        Observation::Negative | Observation::Blank => !truth,
        Observation::Uncertain => false,
    }
}

/// Before/after counts and the fate of changed cells for one finding (or `"all"`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FindingScore {
    pub finding: String,
    pub before: CellCounts,
    pub after: CellCounts,
    pub changed: usize,
    pub became_right: usize,
    pub became_wrong: usize,
    pub became_uncertain: usize,
    pub fixed: usize,
    pub broken: usize,
    /// `before.noise_rate()`, `after.noise_rate()` (also in the JSON for convenience).
    pub noise_before: f64,
    pub noise_after: f64,
}

/// A relabel scored against the truth.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Score {
    pub findings: Vec<FindingScore>,
    /// All findings pooled (micro).
    pub total: FindingScore,
}

/// Scores `after` (relabeled) against `truth`, with `before` (the noisy input). The three must
/// hold the same image paths in the same order and the same findings; truth cells must be
/// `1.0`/`0.0`.
pub fn score(before: &Dataset, after: &Dataset, truth: &Dataset) -> Result<Score> {
    for (name, d) in [("relabeled", after), ("truth", truth)] {
        if d.records.len() != before.records.len() || d.findings != before.findings {
            return Err(Error::input(
                &d.csv,
                format!(
                    "{name} CSV has {} rows and findings {:?}, the noisy CSV {} has {} rows and \
                     {:?}; score a relabel against the truth of the same training CSV",
                    d.records.len(),
                    d.findings,
                    before.csv.display(),
                    before.records.len(),
                    before.findings
                ),
            ));
        }
    }
    let mut findings: Vec<FindingScore> = before
        .findings
        .iter()
        .map(|f| FindingScore {
            finding: f.clone(),
            ..Default::default()
        })
        .collect();
    for (i, b) in before.records.iter().enumerate() {
        let (a, t) = (&after.records[i], &truth.records[i]);
        for (d, r) in [(after, a), (truth, t)] {
            if r.path != b.path {
                return Err(Error::csv(
                    &d.csv,
                    r.line,
                    format!(
                        "Path {:?} but the noisy CSV has {:?} at line {}; rows must be in the \
                         same order",
                        r.path, b.path, b.line
                    ),
                ));
            }
        }
        for (k, fs) in findings.iter_mut().enumerate() {
            let truth_pos = match t.labels[k] {
                Observation::Positive => true,
                Observation::Negative => false,
                other => {
                    return Err(Error::csv(
                        &truth.csv,
                        t.line,
                        format!(
                            "column {:?} is {other} in the truth; a clean-truth CSV holds 1.0 or \
                             0.0 in every cell (is this train_clean.csv?)",
                            fs.finding
                        ),
                    ))
                }
            };
            let (ob, oa) = (b.labels[k], a.labels[k]);
            fs.before.add(ob, truth_pos);
            fs.after.add(oa, truth_pos);
            if ob != oa {
                fs.changed += 1;
                if oa == Observation::Uncertain {
                    fs.became_uncertain += 1;
                } else if is_right(oa, truth_pos) {
                    fs.became_right += 1;
                } else {
                    fs.became_wrong += 1;
                }
                match (is_right(ob, truth_pos), is_right(oa, truth_pos)) {
                    (false, true) => fs.fixed += 1,
                    (true, false) => fs.broken += 1,
                    _ => {}
                }
            }
        }
    }
    let mut total = FindingScore {
        finding: "all".into(),
        ..Default::default()
    };
    for fs in &mut findings {
        fs.noise_before = fs.before.noise_rate();
        fs.noise_after = fs.after.noise_rate();
        total.before.merge(&fs.before);
        total.after.merge(&fs.after);
        total.changed += fs.changed;
        total.became_right += fs.became_right;
        total.became_wrong += fs.became_wrong;
        total.became_uncertain += fs.became_uncertain;
        total.fixed += fs.fixed;
        total.broken += fs.broken;
    }
    total.noise_before = total.before.noise_rate();
    total.noise_after = total.after.noise_rate();
    Ok(Score { findings, total })
}

/// Reads the three CheXpert-format CSVs with the CheXpert reader (images are not opened) and
/// scores them.
pub fn score_files(before: &Path, after: &Path, truth: &Path) -> Result<Score> {
    let root = Path::new(".");
    score(
        &chexpert::read(before, root)?,
        &chexpert::read(after, root)?,
        &chexpert::read(truth, root)?,
    )
}

impl Score {
    /// Markdown table: noise before → after, the fate of changed cells, and the parts of the
    /// noise (stated flips, hidden positives in blanks, uncertain cells) before → after.
    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "| Finding | noise before | noise after | changed | → right | → wrong | → -1 | \
             fixed | broken | stated wrong | blank hiding + | -1 cells |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for f in self.findings.iter().chain(std::iter::once(&self.total)) {
            s.push_str(&format!(
                "| {} | {:.4} | {:.4} | {} | {} | {} | {} | {} | {} | {} → {} | {} → {} | {} → {} |\n",
                f.finding,
                f.noise_before,
                f.noise_after,
                f.changed,
                f.became_right,
                f.became_wrong,
                f.became_uncertain,
                f.fixed,
                f.broken,
                f.before.stated_wrong,
                f.after.stated_wrong,
                f.before.blank_positive,
                f.after.blank_positive,
                f.before.uncertain,
                f.after.uncertain,
            ));
        }
        s
    }

    /// Pretty JSON with a final newline.
    pub fn json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map(|t| t + "\n")
            .map_err(|e| Error::Other(format!("relabel score: {e}")))
    }
}
