//! Runs an [`Experiment`]: every (column, seed) in sequence into
//! `<results>/<column>/seed-<s>/`, resumable, then the table.
//!
//! A (column, seed) folder of a `train` experiment is
//! - **finished** when its `metrics.json` parses, has a test summary and ran all epochs (or
//!   stopped early) — it is skipped;
//! - **interrupted** when it has a `last/` checkpoint but no complete `metrics.json` — the
//!   trainer resumes it (`--resume`);
//! - **new** otherwise.
//!
//! A folder of a `pipeline` experiment is one pipeline run (`pipeline.toml`, `01-train/`, ...):
//! finished when its `test_predictions.csv` exists (written once every stage has), interrupted
//! when it has a `pipeline.toml` (the pipeline resumes at its first unfinished stage).
//!
//! A folder whose saved `config.toml` (`pipeline.toml`) differs from what the experiment now
//! resolves to is an error (stale results must not be mixed into a table silently).
//!
//! After training, the best checkpoint's test-set probabilities are written to
//! `test_predictions.csv` (the trainer reports only summaries; a pipeline's are its final eval
//! stage's `predictions.csv`); the table is computed from those files and the test CSV's
//! labels, so it can always be rebuilt from the folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::DType;
use serde::Serialize;

use super::spec::{Column, Experiment};
use super::table::{self, AblationTable, ColumnInput, TableMeta};
use crate::config::Config;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::report::{read_predictions_csv, write_predictions_csv};
use crate::eval::Predictions;
use crate::model::checkpoint;
use crate::noise::Noise;
use crate::pipeline::PipelineConfig;
use crate::provenance::{write_json, Provenance};

/// Test-set probabilities of a run's best checkpoint, beside its `metrics.json`.
pub const PREDICTIONS_FILE: &str = "test_predictions.csv";

/// How `noisycxr ablate` runs (not part of the experiment).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Results folder (default `<experiment file's folder>/results/<name>`).
    pub out: Option<PathBuf>,
    /// Train at most this many (column, seed) runs in this invocation, then stop (the next
    /// invocation continues).
    pub max_runs: Option<usize>,
    /// Overrides every run's `device`.
    pub device: Option<String>,
    /// Print the plan and what is finished; train nothing.
    pub dry_run: bool,
}

/// What an invocation did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub dir: PathBuf,
    pub trained: usize,
    pub skipped: usize,
    /// `None` when runs remain (stopped by `max_runs`, or a dry run).
    pub table: Option<AblationTable>,
}

/// State of one (column, seed) folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Finished,
    Interrupted,
    New,
}

/// Results folder of `exp`.
pub fn results_dir(exp: &Experiment, opts: &Options) -> PathBuf {
    opts.out.clone().unwrap_or_else(|| {
        exp.file
            .parent()
            .unwrap_or(Path::new("."))
            .join("results")
            .join(&exp.name)
    })
}

/// Folder of one (column, seed).
pub fn run_dir(results: &Path, column: &str, seed: u64) -> PathBuf {
    results.join(column).join(format!("seed-{seed}"))
}

/// Whether `metrics.json` in `dir` is complete for `cfg`.
pub fn metrics_complete(dir: &Path, cfg: &Config) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("metrics.json")) else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    let ran = v["epochs_run"].as_u64().unwrap_or(0);
    let early = v["stopped_early"].as_bool().unwrap_or(false);
    !v["test"].is_null() && (early || ran >= cfg.train.epochs as u64)
}

/// The status of `dir` for `cfg`; an error when the folder was made by another configuration.
pub fn status(dir: &Path, cfg: &Config) -> Result<Status> {
    refuse_other_kind(dir, "pipeline.toml", "a pipeline")?;
    let saved = dir.join("config.toml");
    if saved.is_file() {
        let mut old = Config::from_file(&saved)?;
        // Where it was written from and on which device do not change the result.
        old.out = cfg.out.clone();
        old.device = cfg.device.clone();
        if &old != cfg {
            return Err(Error::input(
                &saved,
                format!(
                    "this run was made with another configuration than the experiment now \
                     gives; delete {} to rerun it (or restore the experiment file)",
                    dir.display()
                ),
            ));
        }
    }
    Ok(if metrics_complete(dir, cfg) {
        Status::Finished
    } else if crate::train::trainer::has_checkpoint(dir) {
        Status::Interrupted
    } else {
        Status::New
    })
}

