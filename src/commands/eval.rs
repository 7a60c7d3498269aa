//! `noisycxr eval`: evaluate one checkpoint or an ensemble on a labelled CSV (AUROC with
//! bootstrap CIs, operating points at the saved thresholds, calibration, subgroups, plots), or
//! compare two runs / two `predictions.csv` files with paired bootstrap and DeLong's test.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::cli::Format;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::report::{markdown, read_predictions_csv};
use crate::eval::{
    compare, ensemble, evaluate, study_level, write_outputs, Aggregation, BootstrapConfig,
    Criterion, EvalOptions, EvalReport, Predictions,
};
use crate::inference::{attach_targets, predict_paths, read_csv, with_targets, Labelled};
use crate::inference::{PredictOptions, Trained};

/// Study-level aggregation of image probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum AggregateArg {
    /// Score images.
    #[default]
    None,
    /// Max over a study's images (the CheXpert competition's rule).
    Max,
    /// Mean over a study's images.
    Mean,
}

impl AggregateArg {
    fn aggregation(self) -> Option<Aggregation> {
        match self {
            AggregateArg::None => None,
            AggregateArg::Max => Some(Aggregation::Max),
            AggregateArg::Mean => Some(Aggregation::Mean),
        }
    }
}

/// Threshold criterion of the reported operating points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ThresholdArg {
    #[default]
    F1,
    Mcc,
    Youden,
}

impl ThresholdArg {
    fn criterion(self) -> Criterion {
        match self {
            ThresholdArg::F1 => Criterion::MaxF1,
            ThresholdArg::Mcc => Criterion::MaxMcc,
            ThresholdArg::Youden => Criterion::Youden,
        }
    }
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Run folders (meaning their best/) or checkpoint folders; several = an ensemble
    /// (probabilities averaged).
    #[arg(long, value_name = "RUN", num_args = 1.., required_unless_present = "compare")]
    pub checkpoint: Vec<PathBuf>,
    /// Compare two runs (or two predictions.csv files written by an earlier eval on the same
    /// CSV): paired bootstrap difference of mean AUROC with its CI, DeLong per finding.
    #[arg(long, num_args = 2, value_names = ["A", "B"], conflicts_with = "checkpoint")]
    pub compare: Vec<PathBuf>,
    /// Labelled CSV (CheXpert, MIMIC-CXR or NIH layout).
    #[arg(long, value_name = "FILE")]
    pub csv: PathBuf,
    /// Image root the CSV's paths are relative to (default: implied by the CSV's location).
    #[arg(long, value_name = "ROOT")]
    pub images: Option<PathBuf>,
    /// Output folder (predictions.csv, metrics.json, report.md, PNGs).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Score studies (max or mean over their images) instead of images.
    #[arg(long, value_enum, default_value_t)]
    pub aggregate: AggregateArg,
    /// Bootstrap resamples (over studies).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub resamples: usize,
    /// Seed of the bootstrap resamples.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Table printed on stdout.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Which saved thresholds give the operating points (F1/MCC/sensitivity/specificity).
    #[arg(long, value_enum, default_value_t)]
    pub threshold: ThresholdArg,
    /// Do not apply the checkpoints' temperatures (calibration.json).
    #[arg(long)]
    pub no_calibration: bool,
    /// Name of the set in reports (default: the CSV's path).
    #[arg(long, value_name = "NAME")]
    pub set_name: Option<String>,
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub batch_size: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    pub device: String,
    /// Fail on the first missing or corrupt image instead of counting and skipping it.
    #[arg(long)]
    pub strict: bool,
}

/// A checkpoint's predictions on the CSV, paired with its labels.
struct Scored {
    label: String,
    labelled: Labelled,
    calibrated: bool,
    trained: Option<Trained>,
}

fn predict_run(a: &EvalArgs, ds: &Dataset, path: &Path) -> Result<Scored> {
    let device = crate::config::parse_device(&a.device)?.device()?;
    let t = Trained::load(path, &device)?;
    let paths: Vec<PathBuf> = (0..ds.records.len()).map(|i| ds.image_path(i)).collect();
    let p = predict_paths(
        &t,
        paths,
        &PredictOptions {
            batch_size: a.batch_size,
            strict: a.strict,
            calibrate: !a.no_calibration,
            ..PredictOptions::default()
        },
    )?;
    super::predict::report_skipped(&p.skipped, ds.records.len())?;
    if !a.no_calibration && !p.calibrated {
        eprintln!(
            "{}: no calibration.json (or no fitted temperature); probabilities are not \
             temperature-scaled",
            t.dir.display()
        );
    }
    let labelled = with_targets(ds, &p.rows, &t.findings, &p.values)?;
    Ok(Scored {
        label: t.name.clone(),
        labelled,
        calibrated: p.calibrated,
        trained: Some(t),
    })
}

fn set_name(a: &EvalArgs, l: &Labelled) -> String {
    let base = a
        .set_name
        .clone()
        .unwrap_or_else(|| a.csv.display().to_string());
    if l.cross_dataset {
        format!(
            "{base} (cross-dataset, {} shared findings)",
            l.predictions.n_findings()
        )
    } else {
        base
    }
}

