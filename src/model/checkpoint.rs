//! Our own checkpoints: a directory with `model.safetensors` (every parameter and BatchNorm
//! buffer under its timm / torchvision key) and `model.json` ([`CheckpointMeta`]: the
//! [`ModelConfig`] that builds the architecture and the [`Preprocess`] it was trained with).
//! The run's full config is saved beside them by the trainer.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use super::presets::{build, ModelConfig};
use super::vars::ModelVars;
use super::Classifier;
use crate::data::preprocess::Preprocess;
use crate::error::{Error, Result};

/// Weights file name inside a checkpoint directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Metadata file name inside a checkpoint directory.
pub const META_FILE: &str = "model.json";
const FORMAT: u32 = 1;

/// `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointMeta {
    /// Format version (1).
    pub format: u32,
    pub model: ModelConfig,
    /// The preprocessing the weights were trained with; `predict` / `eval` reuse it.
    pub preprocess: Preprocess,
    /// Optional free-form provenance (step, epoch, metric...).
    #[serde(default)]
    pub note: Option<String>,
}

/// A loaded checkpoint.
pub struct Loaded {
    pub model: Box<dyn Classifier>,
    pub vars: ModelVars,
    pub meta: CheckpointMeta,
}

/// Writes `dir/model.safetensors` and `dir/model.json` (creating `dir`; each file is written
/// to a temporary name and renamed, so a crash never leaves a half-written checkpoint).
pub fn save(
    dir: &Path,
    model: &ModelConfig,
    preprocess: &Preprocess,
    vars: &ModelVars,
    note: Option<String>,
) -> Result<()> {
    model.validate()?;
    preprocess.validate()?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    // Weights go to disk as f32 whatever the training precision, so a checkpoint loads
    // at any precision without a double rounding.
    let mut tensors = std::collections::HashMap::new();
    for (k, t) in vars.named_tensors() {
        let t = match t.dtype() {
            DType::BF16 | DType::F16 => t.to_dtype(DType::F32)?,
            _ => t,
        };
        tensors.insert(k, t);
    }
    let tmp = dir.join(format!("{WEIGHTS_FILE}.tmp"));
    candle_core::safetensors::save(&tensors, &tmp)
        .map_err(|e| Error::Other(format!("{}: {e}", tmp.display())))?;
    let dst = dir.join(WEIGHTS_FILE);
    std::fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
    let meta = CheckpointMeta {
        format: FORMAT,
        model: model.clone(),
        preprocess: preprocess.clone(),
        note,
    };
    let json = serde_json::to_string_pretty(&meta)
        .map_err(|e| Error::Other(format!("model.json: {e}")))?;
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    std::fs::write(&tmp, json).map_err(|e| Error::io(&tmp, e))?;
    let dst = dir.join(META_FILE);
    std::fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
    Ok(())
}

/// Reads `dir/model.json`.
pub fn read_meta(dir: &Path) -> Result<CheckpointMeta> {
    let p = dir.join(META_FILE);
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    let meta: CheckpointMeta = serde_json::from_str(&text)
        .map_err(|e| Error::input(&p, format!("not a noisycxr model.json: {e}")))?;
    if meta.format != FORMAT {
        return Err(Error::input(
            &p,
            format!(
                "checkpoint format {} is not supported (expected {FORMAT})",
                meta.format
            ),
        ));
    }
    meta.model
        .validate()
        .map_err(|e| Error::input(&p, e.to_string()))?;
    meta.preprocess
        .validate()
        .map_err(|e| Error::input(&p, e.to_string()))?;
    Ok(meta)
}

/// Rebuilds the model of checkpoint `dir` in `dtype` on `device` and loads every variable;
/// a missing, extra or mis-shaped tensor is an error.
pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Loaded> {
    let meta = read_meta(dir)?;
    let vars = ModelVars::new(0, dtype, device);
    let model = build(&meta.model, &vars)?;
    let wpath: PathBuf = dir.join(WEIGHTS_FILE);
    if !wpath.exists() {
        return Err(Error::input(&wpath, "checkpoint weights missing"));
    }
    let tensors = candle_core::safetensors::load(&wpath, &Device::Cpu)
        .map_err(|e| Error::input(&wpath, e.to_string()))?;
    let want = vars.named_tensors();
    let mut problems = Vec::new();
    for k in want.keys() {
        if !tensors.contains_key(k) {
            problems.push(format!("missing {k}"));
        }
    }
    for (k, t) in &tensors {
        match vars.get(k) {
            None => problems.push(format!("unexpected {k}")),
            Some(v) if v.dims() != t.dims() => {
                problems.push(format!("{k}: file {:?}, model {:?}", t.dims(), v.dims()))
            }
            Some(v) => v.set(&t.to_dtype(v.dtype())?.to_device(device)?)?,
        }
    }
    if !problems.is_empty() {
        return Err(Error::input(
            &wpath,
            format!(
                "does not match its model.json ({}): {}",
                meta.model.preset,
                problems.join("; ")
            ),
        ));
    }
    Ok(Loaded { model, vars, meta })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;

    #[test]
    fn save_then_load_gives_the_same_outputs_and_running_stats() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let cfg = ModelConfig::new("resnet_tiny", 14);
        let vars = ModelVars::new(5, DType::F32, &Device::Cpu);
        let model = build(&cfg, &vars)?;
        let x = Tensor::arange(0f32, (4 * 64 * 64) as f32, &Device::Cpu)?
            .reshape((4, 1, 64, 64))?
            .affine(1e-4, -0.5)?
            .sin()?;
        model.forward(&x, true)?; // moves the running statistics away from 0 / 1
        let want = model.forward(&x, false)?;
        save(
            dir.path(),
            &cfg,
            &cfg.preprocess()?,
            &vars,
            Some("step 1".into()),
        )?;
        let l = load(dir.path(), DType::F32, &Device::Cpu)?;
        assert_eq!(l.meta.model, cfg);
        assert_eq!(l.meta.preprocess.channels, 1);
        let got = l.model.forward(&x, false)?;
        let d = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(d, 0.0);
        // A checkpoint whose json names another preset fails loudly.
        let mut meta = read_meta(dir.path())?;
        meta.model.preset = "vit_tiny".into();
        std::fs::write(
            dir.path().join(META_FILE),
            serde_json::to_string(&meta).unwrap(),
        )
        .unwrap();
        let e = load(dir.path(), DType::F32, &Device::Cpu)
            .err()
            .expect("mismatch")
            .to_string();
        assert!(
            e.contains("does not match") && e.contains("vit_tiny"),
            "{e}"
        );
        Ok(())
    }
}
