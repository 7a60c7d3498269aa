//! The batch loader: decodes, fits, augments and normalises images on worker threads with
//! bounded prefetch, and yields batches as candle tensors on the requested device.
//!
//! Determinism: the epoch's order is a shuffle drawn from
//! `keyed(seed, Stream::Shuffle, epoch, 0)` and each sample's augmentation from
//! `keyed(seed, Stream::Augment, epoch, item)`, so a batch's contents do not depend on the
//! number of workers or on scheduling. Batch `b` is built by worker `b % workers`, whose
//! results are read back in order, so batches also arrive in order.
//!
//! Unreadable images are skipped and recorded ([`Epoch::skipped`]) unless `strict` is set, in
//! which case the epoch yields the error and stops.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use crossbeam_channel::{bounded, Receiver};
use rand::seq::SliceRandom;

use super::augment::{self, AugmentConfig};
use super::image::{decode_file, fit, normalize_into, Geometry, Gray};
use super::preprocess::Preprocess;
use crate::error::{Error, Result};
use crate::rng::{keyed, Stream};

/// Where fitted (`size`×`size`, not yet augmented) images come from: image files, or the
/// memory-mapped [`Cache`](super::cache::Cache) of them.
pub trait Source: Send + Sync {
    /// Number of items.
    fn len(&self) -> usize;
    /// Whether there are no items.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The geometry every prepared image has.
    fn geometry(&self) -> Geometry;
    /// Item `i`, fitted to [`Source::geometry`].
    fn prepared(&self, i: usize) -> Result<Gray>;
    /// What to call item `i` in a skip report (its path).
    fn name(&self, i: usize) -> String;
}

/// Decodes and fits an image file (reduced-scale JPEG decoding where the geometry allows).
pub fn prepare_file(path: &std::path::Path, g: &Geometry) -> Result<Gray> {
    let img = decode_file(path, Some(g))?;
    fit(&img, g).map_err(|e| Error::image(path, e.to_string()))
}

/// Image files on disk, decoded on every access.
#[derive(Debug, Clone)]
pub struct Files {
    pub paths: Vec<PathBuf>,
    pub geometry: Geometry,
}

impl Source for Files {
    fn len(&self) -> usize {
        self.paths.len()
    }
    fn geometry(&self) -> Geometry {
        self.geometry
    }
    fn prepared(&self, i: usize) -> Result<Gray> {
        prepare_file(&self.paths[i], &self.geometry)
    }
    fn name(&self, i: usize) -> String {
        self.paths[i].display().to_string()
    }
}

/// Loads one image as a model input (what `predict` does per file), without augmentation.
///
/// # Shapes
/// Returns `[1, C, S, S]` with `C = p.channels`, `S = p.size`, on `device`.
pub fn load_input(path: &std::path::Path, p: &Preprocess, device: &Device) -> Result<Tensor> {
    p.validate()?;
    let img = prepare_file(path, &Geometry::from(p))?;
    let mut out = vec![0.0f32; p.channels * p.size * p.size];
    normalize_into(&img.to_f32(), p, &mut out)?;
    Ok(Tensor::from_vec(
        out,
        (1, p.channels, p.size, p.size),
        device,
    )?)
}

/// Batching, threading and failure policy.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Worker threads decoding batches (≥ 1).
    pub workers: usize,
    /// Batches decoded ahead of the consumer, in total over all workers (≥ 1).
    pub prefetch: usize,
    /// Shuffle the order each epoch (training); `false` keeps the item order (evaluation).
    pub shuffle: bool,
    /// Drop a last, smaller batch (training with BatchNorm).
    pub drop_last: bool,
    /// Fail on the first unreadable image instead of skipping it.
    pub strict: bool,
    /// Seed of the shuffle and augmentation draws.
    pub seed: u64,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 16,
            workers: 2,
            prefetch: 4,
            shuffle: true,
            drop_last: false,
            strict: false,
            seed: 0,
        }
    }
}

impl LoaderConfig {
    /// Checks the counts; errors name the field.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("batch_size", self.batch_size),
            ("workers", self.workers),
            ("prefetch", self.prefetch),
        ] {
            if v == 0 {
                return Err(Error::Config(format!("loader.{name} must be at least 1")));
            }
        }
        Ok(())
    }
}

/// One batch of model inputs.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[N, C, S, S]` normalised inputs.
    pub images: Tensor,
    /// Source item of each row of `images` (look targets up with these).
    pub items: Vec<usize>,
}

