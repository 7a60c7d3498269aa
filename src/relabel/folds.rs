//! Out-of-fold relabeling: K models, each trained on K−1 patient-level folds of the CSV being
//! relabeled, each predicting only the fold it never saw. A model relabeling its own training
//! images mostly returns what it memorised; out of fold it has to generalise.
//!
//! Layout under the work folder:
//! ```text
//! fold0/train.csv     the rows of folds ≠ 0, byte-for-byte from the input (header first)
//! fold0/run/          the training run (config.toml, best/, last/, metrics.json)
//! fold0/DONE          written once the run finished (a rerun skips the fold)
//! ...
//! ```
//! Every fold's training goes through [`crate::train::run`] with the base config, its training
//! CSV pointed at the fold's subset: when the base config reads a CheXpert-layout dataset
//! whose image root is the one being relabeled, the subset replaces `data.train_csv` (so the
//! tuning and test CSVs stay the dataset's); otherwise it becomes `data.csv` (tuning carved out
//! of the subset by `data.tune_fraction`). An interrupted fold resumes from its `last/`.

use std::path::{Path, PathBuf};

use super::predictor::Predictor;
use super::probs::Probabilities;
use super::rawcsv::RawCsv;
use crate::config::{Config, DatasetFormat};
use crate::data::record::Dataset;
use crate::data::split::patient_folds;
use crate::error::{Error, Result};

/// Which model predicted one row.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Assignment {
    /// 1-based line of the row in the input CSV.
    pub line: usize,
    pub path: String,
    pub patient: String,
    /// The row's fold; the model of this fold (trained on every other fold) predicted it.
    pub fold: usize,
    /// The predicting checkpoint's id (`dir@sha`).
    pub model: String,
}

/// The result of an out-of-fold prediction.
pub struct OutOfFold {
    /// Every readable row's probabilities, each from the model that did not train on it.
    pub probs: Probabilities,
    pub assignments: Vec<Assignment>,
    /// `(image, reason)` of images that could not be read.
    pub skipped: Vec<(String, String)>,
    /// Run folder of each fold's model.
    pub runs: Vec<PathBuf>,
}

/// Settings of an out-of-fold relabel besides the base training config.
#[derive(Debug, Clone)]
pub struct FoldOptions {
    /// Number of folds K (≥ 2).
    pub k: usize,
    /// Folder for the fold subsets and runs.
    pub work: PathBuf,
    /// Image root the CSV's paths are relative to.
    pub images: PathBuf,
    pub calibrate: bool,
    pub batch_size: usize,
    pub workers: usize,
    pub strict: bool,
}