fn options(a: &EvalArgs) -> Result<EvalOptions> {
    let o = EvalOptions {
        bootstrap: BootstrapConfig {
            resamples: a.resamples,
            seed: a.seed,
            ..BootstrapConfig::default()
        },
        study_aggregation: a.aggregate.aggregation(),
        ..EvalOptions::default()
    };
    o.validate()
        .map_err(|e| Error::Usage(format!("--resamples {}: {e}", a.resamples)))?;
    Ok(o)
}

fn note_cross(l: &Labelled, csv: &Path) {
    if l.cross_dataset {
        eprintln!(
            "{}: another vocabulary; evaluating the {} findings it shares with the model: {}{}",
            csv.display(),
            l.predictions.n_findings(),
            l.predictions.findings.join(", "),
            if l.unlabelled.is_empty() {
                String::new()
            } else {
                format!(" (no labels here for {})", l.unlabelled.join(", "))
            }
        );
    }
}

pub fn run(a: &EvalArgs) -> Result<()> {
    let opts = options(a)?;
    let ds = read_csv(&a.csv, a.images.as_deref())?;
    if !a.compare.is_empty() {
        return run_compare(a, &ds, &opts);
    }
    let mut scored = Vec::new();
    for c in &a.checkpoint {
        scored.push(predict_run(a, &ds, c)?);
    }
    let first = &scored[0];
    note_cross(&first.labelled, &a.csv);
    let preds: Vec<Predictions> = scored
        .iter()
        .map(|s| s.labelled.predictions.clone())
        .collect();
    let p = if preds.len() == 1 {
        preds[0].clone()
    } else {
        ensemble(&preds)?
    };
    let calibrated = scored.iter().all(|s| s.calibrated);
    if !calibrated && scored.iter().any(|s| s.calibrated) {
        eprintln!("note: only some ensemble members have temperatures; reported as not scaled");
    }
    // Thresholds belong to one checkpoint's scores; an ensemble has none of its own.
    let thresholds = match (scored.len(), &first.trained) {
        (1, Some(t)) => t
            .tuned
            .as_ref()
            .and_then(|tu| tu.thresholds_for(a.threshold.criterion(), calibrated)),
        _ => {
            eprintln!(
                "ensemble: no operating points (thresholds are fitted per checkpoint on its \
                 own tuning predictions)"
            );
            None
        }
    };
    let runs: Vec<String> = scored.iter().map(|s| s.label.clone()).collect();
    let (report, evaluated) = evaluate(
        &set_name(a, &first.labelled),
        &runs,
        &p,
        &opts,
        thresholds,
        Some(&first.labelled.records),
        calibrated,
    )?;
    let w = write_outputs(&a.out, &report, &evaluated)?;
    if let [single] = a.checkpoint.as_slice() {
        training_plot(single, &a.out);
    }
    print_report(a.format, &report);
    eprintln!(
        "wrote {}, {}, {} and PNGs in {}",
        w.report_md.display(),
        w.metrics_json.display(),
        w.predictions_csv.display(),
        a.out.display()
    );
    Ok(())
}

/// `training.png` (loss and tuning AUROC per epoch) when `run` is a run folder with a
/// `metrics.json` history; silently nothing otherwise.
fn training_plot(run: &Path, out: &Path) {
    let Ok(text) = std::fs::read_to_string(run.join("metrics.json")) else {
        return;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return;
    };
    let Some(h) = v["history"].as_array() else {
        return;
    };
    let pts: Vec<crate::eval::EpochPoint> = h
        .iter()
        .filter_map(|e| {
            Some(crate::eval::EpochPoint {
                epoch: e["epoch"].as_u64()? as usize,
                train_loss: e["train_loss"].as_f64()?,
                tune_loss: None,
                tune_auroc: e["tune_mean_auroc_5"].as_f64(),
            })
        })
        .collect();
    if pts.is_empty() {
        return;
    }
    let name = run
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if let Err(e) = crate::eval::plots::training_plot(&out.join("training.png"), &pts, &name) {
        eprintln!("training.png not written: {e}");
    }
}

fn print_report(format: Format, r: &EvalReport) {
    match format {
        Format::Markdown => println!("{}", markdown(r)),
        Format::Csv => print!("{}", csv_table(r)),
    }
}

fn num(v: Option<f64>) -> String {
    v.map(|x| format!("{x}")).unwrap_or_default()
}