/// An image left out of an epoch, with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSkip {
    pub item: usize,
    pub name: String,
    pub reason: String,
}

/// A configured loader over (a subset of) a [`Source`].
#[derive(Clone)]
pub struct Loader {
    source: Arc<dyn Source>,
    items: Vec<usize>,
    pre: Preprocess,
    augment: AugmentConfig,
    cfg: LoaderConfig,
}

/// What a worker hands back for one batch.
struct Built {
    data: Vec<f32>,
    items: Vec<usize>,
    skipped: Vec<ImageSkip>,
}

impl Loader {
    /// A loader over all items of `source`. The source's geometry must be the preprocessing's.
    pub fn new(
        source: Arc<dyn Source>,
        pre: Preprocess,
        augment: AugmentConfig,
        cfg: LoaderConfig,
    ) -> Result<Self> {
        pre.validate()?;
        augment.validate()?;
        cfg.validate()?;
        if source.geometry() != Geometry::from(&pre) {
            return Err(Error::Config(format!(
                "image source prepares {:?} but the model's preprocessing asks for {:?}; \
                 rebuild the cache for this model",
                source.geometry(),
                Geometry::from(&pre)
            )));
        }
        let items = (0..source.len()).collect();
        Ok(Loader {
            source,
            items,
            pre,
            augment,
            cfg,
        })
    }

    /// Restricts the loader to these source items (e.g. a split), in this order.
    pub fn with_items(mut self, items: Vec<usize>) -> Result<Self> {
        if let Some(&bad) = items.iter().find(|&&i| i >= self.source.len()) {
            return Err(Error::Other(format!(
                "loader item {bad} out of range: the source has {} images",
                self.source.len()
            )));
        }
        self.items = items;
        Ok(self)
    }

    /// Item order of `epoch` (shuffled when configured), before batching.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order = self.items.clone();
        if self.cfg.shuffle {
            order.shuffle(&mut keyed(self.cfg.seed, Stream::Shuffle, epoch, 0));
        }
        order
    }

    /// Batches of `epoch` as item lists.
    pub fn batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let bs = self.cfg.batch_size;
        let mut out: Vec<Vec<usize>> = self.order(epoch).chunks(bs).map(|c| c.to_vec()).collect();
        if self.cfg.drop_last && out.last().is_some_and(|b| b.len() < bs) {
            out.pop();
        }
        out
    }

    /// Starts decoding `epoch` on the worker threads; iterate the result for batches on `device`.
    pub fn epoch(&self, epoch: u64, device: &Device) -> Epoch {
        let batches = Arc::new(self.batches(epoch));
        let workers = self.cfg.workers.min(batches.len()).max(1);
        let cap = self.cfg.prefetch.div_ceil(workers).max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = bounded::<Result<Built>>(cap);
            receivers.push(rx);
            let (batches, stop) = (batches.clone(), stop.clone());
            let (source, pre, aug, cfg) = (
                self.source.clone(),
                self.pre.clone(),
                self.augment.clone(),
                self.cfg.clone(),
            );
            handles.push(std::thread::spawn(move || {
                for b in (w..batches.len()).step_by(workers) {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let built = build(&*source, &batches[b], &pre, &aug, &cfg, epoch);
                    let failed = built.is_err();
                    if tx.send(built).is_err() || failed {
                        return;
                    }
                }
            }));
        }
        Epoch {
            receivers,
            handles,
            stop,
            next: 0,
            n_batches: batches.len(),
            shape: (self.pre.channels, self.pre.size),
            device: device.clone(),
            skipped: Vec::new(),
            done: false,
        }
    }
}

/// Decodes, augments and normalises one batch into a flat `[N, C, S, S]` buffer.
fn build(
    source: &dyn Source,
    batch: &[usize],
    pre: &Preprocess,
    aug: &AugmentConfig,
    cfg: &LoaderConfig,
    epoch: u64,
) -> Result<Built> {
    let per = pre.channels * pre.size * pre.size;
    let mut data = Vec::with_capacity(per * batch.len());
    let mut items = Vec::with_capacity(batch.len());
    let mut skipped = Vec::new();
    for &i in batch {
        match source.prepared(i) {
            Ok(img) => {
                let t = aug.draw(cfg.seed, epoch, i as u64, pre.size);
                let plane = augment::apply(&img, t.as_ref());
                let start = data.len();
                data.resize(start + per, 0.0);
                normalize_into(&plane, pre, &mut data[start..])?;
                items.push(i);
            }
            Err(e) if !cfg.strict => skipped.push(ImageSkip {
                item: i,
                name: source.name(i),
                reason: e.to_string(),
            }),
            Err(e) => return Err(e),
        }
    }
    Ok(Built {
        data,
        items,
        skipped,
    })
}

