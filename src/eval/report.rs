//! One evaluation, end to end: [`evaluate`] computes every metric into an [`EvalReport`];
//! [`write_outputs`] writes `predictions.csv`, `metrics.json`, `report.md` and the PNG
//! figures into the out folder.
//!
//! Every report names the set and whether it is a single model or an ensemble of N.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::aggregate::{study_level, Aggregation};
use super::bootstrap::{bootstrap_cis, BootstrapCis, BootstrapConfig, Interval};
use super::calibration::{calibration_table, FindingCalibration};
use super::compare::Comparison;
use super::plots::{reliability_plot, roc_plot};
use super::predictions::Predictions;
use super::subgroups::{subgroups, Subgroup, DEFAULT_AGE_EDGES};
use super::summary::{summarize, Mean, Summary};
use super::thresholds::{Criterion, OperatingPoint, Thresholds};
use crate::data::csvio::{Table, Width};
use crate::data::{Record, COMPETITION_TASKS};
use crate::error::{Error, Result};

/// What an evaluation computes (a section of the run config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalOptions {
    /// Bootstrap confidence intervals (set `ci = false` to skip them, e.g. per epoch).
    pub ci: bool,
    pub bootstrap: BootstrapConfig,
    /// Equal-width bins of the reliability diagram and ECE.
    pub calibration_bins: usize,
    /// Age-band edges in years for subgroups.
    pub age_edges: Vec<f32>,
    /// Score studies instead of images (`max` as the CheXpert competition, or `mean`).
    pub study_aggregation: Option<Aggregation>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            ci: true,
            bootstrap: BootstrapConfig::default(),
            calibration_bins: 10,
            age_edges: DEFAULT_AGE_EDGES.to_vec(),
            study_aggregation: None,
        }
    }
}

impl EvalOptions {
    /// Checks every field; errors name it.
    pub fn validate(&self) -> Result<()> {
        self.bootstrap.validate()?;
        if !(2..=1000).contains(&self.calibration_bins) {
            return Err(Error::Config(format!(
                "eval.calibration_bins = {}: use between 2 and 1000 (10 is usual)",
                self.calibration_bins
            )));
        }
        if self.age_edges.windows(2).any(|w| w[0] >= w[1])
            || self.age_edges.iter().any(|e| !e.is_finite())
        {
            return Err(Error::Config(format!(
                "eval.age_edges = {:?}: give finite, strictly ascending ages in years",
                self.age_edges
            )));
        }
        Ok(())
    }
}

/// Operating points at thresholds chosen on the tuning set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoints {
    pub criterion: Criterion,
    pub per_finding: Vec<OperatingPoint>,
}

/// Everything one evaluation reports; serialised as `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Name of the evaluated set, e.g. `CheXpert valid.csv` or `synthetic test`.
    pub set: String,
    /// `single model` or `ensemble of N`.
    pub model: String,
    /// Run or checkpoint names that were evaluated (averaged when more than one).
    pub runs: Vec<String>,
    /// `image`, `study (max)` or `study (mean)`.
    pub level: String,
    pub n_rows: usize,
    pub n_studies: usize,
    pub summary: Summary,
    pub cis: Option<BootstrapCis>,
    pub operating_points: Option<OperatingPoints>,
    pub calibration_bins: usize,
    pub calibration: Vec<FindingCalibration>,
    /// Whether temperature scaling was applied to the probabilities before evaluation.
    pub temperature_scaled: bool,
    pub subgroups: Vec<Subgroup>,
    pub comparison: Option<Comparison>,
}

