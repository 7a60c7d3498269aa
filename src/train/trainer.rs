//! The training loop: policy-applied batches → model → per-element loss → sample weights →
//! optimizer step; tuning-set AUROC every epoch, best and last checkpoints, early stopping,
//! resume, and a final report on the test set. The best checkpoint gets `calibration.json`
//! (per-finding temperatures and thresholds fitted on the tuning set, [`crate::eval::Tuned`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::sets::{self, SplitSet};
use super::state::{self, EpochRecord, TrainState};
use crate::config::Config;
use crate::data::augment::AugmentConfig;
use crate::data::loader::{Loader, LoaderConfig};
use crate::data::preprocess::Preprocess;
use crate::error::{Error, Result};
use crate::eval::{bootstrap_cis, summarize, BootstrapCis, BootstrapConfig, Summary};
use crate::model::{self, checkpoint, Classifier, ModelConfig, ModelVars};
use crate::noise::Noise;
use crate::optim;
use crate::provenance::{write_json, write_run_header};

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub out: PathBuf,
    pub preset: String,
    pub best_epoch: Option<usize>,
    pub epochs_run: usize,
    /// The best checkpoint on the tuning set.
    pub tune: Summary,
    /// The best checkpoint on the reported test set, with bootstrap CIs.
    pub test: Option<(Summary, BootstrapCis)>,
    pub history: Vec<EpochRecord>,
}

/// `metrics.json`: no timings, so a resumed run writes the same file as an uninterrupted one.
#[derive(Serialize)]
struct MetricsFile<'a> {
    preset: &'a str,
    model: &'a ModelConfig,
    best_epoch: Option<usize>,
    epochs_run: usize,
    stopped_early: bool,
    tune_set: String,
    test_set: Option<String>,
    kind: &'static str,
    history: &'a [EpochRecord],
    tune: &'a Summary,
    test: Option<&'a Summary>,
    test_cis: Option<&'a BootstrapCis>,
}

/// How this invocation runs (not part of the saved configuration).
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Continue from `cfg.out/last` when it exists.
    pub resume: bool,
    /// Stop after this epoch (1-based), leaving a checkpoint to `resume` from.
    pub stop_after_epoch: Option<usize>,
}

