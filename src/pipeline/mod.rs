//! `noisycxr pipeline`: a multi-stage recipe run end to end — e.g. train with the noisy-label
//! techniques → relabel the training CSV → retrain only the head on it → evaluate on the test
//! set — each stage in `OUT/<nn>-<name>/`, resumable stage by stage, ending with one report.
//!
//! - [`config`]: the pipeline file and its validation (one place);
//! - [`state`]: `stage.json`, the marker of a finished stage and what the report reads;
//! - [`eval`]: the eval stage; [`report`]: `OUT/report.md`.
//!
//! Resuming: a stage whose folder holds `stage.json` is skipped (after checking that its
//! definition has not changed since it ran); an interrupted train stage continues from its
//! `last/` checkpoint; an interrupted relabel reruns (its out-of-fold models each resume).

pub mod config;
pub mod eval;
pub mod report;
pub mod state;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use config::{PipelineConfig, Stage, StageKind};
pub use state::{Metrics, RelabelStats, StageResult};

use crate::error::{Error, Result};
use crate::relabel::job::{self, Job, Models};

/// What a finished (or deliberately stopped) pipeline reports.
#[derive(Debug, Clone)]
pub struct PipelineOutcome {
    /// Every stage that has finished, in order.
    pub stages: Vec<StageResult>,
    /// Test metrics of the last stage that has them.
    pub final_test: Option<Metrics>,
    /// Folder of that stage (its run folder, or the eval folder).
    pub final_dir: Option<PathBuf>,
    /// Its checkpoint (`best/`), for train stages the stage's own, for eval the evaluated one.
    pub final_checkpoint: Option<PathBuf>,
    /// Its `predictions.csv` (eval stages).
    pub final_predictions: Option<PathBuf>,
    /// `OUT/report.md`.
    pub report: PathBuf,
    /// The report's text (also printed by the command).
    pub markdown: String,
    /// Whether every stage has finished (false after `stop_after`).
    pub complete: bool,
}

/// How this invocation runs (not part of the pipeline file).
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Stop after this stage (1-based) has finished, as if killed there; rerun to resume.
    pub stop_after: Option<usize>,
}

/// Runs (or resumes) the pipeline `cfg` in `out`.
pub fn run(cfg: &PipelineConfig, out: &Path) -> Result<PipelineOutcome> {
    run_with(cfg, out, Options::default())
}

/// [`run`] with invocation options.
pub fn run_with(cfg: &PipelineConfig, out: &Path, opts: Options) -> Result<PipelineOutcome> {
    let stages = cfg.validate(out)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let saved = out.join("pipeline.toml");
    let text = toml::to_string_pretty(cfg).map_err(|e| Error::Config(e.to_string()))?;
    std::fs::write(&saved, text).map_err(|e| Error::io(&saved, e))?;
    crate::commands::synth::ensure_dataset(&cfg.base_config()?)?;

    let mut results: Vec<StageResult> = Vec::new();
    let mut complete = true;
    for st in &stages {
        if let Some(r) = state::read(&st.dir)? {
            if r.fingerprint != st.fingerprint {
                return Err(Error::Config(format!(
                    "stage {} ({}) finished earlier with another definition (base or stage \
                     changed since); delete {} and the stages after it to rerun them",
                    st.index,
                    st.name,
                    st.dir.display()
                )));
            }
            eprintln!(
                "stage {}/{} {} ({}): already done, skipped",
                st.index,
                stages.len(),
                st.name,
                st.spec.kind.as_str()
            );
            results.push(r);
        } else {
            eprintln!(
                "stage {}/{} {} ({}): running in {}",
                st.index,
                stages.len(),
                st.name,
                st.spec.kind.as_str(),
                st.dir.display()
            );
            let t0 = Instant::now();
            let mut r = run_stage(st, &stages, &results)?;
            r.seconds = t0.elapsed().as_secs_f64();
            state::write(&st.dir, &r)?;
            results.push(r);
        }
        if opts.stop_after == Some(st.index) && st.index < stages.len() {
            eprintln!(
                "stopping after stage {} as asked; run the same command again to resume at \
                 stage {}",
                st.index,
                st.index + 1
            );
            complete = false;
            break;
        }
    }
    let title = if cfg.name.is_empty() {
        out.display().to_string()
    } else {
        cfg.name.clone()
    };
    let mut markdown = report::markdown(&title, &results);
    if !complete {
        markdown.push_str(&format!(
            "\n(stopped after stage {} of {}; rerun to resume)\n",
            results.len(),
            stages.len()
        ));
    }
    let report = out.join("report.md");
    std::fs::write(&report, &markdown).map_err(|e| Error::io(&report, e))?;
    let last = results.iter().rev().find(|r| r.test.is_some());
    Ok(PipelineOutcome {
        final_test: last.and_then(|r| r.test.clone()),
        final_dir: last.map(|r| r.dir.clone()),
        final_checkpoint: last.and_then(|r| r.checkpoint.clone().or(r.evaluated.clone())),
        final_predictions: last.and_then(|r| r.predictions.clone()),
        stages: results,
        report,
        markdown,
        complete,
    })
}

