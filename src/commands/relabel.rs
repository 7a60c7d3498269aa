//! `noisycxr relabel`: rewrite a training CSV with a model's confident predictions (one
//! checkpoint, or out of fold with `--folds K`), in the input's own format, with a companion CSV
//! of changes, a summary, and on the noise lab a score against the truth.

use std::path::{Path, PathBuf};

use clap::Args;

use super::train::parse_enum;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::relabel::job::{self, Job, Models};
use crate::relabel::{Cutoffs, RelabelPolicy};

#[derive(Debug, Args)]
pub struct RelabelArgs {
    /// Trained run folder (uses its best/) or a checkpoint folder. Not needed with --folds,
    /// where it supplies the training config when --config is absent.
    #[arg(long, value_name = "RUN")]
    pub checkpoint: Option<PathBuf>,
    /// The noisy label CSV to relabel (CheXpert train.csv or MIMIC-CXR's chexpert labels).
    #[arg(long, value_name = "FILE")]
    pub csv: PathBuf,
    /// Image root the CSV's paths are relative to (default: worked out from the CSV's place).
    #[arg(long, value_name = "ROOT")]
    pub images: Option<PathBuf>,
    /// The relabeled CSV to write (never the input). Companions go beside it.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Relabel policy TOML (the policy's keys at top level or under [relabel]); flags override.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Which cells may change: blank, uncertain, both, all (all = also stated 0/1 cells the
    /// model confidently contradicts).
    #[arg(long, value_name = "CELLS")]
    pub cells: Option<String>,
    /// p <= LOW → 0.0 (default 0.1).
    #[arg(long, value_name = "P")]
    pub low: Option<f32>,
    /// p >= HIGH → 1.0 (default 0.9).
    #[arg(long, value_name = "P")]
    pub high: Option<f32>,
    /// Per-finding cut-offs, repeatable: "Pleural Effusion=0.05:0.8" (either side may be empty).
    #[arg(long, value_name = "FINDING=LOW:HIGH")]
    pub cutoff: Vec<String>,
    /// Between the cut-offs: keep (the cell as it was) or uncertain (a blank becomes -1.0).
    #[arg(long, value_name = "WHAT")]
    pub between: Option<String>,
    /// hard (1.0/0.0/-1.0) or soft (the probability, 4 decimals).
    #[arg(long, value_name = "KIND")]
    pub output: Option<String>,
    /// Combine a study's images before deciding: none, max, mean.
    #[arg(long, value_name = "HOW")]
    pub aggregate: Option<String>,
    /// Only these findings (comma-separated CheXpert names); default every predicted finding.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub findings: Vec<String>,
    /// Out-of-fold relabeling: train K models on patient-level folds, each relabels the fold
    /// it never saw.
    #[arg(long, value_name = "K")]
    pub folds: Option<usize>,
    /// Training config of the fold models (default: the --checkpoint run's config.toml, else
    /// the embedded default).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Clean-truth CSV to score against (default: <stem>_clean.csv beside --csv, if present).
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
    /// Ignore the checkpoint's calibration.json temperatures.
    #[arg(long)]
    pub no_calibration: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    pub device: String,
    /// Images per forward pass.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub batch_size: usize,
    /// Decoding threads (0 = one per core).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub workers: usize,
    /// Seed of the patient folds (--folds); default the training config's.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Fail on the first unreadable image instead of keeping its row unchanged.
    #[arg(long)]
    pub strict: bool,
}

/// Reads a policy file: its keys at top level, or under `[relabel]`.
pub fn read_policy(path: &Path) -> Result<RelabelPolicy> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: toml::Table = toml::from_str(&text).map_err(|e| Error::input(path, e.to_string()))?;
    let v = match v.get("relabel") {
        Some(toml::Value::Table(t)) if v.len() == 1 => t.clone(),
        _ => v,
    };
    let p: RelabelPolicy = v
        .try_into()
        .map_err(|e: toml::de::Error| Error::input(path, format!("relabel policy: {e}")))?;
    p.validate()
        .map_err(|e| Error::input(path, e.to_string()))?;
    Ok(p)
}

/// `"Pleural Effusion=0.05:0.8"` → (finding, cut-offs); either side may be empty.
pub fn parse_cutoff(s: &str) -> Result<(String, Cutoffs)> {
    let bad = || {
        Error::Usage(format!(
            "--cutoff {s:?}: write FINDING=LOW:HIGH, e.g. \"Pleural Effusion=0.05:0.8\" or \
             \"Edema=:0.7\""
        ))
    };
    let (f, range) = s.rsplit_once('=').ok_or_else(bad)?;
    let (lo, hi) = range.split_once(':').ok_or_else(bad)?;
    let num = |t: &str| -> Result<Option<f32>> {
        let t = t.trim();
        if t.is_empty() {
            Ok(None)
        } else {
            t.parse().map(Some).map_err(|_| bad())
        }
    };
    Ok((
        f.trim().to_string(),
        Cutoffs {
            low: num(lo)?,
            high: num(hi)?,
        },
    ))
}