/// Trains according to `cfg` (already validated), writing into `cfg.out`.
pub fn run(cfg: &Config, opts: RunOptions) -> Result<Outcome> {
    let resume = opts.resume;
    let device = crate::config::parse_device(&cfg.device)?.device()?;
    let dtype = cfg.train.precision.dtype();
    if dtype != DType::F32 && device.is_cpu() {
        eprintln!(
            "note: train.precision = {:?} on the CPU runs candle's {dtype:?} kernels, which are \
             slower than f32 here; mixed precision pays on CUDA",
            cfg.train.precision
        );
    }
    if device.is_cpu() {
        if let Some(what) = crate::ops::sgemm::set_matmul_precision(cfg.train.matmul_precision) {
            eprintln!("note: train.matmul_precision = high: {what}");
        }
    }
    crate::commands::synth::ensure_dataset(cfg)?;
    let out = cfg.out.clone();
    let last_dir = out.join("last");
    let best_dir = out.join("best");
    let resuming = resume && last_dir.join(state::STATE_FILE).is_file();

    // Model: from `init` (head-only retraining), from the last checkpoint (resume), or new.
    let (model, vars, model_cfg, pre) = if resuming {
        let l = checkpoint::load(&last_dir, dtype, &device)?;
        let (m, p) = (l.meta.model.clone(), l.meta.preprocess.clone());
        (l.model, l.vars, m, p)
    } else if let Some(init) = &cfg.train.init {
        let l = checkpoint::load(init, dtype, &device)?;
        let (m, p) = (l.meta.model.clone(), l.meta.preprocess.clone());
        (l.model, l.vars, m, p)
    } else {
        new_model(cfg, dtype, &device)?
    };

    let sets = sets::load(cfg, &pre)?;
    write_run_header(&out, cfg, &sets.inputs)?;
    let findings = sets.train.ds.findings.clone();
    let mut noise = Noise::new(&cfg.noise, &findings, cfg.seed)?;
    if noise.layout().width() != model.num_classes() {
        return Err(Error::Config(format!(
            "the model has {} outputs but the uncertainty policy needs {} for {} findings; \
             was the checkpoint trained with another policy?",
            model.num_classes(),
            noise.layout().width(),
            findings.len()
        )));
    }
    let rows: Vec<&[crate::data::Observation]> = sets
        .train
        .items
        .iter()
        .map(|&i| sets.train.labels(i))
        .collect();
    noise.fit(&rows)?;

    let head_only = cfg.train.head_only;
    let params = optim::params_from_varmap(&vars.params, |name| {
        !head_only || name.starts_with(model.head_prefix())
    })?;
    let trainable: Vec<candle_core::Var> = params.iter().map(|p| p.var.clone()).collect();
    let mut opt = cfg.train.optimizer.build(params)?;
    let mut st = if resuming {
        state::load_optimizer(&last_dir, opt.as_mut(), &device)?;
        let s = state::load_state(&last_dir)?;
        eprintln!(
            "resuming {} after epoch {} (step {})",
            out.display(),
            s.epoch,
            s.step
        );
        s
    } else {
        TrainState::default()
    };

    let input = if head_only {
        Input::Features(cached_features(
            model.as_ref(),
            &sets.train,
            &pre,
            cfg,
            &device,
        )?)
    } else {
        Input::Images(
            Loader::new(
                sets.train.source.clone(),
                pre.clone(),
                cfg.augment.clone(),
                LoaderConfig {
                    batch_size: cfg.train.batch_size,
                    workers: sets::workers(cfg),
                    prefetch: cfg.loader.prefetch,
                    shuffle: true,
                    drop_last: sets.train.items.len() > cfg.train.batch_size,
                    strict: cfg.data.strict,
                    seed: cfg.seed,
                },
            )?
            .with_items(sets.train.items.clone())?,
        )
    };
    let steps_per_epoch = input.n_batches(cfg);
    let schedule = cfg.train.schedule(steps_per_epoch);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join("metrics.jsonl"))
        .map_err(|e| Error::io(out.join("metrics.jsonl"), e))?;

    eprintln!(
        "training {} ({} parameters{}) on {} images, tuning on {}, {} epochs of {} steps, device {}",
        model_cfg.preset,
        vars.num_params(),
        if head_only { ", head only" } else { "" },
        sets.train.items.len(),
        sets.tune.items.len(),
        cfg.train.epochs,
        steps_per_epoch,
        cfg.device
    );

    let last_epoch = opts
        .stop_after_epoch
        .unwrap_or(usize::MAX)
        .min(cfg.train.epochs);
    while st.epoch < last_epoch && !st.stopped_early {
        let epoch = st.epoch as u64;
        let t0 = Instant::now();
        let bar = progress(
            steps_per_epoch as u64,
            &format!("epoch {}/{}", epoch + 1, cfg.train.epochs),
        );
        let (mut loss_sum, mut n_steps, mut images, mut skipped) = (0.0f64, 0usize, 0usize, 0usize);
        let mut step_fn =
            |b: usize, x: Tensor, items: &[usize], st: &mut TrainState| -> Result<()> {
                let rows: Vec<&[crate::data::Observation]> =
                    items.iter().map(|&i| sets.train.labels(i)).collect();
                let samples: Vec<u64> = items.iter().map(|&i| i as u64).collect();
                let (x, labels) = noise.prepare(&x, &rows, &samples, epoch, b as u64)?;
                model.set_rng_step(st.step);
                let outputs = if head_only {
                    model.head(&x)?
                } else {
                    model.forward(&x, true)?
                };
                let sl = noise.loss(&outputs, &labels, epoch)?;
                let loss = sl.total.to_dtype(DType::F32)?.to_scalar::<f32>()?;
                if !loss.is_finite() {
                    return Err(Error::Other(format!(
                    "the loss became {loss} at epoch {} step {}; training stopped. The last good \
                     checkpoint is {} (lower train.lr or set train.clip_grad_norm)",
                    epoch + 1,
                    st.step,
                    last_dir.display()
                )));
                }
                // f16 mixed precision scales the loss (and so every gradient) by the optimizer's
                // loss scale; the optimizer un-scales inside its update.
                let loss_scale = opt.loss_scale();
                let grads = opt.backward(&sl.total)?;
                let clip = match cfg.train.clip_grad_norm {
                    Some(c) => {
                        let refs: Vec<&candle_core::Var> = trainable.iter().collect();
                        let norm = optim::global_grad_norm(&grads, &refs)? / loss_scale;
                        optim::clip_factor(norm, c)
                    }
                    None => 1.0,
                };
                let lr = schedule.lr(cfg.train.lr, st.step);
                opt.step_scaled(&grads, lr, clip)?;
                st.step += 1;
                loss_sum += loss as f64;
                n_steps += 1;
                images += items.len();
                let rate = images as f64 / t0.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!(
                    "loss {:.4} · {rate:.0} img/s",
                    loss_sum / n_steps as f64
                ));
                bar.inc(1);
                if st.step % cfg.train.log_every as u64 == 0 {
                    let line = serde_json::json!({
                        "kind": "step", "epoch": epoch + 1, "step": st.step, "loss": loss,
                        "lr": lr, "img_per_s": rate,
                    });
                    let _ = writeln!(log, "{line}");
                }
                Ok(())
            };
        match &input {
            Input::Images(loader) => {
                let mut ep = loader.epoch(epoch, &device);
                let mut b = 0;
                for batch in ep.by_ref() {
                    let batch = batch?;
                    step_fn(b, batch.images, &batch.items, &mut st)?;
                    b += 1;
                }
                skipped = ep.skipped().len();
            }
            Input::Features(f) => {
                for (b, idx) in f.batches(cfg, epoch).into_iter().enumerate() {
                    let rows: Vec<u32> = idx.iter().map(|&r| r as u32).collect();
                    let ix = Tensor::new(rows.as_slice(), &device)?;
                    let x = f.features.index_select(&ix, 0)?;
                    let items: Vec<usize> = idx.iter().map(|&r| f.items[r]).collect();
                    step_fn(b, x, &items, &mut st)?;
                }
            }
        }
        bar.finish_and_clear();
        let train_loss = loss_sum / n_steps.max(1) as f64;
        let (tune_sum, _) = evaluate(model.as_ref(), &noise, &sets.tune, &pre, cfg, &device)?;
        st.epoch += 1;
        let metric = tune_sum.mean_all.value;
        let rec = EpochRecord {
            epoch: st.epoch,
            train_loss: train_loss as f32,
            tune_mean_auroc: metric.map(|v| v as f32),
            tune_mean_auroc_5: tune_sum.mean_competition.value.map(|v| v as f32),
            skipped_images: skipped,
        };
        let metric = metric.map(|v| v as f32);
        let improved = match (metric, st.best_metric) {
            (Some(m), Some(b)) => m > b,
            (Some(_), None) => true,
            _ => st.best_epoch.is_none(),
        };
        if improved {
            st.best_metric = metric;
            st.best_epoch = Some(st.epoch);
            st.bad_epochs = 0;
            checkpoint::save(
                &best_dir,
                &model_cfg,
                &pre,
                &vars,
                Some(format!("epoch {}", st.epoch)),
            )?;
        } else {
            st.bad_epochs += 1;
        }
        if let Some(p) = cfg.train.patience {
            if st.bad_epochs >= p {
                st.stopped_early = true;
            }
        }
        st.history.push(rec.clone());
        checkpoint::save(
            &last_dir,
            &model_cfg,
            &pre,
            &vars,
            Some(format!("epoch {}", st.epoch)),
        )?;
        state::save(&last_dir, opt.as_ref(), &st)?;
        let line = serde_json::json!({
            "kind": "epoch", "epoch": st.epoch, "train_loss": train_loss,
            "tune_mean_auroc": metric, "tune_mean_auroc_5": rec.tune_mean_auroc_5,
            "seconds": t0.elapsed().as_secs_f64(), "skipped_images": skipped,
            "best": improved,
        });
        let _ = writeln!(log, "{line}");
        eprintln!(
            "epoch {}/{}: train loss {:.4}, tuning mean AUROC {} (5 tasks {}){}{}",
            st.epoch,
            cfg.train.epochs,
            train_loss,
            fmt_opt(metric),
            fmt_opt(rec.tune_mean_auroc_5),
            if improved { ", best so far" } else { "" },
            if st.stopped_early {
                "; early stop (train.patience)"
            } else {
                ""
            }
        );
    }

    // Final: the best checkpoint on the tuning and test sets.
    let set_name = |s: &SplitSet| s.ds.csv.display().to_string();
    let best = checkpoint::load(&best_dir, dtype, &device)?;
    let (tune, tune_preds) = evaluate(best.model.as_ref(), &noise, &sets.tune, &pre, cfg, &device)?;
    // Temperatures and thresholds fitted on the tuning set, saved with the checkpoint
    // (`eval` / `predict` / `relabel` apply them).
    crate::eval::Tuned::fit(&tune_preds, &set_name(&sets.tune)).save(&best_dir)?;
    let test = match &sets.test {
        Some(t) => {
            let (s, preds) = evaluate(best.model.as_ref(), &noise, t, &pre, cfg, &device)?;
            let cis = bootstrap_cis(
                &preds,
                &BootstrapConfig {
                    resamples: cfg.train.bootstrap.max(1),
                    seed: cfg.seed,
                    ..Default::default()
                },
            )?;
            Some((s, cis))
        }
        None => None,
    };
    write_json(
        &out.join("metrics.json"),
        &MetricsFile {
            preset: &model_cfg.preset,
            model: &model_cfg,
            best_epoch: st.best_epoch,
            epochs_run: st.epoch,
            stopped_early: st.stopped_early,
            tune_set: set_name(&sets.tune),
            test_set: sets.test.as_ref().map(set_name),
            kind: "single model",
            history: &st.history,
            tune: &tune,
            test: test.as_ref().map(|t| &t.0),
            test_cis: test.as_ref().map(|t| &t.1),
        },
    )?;
    Ok(Outcome {
        out,
        preset: model_cfg.preset.clone(),
        best_epoch: st.best_epoch,
        epochs_run: st.epoch,
        tune,
        test,
        history: st.history,
    })
}

