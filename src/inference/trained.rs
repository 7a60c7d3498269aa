//! A trained checkpoint ready for inference: the model, the head layout and hierarchy
//! marginals it was trained with (from the run's `config.toml`), its findings and the
//! calibration fitted on the tuning set (`calibration.json`, when the run finished).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::eval::calibration::apply_temperature;
use crate::eval::Tuned;
use crate::model::checkpoint::{self, CheckpointMeta, META_FILE};
use crate::model::predict::output_names;
use crate::model::Classifier;
use crate::noise::{Noise, NoiseConfig};

/// The checkpoint folder a `--checkpoint` argument names: a run folder means its `best/`;
/// a folder holding `model.json` is a checkpoint itself.
pub fn checkpoint_dir(path: &Path) -> Result<PathBuf> {
    if path.join("best").join(META_FILE).is_file() {
        return Ok(path.join("best"));
    }
    if path.join(META_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    Err(Error::input(
        path,
        format!(
            "not a run folder (no best/{META_FILE}) nor a checkpoint folder (no {META_FILE}); \
             pass the folder `noisycxr train --out` wrote, or its best/ or last/"
        ),
    ))
}

/// The run configuration saved beside a checkpoint: `dir/config.toml` or the run folder's
/// (`dir/../config.toml`).
fn run_config(dir: &Path) -> Result<Option<Config>> {
    for p in [
        Some(dir.join("config.toml")),
        dir.parent().map(|d| d.join("config.toml")),
    ]
    .into_iter()
    .flatten()
    {
        if p.is_file() {
            return Config::from_file(&p).map(Some);
        }
    }
    Ok(None)
}

/// A loaded checkpoint.
pub struct Trained {
    /// Name used in reports: the run folder's name (or the checkpoint folder's).
    pub name: String,
    /// The checkpoint folder.
    pub dir: PathBuf,
    pub model: Box<dyn Classifier>,
    pub meta: CheckpointMeta,
    /// Findings, in the order of [`Trained::probabilities`]' columns.
    pub findings: Vec<String>,
    /// Temperatures and thresholds fitted on the tuning set, if the run saved them.
    pub tuned: Option<Tuned>,
    pub device: Device,
    noise: Noise,
}

impl Trained {
    /// Loads the checkpoint `path` names (see [`checkpoint_dir`]) onto `device` in F32.
    ///
    /// Findings come from `calibration.json` (what the trainer saw), else the CheXpert names
    /// for a 14-finding layout; the head layout (binary or U-MultiClass outputs) and the
    /// conditional-training marginals from the run's `config.toml` (a bare checkpoint without
    /// one is read as independent sigmoid outputs).
    pub fn load(path: &Path, device: &Device) -> Result<Trained> {
        let dir = checkpoint_dir(path)?;
        let loaded = checkpoint::load(&dir, DType::F32, device)?;
        let tuned = Tuned::load(&dir)?;
        let cfg = run_config(&dir)?;
        let (noise_cfg, seed) = match &cfg {
            Some(c) => (c.noise.clone(), c.seed),
            None => (NoiseConfig::default(), 0),
        };
        let k = loaded.model.num_classes();
        let findings = match &tuned {
            Some(t) => t.findings.clone(),
            None => {
                let chexpert: Vec<String> = crate::data::CHEXPERT_FINDINGS
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                let probe = Noise::new(&noise_cfg, &chexpert, seed)?;
                if probe.layout().width() == k {
                    chexpert
                } else {
                    output_names(k)
                }
            }
        };
        let noise = Noise::new(&noise_cfg, &findings, seed)?;
        if noise.layout().width() != k {
            return Err(Error::input(
                dir.join(META_FILE),
                format!(
                    "the model has {k} outputs but the run's uncertainty policy needs {} for \
                     {} findings; is config.toml from another run?",
                    noise.layout().width(),
                    findings.len()
                ),
            ));
        }
        let name = {
            let run = if dir.file_name().is_some_and(|n| n == "best" || n == "last") {
                dir.parent().unwrap_or(&dir)
            } else {
                &dir
            };
            run.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| dir.display().to_string())
        };
        Ok(Trained {
            name,
            dir,
            model: loaded.model,
            meta: loaded.meta,
            findings,
            tuned,
            device: device.clone(),
            noise,
        })
    }

    /// A preset with imported timm / torchvision weights (no run behind it): independent
    /// sigmoid outputs named as [`output_names`] says (the CheXpert findings for 14 outputs),
    /// the preset's preprocessing, no calibration. Every variable, the head included, must
    /// come from the file: a head left at its random initialisation is refused.
    pub fn from_weights(
        preset: &str,
        weights: &Path,
        num_classes: usize,
        device: &Device,
    ) -> Result<Trained> {
        let cfg = crate::model::ModelConfig::new(preset, num_classes);
        cfg.validate()?;
        let preprocess = cfg.preprocess()?;
        let vars = crate::model::ModelVars::new(0, DType::F32, device);
        let model = crate::model::build(&cfg, &vars)?;
        let summary = crate::model::weights::import(
            weights,
            &vars,
            model.head_prefix(),
            &crate::model::weights::ImportOptions {
                strict: true,
                key: None,
            },
        )?;
        eprintln!("{summary}");
        let untrained: Vec<&String> = summary
            .missing
            .iter()
            .chain(&summary.reinitialised)
            .collect();
        if !untrained.is_empty() {
            return Err(Error::input(
                weights,
                format!(
                    "{} variables would keep their random initialisation ({:?}); give the \
                     --num-classes of the file's head, or predict with a trained --checkpoint",
                    untrained.len(),
                    untrained.iter().take(4).collect::<Vec<_>>()
                ),
            ));
        }
        let findings = output_names(num_classes);
        let noise = Noise::new(&NoiseConfig::default(), &findings, 0)?;
        Ok(Trained {
            name: preset.to_string(),
            dir: weights.to_path_buf(),
            model,
            meta: CheckpointMeta {
                format: 1,
                model: cfg,
                preprocess,
                note: Some(format!("imported from {}", weights.display())),
            },
            findings,
            tuned: None,
            device: device.clone(),
            noise,
        })
    }

    /// Raw head outputs (logits) in eval mode.
    ///
    /// # Shapes
    /// `x`: `[N, C, S, S]` preprocessed as [`CheckpointMeta::preprocess`] → `[N, W]` F32
    /// (`W` = head width: one logit per binary finding, three per U-MultiClass finding).
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.model.forward(x, false)?.to_dtype(DType::F32)?)
    }

    /// Reported probabilities (sigmoid, or positive-vs-negative softmax for U-MultiClass
    /// findings; marginals under conditional training), before temperature scaling.
    ///
    /// # Shapes
    /// `x`: `[N, C, S, S]` → `[N, K]` F32, `K` = `findings.len()`.
    pub fn probabilities(&self, x: &Tensor) -> Result<Tensor> {
        let out = self.model.forward(x, false)?;
        Ok(self.noise.probabilities(&out)?.to_dtype(DType::F32)?)
    }

    /// Rescales `probs` (`[N, K]` row-major, this model's findings) with the saved
    /// per-finding temperatures; returns whether any was applied (false without
    /// `calibration.json`).
    pub fn calibrate(&self, probs: &mut [f64]) -> bool {
        let Some(t) = &self.tuned else {
            return false;
        };
        let k = self.findings.len();
        let mut any = false;
        for (j, f) in self.findings.iter().enumerate() {
            let Some(temp) = t
                .temperatures
                .findings
                .iter()
                .position(|x| x == f)
                .and_then(|i| t.temperatures.values[i])
            else {
                continue;
            };
            any = true;
            for row in probs.chunks_mut(k) {
                row[j] = apply_temperature(row[j], temp);
            }
        }
        any
    }
}
