//! One relabel, end to end: predict the CSV's images (one checkpoint, or K out-of-fold models),
//! write the relabeled CSV with its companions ([`super::writer::relabel_file`]), and on the
//! noise lab score it against the truth. What `noisycxr relabel` and the pipeline's `relabel`
//! stage run.
//!
//! Outputs beside `out` (e.g. `relabeled.csv`): `relabeled.changes.csv`,
//! `relabeled.summary.{json,md}`; with truth `relabeled.score.{json,md}`; out of fold
//! `relabeled.folds.csv` (which model predicted each row) and the fold runs under
//! `relabeled.folds/`.

use std::path::{Path, PathBuf};

use super::folds::{self, FoldOptions};
use super::policy::RelabelPolicy;
use super::predictor::Predictor;
use super::score::{score_files, Score};
use super::summary::Summary;
use super::writer::{relabel_file, Outputs};
use crate::config::Config;
use crate::data::source::{self, CsvSource};
use crate::error::{Error, Result};

/// Where the probabilities come from.
#[derive(Debug, Clone)]
pub enum Models {
    /// One trained checkpoint (a run folder or a checkpoint folder).
    Checkpoint(PathBuf),
    /// K models trained on patient-level folds of the CSV with this base training config.
    Folds { k: usize, base: Box<Config> },
}

/// A relabel to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// The noisy CSV (never overwritten).
    pub csv: PathBuf,
    /// Image root of the CSV's paths (default: [`source::default_image_root`]).
    pub images: Option<PathBuf>,
    /// The relabeled CSV to write.
    pub out: PathBuf,
    pub policy: RelabelPolicy,
    pub models: Models,
    /// Apply `calibration.json` temperatures when the checkpoint has them.
    pub calibrate: bool,
    /// `cpu`, `cuda`, `cuda:N` (single-checkpoint mode; fold models use the base config's).
    pub device: String,
    pub batch_size: usize,
    /// Image decoding threads.
    pub workers: usize,
    pub strict: bool,
    /// Clean-truth CSV to score against; `None` looks for `<stem>_clean.csv` beside the CSV.
    pub truth: Option<PathBuf>,
}

/// What a relabel did.
#[derive(Debug, Clone)]
pub struct Done {
    pub outputs: Outputs,
    pub summary: Summary,
    /// Against the truth, when a truth CSV was found.
    pub score: Option<Score>,
    pub truth: Option<PathBuf>,
    /// Images that could not be read (their rows kept unchanged).
    pub unreadable: usize,
    /// Out of fold: `relabeled.folds.csv`.
    pub assignments: Option<PathBuf>,
}

impl Done {
    /// The summary and, with truth, the noise table as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = self.summary.markdown();
        if let (Some(sc), Some(t)) = (&self.score, &self.truth) {
            s.push_str(&format!(
                "\n## Label noise against the truth ({})\n\nnoise = stated cells that disagree \
                 + blanks hiding a positive + every -1, over all cells\n\n{}",
                t.display(),
                sc.markdown()
            ));
        }
        if self.unreadable > 0 {
            s.push_str(&format!(
                "\n{} images could not be read; their rows were kept unchanged.\n",
                self.unreadable
            ));
        }
        s
    }
}

/// `<stem>_clean.csv` beside `csv` (the noise lab writes `train.csv` and `train_clean.csv`).
pub fn truth_beside(csv: &Path) -> Option<PathBuf> {
    let stem = csv.file_name()?.to_string_lossy();
    let stem = stem
        .strip_suffix(".gz")
        .unwrap_or(&stem)
        .strip_suffix(".csv")?
        .to_string();
    let t = csv.with_file_name(format!("{stem}_clean.csv"));
    t.is_file().then_some(t)
}

