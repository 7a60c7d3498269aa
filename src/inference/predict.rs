//! Predicting image files with a [`Trained`] model: decoded on loader threads with the
//! checkpoint's preprocessing (no augmentation), in batches, with a progress bar; unreadable
//! images are counted and skipped (or fail the run with `strict`).

use std::path::PathBuf;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::trained::Trained;
use crate::data::augment::AugmentConfig;
use crate::data::image::Geometry;
use crate::data::loader::{Files, ImageSkip, Loader, LoaderConfig};
use crate::error::Result;

/// How [`predict_paths`] runs.
#[derive(Debug, Clone)]
pub struct PredictOptions {
    pub batch_size: usize,
    /// Decoding threads (≥ 1).
    pub workers: usize,
    /// Fail on the first unreadable image instead of skipping it.
    pub strict: bool,
    /// Raw head outputs instead of probabilities (no temperature scaling).
    pub logits: bool,
    /// Apply the checkpoint's temperatures (when it has them) to the probabilities.
    pub calibrate: bool,
    /// Draw a progress bar on stderr (only shown on a terminal).
    pub progress: bool,
}

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions {
            batch_size: 32,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            strict: false,
            logits: false,
            calibrate: true,
            progress: true,
        }
    }
}

/// What [`predict_paths`] returns.
///
/// # Shapes
/// `values`: `[rows.len(), width]` row-major, in `rows` order.
#[derive(Debug, Clone)]
pub struct Predicted {
    /// Index (into the given paths) of every predicted image, ascending.
    pub rows: Vec<usize>,
    /// Column count of `values`: the findings, or the head width with `logits`.
    pub width: usize,
    pub values: Vec<f64>,
    /// Images that could not be read, with the reason.
    pub skipped: Vec<ImageSkip>,
    /// Whether temperatures were applied.
    pub calibrated: bool,
}

/// Predicts every image of `paths` (absolute, or relative to the working directory).
pub fn predict_paths(t: &Trained, paths: Vec<PathBuf>, o: &PredictOptions) -> Result<Predicted> {
    let pre = t.meta.preprocess.clone();
    let n = paths.len();
    let source = Arc::new(Files {
        paths,
        geometry: Geometry::from(&pre),
    });
    let loader = Loader::new(
        source,
        pre,
        AugmentConfig::off(),
        LoaderConfig {
            batch_size: o.batch_size.max(1),
            workers: o.workers.max(1),
            prefetch: 2 * o.workers.max(1),
            shuffle: false,
            drop_last: false,
            strict: o.strict,
            seed: 0,
        },
    )?;
    let bar = ProgressBar::new(n as u64);
    if !o.progress {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} images (ETA {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("predict {}", t.name));
    let mut rows = Vec::with_capacity(n);
    let mut values: Vec<f64> = Vec::new();
    let mut width = 0;
    let mut ep = loader.epoch(0, &t.device);
    let mut done = 0usize;
    while let Some(batch) = ep.next() {
        let batch = batch?;
        let out = if o.logits {
            t.logits(&batch.images)?
        } else {
            t.probabilities(&batch.images)?
        };
        let out = out.to_vec2::<f32>()?;
        for row in out {
            width = row.len();
            values.extend(row.into_iter().map(|v| v as f64));
        }
        rows.extend(&batch.items);
        let now = rows.len() + ep.skipped().len();
        bar.inc((now - done) as u64);
        done = now;
    }
    let skipped = ep.skipped().to_vec();
    drop(ep);
    bar.finish_and_clear();
    if width == 0 {
        width = if o.logits {
            t.model.num_classes()
        } else {
            t.findings.len()
        };
    }
    let calibrated = !o.logits && o.calibrate && t.calibrate(&mut values);
    Ok(Predicted {
        rows,
        width,
        values,
        skipped,
        calibrated,
    })
}

/// Quotes a CSV field when it holds a comma, quote or line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes `Path` then one column per name, one row per predicted image.
///
/// # Shapes
/// `paths`: `[N]`, `values`: `[N, names.len()]` row-major.
pub fn write_csv(
    out: &std::path::Path,
    names: &[String],
    paths: &[String],
    values: &[f64],
) -> Result<()> {
    use std::fmt::Write as _;
    let k = names.len();
    if values.len() != paths.len() * k {
        return Err(crate::Error::Other(format!(
            "predictions: {} values for {} images x {k} columns",
            values.len(),
            paths.len()
        )));
    }
    let mut s = String::from("Path");
    for n in names {
        s.push(',');
        s.push_str(&csv_field(n));
    }
    s.push('\n');
    for (i, p) in paths.iter().enumerate() {
        s.push_str(&csv_field(p));
        for v in &values[i * k..(i + 1) * k] {
            let _ = write!(s, ",{v}");
        }
        s.push('\n');
    }
    if let Some(d) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|e| crate::Error::io(d, e))?;
    }
    std::fs::write(out, s).map_err(|e| crate::Error::io(out, e))
}
