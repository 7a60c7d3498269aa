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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::record::{DatasetKind, Record};
    use std::path::PathBuf;
    use Observation::{Blank as B, Negative as N, Positive as P, Uncertain as U};

    fn ds(name: &str, rows: &[[Observation; 2]]) -> Dataset {
        Dataset {
            kind: DatasetKind::CheXpert,
            csv: PathBuf::from(name),
            image_root: PathBuf::from("."),
            findings: vec!["Edema".into(), "Atelectasis".into()],
            records: rows
                .iter()
                .enumerate()
                .map(|(i, l)| Record {
                    path: format!("x/patient{i:05}/study1/view1_frontal.jpg"),
                    patient: format!("patient{i:05}"),
                    study: format!("patient{i:05}/study1"),
                    sex: None,
                    age: None,
                    view: None,
                    projection: None,
                    labels: l.to_vec(),
                    line: i + 2,
                })
                .collect(),
            skipped: vec![],
        }
    }

    /// Hand-made case, (Edema, Atelectasis) per row:
    /// ```text
    ///        truth    before       after
    /// r1     (1, 0)   (blank, 0)   (1, 1)
    /// r2     (0, 1)   (-1, blank)  (0, 1)
    /// r3     (1, 1)   (0, -1)      (0, 1)
    /// r4     (0, 0)   (1, blank)   (1, -1)
    /// r5     (1, 0)   (blank, 1)   (0, 0)
    /// ```
    /// Counted by hand:
    /// - Edema before: stated r3,r4 both wrong (2/2); blanks r1,r5 both hide a positive (2/2);
    ///   -1 r2 (truth 0 → uncertain_positive 0). wrong = 2+2+1 = 5 of 5 → noise 1.0.
    ///   after: all stated, wrong r3,r4,r5 = 3 → noise 0.6. changed r1 (→1 right), r2 (→0 right),
    ///   r5 (→0 wrong): 3 changed, 2 right, 1 wrong; fixed r1,r2 = 2; r5 wrong→wrong; broken 0.
    /// - Atelectasis before: stated r1 (right), r5 (wrong) → 1/2; blanks r2 (hides +), r4 (right)
    ///   → 1/2; -1 r3 (truth 1 → uncertain_positive 1). wrong = 1+1+1 = 3 → noise 0.6.
    ///   after: stated r1 (wrong), r2, r3, r5 (right) → 1/4; -1 r4 (truth 0). wrong = 2 → 0.4.
    ///   changed all 5: right r2,r3,r5 = 3; wrong r1 = 1; uncertain r4 = 1; fixed r2,r3,r5 = 3;
    ///   broken r1 (0→1), r4 (blank, right → -1) = 2.
    /// - All: noise 8/10 = 0.8 → 5/10 = 0.5; changed 8, right 5, wrong 2, uncertain 1,
    ///   fixed 5, broken 2.
    #[test]
    fn hand_counted_case() {
        let truth = ds("clean.csv", &[[P, N], [N, P], [P, P], [N, N], [P, N]]);
        let before = ds("train.csv", &[[B, N], [U, B], [N, U], [P, B], [B, P]]);
        let after = ds("relabeled.csv", &[[P, P], [N, P], [N, P], [P, U], [N, N]]);
        let s = score(&before, &after, &truth).unwrap();
        let e = &s.findings[0];
        assert_eq!(
            e.before,
            CellCounts {
                cells: 5,
                stated: 2,
                stated_wrong: 2,
                blank: 2,
                blank_positive: 2,
                uncertain: 1,
                uncertain_positive: 0,
                wrong: 5
            }
        );
        assert_eq!(
            (e.after.stated, e.after.stated_wrong, e.after.wrong),
            (5, 3, 3)
        );
        assert_eq!((e.noise_before, e.noise_after), (1.0, 0.6));
        assert_eq!(
            (
                e.changed,
                e.became_right,
                e.became_wrong,
                e.became_uncertain
            ),
            (3, 2, 1, 0)
        );
        assert_eq!((e.fixed, e.broken), (2, 0));
        let a = &s.findings[1];
        assert_eq!(
            (
                a.before.stated_wrong,
                a.before.blank_positive,
                a.before.uncertain_positive,
                a.before.wrong
            ),
            (1, 1, 1, 3)
        );
        assert_eq!(
            (
                a.after.stated,
                a.after.stated_wrong,
                a.after.uncertain,
                a.after.wrong
            ),
            (4, 1, 1, 2)
        );
        assert_eq!((a.noise_before, a.noise_after), (0.6, 0.4));
        assert_eq!(
            (
                a.changed,
                a.became_right,
                a.became_wrong,
                a.became_uncertain
            ),
            (5, 3, 1, 1)
        );
        assert_eq!((a.fixed, a.broken), (3, 2));
        assert_eq!(a.before.stated_noise_rate(), Some(0.5));
        let t = &s.total;
        assert_eq!((t.before.wrong, t.after.wrong, t.before.cells), (8, 5, 10));
        assert_eq!((t.noise_before, t.noise_after), (0.8, 0.5));
        assert_eq!(
            (
                t.changed,
                t.became_right,
                t.became_wrong,
                t.became_uncertain,
                t.fixed,
                t.broken
            ),
            (8, 5, 2, 1, 5, 2)
        );
        let md = s.markdown();
        assert!(
            md.contains("| all | 0.8000 | 0.5000 | 8 | 5 | 2 | 1 | 5 | 2 |"),
            "{md}"
        );
    }

    #[test]
    fn mismatches_and_unclean_truth_are_errors() {
        let truth = ds("clean.csv", &[[P, N], [N, P]]);
        let before = ds("train.csv", &[[B, N], [U, B]]);
        let mut after = ds("relabeled.csv", &[[P, P], [N, P]]);
        after.records.swap(0, 1);
        let e = score(&before, &after, &truth).unwrap_err().to_string();
        assert!(
            e.contains("relabeled.csv:3:") && e.contains("same order"),
            "{e}"
        );
        let short = ds("relabeled.csv", &[[P, P]]);
        assert!(score(&before, &short, &truth).is_err());
        let bad = ds("clean.csv", &[[P, N], [N, U]]);
        let after = ds("relabeled.csv", &[[P, P], [N, P]]);
        let e = score(&before, &after, &bad).unwrap_err().to_string();
        assert!(
            e.contains("clean.csv:3:") && e.contains("Atelectasis"),
            "{e}"
        );
    }
}