/// Runs the relabel.
pub fn run(job: &Job) -> Result<Done> {
    job.policy.validate()?;
    if job.batch_size == 0 {
        return Err(Error::Usage("--batch-size must be at least 1".into()));
    }
    let outputs = Outputs::beside(&job.out);
    // Refuse before any expensive work (relabel_file checks again before writing).
    let input_real = std::fs::canonicalize(&job.csv).map_err(|e| Error::io(&job.csv, e))?;
    if job
        .out
        .canonicalize()
        .is_ok_and(|o| o == input_real || same_inode(&o, &input_real))
    {
        return Err(Error::Usage(format!(
            "refusing to overwrite the input: --out {} is {}; choose another --out",
            job.out.display(),
            input_real.display()
        )));
    }
    let images = match &job.images {
        Some(i) => i.clone(),
        None => source::default_image_root(&job.csv)?,
    };
    let format = source::detect(&job.csv)?;
    let ds = source::read(
        &CsvSource {
            csv: job.csv.clone(),
            images: images.clone(),
            split: None,
        },
        format,
    )?;
    if ds.records.is_empty() {
        return Err(Error::input(&job.csv, "no data rows to relabel"));
    }
    let (probs, skipped, id, assignments) = match &job.models {
        Models::Checkpoint(ck) => {
            let device = crate::config::parse_device(&job.device)?.device()?;
            let p = Predictor::load(ck, &device, job.calibrate)?;
            if p.temperatures.is_some() {
                eprintln!(
                    "calibrating with {}",
                    p.paths
                        .dir
                        .join(super::predictor::CALIBRATION_FILE)
                        .display()
                );
            }
            let items: Vec<usize> = (0..ds.records.len()).collect();
            let (probs, skipped) =
                p.predict(&ds, &items, job.batch_size, job.workers, job.strict)?;
            (probs, skipped, p.id.clone(), None)
        }
        Models::Folds { k, base } => {
            let stem = outputs
                .csv
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "relabeled".into());
            let work = outputs.csv.with_file_name(format!("{stem}.folds"));
            let oof = folds::out_of_fold(
                &job.csv,
                &ds,
                base,
                &FoldOptions {
                    k: *k,
                    work: work.clone(),
                    images: images.clone(),
                    calibrate: job.calibrate,
                    batch_size: job.batch_size,
                    workers: job.workers,
                    strict: job.strict,
                },
            )?;
            let a_path = outputs.csv.with_file_name(format!("{stem}.folds.csv"));
            std::fs::write(&a_path, folds::assignments_csv(&oof.assignments))
                .map_err(|e| Error::io(&a_path, e))?;
            let id = format!("out-of-fold K={k} ({})", work.display());
            (oof.probs, oof.skipped, id, Some(a_path))
        }
    };
    for (name, reason) in skipped.iter().take(5) {
        eprintln!("could not read {name}: {reason} (row kept unchanged)");
    }
    let summary = relabel_file(&job.csv, &outputs, &probs, &job.policy, &id)?;
    let truth = job.truth.clone().or_else(|| truth_beside(&job.csv));
    let score = match (&truth, job.policy.output) {
        (Some(t), super::policy::Output::Hard) => {
            let sc = score_files(&job.csv, &outputs.csv, t)?;
            let base = outputs.csv.with_extension("");
            let (j, m) = (
                base.with_extension("score.json"),
                base.with_extension("score.md"),
            );
            std::fs::write(&j, sc.json()?).map_err(|e| Error::io(&j, e))?;
            std::fs::write(&m, sc.markdown()).map_err(|e| Error::io(&m, e))?;
            Some(sc)
        }
        _ => None,
    };
    Ok(Done {
        outputs,
        summary,
        score,
        truth,
        unreadable: skipped.len(),
        assignments,
    })
}

#[cfg(unix)]
fn same_inode(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_inode(_: &Path, _: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truth_is_found_beside_the_csv_by_stem() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("train.csv");
        std::fs::write(&csv, "x").unwrap();
        assert_eq!(truth_beside(&csv), None);
        std::fs::write(dir.path().join("train_clean.csv"), "x").unwrap();
        assert_eq!(truth_beside(&csv), Some(dir.path().join("train_clean.csv")));
        assert_eq!(
            truth_beside(&dir.path().join("train.csv.gz")),
            Some(dir.path().join("train_clean.csv"))
        );
        assert_eq!(truth_beside(&dir.path().join("train.txt")), None);
    }
}
