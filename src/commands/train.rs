//! `noisycxr train`: train a model with the noisy-label techniques.

use std::path::PathBuf;

use clap::Args;
use serde::de::DeserializeOwned;

use crate::cli::Common;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::noise::MentorMode;

/// Flags of `train` (each overrides its config field).
#[derive(Debug, Clone, Default, Args)]
pub struct TrainFlags {
    /// Model preset (e.g. resnet50, vit_b16, hybrid_r50_vit_b16, resnet_tiny, hybrid_tiny).
    #[arg(long, value_name = "PRESET")]
    pub model: Option<String>,
    /// The hybrid ResNet-stem + ViT of the config's size class (hybrid_tiny for size = "cpu").
    #[arg(long, conflicts_with = "model")]
    pub hybrid: bool,
    /// Pretrained timm/torchvision weights to import.
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    #[arg(long, value_name = "N")]
    pub image_size: Option<usize>,
    #[arg(long, value_name = "LR")]
    pub lr: Option<f64>,
    /// Uncertainty policy: ignore, zeros, ones, lsr, lsr_ones, lsr_zeros, multi_class.
    #[arg(long, value_name = "POLICY")]
    pub policy: Option<String>,
    /// Blank cells: negative or missing.
    #[arg(long, value_name = "AS")]
    pub blank: Option<String>,
    /// Label smoothing ε.
    #[arg(long, value_name = "EPS")]
    pub smoothing: Option<f32>,
    /// Mixup with λ ~ Beta(α, α).
    #[arg(long, value_name = "ALPHA")]
    pub mixup: Option<f32>,
    /// Weight of the hierarchy-consistency loss term.
    #[arg(long, value_name = "W")]
    pub hierarchy: Option<f32>,
    /// MentorNet-style reweighting with threshold τ: w = 1 if loss ≤ τ, else τ / loss.
    #[arg(long, value_name = "TAU")]
    pub mentor: Option<f32>,
    /// `fixed` (τ = --mentor) or `percentile` (τ = a per-finding batch percentile).
    #[arg(long, value_name = "MODE")]
    pub mentor_mode: Option<String>,
    /// Stop after N epochs without a better tuning mean AUROC.
    #[arg(long, value_name = "N")]
    pub patience: Option<usize>,
    /// f32, or mixed precision bf16 | f16 (f32 master weights; f16 with loss scaling).
    #[arg(long, value_name = "P")]
    pub precision: Option<String>,
    /// CPU matrix products: highest (f32) | high (bf16×3 on Intel AMX, ~1e-5 relative error;
    /// f32 on CPUs without AMX).
    #[arg(long, value_name = "P")]
    pub matmul_precision: Option<String>,
    /// Retrain only the head of the --init checkpoint (backbone frozen, features cached).
    #[arg(long)]
    pub head_only: bool,
    /// Checkpoint folder to start from (a run folder's `best/` or `last/`).
    #[arg(long, value_name = "RUN")]
    pub init: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub flags: TrainFlags,
    /// Continue from `OUT/last` when it exists.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this epoch, leaving a checkpoint to continue from with --resume.
    #[arg(long, value_name = "N")]
    pub stop_after_epoch: Option<usize>,
}

/// Parses a snake_case enum value the way the config file spells it.
pub fn parse_enum<T: DeserializeOwned>(flag: &str, v: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(v.to_string()))
        .map_err(|e| Error::Usage(format!("--{flag} {v:?}: {e}")))
}

impl TrainFlags {
    /// Applies the flags that were given.
    pub fn apply(&self, cfg: &mut Config) -> Result<()> {
        if let Some(m) = &self.model {
            cfg.model.preset = m.clone();
        }
        if self.hybrid {
            cfg.model.preset = crate::train::config::hybrid_for(cfg.size).to_string();
        }
        if let Some(w) = &self.weights {
            cfg.model.weights = Some(w.clone());
        }
        if let Some(s) = self.image_size {
            cfg.model.img_size = Some(s);
        }
        let t = &mut cfg.train;
        if let Some(v) = self.epochs {
            t.epochs = v;
        }
        if let Some(v) = self.batch_size {
            t.batch_size = v;
        }
        if let Some(v) = self.lr {
            t.lr = v;
        }
        if let Some(v) = self.patience {
            t.patience = Some(v);
        }
        if let Some(p) = &self.precision {
            t.precision = parse_enum("precision", p)?;
        }
        if let Some(p) = &self.matmul_precision {
            t.matmul_precision = parse_enum("matmul-precision", p)?;
        }
        if self.head_only {
            t.head_only = true;
        }
        if let Some(v) = &self.init {
            t.init = Some(v.clone());
        }
        let n = &mut cfg.noise;
        if let Some(p) = &self.policy {
            n.uncertainty.policy = parse_enum("policy", p)?;
        }
        if let Some(b) = &self.blank {
            n.uncertainty.blank = parse_enum("blank", b)?;
        }
        if let Some(e) = self.smoothing {
            n.smoothing.epsilon = e;
        }
        if let Some(a) = self.mixup {
            n.mixup.alpha = a;
        }
        if let Some(w) = self.hierarchy {
            n.hierarchy.weight = w;
        }
        if let Some(tau) = self.mentor {
            n.mentor.tau = tau;
            if n.mentor.mode == MentorMode::Off {
                n.mentor.mode = MentorMode::Fixed;
            }
        }
        if let Some(m) = &self.mentor_mode {
            n.mentor.mode = parse_enum("mentor-mode", m)?;
        }
        Ok(())
    }
}

pub fn run(a: &TrainArgs) -> Result<()> {
    let mut cfg = a.common.resolve()?;
    a.flags.apply(&mut cfg)?;
    cfg.validate()?;
    let o = crate::train::run(
        &cfg,
        crate::train::RunOptions {
            resume: a.resume,
            stop_after_epoch: a.stop_after_epoch,
        },
    )?;
    println!(
        "{}",
        crate::train::trainer::markdown_table(
            &format!(
                "{} — best epoch {} of {}, tuning set",
                o.preset,
                o.best_epoch
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "none".into()),
                o.epochs_run
            ),
            &o.tune,
            None
        )
    );
    if let Some((s, cis)) = &o.test {
        println!(
            "{}",
            crate::train::trainer::markdown_table(
                &format!(
                    "{} — test set (single model, {} bootstrap resamples over studies)",
                    o.preset, cis.config.resamples
                ),
                s,
                Some(cis)
            )
        );
    }
    println!("run folder: {}", o.out.display());
    Ok(())
}
