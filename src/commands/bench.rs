//! `noisycxr bench data|train|eval`: benchmarks that print a table of our figures against the
//! named baseline (Pillow, PyTorch, scikit-learn) measured in the same invocation.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cli::Format;
use crate::error::Result;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: Which,
}

#[derive(Debug, Subcommand)]
pub enum Which {
    /// Decode + resize + augment images/s per core at 1024²→224 and 320→224, against Pillow.
    Data {
        /// A Python with Pillow for the baseline (skipped when absent).
        #[arg(long, value_name = "PATH")]
        python: Option<PathBuf>,
        #[arg(long, value_name = "N")]
        n_images: Option<usize>,
        #[arg(long, value_enum, default_value_t = Format::Markdown)]
        format: Format,
    },
    /// Training-step throughput (fwd + bwd + optimizer) against the same timm model in PyTorch.
    Train {
        /// Comma-separated presets.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "resnet50,vit_b16,hybrid_r50_vit_b16"
        )]
        models: Vec<String>,
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        #[arg(long, value_name = "N")]
        image_size: Option<usize>,
        /// A Python with torch and timm for the baseline (skipped when absent).
        #[arg(long, value_name = "PATH")]
        python: Option<PathBuf>,
        /// cpu, cuda or cuda:N (both sides).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// f32, or mixed precision bf16 | f16 (both sides; PyTorch with autocast).
        #[arg(long, default_value = "f32")]
        precision: String,
        /// Our CPU matrix products: highest (f32) | high (bf16×3 on Intel AMX); PyTorch stays at
        /// its default (highest).
        #[arg(long, default_value = "highest")]
        matmul_precision: String,
        /// Untimed warm-up steps per side (at least 2).
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Timed steps per side (at least 5); more steps give steadier medians on a busy machine.
        #[arg(long, default_value_t = 5)]
        steps: usize,
        #[arg(long, value_enum, default_value_t = Format::Markdown)]
        format: Format,
    },
    /// AUROC over 200,000 × 14 predictions with 1,000 study bootstraps, against scikit-learn.
    Eval {
        /// A Python with numpy and scikit-learn for the baseline (skipped when absent).
        #[arg(long, value_name = "PATH")]
        python: Option<PathBuf>,
    },
}

pub fn run(a: &BenchArgs) -> Result<()> {
    match &a.which {
        Which::Data {
            python,
            n_images,
            format,
        } => {
            let mut o = crate::data::bench::DataBenchOptions {
                python: python.clone(),
                ..Default::default()
            };
            if let Some(n) = n_images {
                o.n_images = *n;
            }
            let t = crate::data::bench::run(&o)?;
            match format {
                Format::Markdown => println!("{}", t.markdown()),
                Format::Csv => print!("{}", t.csv()),
            }
        }
        Which::Train {
            models,
            batch_size,
            image_size,
            python,
            device,
            precision,
            matmul_precision,
            warmup,
            steps,
            format,
        } => {
            let o = crate::bench::TrainBenchOptions {
                models: models.clone(),
                batch_size: *batch_size,
                image_size: *image_size,
                python: python.clone(),
                device: device.clone(),
                precision: crate::commands::train::parse_enum("precision", precision)?,
                matmul_precision: crate::commands::train::parse_enum(
                    "matmul-precision",
                    matmul_precision,
                )?,
                warmup: *warmup,
                steps: *steps,
                ..Default::default()
            };
            let t = crate::bench::run_train(&o, |line| eprintln!("{line}"))?;
            match format {
                Format::Markdown => println!("{}", t.to_markdown()),
                Format::Csv => print!("{}", t.to_csv()),
            }
        }
        Which::Eval { python } => {
            let r = crate::eval::bench::run(&crate::eval::bench::BenchConfig {
                python: python.clone(),
                ..Default::default()
            })?;
            println!("{r}");
        }
    }
    Ok(())
}
