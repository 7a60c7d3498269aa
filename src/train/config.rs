//! `[model]` and `[train]` sections of the run configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::SizeClass;
use crate::error::{Error, Result};
use crate::model::ModelConfig;
use crate::optim::schedule::Schedule;
use crate::optim::OptimizerConfig;

/// `[model]`: which network, and what to start it from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// A preset name (`noisycxr train --model NAME`), e.g. `resnet50`, `hybrid_tiny`. Empty:
    /// the hybrid of the config's size class.
    pub preset: String,
    /// Pretrained timm / torchvision weights to import (safetensors or zip-format .pth/.bin).
    pub weights: Option<PathBuf>,
    /// Input channels (default: the preset's).
    pub in_chans: Option<usize>,
    /// Square input side (`--image-size`; default: the preset's).
    pub img_size: Option<usize>,
    pub drop_rate: f32,
    pub drop_path_rate: f32,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            preset: String::new(),
            weights: None,
            in_chans: None,
            img_size: None,
            drop_rate: 0.0,
            drop_path_rate: 0.0,
        }
    }
}

impl ModelSection {
    /// The preset this section names, resolving an empty name (and `--hybrid`) by size class:
    /// `hybrid_tiny` for `size = "cpu"`, `hybrid_r50_vit_b16` otherwise.
    pub fn preset_name(&self, size: SizeClass) -> String {
        if self.preset.is_empty() {
            hybrid_for(size).to_string()
        } else {
            self.preset.clone()
        }
    }

    /// The model to build for `num_outputs` head outputs.
    pub fn model_config(&self, size: SizeClass, num_outputs: usize) -> Result<ModelConfig> {
        let mut m = ModelConfig::new(&self.preset_name(size), num_outputs);
        m.in_chans = self.in_chans;
        m.img_size = self.img_size;
        m.drop_rate = self.drop_rate;
        m.drop_path_rate = self.drop_path_rate;
        m.validate()?;
        Ok(m)
    }
}

/// The hybrid preset of a size class (what `--hybrid` selects).
pub fn hybrid_for(size: SizeClass) -> &'static str {
    match size {
        SizeClass::Cpu => "hybrid_tiny",
        SizeClass::Full => "hybrid_r50_vit_b16",
    }
}

/// Learning-rate schedule over epochs (converted to steps once the epoch length is known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Constant,
    /// Linear warm-up over `warmup_epochs`, then a half cosine to `min_lr`.
    Cosine,
    /// Multiply by `gamma` every `step_epochs`.
    Step,
}

/// Numeric precision of the model's forward/backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    F32,
    /// Mixed precision: `bf16` forward/backward, `f32` master weights.
    Bf16,
    /// Mixed precision: `f16` forward/backward, `f32` master weights, dynamic loss scaling.
    F16,
}

impl Precision {
    /// The dtype the model's variables and activations use.
    pub fn dtype(self) -> candle_core::DType {
        match self {
            Precision::F32 => candle_core::DType::F32,
            Precision::Bf16 => candle_core::DType::BF16,
            Precision::F16 => candle_core::DType::F16,
        }
    }

    /// Why this precision cannot train on the CPU, when it cannot (`bf16`).
    pub fn cpu_unsupported(self) -> Option<&'static str> {
        (self == Precision::Bf16).then_some(
            "bf16 needs --device cuda: candle has no bf16 matrix multiply on the CPU (use f32, \
             or f16 to check the mixed-precision path on the CPU)",
        )
    }
}

