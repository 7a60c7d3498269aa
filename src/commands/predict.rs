//! `noisycxr predict`: probabilities (or logits) of a checkpoint for image files or the rows
//! of a CSV, written as `Path` then one column per finding.

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Result};
use crate::inference::{predict_paths, read_csv, write_csv, PredictOptions, Trained};

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Run folder (its best/) or checkpoint folder.
    #[arg(long, value_name = "RUN", required_unless_present = "model")]
    pub checkpoint: Option<PathBuf>,
    /// A preset to run with imported --weights instead of a checkpoint.
    #[arg(
        long,
        value_name = "PRESET",
        requires = "weights",
        conflicts_with = "checkpoint"
    )]
    pub model: Option<String>,
    /// timm / torchvision weights (.safetensors or zip-format .pth/.bin) for --model.
    #[arg(long, value_name = "FILE", requires = "model")]
    pub weights: Option<PathBuf>,
    /// Head outputs of --weights.
    #[arg(long, value_name = "N", default_value_t = 14, requires = "model")]
    pub num_classes: usize,
    /// A CSV (CheXpert, MIMIC-CXR or NIH layout) whose images to predict.
    #[arg(long, value_name = "FILE", conflicts_with = "files")]
    pub csv: Option<PathBuf>,
    /// Image root the CSV's paths are relative to (default: implied by the CSV's location).
    #[arg(long, value_name = "ROOT", requires = "csv")]
    pub images: Option<PathBuf>,
    /// Image files (JPEG, PNG, DICOM) when no --csv is given.
    #[arg(value_name = "IMAGE")]
    pub files: Vec<PathBuf>,
    /// Output CSV.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Raw head outputs instead of probabilities.
    #[arg(long)]
    pub logits: bool,
    /// Do not apply the checkpoint's temperatures (calibration.json).
    #[arg(long)]
    pub no_calibration: bool,
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub batch_size: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    pub device: String,
    /// Fail on the first missing or corrupt image instead of counting and skipping it.
    #[arg(long)]
    pub strict: bool,
}

pub fn run(a: &PredictArgs) -> Result<()> {
    let device = crate::config::parse_device(&a.device)?.device()?;
    let (names, paths): (Vec<String>, Vec<PathBuf>) = match &a.csv {
        Some(csv) => {
            let ds = read_csv(csv, a.images.as_deref())?;
            (
                ds.records.iter().map(|r| r.path.clone()).collect(),
                (0..ds.records.len()).map(|i| ds.image_path(i)).collect(),
            )
        }
        None if a.files.is_empty() => {
            return Err(Error::Usage(
                "give image files, or --csv FILE (with --images ROOT)".into(),
            ))
        }
        None => (
            a.files.iter().map(|p| p.display().to_string()).collect(),
            a.files.clone(),
        ),
    };
    let t = match (&a.checkpoint, &a.model, &a.weights) {
        (Some(c), _, _) => Trained::load(c, &device)?,
        (None, Some(m), Some(w)) => Trained::from_weights(m, w, a.num_classes, &device)?,
        _ => {
            return Err(Error::Usage(
                "give --checkpoint RUN, or --model PRESET with --weights FILE".into(),
            ))
        }
    };
    let n = paths.len();
    let p = predict_paths(
        &t,
        paths,
        &PredictOptions {
            batch_size: a.batch_size,
            strict: a.strict,
            logits: a.logits,
            calibrate: !a.no_calibration,
            ..PredictOptions::default()
        },
    )?;
    report_skipped(&p.skipped, n)?;
    let columns = if a.logits {
        if p.width == t.findings.len() {
            t.findings.clone()
        } else {
            crate::model::predict::output_names(p.width)
        }
    } else {
        t.findings.clone()
    };
    let kept: Vec<String> = p.rows.iter().map(|&i| names[i].clone()).collect();
    write_csv(&a.out, &columns, &kept, &p.values)?;
    eprintln!(
        "{}: {} images, {} columns ({}){}",
        a.out.display(),
        kept.len(),
        columns.len(),
        if a.logits {
            "logits"
        } else if p.calibrated {
            "probabilities, temperature-scaled"
        } else {
            "probabilities"
        },
        if p.skipped.is_empty() {
            String::new()
        } else {
            format!("; {} images skipped", p.skipped.len())
        }
    );
    Ok(())
}

/// Prints the skipped images (count and the first few); fails when nothing could be read.
pub fn report_skipped(skipped: &[crate::data::loader::ImageSkip], n: usize) -> Result<()> {
    if skipped.is_empty() {
        return Ok(());
    }
    eprintln!(
        "{} of {n} images could not be read and were skipped:",
        skipped.len()
    );
    for s in skipped.iter().take(5) {
        eprintln!("  {}: {}", s.name, s.reason);
    }
    if skipped.len() > 5 {
        eprintln!("  ... and {} more", skipped.len() - 5);
    }
    if skipped.len() == n {
        return Err(Error::image(
            &skipped[0].name,
            format!(
                "none of the {n} images could be read (this one: {}); check --images",
                skipped[0].reason
            ),
        ));
    }
    Ok(())
}