/// A freshly initialised model for `cfg` (pretrained weights imported when configured); its
/// head width follows the uncertainty policy's layout.
fn new_model(
    cfg: &Config,
    dtype: DType,
    device: &Device,
) -> Result<(Box<dyn Classifier>, ModelVars, ModelConfig, Preprocess)> {
    let findings: Vec<String> = crate::data::CHEXPERT_FINDINGS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let probe = Noise::new(&cfg.noise, &findings, cfg.seed)?;
    let model_cfg = cfg.model.model_config(cfg.size, probe.layout().width())?;
    let pre = model_cfg.preprocess()?;
    let vars = ModelVars::new(cfg.seed, dtype, device);
    let model = model::build(&model_cfg, &vars)?;
    if let Some(w) = &cfg.model.weights {
        let summary = model::weights::import(w, &vars, model.head_prefix(), &Default::default())?;
        eprintln!("{summary}");
    }
    Ok((model, vars, model_cfg, pre))
}

/// Where training batches come from.
enum Input {
    Images(Loader),
    Features(FeatureCache),
}

impl Input {
    fn n_batches(&self, cfg: &Config) -> usize {
        match self {
            Input::Images(l) => l.batches(0).len(),
            Input::Features(f) => f.batches(cfg, 0).len(),
        }
    }
}