fn run_stage(st: &Stage, all: &[Stage], done: &[StageResult]) -> Result<StageResult> {
    let mut r = StageResult {
        index: st.index,
        name: st.name.clone(),
        kind: st.spec.kind,
        dir: st.dir.clone(),
        fingerprint: st.fingerprint.clone(),
        checkpoint: None,
        evaluated: None,
        predictions: None,
        test: None,
        tune: None,
        relabel: None,
        seconds: 0.0,
    };
    let checkpoint_of = |i: usize| -> Result<PathBuf> {
        done[i].checkpoint.clone().ok_or_else(|| {
            Error::Other(format!(
                "stage {} ({}) left no checkpoint",
                all[i].index, all[i].name
            ))
        })
    };
    match st.spec.kind {
        StageKind::Train | StageKind::TrainHead => {
            if let Some(l) = st.labels {
                let csv = config::relabeled_csv(&all[l].dir);
                if !csv.is_file() {
                    return Err(Error::input(&csv, "relabeled CSV missing; rerun its stage"));
                }
            }
            let o = crate::train::run(
                &st.config,
                crate::train::RunOptions {
                    resume: true,
                    stop_after_epoch: None,
                },
            )?;
            let test_set = crate::data::source::resolve(&st.config.data)?
                .test
                .map(|t| t.csv.display().to_string())
                .unwrap_or_default();
            r.checkpoint = Some(o.out.join("best"));
            r.tune = Some(Metrics::from_summary("tuning", &o.tune));
            r.test = o
                .test
                .as_ref()
                .map(|(s, _)| Metrics::from_summary(&test_set, s));
        }
        StageKind::Relabel => {
            let cfg = &st.config;
            let src = crate::data::source::resolve(&cfg.data)?.train;
            let (models, label) = match (st.spec.folds, st.from) {
                (Some(k), _) => (
                    Models::Folds {
                        k,
                        base: Box::new(cfg.clone()),
                    },
                    format!("out-of-fold K={k}"),
                ),
                (None, Some(f)) => (
                    Models::Checkpoint(checkpoint_of(f)?),
                    "single model".to_string(),
                ),
                (None, None) => unreachable_relabel()?,
            };
            let out_csv = config::relabeled_csv(&st.dir);
            std::fs::create_dir_all(&st.dir).map_err(|e| Error::io(&st.dir, e))?;
            let d = job::run(&Job {
                csv: src.csv.clone(),
                images: Some(src.images.clone()),
                out: out_csv.clone(),
                policy: st.spec.policy.clone().unwrap_or_default(),
                models,
                calibrate: st.spec.calibrate.unwrap_or(true),
                device: cfg.device.clone(),
                batch_size: cfg.train.eval_batch_size,
                workers: crate::train::sets::workers(cfg),
                strict: cfg.data.strict,
                truth: None,
            })?;
            eprintln!("{}", d.markdown());
            r.relabel = Some(RelabelStats {
                csv: out_csv,
                rows: d.summary.rows,
                changed: d.summary.changed,
                models: label,
                noise_before: d.score.as_ref().map(|s| s.total.noise_before),
                noise_after: d.score.as_ref().map(|s| s.total.noise_after),
                fixed: d.score.as_ref().map(|s| s.total.fixed),
                broken: d.score.as_ref().map(|s| s.total.broken),
                per_finding: d
                    .score
                    .as_ref()
                    .map(|s| {
                        s.findings
                            .iter()
                            .map(|f| (f.finding.clone(), f.noise_before, f.noise_after))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        StageKind::Eval => {
            let f = st
                .from
                .ok_or_else(|| Error::Config("eval needs from".into()))?;
            let ck = checkpoint_of(f)?;
            let e = eval::run(&st.config, &ck, &st.dir)?;
            eprintln!("{}", e.markdown);
            r.evaluated = Some(ck);
            r.predictions = Some(st.dir.join("predictions.csv"));
            r.test = Some(Metrics::from_summary(&e.set, &e.summary));
        }
    }
    Ok(r)
}

fn unreachable_relabel<T>() -> Result<T> {
    Err(Error::Config(
        "a relabel stage needs from or folds (validate should have said so)".into(),
    ))
}
