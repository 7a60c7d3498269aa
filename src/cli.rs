//! Command-line interface: clap definitions and dispatch. `main.rs` only parses, calls
//! [`run`] and maps the error to an exit code.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands;
use crate::config::Config;
use crate::error::Result;

/// Train chest X-ray classifiers that stay accurate when their labels are noisy.
#[derive(Debug, Parser)]
#[command(name = "noisycxr", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Flags shared by every subcommand that takes them (same names everywhere).
#[derive(Debug, Clone, Default, Args)]
pub struct Common {
    /// TOML config file; flags override its fields.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Dataset root holding `CheXpert-v1.0-small/` (or the dataset's CSVs).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// A CSV named directly (overrides the dataset root's training CSV).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Image root the CSV's paths are relative to.
    #[arg(long, value_name = "ROOT")]
    pub images: Option<PathBuf>,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Master seed.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// cpu, cuda or cuda:N.
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// Fail on the first missing or corrupt image instead of counting and skipping it.
    #[arg(long)]
    pub strict: bool,
}

impl Common {
    /// Loads the config (defaults or `--config`), applies these flags, validates.
    pub fn resolve(&self) -> Result<Config> {
        let mut cfg = match &self.config {
            Some(p) => Config::from_file(p)?,
            None => Config::embedded(),
        };
        self.apply(&mut cfg);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Applies the flags that were given to `cfg`.
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(d) = &self.data {
            cfg.data.root = d.clone();
        }
        if let Some(c) = &self.csv {
            cfg.data.csv = Some(c.clone());
        }
        if let Some(i) = &self.images {
            cfg.data.images = Some(i.clone());
        }
        if let Some(o) = &self.out {
            cfg.out = o.clone();
        }
        if let Some(s) = self.seed {
            cfg.seed = s;
        }
        if let Some(d) = &self.device {
            cfg.device = d.clone();
        }
        if self.strict {
            cfg.data.strict = true;
        }
    }
}

/// Table output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Markdown,
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate the noise lab: a CheXpert-format dataset with known clean truth.
    Synth(commands::synth::SynthArgs),
    /// Count blank / -1 / 0 / 1 per finding and the views of a label CSV.
    Stats(commands::stats::StatsArgs),
    /// Train a classifier with the noisy-label techniques.
    Train(commands::train::TrainArgs),
    /// Evaluate checkpoints (or an ensemble) on a labelled CSV: AUROC with bootstrap CIs,
    /// operating points, calibration, subgroups, plots; or compare two runs.
    Eval(commands::eval::EvalArgs),
    /// Predict images or the rows of a CSV with a checkpoint.
    Predict(commands::predict::PredictArgs),
    /// Relabel a training CSV with a trained model (or out-of-fold models with --folds K).
    Relabel(commands::relabel::RelabelArgs),
    /// Run (or resume) a multi-stage recipe: train → relabel → head-only retrain → eval.
    Pipeline(commands::pipeline::PipelineArgs),
    /// Run an ablation: a base config x named runs x seeds, then a table with differences.
    Ablate(commands::ablate::AblateArgs),
    /// Benchmarks against Pillow, PyTorch and scikit-learn in the same run.
    Bench(commands::bench::BenchArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Synth(a) => commands::synth::run(&a),
        Command::Stats(a) => commands::stats::run(&a),
        Command::Train(a) => commands::train::run(&a),
        Command::Eval(a) => commands::eval::run(&a),
        Command::Predict(a) => commands::predict::run(&a),
        Command::Relabel(a) => commands::relabel::run(&a),
        Command::Pipeline(a) => commands::pipeline::run(&a),
        Command::Ablate(a) => commands::ablate::run(&a),
        Command::Bench(a) => commands::bench::run(&a),
    }
}