impl RelabelArgs {
    /// The policy: defaults < --policy file < flags; validated.
    pub fn resolve_policy(&self) -> Result<RelabelPolicy> {
        let mut p = match &self.policy {
            Some(f) => read_policy(f)?,
            None => RelabelPolicy::default(),
        };
        if let Some(c) = &self.cells {
            p.cells = parse_enum("cells", c)?;
        }
        if let Some(v) = self.low {
            p.low = v;
        }
        if let Some(v) = self.high {
            p.high = v;
        }
        if let Some(b) = &self.between {
            p.between = parse_enum("between", b)?;
        }
        if let Some(o) = &self.output {
            p.output = parse_enum("output", o)?;
        }
        if let Some(a) = &self.aggregate {
            p.aggregate = parse_enum("aggregate", a)?;
        }
        if !self.findings.is_empty() {
            p.findings = self.findings.iter().map(|f| f.trim().to_string()).collect();
        }
        for c in &self.cutoff {
            let (f, cut) = parse_cutoff(c)?;
            p.cutoffs.insert(f, cut);
        }
        p.validate()?;
        Ok(p)
    }

    /// The job this command line describes.
    pub fn job(&self) -> Result<Job> {
        let policy = self.resolve_policy()?;
        let models = match (self.folds, &self.checkpoint) {
            (Some(k), ck) => {
                let mut base = match (&self.config, ck) {
                    (Some(c), _) => Config::from_file(c)?,
                    (None, Some(ck)) => {
                        let paths = crate::relabel::predictor::CheckpointPaths::resolve(ck)?;
                        let run = paths.run.ok_or_else(|| {
                            Error::input(
                                ck,
                                "--folds needs a training config: this checkpoint has no \
                                 config.toml beside it; pass --config FILE",
                            )
                        })?;
                        Config::from_file(&run.join("config.toml"))?
                    }
                    (None, None) => Config::embedded(),
                };
                // The fold models are new runs: never start them from another checkpoint.
                base.train.init = None;
                base.train.head_only = false;
                if let Some(s) = self.seed {
                    base.seed = s;
                }
                base.validate()?;
                Models::Folds {
                    k,
                    base: Box::new(base),
                }
            }
            (None, Some(ck)) => Models::Checkpoint(ck.clone()),
            (None, None) => {
                return Err(Error::Usage(
                    "relabel needs --checkpoint RUN (or --folds K for out-of-fold models)".into(),
                ))
            }
        };
        Ok(Job {
            csv: self.csv.clone(),
            images: self.images.clone(),
            out: self.out.clone(),
            policy,
            models,
            calibrate: !self.no_calibration,
            device: self.device.clone(),
            batch_size: self.batch_size,
            workers: if self.workers == 0 {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            } else {
                self.workers
            },
            strict: self.strict,
            truth: self.truth.clone(),
        })
    }
}

pub fn run(a: &RelabelArgs) -> Result<()> {
    let job = a.job()?;
    let done = job::run(&job)?;
    println!("{}", done.markdown());
    println!(
        "relabeled CSV: {}\nchanges: {}\nsummary: {}",
        done.outputs.csv.display(),
        done.outputs.changes.display(),
        done.outputs.summary_md.display()
    );
    if let Some(a) = &done.assignments {
        println!("fold of each row: {}", a.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoff_flags_parse_and_bad_ones_say_how() {
        let (f, c) = parse_cutoff("Pleural Effusion=0.05:0.8").unwrap();
        assert_eq!(f, "Pleural Effusion");
        assert_eq!((c.low, c.high), (Some(0.05), Some(0.8)));
        let (_, c) = parse_cutoff("Edema=:0.7").unwrap();
        assert_eq!((c.low, c.high), (None, Some(0.7)));
        let e = parse_cutoff("Edema 0.7").unwrap_err().to_string();
        assert!(e.contains("FINDING=LOW:HIGH"), "{e}");
        assert!(parse_cutoff("Edema=x:0.7").is_err());
    }

    #[test]
    fn policy_file_top_level_or_under_relabel_and_unknown_keys_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.toml");
        std::fs::write(&a, "cells = \"uncertain\"\nhigh = 0.8\n").unwrap();
        let b = dir.path().join("b.toml");
        std::fs::write(&b, "[relabel]\ncells = \"uncertain\"\nhigh = 0.8\n").unwrap();
        assert_eq!(read_policy(&a).unwrap(), read_policy(&b).unwrap());
        assert_eq!(read_policy(&a).unwrap().high, 0.8);
        std::fs::write(&a, "cels = \"uncertain\"\n").unwrap();
        let e = read_policy(&a).unwrap_err().to_string();
        assert!(e.contains("cels") && e.contains("a.toml"), "{e}");
        std::fs::write(&a, "low = 0.9\nhigh = 0.5\n").unwrap();
        assert!(read_policy(&a).is_err());
    }
}
