//! `noisycxr bench eval`: AUROC of `N x K` predictions plus study-bootstrap CIs, timed, and
//! the same work done by scikit-learn in the same invocation when a Python is given.
//!
//! The data are synthetic (seeded): studies of 1-3 images with per-study labels, per-finding
//! prevalence between 1% and 40%, 10% unlabelled cells, f32 probabilities from a logistic
//! model with a finding-specific separation.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::Rng;
use rand_distr::{Distribution, Normal};

use super::bootstrap::{bootstrap_cis, BootstrapConfig};
use super::predictions::Predictions;
use super::summary::summarize;
use crate::error::{Error, Result};
use crate::rng::{keyed, Stream};

/// The scikit-learn side, embedded so an installed binary can run it.
const SKLEARN_SCRIPT: &str = include_str!("../../benches/sklearn_eval.py");

/// Benchmark settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchConfig {
    /// Rows (images); default 200,000.
    pub rows: usize,
    /// Findings; default 14.
    pub findings: usize,
    /// Resamples of the headline run; default 1,000.
    pub resamples: usize,
    /// Resamples of the run compared with scikit-learn; default 100.
    pub small_resamples: usize,
    pub seed: u64,
    /// A Python with numpy and scikit-learn; `None` skips the comparison.
    pub python: Option<PathBuf>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            rows: 200_000,
            findings: 14,
            resamples: 1000,
            small_resamples: 100,
            seed: 0,
            python: None,
        }
    }
}

/// One timed task: ours and, when run, scikit-learn's (seconds).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BenchRow {
    pub task: String,
    /// Wall-clock seconds.
    pub ours_s: f64,
    /// CPU seconds of this process over the task (Linux `/proc/self/stat`; `None` elsewhere).
    /// Shows the work done when the machine is shared: wall ≈ cpu / threads when unloaded.
    pub ours_cpu_s: Option<f64>,
    pub sklearn_s: Option<f64>,
}

