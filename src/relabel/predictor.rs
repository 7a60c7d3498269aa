//! Predicting a label CSV's images with a trained checkpoint: the [`Probabilities`] a relabel
//! decides on.
//!
//! A checkpoint is named by its run folder (`runs/x`, meaning `runs/x/best`) or by a checkpoint
//! folder directly (`runs/x/best`, `runs/x/last`). The run's `config.toml` (beside the
//! checkpoint folder) says how the head's outputs map to findings (the uncertainty policy's
//! layout: one logit per finding, or three for U-MultiClass; hierarchy marginals); without it a
//! 14-output head is read as one sigmoid per CheXpert finding. When the checkpoint folder holds
//! `calibration.json` (per-finding temperatures fitted on the tuning set,
//! [`crate::eval::calibration::Temperatures`]), probabilities are calibrated with it unless
//! asked not to; calibration is monotone per finding, so it moves which cells cross the
//! cut-offs, not the ranking.

use std::path::{Path, PathBuf};

use candle_core::Device;

use super::probs::Probabilities;
use crate::data::augment::AugmentConfig;
use crate::data::image::Geometry;
use crate::data::loader::{Files, Loader, LoaderConfig};
use crate::data::preprocess::Preprocess;
use crate::data::record::Dataset;
use crate::data::CHEXPERT_FINDINGS;
use crate::error::{Error, Result};
use crate::eval::calibration::{apply_temperature, Temperatures};
use crate::inference::{checkpoint_dir, Trained};
use crate::model::checkpoint;

/// Name of the per-finding temperature file inside a checkpoint folder.
pub const CALIBRATION_FILE: &str = "calibration.json";

/// A checkpoint folder and the run folder around it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointPaths {
    /// Folder holding `model.safetensors` and `model.json`.
    pub dir: PathBuf,
    /// Run folder holding `config.toml`, if there is one.
    pub run: Option<PathBuf>,
}

impl CheckpointPaths {
    /// `RUN` → `RUN/best` when `RUN/best/model.json` exists; otherwise `RUN` itself must be a
    /// checkpoint folder.
    pub fn resolve(path: &Path) -> Result<CheckpointPaths> {
        let dir = checkpoint_dir(path)?;
        let run = dir
            .parent()
            .filter(|p| p.join("config.toml").is_file())
            .map(Path::to_path_buf);
        Ok(CheckpointPaths { dir, run })
    }
}

/// A loaded checkpoint ready to predict images: [`Trained`] (the checkpoint, its head layout and
/// probability rule) plus what a relabel records.
pub struct Predictor {
    pub paths: CheckpointPaths,
    trained: Trained,
    pub preprocess: Preprocess,
    /// Per-finding temperatures applied to the probabilities, if any.
    pub temperatures: Option<Temperatures>,
    /// `dir@sha256[..12]` of the weights: recorded in every changed cell's provenance.
    pub id: String,
}

impl Predictor {
    /// Loads the checkpoint named by `path` (see [`CheckpointPaths::resolve`]) on `device`;
    /// with `calibrate`, reads `calibration.json` when present.
    pub fn load(path: &Path, device: &Device, calibrate: bool) -> Result<Predictor> {
        let paths = CheckpointPaths::resolve(path)?;
        let trained = Trained::load(&paths.dir, device)?;
        if trained.findings.len() != CHEXPERT_FINDINGS.len()
            || trained
                .findings
                .iter()
                .zip(CHEXPERT_FINDINGS)
                .any(|(a, b)| a != b)
        {
            return Err(Error::input(
                &paths.dir,
                format!(
                    "the model predicts {:?}, not the 14 CheXpert findings a relabel writes; point \
                     --checkpoint at a run trained on a CheXpert-layout CSV",
                    trained.findings
                ),
            ));
        }
        let temperatures = if calibrate {
            read_temperatures(&paths.dir)?
        } else {
            None
        };
        let sha = crate::provenance::sha256_file(&paths.dir.join(checkpoint::WEIGHTS_FILE))?;
        let id = format!("{}@{}", paths.dir.display(), &sha[..12]);
        Ok(Predictor {
            paths,
            preprocess: trained.meta.preprocess.clone(),
            trained,
            temperatures,
            id,
        })
    }

    /// Finding names of [`Predictor::predict`]'s columns (the 14 CheXpert findings).
    pub fn findings(&self) -> Vec<String> {
        CHEXPERT_FINDINGS.iter().map(|s| s.to_string()).collect()
    }