/// `[train]`: the optimisation loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleKind,
    pub warmup_epochs: f64,
    pub min_lr: f64,
    pub step_epochs: usize,
    pub gamma: f64,
    /// Clip the global gradient norm to this value.
    pub clip_grad_norm: Option<f64>,
    /// Stop after this many epochs without a better tuning mean AUROC.
    pub patience: Option<usize>,
    pub precision: Precision,
    /// CPU matrix products: `highest` (`f32`) or `high` (`bf16×3` on Intel AMX where the CPU has
    /// it, about 10⁻⁵ relative error; `f32` elsewhere), as PyTorch's
    /// `set_float32_matmul_precision` names them.
    pub matmul_precision: crate::ops::sgemm::MatmulPrecision,
    /// Write a step line to `metrics.jsonl` every this many steps.
    pub log_every: usize,
    /// Batch size of evaluation passes.
    pub eval_batch_size: usize,
    /// Bootstrap resamples for the confidence intervals of the final test report.
    pub bootstrap: usize,
    /// Train only the head of the `init` checkpoint (backbone frozen, BatchNorm in eval mode).
    pub head_only: bool,
    /// A checkpoint folder to start from (required by `head_only`).
    pub init: Option<PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 5,
            batch_size: 32,
            lr: 1e-3,
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleKind::Cosine,
            warmup_epochs: 0.5,
            min_lr: 0.0,
            step_epochs: 10,
            gamma: 0.1,
            clip_grad_norm: None,
            patience: None,
            precision: Precision::F32,
            matmul_precision: Default::default(),
            log_every: 20,
            eval_batch_size: 64,
            bootstrap: 200,
            head_only: false,
            init: None,
        }
    }
}

impl TrainConfig {
    /// Checks every field; errors name it.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.epochs == 0 {
            return bad("train.epochs must be at least 1".into());
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("train.batch_size and train.eval_batch_size must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("train.lr = {} must be a positive number", self.lr));
        }
        if !(0.0..=self.lr).contains(&self.min_lr) {
            return bad(format!(
                "train.min_lr = {} must be in [0, train.lr]",
                self.min_lr
            ));
        }
        if self.warmup_epochs < 0.0 || self.warmup_epochs >= self.epochs as f64 {
            return bad(format!(
                "train.warmup_epochs = {} must be in [0, train.epochs)",
                self.warmup_epochs
            ));
        }
        if self.schedule == ScheduleKind::Step && (self.step_epochs == 0 || !(self.gamma > 0.0)) {
            return bad(
                "train.step_epochs must be ≥ 1 and train.gamma > 0 for schedule = \"step\"".into(),
            );
        }
        if let Some(c) = self.clip_grad_norm {
            if !(c > 0.0) {
                return bad(format!("train.clip_grad_norm = {c} must be positive"));
            }
        }
        if self.patience == Some(0) {
            return bad("train.patience must be at least 1 (or absent)".into());
        }
        if self.log_every == 0 {
            return bad("train.log_every must be at least 1".into());
        }
        if self.head_only && self.init.is_none() {
            return bad("train.head_only needs train.init (--init RUN): the checkpoint whose head to retrain".into());
        }
        self.optimizer.validate()
    }

    /// The step-based schedule for `steps_per_epoch`.
    pub fn schedule(&self, steps_per_epoch: usize) -> Schedule {
        let spe = steps_per_epoch.max(1) as f64;
        match self.schedule {
            ScheduleKind::Constant => Schedule::Constant,
            ScheduleKind::Cosine => Schedule::WarmupCosine {
                warmup_steps: (self.warmup_epochs * spe).round() as u64,
                warmup_start: 0.0,
                total_steps: ((self.epochs as f64 * spe).round() as u64)
                    .max(1 + (self.warmup_epochs * spe).round() as u64),
                min_lr: self.min_lr,
            },
            ScheduleKind::Step => Schedule::StepDecay {
                step_size: (self.step_epochs as f64 * spe).round().max(1.0) as u64,
                gamma: self.gamma,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_their_field() {
        TrainConfig::default().validate().unwrap();
        let mut t = TrainConfig::default();
        t.lr = -1.0;
        assert!(t.validate().unwrap_err().to_string().contains("train.lr"));
        let mut t = TrainConfig::default();
        t.head_only = true;
        assert!(t.validate().unwrap_err().to_string().contains("train.init"));
    }

    #[test]
    fn hybrid_resolves_by_size_class() {
        let m = ModelSection::default();
        assert_eq!(m.preset_name(SizeClass::Cpu), "hybrid_tiny");
        assert_eq!(m.preset_name(SizeClass::Full), "hybrid_r50_vit_b16");
    }
}