/// The benchmark table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BenchReport {
    pub rows: usize,
    pub findings: usize,
    pub studies: usize,
    pub threads: usize,
    pub table: Vec<BenchRow>,
    /// Largest |ours - scikit-learn| over the point AUROCs, when scikit-learn ran.
    pub max_abs_diff_auroc: Option<f64>,
    /// Why scikit-learn did not run, if it did not.
    pub note: Option<String>,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bench eval: {} rows x {} findings, {} studies, {} threads (synthetic data)",
            self.rows, self.findings, self.studies, self.threads
        )?;
        writeln!(f, "| task | noisycxr wall (s) | noisycxr CPU (s) | scikit-learn wall (s) | speed-up (wall) |")?;
        writeln!(f, "|---|---:|---:|---:|---:|")?;
        for r in &self.table {
            let (sk, ratio) = match r.sklearn_s {
                Some(s) => (format!("{s:.3}"), format!("{:.1}x", s / r.ours_s.max(1e-9))),
                None => ("-".into(), "-".into()),
            };
            let cpu = r.ours_cpu_s.map_or("-".into(), |c| format!("{c:.2}"));
            writeln!(
                f,
                "| {} | {:.3} | {cpu} | {sk} | {ratio} |",
                r.task, r.ours_s
            )?;
        }
        if let Some(d) = self.max_abs_diff_auroc {
            writeln!(f, "max |AUROC ours - scikit-learn| = {d:.2e}")?;
        }
        if let Some(n) = &self.note {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

/// Synthetic predictions for the benchmark (deterministic in `seed`).
pub fn synthetic(rows: usize, findings: usize, seed: u64) -> Predictions {
    let mut rng = keyed(seed, Stream::Synth, 0xE7A1, 0);
    let normal = Normal::new(0.0, 1.0).expect("unit normal");
    let prevalence: Vec<f64> = (0..findings)
        .map(|j| 0.01 + 0.39 * j as f64 / (findings.max(2) - 1) as f64)
        .collect();
    let separation: Vec<f64> = (0..findings).map(|j| 0.8 + 0.15 * (j % 7) as f64).collect();
    let (mut paths, mut studies) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
    let mut probs = Vec::with_capacity(rows * findings);
    let mut targets = Vec::with_capacity(rows * findings);
    let mut study = 0usize;
    let mut truth = vec![false; findings];
    while paths.len() < rows {
        let imgs = rng.random_range(1..=3usize).min(rows - paths.len());
        for t in truth.iter_mut().zip(&prevalence) {
            *t.0 = rng.random::<f64>() < *t.1;
        }
        for v in 0..imgs {
            paths.push(format!(
                "synthetic/patient{study:06}/study1/view{}.jpg",
                v + 1
            ));
            studies.push(format!("patient{study:06}/study1"));
            for j in 0..findings {
                let z = normal.sample(&mut rng) + separation[j] * if truth[j] { 1.0 } else { -0.5 };
                probs.push((1.0 / (1.0 + (-z).exp())) as f32 as f64);
                let labelled = rng.random::<f64>() >= 0.1;
                targets.push(labelled.then_some(truth[j]));
            }
        }
        study += 1;
    }
    let names = (0..findings)
        .map(|j| {
            crate::data::CHEXPERT_FINDINGS
                .get(j)
                .map(|s| s.to_string())
                .unwrap_or_else(|| format!("Finding {j}"))
        })
        .collect();
    Predictions::new(paths, studies, names, probs, targets)
        .expect("synthetic predictions are valid")
}

/// User + system CPU seconds of this process so far (Linux only; 10 ms resolution).
fn process_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// Runs `f`, returning its value, wall seconds and CPU seconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, Option<f64>) {
    let c = process_cpu_s();
    let t = Instant::now();
    let v = f();
    let wall = t.elapsed().as_secs_f64();
    let cpu = match (c, process_cpu_s()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    (v, wall, cpu)
}

/// Writes the data in the layout `benches/sklearn_eval.py` reads.
fn write_for_python(dir: &Path, p: &Predictions) -> Result<()> {
    let (study, n_studies) = p.study_index();
    let w = |name: &str, bytes: Vec<u8>| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| Error::io(path, e))
    };
    w(
        "meta.json",
        serde_json::json!({"rows": p.n_rows(), "findings": p.n_findings(), "studies": n_studies})
            .to_string()
            .into_bytes(),
    )?;
    w(
        "probs.f32",
        p.probs
            .iter()
            .flat_map(|&x| (x as f32).to_le_bytes())
            .collect(),
    )?;
    w(
        "targets.i8",
        p.targets
            .iter()
            .map(|t| match t {
                Some(true) => 1u8,
                Some(false) => 0u8,
                None => 0xFFu8,
            })
            .collect(),
    )?;
    w(
        "study.u32",
        study.iter().flat_map(|s| s.to_le_bytes()).collect(),
    )?;
    w("sklearn_eval.py", SKLEARN_SCRIPT.as_bytes().to_vec())
}

#[derive(serde::Deserialize)]
struct SklearnOut {
    point_s: f64,
    boot_s: f64,
    point_auroc: Vec<Option<f64>>,
}