/// Evaluates `p` (already ensembled and temperature-scaled as wanted; say so in
/// `temperature_scaled`). `thresholds` (fitted on the tuning set, from the checkpoint) give
/// operating points; `records` (of the evaluated CSV) give subgroups. With
/// `options.study_aggregation`, metrics are computed on study rows; the returned
/// `Predictions` are the ones evaluated (write those to `predictions.csv`).
pub fn evaluate(
    set: &str,
    runs: &[String],
    p: &Predictions,
    options: &EvalOptions,
    thresholds: Option<&Thresholds>,
    records: Option<&[Record]>,
    temperature_scaled: bool,
) -> Result<(EvalReport, Predictions)> {
    options.validate()?;
    p.validate()?;
    let (p, level) = match options.study_aggregation {
        None => (p.clone(), "image".to_string()),
        Some(a) => (
            study_level(p, a)?,
            match a {
                Aggregation::Max => "study (max)".to_string(),
                Aggregation::Mean => "study (mean)".to_string(),
            },
        ),
    };
    let summary = summarize(&p);
    let cis = if options.ci {
        Some(bootstrap_cis(&p, &options.bootstrap)?)
    } else {
        None
    };
    let operating_points = thresholds.map(|t| OperatingPoints {
        criterion: t.criterion,
        per_finding: t.apply(&p),
    });
    let subgroups = match records {
        Some(r) => subgroups(&p, r, &options.age_edges)?,
        None => Vec::new(),
    };
    let report = EvalReport {
        set: set.to_string(),
        model: p.model_label(),
        runs: runs.to_vec(),
        level,
        n_rows: p.n_rows(),
        n_studies: p.study_index().1,
        summary,
        cis,
        operating_points,
        calibration_bins: options.calibration_bins,
        calibration: calibration_table(&p, options.calibration_bins),
        temperature_scaled,
        subgroups,
        comparison: None,
    };
    Ok((report, p))
}

/// Quotes a CSV field when it holds a comma, quote or line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes `predictions.csv`: `Path`, `Study`, then one probability column per finding named
/// exactly as the findings are (the CheXpert header names for CheXpert models).
pub fn write_predictions_csv(path: &Path, p: &Predictions) -> Result<()> {
    let k = p.n_findings();
    let mut s = String::with_capacity(p.n_rows() * (40 + 12 * k));
    s.push_str("Path,Study");
    for f in &p.findings {
        s.push(',');
        s.push_str(&csv_field(f));
    }
    s.push('\n');
    for i in 0..p.n_rows() {
        s.push_str(&csv_field(&p.paths[i]));
        s.push(',');
        s.push_str(&csv_field(&p.studies[i]));
        for j in 0..k {
            // Shortest representation that reads back to the same f64.
            let _ = write!(s, ",{}", p.prob(i, j));
        }
        s.push('\n');
    }
    std::fs::write(path, s).map_err(|e| Error::io(path, e))
}

/// Reads a `predictions.csv` written by [`write_predictions_csv`] (e.g. to ensemble saved
/// runs). Targets are all `None`: take them from the dataset.
pub fn read_predictions_csv(path: &Path) -> Result<Predictions> {
    let t = Table::read(path, Width::Exact)?;
    if t.header.len() < 3 || t.header[0] != "Path" || t.header[1] != "Study" {
        return Err(Error::input(
            path,
            format!(
                "expected a header `Path,Study,<finding>...`, found {:?}; is this a \
                 predictions.csv written by noisycxr eval?",
                t.header
            ),
        ));
    }
    let findings: Vec<String> = t.header[2..].to_vec();
    let paths: Vec<String> = t.texts("Path")?.into_iter().map(String::from).collect();
    let studies: Vec<String> = t.texts("Study")?.into_iter().map(String::from).collect();
    let n = paths.len();
    let k = findings.len();
    let mut probs = vec![0.0; n * k];
    for (j, f) in findings.iter().enumerate() {
        for (i, cell) in t.texts(f)?.into_iter().enumerate() {
            let v: f64 = cell.trim().parse().map_err(|_| {
                Error::csv(
                    path,
                    t.line(i),
                    format!("column {f:?}: {cell:?} is not a probability"),
                )
            })?;
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::csv(
                    path,
                    t.line(i),
                    format!("column {f:?}: {v} is outside [0, 1]"),
                ));
            }
            probs[i * k + j] = v;
        }
    }
    Predictions::new(paths, studies, findings, probs, vec![None; n * k])
}