/// The status of a pipeline run's folder `dir` for `pipe`; an error when the folder was made
/// by another pipeline.
pub fn pipeline_status(dir: &Path, pipe: &PipelineConfig) -> Result<Status> {
    let saved = dir.join("pipeline.toml");
    if !saved.is_file() {
        refuse_other_kind(dir, "config.toml", "a train")?;
        return Ok(Status::New);
    }
    let mut old = PipelineConfig::from_file(&saved)?;
    // The device it ran on does not change the result.
    match pipe.base.get("device") {
        Some(d) => old.base.insert("device".into(), d.clone()),
        None => old.base.remove("device"),
    };
    if &old != pipe {
        return Err(Error::input(
            &saved,
            format!(
                "this pipeline run was made with another configuration than the experiment now \
                 gives; delete {} to rerun it (or restore the experiment file)",
                dir.display()
            ),
        ));
    }
    Ok(if dir.join(PREDICTIONS_FILE).is_file() {
        Status::Finished
    } else {
        Status::Interrupted
    })
}

/// An error when `dir` holds `marker`, the file a run of the other experiment kind leaves.
fn refuse_other_kind(dir: &Path, marker: &str, kind: &str) -> Result<()> {
    let p = dir.join(marker);
    if p.is_file() {
        return Err(Error::input(
            &p,
            format!(
                "this folder holds {kind} experiment's run (the experiment's kind changed); \
                 delete {} to rerun it",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// One (column, seed) of the plan.
struct Planned<'a> {
    col: &'a Column,
    seed: u64,
    dir: PathBuf,
    /// The training config (train experiments) or the pipeline's base (pipeline experiments).
    cfg: Config,
    /// The whole pipeline (pipeline experiments).
    pipe: Option<PipelineConfig>,
}

impl Planned<'_> {
    fn status(&self) -> Result<Status> {
        match &self.pipe {
            Some(p) => pipeline_status(&self.dir, p),
            None => status(&self.dir, &self.cfg),
        }
    }

    /// Trains (or resumes) this run.
    fn train(&self) -> Result<()> {
        match &self.pipe {
            Some(p) => {
                let o = crate::pipeline::run(p, &self.dir)?;
                let src = o.final_predictions.filter(|_| o.complete).ok_or_else(|| {
                    Error::Other(format!(
                        "{}: the pipeline finished without test predictions from an eval stage",
                        self.dir.display()
                    ))
                })?;
                let tmp = self.dir.join(format!("{PREDICTIONS_FILE}.partial"));
                std::fs::copy(&src, &tmp).map_err(|e| Error::io(&src, e))?;
                let dst = self.dir.join(PREDICTIONS_FILE);
                std::fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))
            }
            None => crate::train::run(
                &self.cfg,
                crate::train::RunOptions {
                    resume: true,
                    stop_after_epoch: None,
                },
            )
            .map(|_| ()),
        }
    }

    /// The run's test predictions (written by [`Planned::train`] for pipelines; evaluated
    /// from the best checkpoint and written here for training runs).
    fn test_predictions(&self) -> Result<Predictions> {
        match &self.pipe {
            Some(_) => read_test_predictions(
                &self.dir.join(PREDICTIONS_FILE),
                &test_dataset(&self.cfg)?.0,
            ),
            None => write_test_predictions(&self.cfg, &self.dir),
        }
    }
}

/// One line of `runs.jsonl`.
#[derive(Serialize)]
struct RunLine<'a> {
    column: &'a str,
    seed: u64,
    action: &'a str,
    seconds: f64,
    test_mean_all: Option<f64>,
}

