//! Training checkpoints: the model checkpoint (`model.safetensors` + `model.json`), the
//! optimizer's state (`optimizer.safetensors`) and the loop's state (`state.json`: epoch, step,
//! best metric, patience counter, history). All randomness is keyed by (seed, epoch, sample) or
//! (seed, step), so epoch and step are the whole RNG state and `--resume` continues exactly.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::optim::Optimizer;
use crate::provenance::write_json;

pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "state.json";

/// One epoch's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch's steps.
    pub train_loss: f64,
    /// Tuning-set mean AUROC over all defined findings.
    pub tune_mean_auroc: Option<f64>,
    /// Tuning-set mean AUROC over the 5 competition tasks.
    pub tune_mean_auroc_5: Option<f64>,
    /// Images that could not be read this epoch.
    pub skipped_images: usize,
}

/// The loop's state after an epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainState {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: u64,
    pub best_metric: Option<f64>,
    pub best_epoch: Option<usize>,
    /// Epochs since the best one (early stopping).
    pub bad_epochs: usize,
    pub history: Vec<EpochRecord>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
}

/// Writes the optimizer and loop state into `dir` (the model checkpoint is written beside).
pub fn save(dir: &Path, opt: &dyn Optimizer, state: &TrainState) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tensors: HashMap<String, candle_core::Tensor> = opt.state()?.into_iter().collect();
    let tmp = dir.join(format!("{OPTIMIZER_FILE}.tmp"));
    candle_core::safetensors::save(&tensors, &tmp)
        .map_err(|e| Error::Other(format!("{}: {e}", tmp.display())))?;
    let dst = dir.join(OPTIMIZER_FILE);
    std::fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    write_json(&tmp, state)?;
    let dst = dir.join(STATE_FILE);
    std::fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))
}

/// Reads the loop state of a checkpoint folder.
pub fn load_state(dir: &Path) -> Result<TrainState> {
    let p = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    serde_json::from_str(&text).map_err(|e| Error::input(&p, format!("not a training state: {e}")))
}

/// Restores the optimizer's state from a checkpoint folder.
pub fn load_optimizer(dir: &Path, opt: &mut dyn Optimizer, device: &candle_core::Device) -> Result<()> {
    let p = dir.join(OPTIMIZER_FILE);
    let tensors = candle_core::safetensors::load(&p, device)
        .map_err(|e| Error::input(&p, format!("cannot read optimizer state: {e}")))?;
    opt.load_state(&tensors)
}