fn fmt3(v: Option<f64>) -> String {
    v.map_or("—".to_string(), |x| format!("{x:.3}"))
}

fn fmt_ci(v: Option<f64>, ci: Option<&Interval>) -> String {
    match (v, ci) {
        (None, _) => "undefined (one class)".to_string(),
        (Some(x), Some(c)) => format!("{x:.3} [{:.3}, {:.3}]", c.lo, c.hi),
        (Some(x), None) => format!("{x:.3}"),
    }
}

fn mean_line(name: &str, m: &Mean, ci: Option<&Interval>) -> String {
    let mut s = format!(
        "- **{name}**: {} over {} finding(s): {}",
        fmt_ci(m.value, ci),
        m.covers.len(),
        if m.covers.is_empty() {
            "none".to_string()
        } else {
            m.covers.join(", ")
        }
    );
    if !m.left_out.is_empty() {
        let lo: Vec<String> = m
            .left_out
            .iter()
            .map(|(f, why)| format!("{f} ({why})"))
            .collect();
        let _ = write!(s, "; left out: {}", lo.join(", "));
    }
    s.push('\n');
    s
}

/// The Markdown report: set, model, per-finding table with AUROC [95% CI], AP, n positive,
/// n negative; both means with the findings they cover; operating points, calibration,
/// subgroups and the comparison when present.
pub fn markdown(r: &EvalReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Evaluation on {} — {}\n", r.set, r.model);
    let _ = writeln!(
        s,
        "- Set: **{}**, {} level: {} rows, {} studies",
        r.set, r.level, r.n_rows, r.n_studies
    );
    let runs = if r.runs.is_empty() {
        String::new()
    } else {
        format!(" ({})", r.runs.join(", "))
    };
    let _ = writeln!(s, "- Model: **{}**{runs}", r.model);
    let _ = writeln!(
        s,
        "- Temperature scaling: {}",
        if r.temperature_scaled {
            "applied"
        } else {
            "not applied"
        }
    );
    match &r.cis {
        Some(c) => {
            let _ = writeln!(
                s,
                "- Confidence intervals: {:.0}% percentile bootstrap, {} resamples of {} studies, seed {}",
                100.0 * c.config.level,
                c.config.resamples,
                c.n_studies,
                c.config.seed
            );
        }
        None => {
            let _ = writeln!(s, "- Confidence intervals: not computed");
        }
    }
    let _ = writeln!(
        s,
        "\n| Finding | AUROC [95% CI] | AP | n positive | n negative |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|");
    for (j, m) in r.summary.per_finding.iter().enumerate() {
        let ci = r
            .cis
            .as_ref()
            .and_then(|c| c.per_finding.get(j))
            .and_then(|f| f.ci.as_ref());
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            m.finding,
            fmt_ci(m.auroc, ci),
            fmt3(m.ap),
            m.n_pos,
            m.n_neg
        );
    }
    s.push('\n');
    s.push_str(&mean_line(
        &format!("Mean AUROC, {} competition tasks", COMPETITION_TASKS.len()),
        &r.summary.mean_competition,
        r.cis.as_ref().and_then(|c| c.mean_competition.as_ref()),
    ));
    s.push_str(&mean_line(
        "Mean AUROC, all defined findings",
        &r.summary.mean_all,
        r.cis.as_ref().and_then(|c| c.mean_all.as_ref()),
    ));
    if let Some(op) = &r.operating_points {
        let _ = writeln!(
            s,
            "\n## Operating points (thresholds chosen on the tuning set, {:?})\n",
            op.criterion
        );
        let _ = writeln!(
            s,
            "| Finding | threshold | F1 | MCC | sensitivity | specificity |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
        for o in &op.per_finding {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                o.finding,
                o.threshold.map_or("—".into(), |t| format!("{t:.4}")),
                fmt3(o.f1),
                fmt3(o.mcc),
                fmt3(o.sensitivity),
                fmt3(o.specificity)
            );
        }
    }
    let _ = writeln!(
        s,
        "\n## Calibration ({} equal-width bins)\n",
        r.calibration_bins
    );
    let _ = writeln!(s, "| Finding | ECE |");
    let _ = writeln!(s, "|---|---:|");
    for c in &r.calibration {
        let _ = writeln!(s, "| {} | {} |", c.finding, fmt3(c.ece));
    }
    if !r.subgroups.is_empty() {
        let _ = writeln!(s, "\n## Subgroups\n");
        let _ = writeln!(s, "| Attribute | Group | n rows | mean AUROC, competition tasks | mean AUROC, all defined |");
        let _ = writeln!(s, "|---|---|---:|---|---|");
        for g in &r.subgroups {
            let cov = |m: &Mean| match m.value {
                Some(v) => format!("{v:.3} ({} findings)", m.covers.len()),
                None => "undefined".to_string(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                g.attribute,
                g.group,
                g.n_rows,
                cov(&g.summary.mean_competition),
                cov(&g.summary.mean_all)
            );
        }
    }
    if let Some(c) = &r.comparison {
        let _ = writeln!(s, "\n## Comparison: {} vs {}\n", c.label_a, c.label_b);
        let _ = writeln!(
            s,
            "Paired study bootstrap ({} resamples, seed {}, same resamples for both); DeLong's test per finding.\n",
            c.config.resamples, c.config.seed
        );
        let _ = writeln!(
            s,
            "| Finding | {} | {} | difference [95% CI] | DeLong p |",
            c.label_a, c.label_b
        );
        let _ = writeln!(s, "|---|---:|---:|---|---:|");
        let diff = |d: &super::compare::Difference| match (d.point, &d.ci) {
            (Some(x), Some(ci)) => format!("{x:+.4} [{:+.4}, {:+.4}]", ci.lo, ci.hi),
            (Some(x), None) => format!("{x:+.4}"),
            (None, _) => "undefined".to_string(),
        };
        for f in &c.per_finding {
            let p = f
                .delong
                .as_ref()
                .and_then(|d| d.p_value)
                .map_or("—".into(), |p| format!("{p:.4}"));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {p} |",
                f.finding,
                fmt3(f.auroc_a),
                fmt3(f.auroc_b),
                diff(&f.difference)
            );
        }
        let _ = writeln!(
            s,
            "| **mean, competition tasks** ({}) | | | {} | |",
            c.mean_competition_covers.join(", "),
            diff(&c.mean_competition)
        );
        let _ = writeln!(
            s,
            "| **mean, all defined** ({} findings) | | | {} | |",
            c.mean_all_covers.len(),
            diff(&c.mean_all)
        );
    }
    s
}