/// Machine description for the provenance and the table footer.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub os: &'static str,
    pub arch: &'static str,
    pub cpus: usize,
    pub cpu_model: Option<String>,
    pub memory_gib: Option<f64>,
    pub hostname: Option<String>,
}

impl Machine {
    /// What this process can see of the machine (Linux `/proc`; fields absent elsewhere).
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string());
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map(|kb| (kb / (1024.0 * 1024.0) * 10.0).round() / 10.0);
        Machine {
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            memory_gib,
            hostname: std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty()),
        }
    }

    /// One line for a table footer.
    pub fn line(&self) -> String {
        format!(
            "{} {}, {} CPUs{}{}",
            self.os,
            self.arch,
            self.cpus,
            self.cpu_model
                .as_ref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default(),
            self.memory_gib
                .map(|g| format!(", {g} GiB memory"))
                .unwrap_or_default()
        )
    }
}

/// `provenance.json` of the results folder.
#[derive(Serialize)]
struct AblateProvenance<'a> {
    #[serde(flatten)]
    run: &'a Provenance,
    machine: &'a Machine,
    devices: Vec<String>,
}

/// Runs every (column, seed) of `exp` that is not finished, then writes the table.
pub fn run(exp: &Experiment, opts: &Options) -> Result<Outcome> {
    let dir = results_dir(exp, opts);
    let mut plan: Vec<Planned> = Vec::new();
    for col in &exp.columns {
        for &seed in &exp.seeds {
            let d = run_dir(&dir, &col.name, seed);
            let (mut cfg, mut pipe) = exp.resolve(col, seed, &d)?;
            if let Some(dev) = &opts.device {
                cfg.device = dev.clone();
                cfg.validate()?;
                if let Some(p) = &mut pipe {
                    p.base
                        .insert("device".into(), toml::Value::String(dev.clone()));
                    p.validate(&d)?;
                }
            }
            plan.push(Planned {
                col,
                seed,
                dir: d,
                cfg,
                pipe,
            });
        }
    }
    let total = plan.len();
    println!(
        "ablation {}: {} columns x {} seeds = {total} runs into {}",
        exp.name,
        exp.columns.len(),
        exp.seeds.len(),
        dir.display()
    );
    if !opts.dry_run {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        save_experiment(exp, &dir)?;
        // The data first (the noise lab is generated when absent), and a test split must exist.
        let cfg = &plan[0].cfg;
        crate::commands::synth::ensure_dataset(cfg)?;
        if crate::data::source::resolve(&cfg.data)?.test.is_none() {
            return Err(Error::Config(format!(
                "experiment {}: the dataset has no test split; the table reports the test \
                 split, never the tuning split (set data.test_csv)",
                exp.file.display()
            )));
        }
    }
    let (mut trained, mut skipped) = (0usize, 0usize);
    for (i, run) in plan.iter().enumerate() {
        let (col, seed, d) = (run.col, &run.seed, &run.dir);
        let tag = format!("[{}/{total}] {} seed {seed}", i + 1, col.name);
        let st = run.status()?;
        let have_preds = d.join(PREDICTIONS_FILE).is_file();
        if opts.dry_run {
            let what = match (st, have_preds) {
                (Status::Finished, true) => "finished",
                (Status::Finished, false) => "finished, test predictions to write",
                (Status::Interrupted, _) => "interrupted, would resume",
                (Status::New, _) => "would train",
            };
            println!("{tag}: {what} ({})", d.display());
            continue;
        }
        if st == Status::Finished && have_preds {
            println!(
                "{tag}: skipped (finished: {})",
                d.join("metrics.json").display()
            );
            skipped += 1;
            continue;
        }
        let t0 = Instant::now();
        let action = if st == Status::Finished {
            println!("{tag}: finished; writing its test predictions");
            "predicted"
        } else {
            if opts.max_runs.is_some_and(|m| trained >= m) {
                println!(
                    "stopping after {trained} trained runs (--max-runs); run the same command \
                     again to continue"
                );
                return Ok(Outcome {
                    dir,
                    trained,
                    skipped,
                    table: None,
                });
            }
            let resume = st == Status::Interrupted;
            println!(
                "{tag}: {} -> {}",
                if resume { "resuming" } else { "training" },
                d.display()
            );
            run.train()?;
            trained += 1;
            if resume {
                "resumed"
            } else {
                "trained"
            }
        };
        let preds = run.test_predictions()?;
        let mean = crate::eval::summarize(&preds).mean_all.value;
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{tag}: {action} in {secs:.0} s; test mean AUROC (all defined findings) {}",
            mean.map(|m| format!("{m:.4}"))
                .unwrap_or_else(|| "undefined".into())
        );
        append_jsonl(
            &dir.join("runs.jsonl"),
            &RunLine {
                column: &col.name,
                seed: *seed,
                action,
                seconds: secs,
                test_mean_all: mean,
            },
        )?;
    }
    if opts.dry_run {
        return Ok(Outcome {
            dir,
            trained,
            skipped,
            table: None,
        });
    }
    let t = write_table(
        exp,
        &dir,
        &plan.iter().map(|p| p.cfg.clone()).collect::<Vec<_>>(),
    )?;
    println!(
        "table: {} and {}",
        dir.join("table.md").display(),
        dir.join("table.csv").display()
    );
    Ok(Outcome {
        dir,
        trained,
        skipped,
        table: Some(t),
    })
}

