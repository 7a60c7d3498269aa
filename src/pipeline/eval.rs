//! The `eval` stage: a checkpoint's probabilities on the configured test CSV (same filters as
//! training), AUROC per finding with bootstrap CIs over studies, `predictions.csv`,
//! `metrics.json` and `report.md` in the stage folder.

use std::path::Path;

use crate::config::Config;
use crate::data::source;
use crate::error::{Error, Result};
use crate::eval::{bootstrap_cis, summarize, BootstrapConfig, Predictions, Summary};
use crate::relabel::predictor::Predictor;

/// The evaluated set and its summary.
pub struct Evaluated {
    pub set: String,
    pub summary: Summary,
    pub markdown: String,
}

/// Evaluates checkpoint `ck` (a run folder or checkpoint folder) on `cfg`'s test CSV, writing
/// into `dir`.
pub fn run(cfg: &Config, ck: &Path, dir: &Path) -> Result<Evaluated> {
    let srcs = source::resolve(&cfg.data)?;
    let test = srcs.test.ok_or_else(|| {
        Error::Config(
            "eval stage: the base config names no test CSV (data.test_csv); set it".into(),
        )
    })?;
    let format = source::detect(&test.csv).unwrap_or(cfg.data.format);
    let mut ds = source::read(&test, format)?;
    cfg.data.filters.apply(&mut ds)?;
    let device = crate::config::parse_device(&cfg.device)?.device()?;
    let p = Predictor::load(ck, &device, true)?;
    let items: Vec<usize> = (0..ds.records.len()).collect();
    let (probs, skipped) = p.predict(
        &ds,
        &items,
        cfg.train.eval_batch_size,
        crate::train::sets::workers(cfg),
        cfg.data.strict,
    )?;
    if !skipped.is_empty() {
        eprintln!(
            "{}: {} images could not be read and were left out",
            test.csv.display(),
            skipped.len()
        );
    }
    // Keep the records that were predicted, in prediction order.
    let pos: std::collections::HashMap<&str, usize> = ds
        .records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.path.as_str(), i))
        .collect();
    let mut kept = ds.clone();
    kept.records = probs
        .paths
        .iter()
        .map(|p| ds.records[pos[p.as_str()]].clone())
        .collect();
    let preds = Predictions::from_dataset(
        &kept,
        &probs.findings,
        probs.probs.iter().map(|&v| v as f64).collect(),
    )?;
    let summary = summarize(&preds);
    let cis = bootstrap_cis(
        &preds,
        &BootstrapConfig {
            resamples: cfg.train.bootstrap.max(1),
            seed: cfg.seed,
            ..Default::default()
        },
    )?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    crate::eval::report::write_predictions_csv(&dir.join("predictions.csv"), &preds)?;
    let set = test.csv.display().to_string();
    let markdown = crate::train::trainer::markdown_table(
        &format!(
            "{} on {set} (test set, single model, {} bootstrap resamples over studies)",
            p.paths.dir.display(),
            cis.config.resamples
        ),
        &summary,
        Some(&cis),
    );
    crate::provenance::write_json(
        &dir.join("metrics.json"),
        &serde_json::json!({
            "checkpoint": p.id, "set": set, "kind": "single model",
            "summary": summary, "cis": cis,
        }),
    )?;
    std::fs::write(dir.join("report.md"), &markdown)
        .map_err(|e| Error::io(dir.join("report.md"), e))?;
    Ok(Evaluated {
        set,
        summary,
        markdown,
    })
}