/// Paths of the files [`write_outputs`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub predictions_csv: PathBuf,
    pub metrics_json: PathBuf,
    pub report_md: PathBuf,
    pub roc_png: PathBuf,
    pub reliability_png: PathBuf,
}

/// Writes `predictions.csv`, `metrics.json`, `report.md`, `roc.png` and `reliability.png`
/// into `dir` (created if missing). `p` are the evaluated predictions returned by
/// [`evaluate`].
pub fn write_outputs(dir: &Path, r: &EvalReport, p: &Predictions) -> Result<Written> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let w = Written {
        predictions_csv: dir.join("predictions.csv"),
        metrics_json: dir.join("metrics.json"),
        report_md: dir.join("report.md"),
        roc_png: dir.join("roc.png"),
        reliability_png: dir.join("reliability.png"),
    };
    write_predictions_csv(&w.predictions_csv, p)?;
    let json =
        serde_json::to_string_pretty(r).map_err(|e| Error::Other(format!("metrics.json: {e}")))?;
    std::fs::write(&w.metrics_json, json).map_err(|e| Error::io(&w.metrics_json, e))?;
    std::fs::write(&w.report_md, markdown(r)).map_err(|e| Error::io(&w.report_md, e))?;
    roc_plot(&w.roc_png, p, &format!("ROC, {} — {}", r.set, r.model))?;
    let tasks: Vec<FindingCalibration> = r
        .calibration
        .iter()
        .filter(|c| COMPETITION_TASKS.contains(&c.finding.as_str()))
        .cloned()
        .collect();
    reliability_plot(
        &w.reliability_png,
        &tasks,
        &format!("Reliability, {} — {}", r.set, r.model),
    )?;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::aggregate::ensemble;
    use crate::eval::bench::synthetic;
    use crate::eval::compare::compare;

    #[test]
    fn predictions_csv_round_trips_with_chexpert_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = synthetic(40, 14, 9);
        p.paths[3] = "odd,name \"x\".jpg".into();
        let path = dir.path().join("predictions.csv");
        write_predictions_csv(&path, &p).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let header = text.lines().next().unwrap();
        assert_eq!(
            header,
            "Path,Study,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,Lung Lesion,\
             Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,\
             Fracture,Support Devices"
        );
        let back = read_predictions_csv(&path).unwrap();
        assert_eq!(back.paths, p.paths);
        assert_eq!(back.studies, p.studies);
        assert_eq!(back.findings, p.findings);
        assert_eq!(back.probs, p.probs);
        std::fs::write(&path, "Path,Study,Edema\na,s,1.5\n").unwrap();
        let e = read_predictions_csv(&path).unwrap_err().to_string();
        assert!(e.contains(":2:") && e.contains("1.5"), "{e}");
    }

    /// A `valid.csv` laid out like CheXpert-v1.0-small's: per-study labels repeated on the
    /// lateral, `1.0`/`0.0` only, Sex/Age/AP-PA columns.
    #[test]
    fn chexpert_valid_layout_end_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let header = "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,\
                      Cardiomegaly,Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,\
                      Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,Support Devices";
        let mut csv = format!("{header}\n");
        let mut probs = Vec::new();
        for s in 0..24usize {
            let pat = 64541 + s;
            let pos = s % 3 == 0;
            let lab: Vec<&str> = (0..14)
                .map(|j| {
                    if (s + j) % 4 == 0 || (j == 2 && pos) {
                        "1.0"
                    } else {
                        "0.0"
                    }
                })
                .collect();
            let sex = if s % 2 == 0 { "Female" } else { "Male" };
            let age = 30 + 2 * s;
            let views: &[(&str, &str, &str)] = if s % 4 == 0 {
                &[
                    ("view1_frontal", "Frontal", "AP"),
                    ("view2_lateral", "Lateral", ""),
                ]
            } else {
                &[(
                    "view1_frontal",
                    "Frontal",
                    if s % 2 == 0 { "AP" } else { "PA" },
                )]
            };
            for (v, fl, appa) in views {
                csv.push_str(&format!(
                    "CheXpert-v1.0-small/valid/patient{pat:05}/study1/{v}.jpg,{sex},{age},{fl},{appa},{}\n",
                    lab.join(",")
                ));
                for (j, l) in lab.iter().enumerate() {
                    let base = if *l == "1.0" { 0.6 } else { 0.35 };
                    probs.push(base + 0.01 * ((s * 7 + j * 3) % 20) as f64);
                }
            }
        }
        let path = dir.path().join("valid.csv");
        std::fs::write(&path, csv).unwrap();
        let ds = crate::data::chexpert::read(&path, dir.path()).unwrap();
        let findings: Vec<String> = crate::data::CHEXPERT_FINDINGS
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = Predictions::from_dataset(&ds, &findings, probs).unwrap();
        assert_eq!(p.n_rows(), 30);
        let opts = EvalOptions {
            bootstrap: BootstrapConfig {
                resamples: 50,
                seed: 1,
                level: 0.95,
            },
            study_aggregation: Some(Aggregation::Max),
            ..EvalOptions::default()
        };
        let (r, evaluated) = evaluate(
            "CheXpert-layout valid.csv fixture",
            &["run".into()],
            &p,
            &opts,
            None,
            Some(&ds.records),
            false,
        )
        .unwrap();
        assert_eq!(
            (r.n_rows, r.n_studies, r.model.as_str()),
            (24, 24, "single model")
        );
        assert_eq!(evaluated.studies[0], "patient64541/study1");
        assert_eq!(r.summary.mean_competition.covers.len(), 5);
        let attrs: Vec<&str> = r.subgroups.iter().map(|g| g.attribute.as_str()).collect();
        assert!(attrs.contains(&"sex") && attrs.contains(&"age") && attrs.contains(&"projection"));
        write_outputs(dir.path(), &r, &evaluated).unwrap();
        // Per image (laterals included) works too, with 24 studies resampled.
        let img = EvalOptions {
            study_aggregation: None,
            ..opts
        };
        let (r, _) = evaluate("valid", &[], &p, &img, None, Some(&ds.records), false).unwrap();
        assert_eq!((r.n_rows, r.cis.unwrap().n_studies), (30, 24));
    }

    #[test]
    fn full_report_is_written_and_names_set_and_ensemble() {
        let dir = tempfile::tempdir().unwrap();
        let a = synthetic(600, 14, 1);
        let mut b = a.clone();
        for (i, v) in b.probs.iter_mut().enumerate() {
            // Row-dependent noise: b ranks rows differently from a.
            *v = (*v * 0.8 + 0.2 * ((i / 14 * 7919) % 13) as f64 / 13.0).clamp(0.0, 1.0);
        }
        let e = ensemble(&[a.clone(), b.clone()]).unwrap();
        let opts = EvalOptions {
            bootstrap: BootstrapConfig {
                resamples: 100,
                seed: 2,
                level: 0.95,
            },
            study_aggregation: Some(Aggregation::Max),
            ..EvalOptions::default()
        };
        let th = Thresholds::fit(&a, Criterion::MaxF1);
        let (mut r, evaluated) = evaluate(
            "synthetic test",
            &["run-a".into(), "run-b".into()],
            &e,
            &opts,
            Some(&th),
            None,
            false,
        )
        .unwrap();
        assert_eq!(r.model, "ensemble of 2");
        assert_eq!(r.level, "study (max)");
        assert_eq!(evaluated.n_rows(), r.n_studies);
        r.comparison = Some(compare(&a, &b, "run-a", "run-b", &opts.bootstrap).unwrap());
        let w = write_outputs(dir.path(), &r, &evaluated).unwrap();
        let md = std::fs::read_to_string(&w.report_md).unwrap();
        assert!(
            md.contains("synthetic test") && md.contains("ensemble of 2"),
            "{md}"
        );
        assert!(
            md.contains("| Cardiomegaly | 0.") && md.contains("competition tasks"),
            "{md}"
        );
        assert!(md.contains("## Comparison: run-a vs run-b"), "{md}");
        let back: EvalReport =
            serde_json::from_str(&std::fs::read_to_string(&w.metrics_json).unwrap()).unwrap();
        assert_eq!(
            (back.set, back.model, back.runs),
            (r.set.clone(), r.model.clone(), r.runs.clone())
        );
        assert_eq!(back.summary.mean_all.covers, r.summary.mean_all.covers);
        for png in [&w.roc_png, &w.reliability_png] {
            let img = image::open(png).unwrap();
            assert!(img.width() > 100 && img.height() > 100);
        }
        if let Ok(keep) = std::env::var("NOISYCXR_KEEP_PLOTS") {
            std::fs::copy(&w.report_md, Path::new(&keep).join("report.md")).unwrap();
        }
        let csv = std::fs::read_to_string(&w.predictions_csv).unwrap();
        assert_eq!(csv.lines().count(), r.n_studies + 1);
        let bad = EvalOptions {
            calibration_bins: 1,
            ..EvalOptions::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("calibration_bins"));
    }
}