fn append_jsonl<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    use std::io::Write;
    let line = serde_json::to_string(v).map_err(|e| Error::Other(e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    writeln!(f, "{line}").map_err(|e| Error::io(path, e))
}

/// `experiment.toml`: the experiment as resolved (base, `[common]`, every column's overrides,
/// variables); every run's own resolved config is its `config.toml`.
fn save_experiment(exp: &Experiment, dir: &Path) -> Result<()> {
    let p = dir.join("experiment.toml");
    let text = toml::to_string_pretty(exp).map_err(|e| Error::Other(e.to_string()))?;
    let head = "# The experiment as resolved by `noisycxr ablate` (base, [common], every column's \
                overrides, variables).\n# Each run's full configuration is <column>/seed-<s>/config.toml.\n";
    std::fs::write(&p, format!("{head}{text}")).map_err(|e| Error::io(&p, e))
}

/// Evaluates the best checkpoint of the run in `dir` on the test split and writes
/// [`PREDICTIONS_FILE`] (atomically: a temporary file renamed into place).
pub fn write_test_predictions(cfg: &Config, dir: &Path) -> Result<Predictions> {
    let device = crate::config::parse_device(&cfg.device)?.device()?;
    let best = checkpoint::load(&dir.join("best"), DType::F32, &device)?;
    let pre = best.meta.preprocess.clone();
    let sets = crate::train::sets::load(cfg, &pre)?;
    let Some(test) = &sets.test else {
        return Err(Error::Config(format!(
            "{}: the run has no test split (set data.test_csv)",
            dir.display()
        )));
    };
    let noise = Noise::new(&cfg.noise, &sets.train.ds.findings, cfg.seed)?;
    let (_, preds) =
        crate::train::trainer::evaluate(best.model.as_ref(), &noise, test, &pre, cfg, &device)?;
    let tmp = dir.join(format!("{PREDICTIONS_FILE}.partial"));
    write_predictions_csv(&tmp, &preds)?;
    let p = dir.join(PREDICTIONS_FILE);
    std::fs::rename(&tmp, &p).map_err(|e| Error::io(&p, e))?;
    Ok(preds)
}

/// The test split's dataset of `cfg` (filters applied, as the trainer reads it) and its CSV.
fn test_dataset(cfg: &Config) -> Result<(Dataset, PathBuf)> {
    let srcs = crate::data::source::resolve(&cfg.data)?;
    let src = srcs
        .test
        .ok_or_else(|| Error::Config("the table needs a test split (set data.test_csv)".into()))?;
    let format = crate::data::source::detect(&src.csv).unwrap_or(cfg.data.format);
    let mut ds = crate::data::source::read(&src, format)?;
    cfg.data.filters.apply(&mut ds)?;
    Ok((ds, src.csv))
}

/// Reads a run's [`PREDICTIONS_FILE`] and attaches the test labels of `ds` by image path.
pub fn read_test_predictions(path: &Path, ds: &Dataset) -> Result<Predictions> {
    let p = read_predictions_csv(path)?;
    let k = p.n_findings();
    let full = Predictions::from_dataset(ds, &p.findings, vec![0.5; ds.records.len() * k])?;
    let index: HashMap<&str, usize> = full
        .paths
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let mut targets = Vec::with_capacity(p.n_rows() * k);
    for (i, path_i) in p.paths.iter().enumerate() {
        let j = *index.get(path_i.as_str()).ok_or_else(|| {
            Error::csv(
                path,
                i + 2,
                format!(
                    "image {path_i:?} is not in the test CSV {}; was the run made on another \
                     dataset?",
                    ds.csv.display()
                ),
            )
        })?;
        targets.extend_from_slice(&full.targets[j * k..(j + 1) * k]);
    }
    Predictions::new(p.paths, p.studies, p.findings, p.probs, targets)
}

/// Builds the table from the results folder and writes `table.md`, `table.csv`,
/// `table.json` and `provenance.json`. `configs` are the plan's configs in column-major,
/// seed-minor order.
fn write_table(exp: &Experiment, dir: &Path, configs: &[Config]) -> Result<AblationTable> {
    let base_col = exp
        .columns
        .iter()
        .position(|c| c.name == exp.baseline)
        .unwrap_or(0);
    let (ds, test_csv) = test_dataset(&configs[base_col * exp.seeds.len()])?;
    let mut cols = Vec::with_capacity(exp.columns.len());
    for (ci, col) in exp.columns.iter().enumerate() {
        let mut seeds = Vec::with_capacity(exp.seeds.len());
        for (si, &seed) in exp.seeds.iter().enumerate() {
            let d = run_dir(dir, &col.name, seed);
            let p = read_test_predictions(&d.join(PREDICTIONS_FILE), &ds)?;
            cross_check(&d, &p, &configs[ci * exp.seeds.len() + si]);
            seeds.push(p);
        }
        cols.push(ColumnInput {
            name: col.name.clone(),
            oracle: col.oracle,
            seeds,
        });
    }
    let test_set = test_csv.display().to_string();
    let t = table::build(
        &TableMeta {
            name: &exp.name,
            description: &exp.description,
            baseline: &exp.baseline,
            seeds: &exp.seeds,
            test_set: &test_set,
            bootstrap: &exp.bootstrap,
        },
        &cols,
    )?;
    let prov = Provenance::collect(&[exp.file.clone()])?;
    let machine = Machine::describe();
    let mut devices: Vec<String> = configs.iter().map(|c| c.device.clone()).collect();
    devices.sort();
    devices.dedup();
    write_json(
        &dir.join("provenance.json"),
        &AblateProvenance {
            run: &prov,
            machine: &machine,
            devices: devices.clone(),
        },
    )?;
    let footer = format!(
        "Produced by `{}` — noisycxr {} (commit {}), {} UTC; machine: {}; device: {}. \
         Per-run times: `runs.jsonl`; every run's resolved config: \
         `<column>/seed-<s>/config.toml`.",
        prov.command_line.join(" "),
        prov.crate_version,
        prov.git_commit.unwrap_or("unknown"),
        utc(prov.started_unix),
        machine.line(),
        devices.join(", ")
    );
    for (name, text) in [("table.md", t.markdown(&footer)), ("table.csv", t.csv())] {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| Error::io(&p, e))?;
    }
    write_json(&dir.join("table.json"), &t)?;
    Ok(t)
}

