//! The splits of a training run — train, tuning and (reported) test — each a dataset, an image
//! source (files, or the memory-mapped cache of resized images) and the items it uses.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::data::cache::Cache;
use crate::data::image::Geometry;
use crate::data::loader::{Files, Source};
use crate::data::preprocess::Preprocess;
use crate::data::source::{self, CsvSource};
use crate::data::{split, Dataset, Observation};
use crate::error::Result;
use crate::eval::Predictions;

/// One split of a run.
#[derive(Clone)]
pub struct SplitSet {
    /// `train`, `tune` or `test`.
    pub name: &'static str,
    pub ds: Arc<Dataset>,
    pub source: Arc<dyn Source>,
    /// Record indices of `ds` (= source items) in this split.
    pub items: Vec<usize>,
}

impl SplitSet {
    /// Raw observations of item `i`.
    pub fn labels(&self, i: usize) -> &[Observation] {
        &self.ds.records[i].labels
    }

    /// Rows of this split as evaluation targets: positive → `true`, negative → `false`,
    /// uncertain and blank → no label (left out of that finding's metrics).
    ///
    /// # Shapes
    /// `probs`: `[items.len() × K]` row-major, in `items` order.
    pub fn predictions(&self, probs: Vec<f64>) -> Result<Predictions> {
        let mut paths = Vec::with_capacity(self.items.len());
        let mut studies = Vec::with_capacity(self.items.len());
        let mut targets = Vec::with_capacity(probs.len());
        for &i in &self.items {
            let r = &self.ds.records[i];
            paths.push(r.path.clone());
            studies.push(r.study.clone());
            targets.extend(r.labels.iter().map(|o| match o {
                Observation::Positive => Some(true),
                Observation::Negative => Some(false),
                _ => None,
            }));
        }
        Predictions::new(paths, studies, self.ds.findings.clone(), probs, targets)
    }
}

/// Train, tune and test sets of a run.
pub struct RunSets {
    pub train: SplitSet,
    pub tune: SplitSet,
    pub test: Option<SplitSet>,
    /// CSVs read (for provenance).
    pub inputs: Vec<PathBuf>,
}

/// Reads the CSVs the config names, applies the filters, carves the tuning split when there is
/// no tuning CSV, and opens an image source per CSV. Prints what was skipped.
pub fn load(cfg: &Config, pre: &Preprocess) -> Result<RunSets> {
    let srcs = source::resolve(&cfg.data)?;
    let mut inputs = vec![srcs.train.csv.clone()];
    let train_ds = read(&srcs.train, cfg)?;
    let train_src = image_source(&train_ds, &srcs.train, pre, cfg)?;
    let (train, tune) = match &srcs.tune {
        Some(t) => {
            inputs.push(t.csv.clone());
            let ds = read(t, cfg)?;
            let src = image_source(&ds, t, pre, cfg)?;
            let n = ds.records.len();
            let all = (0..train_ds.records.len()).collect();
            (
                SplitSet { name: "train", ds: Arc::new(train_ds), source: train_src, items: all },
                SplitSet { name: "tune", ds: Arc::new(ds), source: src, items: (0..n).collect() },
            )
        }
        None => {
            let (a, b) = split::tune_split(&train_ds, cfg.data.tune_fraction, cfg.seed);
            eprintln!(
                "tuning set: {} images of {} patients carved out of {} (data.tune_fraction = {})",
                b.len(),
                (cfg.data.tune_fraction * train_ds.n_patients() as f64).round(),
                srcs.train.csv.display(),
                cfg.data.tune_fraction
            );
            let ds = Arc::new(train_ds);
            (
                SplitSet { name: "train", ds: ds.clone(), source: train_src.clone(), items: a },
                SplitSet { name: "tune", ds, source: train_src, items: b },
            )
        }
    };
    let test = match &srcs.test {
        Some(t) => {
            inputs.push(t.csv.clone());
            let ds = read(t, cfg)?;
            let src = image_source(&ds, t, pre, cfg)?;
            let n = ds.records.len();
            Some(SplitSet { name: "test", ds: Arc::new(ds), source: src, items: (0..n).collect() })
        }
        None => None,
    };
    Ok(RunSets { train, tune, test, inputs })
}

fn read(src: &CsvSource, cfg: &Config) -> Result<Dataset> {
    let format = source::detect(&src.csv).unwrap_or(cfg.data.format);
    let mut ds = source::read(src, format)?;
    cfg.data.filters.apply(&mut ds)?;
    if !ds.skipped.is_empty() {
        let mut reasons: std::collections::BTreeMap<&str, usize> = Default::default();
        for s in &ds.skipped {
            *reasons.entry(s.reason.as_str()).or_default() += 1;
        }
        for (r, n) in reasons {
            eprintln!("{}: skipped {n} rows: {r}", src.csv.display());
        }
    }
    Ok(ds)
}

/// Folder for image caches: beside the CSV when writable, else under the run's output folder.
fn cache_dir(csv: &Path, out: &Path) -> PathBuf {
    let beside = csv.parent().unwrap_or(Path::new(".")).join(".noisycxr-cache");
    if std::fs::create_dir_all(&beside).is_ok() {
        let probe = beside.join(".write-test");
        if std::fs::write(&probe, b"").is_ok() {
            let _ = std::fs::remove_file(probe);
            return beside;
        }
    }
    out.join("cache")
}

fn image_source(ds: &Dataset, src: &CsvSource, pre: &Preprocess, cfg: &Config) -> Result<Arc<dyn Source>> {
    let paths: Vec<PathBuf> = (0..ds.records.len()).map(|i| ds.image_path(i)).collect();
    let g = Geometry::from(pre);
    if !cfg.loader.cache {
        return Ok(Arc::new(Files { paths, geometry: g }));
    }
    let dir = cache_dir(&src.csv, &cfg.out);
    std::fs::create_dir_all(&dir).map_err(|e| crate::Error::io(&dir, e))?;
    let stem = src.csv.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let file = dir.join(format!("{stem}-{}-{:?}.u8", g.size, g.resize).to_lowercase());
    let cache = Cache::open_or_build(&file, &paths, g, workers(cfg))?;
    if !cache.failures().is_empty() {
        eprintln!(
            "{}: {} images could not be read and will be skipped (first: {})",
            src.csv.display(),
            cache.failures().len(),
            cache.failures()[0].1
        );
        if cfg.data.strict {
            return Err(crate::Error::image(
                &paths[cache.failures()[0].0],
                format!("{} (--strict)", cache.failures()[0].1),
            ));
        }
    }
    Ok(Arc::new(cache))
}

/// Loader threads: `loader.workers`, or one per core.
pub fn workers(cfg: &Config) -> usize {
    if cfg.loader.workers > 0 {
        cfg.loader.workers
    } else {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
    }
}