    /// Predicts the images of `ds.records[i]` for every `i` in `items` (eval mode, no
    /// augmentation), in batches of `batch_size` decoded by `workers` threads. Images that
    /// cannot be read are left out and returned with the reason (their rows stay unchanged in a
    /// relabel); with `strict` the first one is an error.
    ///
    /// # Shapes
    /// returns probabilities `[M, 14]` for the `M ≤ items.len()` images read, keyed by
    /// `ds.records[i].path`.
    pub fn predict(
        &self,
        ds: &Dataset,
        items: &[usize],
        batch_size: usize,
        workers: usize,
        strict: bool,
    ) -> Result<(Probabilities, Vec<(String, String)>)> {
        let paths: Vec<PathBuf> = (0..ds.records.len()).map(|i| ds.image_path(i)).collect();
        let source = std::sync::Arc::new(Files {
            paths,
            geometry: Geometry::from(&self.preprocess),
        });
        let loader = Loader::new(
            source,
            self.preprocess.clone(),
            AugmentConfig::off(),
            LoaderConfig {
                batch_size: batch_size.max(1),
                workers: workers.max(1),
                prefetch: 4,
                shuffle: false,
                drop_last: false,
                strict,
                seed: 0,
            },
        )?
        .with_items(items.to_vec())?;
        let bar = indicatif::ProgressBar::new(loader.batches(0).len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("predict [{bar:30}] {pos}/{len} (ETA {eta})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        let mut out_paths = Vec::with_capacity(items.len());
        let mut rows: Vec<Vec<f32>> = Vec::with_capacity(items.len());
        let mut ep = loader.epoch(0, &self.trained.device);
        for batch in ep.by_ref() {
            let batch = batch?;
            let p = self
                .trained
                .probabilities(&batch.images)?
                .to_vec2::<f32>()?;
            for (row, &i) in p.into_iter().zip(&batch.items) {
                out_paths.push(ds.records[i].path.clone());
                rows.push(row);
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let skipped: Vec<(String, String)> = ep
            .skipped()
            .iter()
            .map(|s| (s.name.clone(), s.reason.clone()))
            .collect();
        if let Some(t) = &self.temperatures {
            calibrate_rows(t, &self.findings(), &mut rows);
        }
        let probs = Probabilities::from_rows(out_paths, self.findings(), rows)?;
        Ok((probs, skipped))
    }
}

/// `dir/calibration.json` as per-finding temperatures; `None` when the file is absent.
pub fn read_temperatures(dir: &Path) -> Result<Option<Temperatures>> {
    let p = dir.join(CALIBRATION_FILE);
    if !p.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::input(&p, format!("not JSON: {e}")))?;
    // The temperatures themselves, or an object holding them under `temperatures`.
    let t: Temperatures = serde_json::from_value(v.clone())
        .or_else(|_| serde_json::from_value(v["temperatures"].clone()))
        .map_err(|e| {
            Error::input(
                &p,
                format!(
                    "no per-finding temperatures ({{\"findings\": [...], \"values\": [...]}}) \
                     here: {e}; pass --no-calibration to relabel with raw probabilities"
                ),
            )
        })?;
    t.validate().map_err(|e| Error::input(&p, e.to_string()))?;
    Ok(Some(t))
}

/// Applies each finding's temperature (matched by name) to `rows[i][k]` in place.
///
/// # Shapes
/// `rows`: `[N][K]` with `K = findings.len()`.
pub fn calibrate_rows(t: &Temperatures, findings: &[String], rows: &mut [Vec<f32>]) {
    for (k, f) in findings.iter().enumerate() {
        let Some(temp) = t
            .findings
            .iter()
            .position(|n| n == f)
            .and_then(|j| t.values[j])
        else {
            continue;
        };
        for r in rows.iter_mut() {
            // Clamp away from exactly 0/1 rounding in f32.
            r[k] = (apply_temperature(r[k] as f64, temp) as f32).clamp(0.0, 1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperatures_are_read_plain_or_nested_and_applied_by_name() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_temperatures(dir.path()).unwrap().is_none());
        let t = r#"{"findings": ["Edema", "Cardiomegaly"], "values": [2.0, null]}"#;
        std::fs::write(dir.path().join(CALIBRATION_FILE), t).unwrap();
        let a = read_temperatures(dir.path()).unwrap().unwrap();
        std::fs::write(
            dir.path().join(CALIBRATION_FILE),
            format!(r#"{{"temperatures": {t}, "thresholds": {{}}}}"#),
        )
        .unwrap();
        let b = read_temperatures(dir.path()).unwrap().unwrap();
        assert_eq!(a, b);
        // sigmoid(logit(0.9) / 2): logit(0.9) = ln 9 = 2.1972; sigmoid(1.0986) = 0.75 exactly
        // (= 3 / 4, since e^{ln 3} = 3).
        let f = vec!["Cardiomegaly".to_string(), "Edema".to_string()];
        let mut rows = vec![vec![0.9f32, 0.9]];
        calibrate_rows(&a, &f, &mut rows);
        assert_eq!(rows[0][0], 0.9, "null temperature leaves the finding alone");
        assert!((rows[0][1] - 0.75).abs() < 1e-6, "{}", rows[0][1]);
        std::fs::write(dir.path().join(CALIBRATION_FILE), "{\"x\": 1}").unwrap();
        let e = read_temperatures(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("calibration.json") && e.contains("--no-calibration"),
            "{e}"
        );
        std::fs::write(
            dir.path().join(CALIBRATION_FILE),
            r#"{"findings": ["Edema"], "values": [-1.0]}"#,
        )
        .unwrap();
        assert!(read_temperatures(dir.path()).is_err());
    }

    #[test]
    fn checkpoint_paths_resolve_run_or_checkpoint_folder() {
        let dir = tempfile::tempdir().unwrap();
        let e = CheckpointPaths::resolve(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a run folder"), "{e}");
        let best = dir.path().join("best");
        std::fs::create_dir(&best).unwrap();
        std::fs::write(best.join(checkpoint::META_FILE), "{}").unwrap();
        let p = CheckpointPaths::resolve(dir.path()).unwrap();
        assert_eq!((p.dir.clone(), p.run.clone()), (best.clone(), None));
        std::fs::write(dir.path().join("config.toml"), "").unwrap();
        let p = CheckpointPaths::resolve(&best).unwrap();
        assert_eq!(p.run.as_deref(), Some(dir.path()));
    }
}