/// Warns when the saved predictions disagree with the trainer's own test summary.
fn cross_check(dir: &Path, p: &Predictions, _cfg: &Config) {
    let Ok(text) = std::fs::read_to_string(dir.join("metrics.json")) else {
        return;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return;
    };
    let (Some(want), Some(got)) = (
        v["test"]["mean_all"]["value"].as_f64(),
        crate::eval::summarize(p).mean_all.value,
    ) else {
        return;
    };
    if (want - got).abs() > 1e-6 {
        eprintln!(
            "warning: {}: test mean AUROC from {PREDICTIONS_FILE} is {got:.6} but metrics.json \
             says {want:.6}",
            dir.display()
        );
    }
}

/// `YYYY-MM-DD HH:MM` of a Unix time (UTC; Howard Hinnant's civil-from-days).
pub fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        secs / 3600,
        (secs % 3600) / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_match_python() {
        // python3: datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M")
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc(1_795_369_000), "2026-11-22 17:36");
    }

    #[test]
    fn completeness_needs_a_test_summary_and_all_epochs() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.train.epochs = 3;
        assert!(!metrics_complete(d.path(), &cfg));
        let w = |s: &str| std::fs::write(d.path().join("metrics.json"), s).unwrap();
        w("{\"epochs_run\": 3, \"stopped_early\": false, \"test\": {\"x\": 1}}");
        assert!(metrics_complete(d.path(), &cfg));
        w("{\"epochs_run\": 2, \"stopped_early\": false, \"test\": {\"x\": 1}}");
        assert!(!metrics_complete(d.path(), &cfg));
        w("{\"epochs_run\": 2, \"stopped_early\": true, \"test\": {\"x\": 1}}");
        assert!(metrics_complete(d.path(), &cfg));
        w("{\"epochs_run\": 3, \"stopped_early\": false, \"test\": null}");
        assert!(!metrics_complete(d.path(), &cfg));
        w("{\"epochs_run\": 3, \"stopped_ea");
        assert!(!metrics_complete(d.path(), &cfg));
    }

    #[test]
    fn a_folder_from_another_config_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.out = d.path().to_path_buf();
        assert_eq!(status(d.path(), &cfg).unwrap(), Status::New);
        std::fs::write(d.path().join("config.toml"), cfg.to_toml().unwrap()).unwrap();
        assert_eq!(status(d.path(), &cfg).unwrap(), Status::New);
        let mut other = cfg.clone();
        other.device = "cuda".into(); // the device alone does not matter
        assert_eq!(status(d.path(), &other).unwrap(), Status::New);
        other.train.epochs += 1;
        let m = status(d.path(), &other).unwrap_err().to_string();
        assert!(
            m.contains("another configuration") && m.contains("delete"),
            "{m}"
        );
        // A train run's folder is not taken for a pipeline run's, nor the reverse.
        let pipe = PipelineConfig::from_toml("[[stage]]\nkind = \"train\"\n").unwrap();
        let m = pipeline_status(d.path(), &pipe).unwrap_err().to_string();
        assert!(
            m.contains("a train experiment") && m.contains("delete"),
            "{m}"
        );
        let e = tempfile::tempdir().unwrap();
        assert_eq!(pipeline_status(e.path(), &pipe).unwrap(), Status::New);
        std::fs::write(
            e.path().join("pipeline.toml"),
            toml::to_string(&pipe).unwrap(),
        )
        .unwrap();
        assert_eq!(
            pipeline_status(e.path(), &pipe).unwrap(),
            Status::Interrupted
        );
        std::fs::write(e.path().join(PREDICTIONS_FILE), "").unwrap();
        assert_eq!(pipeline_status(e.path(), &pipe).unwrap(), Status::Finished);
        let mut changed = pipe.clone();
        changed.name = "other".into();
        assert!(pipeline_status(e.path(), &changed).is_err());
        let m = status(e.path(), &cfg).unwrap_err().to_string();
        assert!(m.contains("a pipeline experiment"), "{m}");
    }
}