fn run_sklearn(python: &Path, p: &Predictions, resamples: usize, seed: u64) -> Result<SklearnOut> {
    let dir = std::env::temp_dir().join(format!("noisycxr-bench-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let result = (|| {
        write_for_python(&dir, p)?;
        let out = std::process::Command::new(python)
            .arg(dir.join("sklearn_eval.py"))
            .arg(&dir)
            .arg(resamples.to_string())
            .arg(seed.to_string())
            .output()
            .map_err(|e| Error::io(python, e))?;
        if !out.status.success() {
            return Err(Error::Other(format!(
                "{} sklearn_eval.py failed ({}): {}; does it have numpy and scikit-learn?",
                python.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        serde_json::from_slice::<SklearnOut>(&out.stdout)
            .map_err(|e| Error::Other(format!("sklearn_eval.py printed unreadable output: {e}")))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Runs the benchmark: ours on AUROC alone, with `resamples` and with `small_resamples`
/// bootstrap resamples; scikit-learn on AUROC and `small_resamples` resamples when
/// `config.python` is set.
pub fn run(config: &BenchConfig) -> Result<BenchReport> {
    if config.rows < 10 || config.findings == 0 {
        return Err(Error::Config(format!(
            "bench eval: rows = {}, findings = {}: use at least 10 rows and 1 finding",
            config.rows, config.findings
        )));
    }
    let p = synthetic(config.rows, config.findings, config.seed);
    let studies = p.study_index().1;
    let (summary, t_point, c_point) = timed(|| summarize(&p));
    let big = BootstrapConfig {
        resamples: config.resamples,
        seed: config.seed,
        level: 0.95,
    };
    let small = BootstrapConfig {
        resamples: config.small_resamples,
        ..big.clone()
    };
    let (r, t_big, c_big) = timed(|| -> Result<_> {
        let s = summarize(&p);
        Ok((s, bootstrap_cis(&p, &big)?))
    });
    r?;
    let (r, t_small, c_small) = timed(|| -> Result<_> {
        let s = summarize(&p);
        Ok((s, bootstrap_cis(&p, &small)?))
    });
    r?;
    let mut report = BenchReport {
        rows: config.rows,
        findings: config.findings,
        studies,
        threads: rayon::current_num_threads(),
        table: vec![
            BenchRow {
                task: "AUROC + AP, all findings".into(),
                ours_s: t_point,
                ours_cpu_s: c_point,
                sklearn_s: None,
            },
            BenchRow {
                task: format!("AUROC + {} study bootstraps", config.small_resamples),
                ours_s: t_small,
                ours_cpu_s: c_small,
                sklearn_s: None,
            },
            BenchRow {
                task: format!("AUROC + {} study bootstraps", config.resamples),
                ours_s: t_big,
                ours_cpu_s: c_big,
                sklearn_s: None,
            },
        ],
        max_abs_diff_auroc: None,
        note: None,
    };
    match &config.python {
        None => report.note = Some("scikit-learn not run (no python given)".into()),
        Some(py) => {
            let sk = run_sklearn(py, &p, config.small_resamples, config.seed)?;
            report.table[0].sklearn_s = Some(sk.point_s);
            report.table[0].task = "AUROC, all findings (ours: + AP)".into();
            report.table[1].sklearn_s = Some(sk.point_s + sk.boot_s);
            let mut d = 0.0f64;
            for (m, s) in summary.per_finding.iter().zip(&sk.point_auroc) {
                match (m.auroc, s) {
                    (Some(a), Some(b)) => d = d.max((a - b).abs()),
                    (None, None) => {}
                    _ => {
                        return Err(Error::Other(format!(
                            "bench eval: {} is defined on one side only ({:?} vs {:?})",
                            m.finding, m.auroc, s
                        )))
                    }
                }
            }
            report.max_abs_diff_auroc = Some(d);
            report.note = Some(format!(
                "scikit-learn with {} resamples would take about {:.0} s (its {}-resample \
                 bootstrap time scaled up)",
                config.resamples,
                sk.point_s
                    + sk.boot_s * config.resamples as f64 / config.small_resamples.max(1) as f64,
                config.small_resamples
            ));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bench_runs_without_python() {
        let r = run(&BenchConfig {
            rows: 3000,
            findings: 3,
            resamples: 20,
            small_resamples: 5,
            seed: 1,
            python: None,
        })
        .unwrap();
        assert_eq!(r.table.len(), 3);
        assert!(r.studies > 1000 && r.studies < 3000, "{}", r.studies);
        let text = r.to_string();
        assert!(
            text.contains("20 study bootstraps") && text.contains("no python"),
            "{text}"
        );
        // Same seed, same data.
        assert_eq!(synthetic(50, 2, 4), synthetic(50, 2, 4));
        assert_ne!(synthetic(50, 2, 4), synthetic(50, 2, 5));
    }

    /// The full benchmark (200,000 x 14, 1,000 resamples), against scikit-learn when
    /// `NOISYCXR_BENCH_PYTHON` names a Python with it:
    /// `cargo test --release --lib eval::bench::tests::full -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark; minutes with scikit-learn"]
    fn full() {
        let cfg = BenchConfig {
            python: std::env::var_os("NOISYCXR_BENCH_PYTHON").map(PathBuf::from),
            ..BenchConfig::default()
        };
        let r = run(&cfg).unwrap();
        println!("{r}");
        if let Some(d) = r.max_abs_diff_auroc {
            assert!(d < 1e-9, "AUROC differs from scikit-learn by {d}");
        }
    }
}