/// One epoch in flight: an iterator of batches, in order. Dropping it stops the workers.
pub struct Epoch {
    receivers: Vec<Receiver<Result<Built>>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    next: usize,
    n_batches: usize,
    /// `(channels, size)`.
    shape: (usize, usize),
    device: Device,
    skipped: Vec<ImageSkip>,
    done: bool,
}

impl Epoch {
    /// Images skipped so far in this epoch (unreadable files, when not strict).
    pub fn skipped(&self) -> &[ImageSkip] {
        &self.skipped
    }

    /// Number of batches planned for the epoch (batches whose images all fail are not yielded).
    pub fn n_batches(&self) -> usize {
        self.n_batches
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        while !self.done && self.next < self.n_batches {
            let rx = &self.receivers[self.next % self.receivers.len()];
            self.next += 1;
            let built = match rx.recv() {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Err(_) => {
                    self.done = true;
                    return Some(Err(Error::Other(
                        "a loader worker stopped unexpectedly (it panicked?)".into(),
                    )));
                }
            };
            self.skipped.extend(built.skipped);
            if built.items.is_empty() {
                continue;
            }
            let (c, s) = self.shape;
            let n = built.items.len();
            return Some(
                Tensor::from_vec(built.data, (n, c, s, s), &self.device)
                    .map(|images| Batch {
                        images,
                        items: built.items,
                    })
                    .map_err(Error::from),
            );
        }
        None
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receivers unblocks workers waiting to send.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::image::fixtures::{assert_matches, case, dir};
    use crate::data::preprocess::ResizeMode;

    fn files(names: &[&str], size: usize) -> Arc<dyn Source> {
        Arc::new(Files {
            paths: names.iter().map(|f| dir().join(f)).collect(),
            geometry: Geometry {
                size,
                resize: ResizeMode::Crop,
            },
        })
    }

    const MIXED: [&str; 9] = [
        "gray.jpg",
        "rgb.jpg",
        "big.jpg",
        "gray8.png",
        "tall8.png",
        "rgba8.png",
        "gray16.png",
        "square8.png",
        "mono2_lut.dcm",
    ];

    fn pre(size: usize) -> Preprocess {
        Preprocess {
            resize: ResizeMode::Crop,
            ..Preprocess::half(size)
        }
    }

    fn collect(l: &Loader, epoch: u64) -> Vec<(Vec<usize>, Vec<f32>)> {
        l.epoch(epoch, &Device::Cpu)
            .map(|b| {
                let b = b.unwrap();
                (
                    b.items,
                    b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn pipeline_matches_pillow_full_decode_and_resize() {
        // Reduced-scale decode + fit vs Pillow's full decode + BILINEAR crop-resize
        // (make_fixtures.py case big_fit40).
        let c = case("big_fit40");
        let g = Geometry {
            size: 40,
            resize: ResizeMode::Crop,
        };
        let img = prepare_file(&c.file, &g).unwrap();
        assert_matches(&img, &c, "big_fit40");
    }

    #[test]
    fn batches_are_identical_for_any_worker_count() {
        let cfg = LoaderConfig {
            batch_size: 4,
            workers: 1,
            prefetch: 1,
            seed: 11,
            ..Default::default()
        };
        let one = Loader::new(
            files(&MIXED, 20),
            pre(20),
            AugmentConfig::default(),
            cfg.clone(),
        )
        .unwrap();
        let three = Loader::new(
            files(&MIXED, 20),
            pre(20),
            AugmentConfig::default(),
            LoaderConfig {
                workers: 3,
                prefetch: 5,
                ..cfg.clone()
            },
        )
        .unwrap();
        for epoch in 0..2 {
            let a = collect(&one, epoch);
            assert_eq!(a, collect(&three, epoch), "epoch {epoch}");
            assert_eq!(
                a.iter().map(|b| b.0.len()).collect::<Vec<_>>(),
                vec![4, 4, 1]
            );
            let mut seen: Vec<usize> = a.iter().flat_map(|b| b.0.clone()).collect();
            seen.sort();
            assert_eq!(seen, (0..9).collect::<Vec<_>>());
        }
        // Another epoch reshuffles and redraws augmentation; another seed too.
        assert_ne!(collect(&one, 0), collect(&one, 1));
        let other = Loader::new(
            files(&MIXED, 20),
            pre(20),
            AugmentConfig::default(),
            LoaderConfig { seed: 12, ..cfg },
        )
        .unwrap();
        assert_ne!(collect(&one, 0), collect(&other, 0));
    }

    #[test]
    fn evaluation_order_and_values_are_plain() {
        // No shuffle, no augmentation: items in order; values = normalised fitted pixels.
        let p = Preprocess {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            ..pre(16)
        };
        let l = Loader::new(
            files(&MIXED, 16),
            p.clone(),
            AugmentConfig::off(),
            LoaderConfig {
                shuffle: false,
                batch_size: 5,
                ..Default::default()
            },
        )
        .unwrap()
        .with_items(vec![8, 0, 3])
        .unwrap();
        let got = collect(&l, 0);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, vec![8, 0, 3]);
        let fitted = prepare_file(&dir().join(MIXED[0]), &Geometry::from(&p))
            .unwrap()
            .to_f32();
        let second = &got[0].1[3 * 256..6 * 256];
        for c in 0..3 {
            for (k, v) in fitted.iter().enumerate() {
                let want = (v - p.mean[c]) / p.std[c];
                assert!((second[c * 256 + k] - want).abs() < 1e-5);
            }
        }
        // load_input: the same tensor for one file.
        let t = load_input(&dir().join(MIXED[0]), &p, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 3, 16, 16]);
        assert_eq!(
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            second.to_vec()
        );
    }

    #[test]
    fn unreadable_images_are_skipped_or_fatal_when_strict() {
        let names = ["gray.jpg", "nope.jpg", "gray8.png", "make_fixtures.py"];
        let cfg = LoaderConfig {
            batch_size: 2,
            shuffle: false,
            ..Default::default()
        };
        let l = Loader::new(files(&names, 8), pre(8), AugmentConfig::off(), cfg.clone()).unwrap();
        let mut epoch = l.epoch(0, &Device::Cpu);
        let items: Vec<Vec<usize>> = epoch.by_ref().map(|b| b.unwrap().items).collect();
        assert_eq!(items, vec![vec![0], vec![2]]);
        let skipped = epoch.skipped();
        assert_eq!(
            skipped.iter().map(|s| s.item).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert!(skipped[0].name.ends_with("nope.jpg") && skipped[0].reason.contains("nope.jpg"));
        assert!(
            skipped[1].reason.contains("not a JPEG, PNG or DICOM"),
            "{}",
            skipped[1].reason
        );

        let strict = Loader::new(
            files(&names, 8),
            pre(8),
            AugmentConfig::off(),
            LoaderConfig {
                strict: true,
                ..cfg
            },
        )
        .unwrap();
        let results: Vec<Result<Batch>> = strict.epoch(0, &Device::Cpu).collect();
        assert_eq!(results.len(), 1, "the epoch stops at the first error");
        assert!(results[0]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("nope.jpg"));
    }

    #[test]
    fn drop_last_and_early_drop() {
        let l = Loader::new(
            files(&MIXED, 8),
            pre(8),
            AugmentConfig::off(),
            LoaderConfig {
                batch_size: 4,
                drop_last: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(l.batches(0).len(), 2);
        // Dropping an epoch after one batch stops the workers (the test would hang otherwise).
        let mut e = l.epoch(0, &Device::Cpu);
        assert_eq!(e.next().unwrap().unwrap().images.dims(), &[4, 3, 8, 8]);
        drop(e);
    }

    #[test]
    fn bad_configuration_is_refused() {
        let e = Loader::new(
            files(&MIXED, 8),
            pre(16),
            AugmentConfig::off(),
            LoaderConfig::default(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("preprocessing"), "{e}");
        let e = Loader::new(
            files(&MIXED, 8),
            pre(8),
            AugmentConfig::off(),
            LoaderConfig {
                workers: 0,
                ..Default::default()
            },
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("loader.workers"), "{e}");
        let e = toml::from_str::<LoaderConfig>("batch = 3").unwrap_err();
        assert!(e.to_string().contains("batch"), "{e}");
        let l = Loader::new(
            files(&MIXED, 8),
            pre(8),
            AugmentConfig::off(),
            LoaderConfig::default(),
        )
        .unwrap();
        assert!(l.with_items(vec![9]).is_err());
    }
}