/// Writes the rows of `rows` (indices into `csv.rows`, ≥ 1) after the header to `path`, each
/// row's bytes exactly as in the input, `\n`-terminated.
pub fn write_subset(csv: &RawCsv, rows: &[usize], path: &Path) -> Result<()> {
    let span = |r: usize| -> &[u8] {
        let f = &csv.rows[r].fields;
        let (a, b) = (f[0].0, f[f.len() - 1].1);
        &csv.bytes[a..b]
    };
    let mut out = Vec::with_capacity(csv.bytes.len());
    for r in std::iter::once(0).chain(rows.iter().copied()) {
        let s = span(r);
        out.extend_from_slice(s.strip_suffix(b"\r").unwrap_or(s));
        out.push(b'\n');
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::write(path, out).map_err(|e| Error::io(path, e))
}

/// The training config of fold `k`: `base` reading `subset` instead of its training CSV,
/// writing into `out`.
pub fn fold_config(base: &Config, subset: &Path, images: &Path, out: &Path) -> Result<Config> {
    let mut cfg = base.clone();
    cfg.out = out.to_path_buf();
    cfg.data.synth_if_missing = false;
    let subset = std::path::absolute(subset).map_err(|e| Error::io(subset, e))?;
    let same_root = base.data.csv.is_none()
        && base.data.format == DatasetFormat::Chexpert
        && crate::data::chexpert::Layout::locate(&base.data.root)
            .ok()
            .and_then(|l| l.root.canonicalize().ok())
            .is_some_and(|r| images.canonicalize().ok().as_ref() == Some(&r));
    if same_root {
        cfg.data.train_csv = subset.display().to_string();
    } else {
        cfg.data.csv = Some(subset);
        cfg.data.images = Some(images.to_path_buf());
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Trains the K fold models (skipping folds already done) and predicts every row of `ds` (read
/// from `input`) with the model that did not see its fold.
///
/// # Shapes
/// returns probabilities `[M, 14]` for the `M ≤ ds.records.len()` readable rows.
pub fn out_of_fold(
    input: &Path,
    ds: &Dataset,
    base: &Config,
    opts: &FoldOptions,
) -> Result<OutOfFold> {
    if opts.k < 2 {
        return Err(Error::Config(format!(
            "relabel folds = {}: out-of-fold relabeling needs at least 2 folds",
            opts.k
        )));
    }
    let n_patients = ds.n_patients();
    if n_patients < opts.k {
        return Err(Error::input(
            input,
            format!(
                "{} patients cannot fill {} folds; use fewer folds",
                n_patients, opts.k
            ),
        ));
    }
    let raw = RawCsv::parse(input, crate::data::textfile::read_bytes(input)?)?;
    // Raw row of each record, by line.
    let row_of_line: std::collections::HashMap<usize, usize> = raw
        .rows
        .iter()
        .enumerate()
        .skip(1)
        .map(|(r, row)| (row.line, r))
        .collect();
    let fold = patient_folds(ds, opts.k, base.seed);
    let device = crate::config::parse_device(&base.device)?.device()?;
    let mut paths = Vec::new();
    let mut rows: Vec<Vec<f32>> = Vec::new();
    let mut findings = Vec::new();
    let mut assignments = Vec::new();
    let mut skipped = Vec::new();
    let mut runs = Vec::new();
    for k in 0..opts.k {
        let dir = opts.work.join(format!("fold{k}"));
        let run_dir = dir.join("run");
        let subset = dir.join("train.csv");
        let train_rows: Vec<usize> = (0..ds.records.len())
            .filter(|&i| fold[i] != k)
            .map(|i| {
                row_of_line
                    .get(&ds.records[i].line)
                    .copied()
                    .ok_or_else(|| Error::csv(input, ds.records[i].line, "record has no raw row"))
            })
            .collect::<Result<_>>()?;
        if !dir.join("DONE").is_file() {
            write_subset(&raw, &train_rows, &subset)?;
            let cfg = fold_config(base, &subset, &opts.images, &run_dir)?;
            eprintln!(
                "fold {}/{}: training on {} rows of the other folds",
                k + 1,
                opts.k,
                train_rows.len()
            );
            crate::train::run(
                &cfg,
                crate::train::RunOptions {
                    resume: true,
                    stop_after_epoch: None,
                },
            )?;
            std::fs::write(dir.join("DONE"), b"").map_err(|e| Error::io(dir.join("DONE"), e))?;
        }
        let predictor = Predictor::load(&run_dir, &device, opts.calibrate)?;
        let items: Vec<usize> = (0..ds.records.len()).filter(|&i| fold[i] == k).collect();
        let (p, skip) =
            predictor.predict(ds, &items, opts.batch_size, opts.workers, opts.strict)?;
        let by_path: std::collections::HashMap<&str, usize> = p
            .paths
            .iter()
            .enumerate()
            .map(|(j, s)| (s.as_str(), j))
            .collect();
        for &i in &items {
            let r = &ds.records[i];
            if let Some(&j) = by_path.get(r.path.as_str()) {
                paths.push(r.path.clone());
                rows.push(p.row(j).to_vec());
                assignments.push(Assignment {
                    line: r.line,
                    path: r.path.clone(),
                    patient: r.patient.clone(),
                    fold: k,
                    model: predictor.id.clone(),
                });
            }
        }
        findings = p.findings.clone();
        skipped.extend(skip);
        runs.push(run_dir);
    }
    Ok(OutOfFold {
        probs: Probabilities::from_rows(paths, findings, rows)?,
        assignments,
        skipped,
        runs,
    })
}

/// The assignments as CSV: `line,path,patient,fold,model`.
pub fn assignments_csv(a: &[Assignment]) -> String {
    use super::rawcsv::escape;
    let mut s = String::from("line,path,patient,fold,model\n");
    for x in a {
        s.push_str(&format!(
            "{},{},{},{},{}\n",
            x.line,
            escape(&x.path),
            escape(&x.patient),
            x.fold,
            escape(&x.model)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,Support Devices";

    fn row(p: usize, s: usize, edema: &str) -> String {
        format!(
            "CheXpert-v1.0-small/train/patient{p:05}/study{s}/view1_frontal.jpg,Female,60,Frontal,AP,,,,,,{edema},,,,,,,,"
        )
    }

    #[test]
    fn subsets_copy_rows_byte_for_byte_and_hold_out_whole_patients() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!("{HEADER}\r\n");
        for p in 1..=7 {
            for s in 1..=2 {
                text.push_str(&row(p, s, if s == 1 { "\"-1.0\"" } else { "1" }));
                text.push_str("\r\n");
            }
        }
        let input = dir.path().join("train.csv");
        std::fs::write(&input, &text).unwrap();
        let ds = crate::data::chexpert::read(&input, Path::new("/img")).unwrap();
        let raw = RawCsv::parse(&input, text.clone().into_bytes()).unwrap();
        let k = 3;
        let fold = patient_folds(&ds, k, 0);
        let mut seen = 0;
        for f in 0..k {
            let rows: Vec<usize> = (0..ds.records.len())
                .filter(|&i| fold[i] != f)
                .map(|i| i + 1)
                .collect();
            let out = dir.path().join(format!("f{f}.csv"));
            write_subset(&raw, &rows, &out).unwrap();
            let sub = crate::data::chexpert::read(&out, Path::new("/img")).unwrap();
            assert_eq!(sub.records.len(), rows.len());
            // Held-out patients never appear in the fold's training subset.
            let held: std::collections::HashSet<&str> = (0..ds.records.len())
                .filter(|&i| fold[i] == f)
                .map(|i| ds.records[i].patient.as_str())
                .collect();
            seen += held.len();
            assert!(sub
                .records
                .iter()
                .all(|r| !held.contains(r.patient.as_str())));
            // Each written line is the input's line (without its \r).
            let body = std::fs::read_to_string(&out).unwrap();
            for l in body.lines() {
                assert!(text.contains(&format!("{l}\r\n")), "{l}");
            }
        }
        assert_eq!(seen, 7, "every patient held out exactly once");
    }

    #[test]
    fn fold_config_keeps_the_dataset_tuning_csv_when_roots_agree() {
        let dir = tempfile::tempdir().unwrap();
        let lab = dir.path().join("lab");
        let chex = lab.join("CheXpert-v1.0-small");
        std::fs::create_dir_all(&chex).unwrap();
        std::fs::write(chex.join("train.csv"), format!("{HEADER}\n")).unwrap();
        std::fs::write(chex.join("valid.csv"), format!("{HEADER}\n")).unwrap();
        let mut base = Config::default();
        base.data.root = lab.clone();
        base.data.tune_csv = Some("valid.csv".into());
        let subset = dir.path().join("f/train.csv");
        let c = fold_config(&base, &subset, &lab, &dir.path().join("o")).unwrap();
        assert!(c.data.csv.is_none());
        assert_eq!(Path::new(&c.data.train_csv), subset.as_path());
        assert_eq!(c.data.tune_csv.as_deref(), Some("valid.csv"));
        assert_eq!(c.out, dir.path().join("o"));
        // Another image root: the subset is read directly, tuning carved out of it.
        let other = dir.path().join("elsewhere");
        std::fs::create_dir_all(&other).unwrap();
        let c = fold_config(&base, &subset, &other, &dir.path().join("o")).unwrap();
        assert_eq!(c.data.csv.as_deref(), Some(subset.as_path()));
        assert_eq!(c.data.images.as_deref(), Some(other.as_path()));
    }
}