/// Backbone features of every training item, computed once (eval mode, no augmentation) for
/// head-only retraining.
struct FeatureCache {
    /// `[N, F]`.
    features: Tensor,
    /// Dataset item of each row.
    items: Vec<usize>,
}

impl FeatureCache {
    /// Row batches of `epoch`, shuffled with the same keyed draw the image loader uses.
    fn batches(&self, cfg: &Config, epoch: u64) -> Vec<Vec<usize>> {
        use rand::seq::SliceRandom;
        let mut order: Vec<usize> = (0..self.items.len()).collect();
        order.shuffle(&mut crate::rng::keyed(
            cfg.seed,
            crate::rng::Stream::Shuffle,
            epoch,
            0,
        ));
        order
            .chunks(cfg.train.batch_size)
            .map(|c| c.to_vec())
            .collect()
    }
}

fn cached_features(
    model: &dyn Classifier,
    split: &SplitSet,
    pre: &Preprocess,
    cfg: &Config,
    device: &Device,
) -> Result<FeatureCache> {
    let loader = eval_loader(split, pre, cfg)?;
    let bar = progress(loader.batches(0).len() as u64, "backbone features");
    let mut feats = Vec::new();
    let mut items = Vec::new();
    for batch in loader.epoch(0, device) {
        let batch = batch?;
        feats.push(model.features(&batch.images, false)?.detach());
        items.extend(batch.items);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(FeatureCache {
        features: Tensor::cat(&feats, 0)?,
        items,
    })
}

fn eval_loader(split: &SplitSet, pre: &Preprocess, cfg: &Config) -> Result<Loader> {
    Loader::new(
        split.source.clone(),
        pre.clone(),
        AugmentConfig::off(),
        LoaderConfig {
            batch_size: cfg.train.eval_batch_size,
            workers: sets::workers(cfg),
            prefetch: cfg.loader.prefetch,
            shuffle: false,
            drop_last: false,
            strict: cfg.data.strict,
            seed: cfg.seed,
        },
    )?
    .with_items(split.items.clone())
}

/// Predicts a split in eval mode and summarises it (images that cannot be read are left out
/// and reported).
pub fn evaluate(
    model: &dyn Classifier,
    noise: &Noise,
    split: &SplitSet,
    pre: &Preprocess,
    cfg: &Config,
    device: &Device,
) -> Result<(Summary, crate::eval::Predictions)> {
    let loader = eval_loader(split, pre, cfg)?;
    let mut probs: Vec<f64> = Vec::new();
    let mut items = Vec::new();
    let mut ep = loader.epoch(0, device);
    for batch in ep.by_ref() {
        let batch = batch?;
        let out = model.forward(&batch.images, false)?;
        let p = noise.probabilities(&out)?.to_dtype(DType::F32)?;
        for row in p.to_vec2::<f32>()? {
            probs.extend(row.into_iter().map(|v| v as f64));
        }
        items.extend(batch.items);
    }
    if !ep.skipped().is_empty() {
        eprintln!(
            "{} set: {} images could not be read and were left out",
            split.name,
            ep.skipped().len()
        );
    }
    let view = SplitSet {
        items,
        ..split.clone()
    };
    let preds = view.predictions(probs)?;
    Ok((summarize(&preds), preds))
}

fn progress(len: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} (ETA {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}

fn fmt_opt(v: Option<f32>) -> String {
    v.map(|x| format!("{x:.4}"))
        .unwrap_or_else(|| "undefined".into())
}

/// A Markdown table of a summary with CIs: finding, AUROC [95% CI], AP, n+, n−.
pub fn markdown_table(title: &str, s: &Summary, cis: Option<&BootstrapCis>) -> String {
    let mut t = format!(
        "## {title}\n\n| Finding | AUROC [95% CI] | AP | n+ | n− |\n|---|---|---:|---:|---:|\n"
    );
    for (k, f) in s.per_finding.iter().enumerate() {
        let ci = cis
            .and_then(|c| c.per_finding.get(k))
            .and_then(|c| c.ci.as_ref())
            .map(|i| format!(" [{:.3}, {:.3}]", i.lo, i.hi))
            .unwrap_or_default();
        t.push_str(&format!(
            "| {} | {}{} | {} | {} | {} |\n",
            f.finding,
            f.auroc
                .map(|a| format!("{a:.3}"))
                .unwrap_or_else(|| "undefined".into()),
            ci,
            f.ap.map(|a| format!("{a:.3}"))
                .unwrap_or_else(|| "—".into()),
            f.n_pos,
            f.n_neg
        ));
    }
    for (name, m, ci) in [
        (
            "MEAN (5 competition tasks)",
            &s.mean_competition,
            cis.and_then(|c| c.mean_competition.as_ref()),
        ),
        (
            "MEAN (all defined findings)",
            &s.mean_all,
            cis.and_then(|c| c.mean_all.as_ref()),
        ),
    ] {
        t.push_str(&format!(
            "| **{name}** | **{}**{} | | | |\n",
            m.value
                .map(|a| format!("{a:.3}"))
                .unwrap_or_else(|| "undefined".into()),
            ci.map(|i| format!(" [{:.3}, {:.3}]", i.lo, i.hi))
                .unwrap_or_default()
        ));
    }
    t
}

/// Whether `dir` holds a training checkpoint (for `--resume`).
pub fn has_checkpoint(dir: &Path) -> bool {
    dir.join("last").join(state::STATE_FILE).is_file()
}