/// Per-finding table as CSV (plus the two means, and the comparison when present).
fn csv_table(r: &EvalReport) -> String {
    let mut s =
        String::from("set,model,level,finding,auroc,ci_lo,ci_hi,ap,n_positive,n_negative\n");
    let q = |x: &str| {
        if x.contains([',', '"']) {
            format!("\"{}\"", x.replace('"', "\"\""))
        } else {
            x.to_string()
        }
    };
    let head = format!("{},{},{}", q(&r.set), q(&r.model), q(&r.level));
    for (j, m) in r.summary.per_finding.iter().enumerate() {
        let ci = r
            .cis
            .as_ref()
            .and_then(|c| c.per_finding.get(j))
            .and_then(|f| f.ci.as_ref());
        s.push_str(&format!(
            "{head},{},{},{},{},{},{},{}\n",
            q(&m.finding),
            num(m.auroc),
            num(ci.map(|c| c.lo)),
            num(ci.map(|c| c.hi)),
            num(m.ap),
            m.n_pos,
            m.n_neg
        ));
    }
    for (name, m, ci) in [
        (
            "mean (competition tasks)",
            &r.summary.mean_competition,
            r.cis.as_ref().and_then(|c| c.mean_competition.as_ref()),
        ),
        (
            "mean (all defined)",
            &r.summary.mean_all,
            r.cis.as_ref().and_then(|c| c.mean_all.as_ref()),
        ),
    ] {
        s.push_str(&format!(
            "{head},{name},{},{},{},,,\n",
            num(m.value),
            num(ci.map(|c| c.lo)),
            num(ci.map(|c| c.hi))
        ));
    }
    if let Some(c) = &r.comparison {
        s.push_str("\nfinding,auroc_a,auroc_b,difference,ci_lo,ci_hi,delong_p\n");
        let row = |name: &str,
                   a: Option<f64>,
                   b: Option<f64>,
                   d: &crate::eval::compare::Difference,
                   p: Option<f64>| {
            format!(
                "{},{},{},{},{},{},{}\n",
                q(name),
                num(a),
                num(b),
                num(d.point),
                num(d.ci.as_ref().map(|c| c.lo)),
                num(d.ci.as_ref().map(|c| c.hi)),
                num(p)
            )
        };
        for f in &c.per_finding {
            s.push_str(&row(
                &f.finding,
                f.auroc_a,
                f.auroc_b,
                &f.difference,
                f.delong.as_ref().and_then(|d| d.p_value),
            ));
        }
        s.push_str(&row(
            "mean (competition tasks)",
            None,
            None,
            &c.mean_competition,
            None,
        ));
        s.push_str(&row("mean (all defined)", None, None, &c.mean_all, None));
    }
    s
}

/// One side of `--compare`: a run / checkpoint folder, or a `predictions.csv` file.
fn side(a: &EvalArgs, ds: &Dataset, path: &Path) -> Result<Scored> {
    if path.is_file() {
        let p = read_predictions_csv(path)?;
        let labelled = attach_targets(&p, ds, &path.display().to_string())?;
        let label = path
            .parent()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| path.display().to_string());
        Ok(Scored {
            label,
            labelled,
            calibrated: false,
            trained: None,
        })
    } else {
        predict_run(a, ds, path)
    }
}

fn run_compare(a: &EvalArgs, ds: &Dataset, opts: &EvalOptions) -> Result<()> {
    let (sa, sb) = (side(a, ds, &a.compare[0])?, side(a, ds, &a.compare[1])?);
    note_cross(&sa.labelled, &a.csv);
    let (mut la, mut lb) = (sa.label.clone(), sb.label.clone());
    if la == lb {
        la = format!("A ({la})");
        lb = format!("B ({lb})");
    }
    let level = |p: &Predictions| match opts.study_aggregation {
        Some(g) => study_level(p, g),
        None => Ok(p.clone()),
    };
    let pa = level(&sa.labelled.predictions)?;
    let pb = level(&sb.labelled.predictions)?;
    // B in A's row order (rows matched by path; both must cover the same rows).
    let pos: std::collections::HashMap<&str, usize> = pb
        .paths
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    let order = pa
        .paths
        .iter()
        .map(|p| {
            pos.get(p.as_str()).copied().ok_or_else(|| {
                Error::input(
                    &a.compare[1],
                    format!(
                        "has no prediction for {p:?}, which {} has; compare predictions of \
                         the same rows (an image unreadable for one model?)",
                        a.compare[0].display()
                    ),
                )
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    if order.len() != pb.n_rows() {
        return Err(Error::input(
            &a.compare[0],
            format!(
                "{} rows vs {} rows in {}; compare predictions of the same rows",
                pa.n_rows(),
                pb.n_rows(),
                a.compare[1].display()
            ),
        ));
    }
    let pb = pb.select_rows(&order);
    let c = compare(&pa, &pb, &la, &lb, &opts.bootstrap)?;
    let single = EvalOptions {
        study_aggregation: None,
        ..opts.clone()
    };
    let (mut report, _) = evaluate(
        &set_name(a, &sa.labelled),
        &[la.clone(), lb.clone()],
        &pa,
        &single,
        None,
        Some(&sa.labelled.records),
        sa.calibrated,
    )?;
    if let Some(g) = opts.study_aggregation {
        report.level = match g {
            Aggregation::Max => "study (max)".into(),
            Aggregation::Mean => "study (mean)".into(),
        };
    }
    report.comparison = Some(c);
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    crate::provenance::write_json(&a.out.join("comparison.json"), &report)?;
    let md = a.out.join("report.md");
    std::fs::write(&md, markdown(&report)).map_err(|e| Error::io(&md, e))?;
    print_report(a.format, &report);
    eprintln!(
        "wrote {} and {}",
        md.display(),
        a.out.join("comparison.json").display()
    );
    Ok(())
}
