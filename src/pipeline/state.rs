//! What a finished stage leaves behind: `stage.json` in its folder, the marker that makes a
//! rerun skip it and the record the report is built from.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::StageKind;
use crate::error::{Error, Result};
use crate::eval::Summary;

/// Marker file name inside a finished stage's folder.
pub const MARKER: &str = "stage.json";

/// Mean AUROCs of one checkpoint on one set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// The CSV evaluated.
    pub set: String,
    /// Mean over the 5 competition tasks (`None` when undefined).
    pub mean_auroc_5: Option<f64>,
    /// Mean over all findings with a defined AUROC.
    pub mean_auroc_all: Option<f64>,
    /// How many findings `mean_auroc_all` averages.
    pub n_findings_all: usize,
    /// `(finding, AUROC)` in table order.
    pub per_finding: Vec<(String, Option<f64>)>,
}

impl Metrics {
    pub fn from_summary(set: &str, s: &Summary) -> Metrics {
        Metrics {
            set: set.to_string(),
            mean_auroc_5: s.mean_competition.value,
            mean_auroc_all: s.mean_all.value,
            n_findings_all: s.mean_all.covers.len(),
            per_finding: s
                .per_finding
                .iter()
                .map(|f| (f.finding.clone(), f.auroc))
                .collect(),
        }
    }
}

/// What a relabel stage did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelabelStats {
    pub csv: PathBuf,
    pub rows: usize,
    pub changed: usize,
    /// Single model or `out-of-fold K=3`.
    pub models: String,
    /// Against the truth, when the dataset has one: label-noise rate before and after over all
    /// cells, and per finding `(finding, before, after)`.
    pub noise_before: Option<f64>,
    pub noise_after: Option<f64>,
    pub fixed: Option<usize>,
    pub broken: Option<usize>,
    pub per_finding: Vec<(String, f64, f64)>,
}

/// The record of a finished stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageResult {
    pub index: usize,
    pub name: String,
    pub kind: StageKind,
    pub dir: PathBuf,
    /// See [`super::config::Stage::fingerprint`].
    pub fingerprint: String,
    /// The stage's best checkpoint (train, train_head).
    pub checkpoint: Option<PathBuf>,
    /// The evaluated checkpoint (eval): the `from` stage's.
    pub evaluated: Option<PathBuf>,
    /// Predictions file written (eval).
    pub predictions: Option<PathBuf>,
    /// Test-set metrics of the stage's checkpoint (train, train_head, eval).
    pub test: Option<Metrics>,
    /// Tuning-set metrics (train, train_head).
    pub tune: Option<Metrics>,
    pub relabel: Option<RelabelStats>,
    /// Wall-clock seconds the stage took when it ran.
    pub seconds: f64,
}

/// Reads `dir/stage.json`; `None` when the stage has not finished.
pub fn read(dir: &Path) -> Result<Option<StageResult>> {
    let p = dir.join(MARKER);
    if !p.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Error::input(
            &p,
            format!("not a stage record ({e}); delete the stage folder to rerun it"),
        )
    })
}

/// Writes `dir/stage.json` (temporary name, then rename: present means finished).
pub fn write(dir: &Path, r: &StageResult) -> Result<()> {
    let p = dir.join(MARKER);
    let tmp = dir.join(format!(".{MARKER}.tmp"));
    let text =
        serde_json::to_string_pretty(r).map_err(|e| Error::Other(format!("stage record: {e}")))?;
    std::fs::write(&tmp, text + "\n").map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &p).map_err(|e| Error::io(&p, e))
}
