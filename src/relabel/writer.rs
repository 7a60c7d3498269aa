//! Writes the relabeled CSV in the **same format and column order as its input** — CheXpert's
//! `train.csv` (one row per image, keyed by `Path`) or MIMIC-CXR's
//! `mimic-cxr-2.0.0-chexpert.csv` (one row per study, keyed by `subject_id,study_id`) — with
//! every unchanged byte as it was: the edit works on the raw fields of the input text
//! ([`RawCsv`]), never on a re-serialisation, so quotes, line ends and number spellings survive
//! and any CheXpert tool reads the result.
//!
//! Beside it go a companion CSV of every changed cell
//! (`line,key,finding,old,new,probability,checkpoint`; `key` is the image `Path` for CheXpert and
//! `p{subject_id}/s{study_id}` for MIMIC; `old` is the cell as it was, empty for blank) and the
//! [`Summary`] as JSON and Markdown. The input is never overwritten: every output path is
//! resolved (symlinks, `..`, hard links) and compared with the input's.
//!
//! Matching rows to predictions:
//! - CheXpert, `aggregate = "none"`: a row uses the prediction of its own `Path`.
//! - CheXpert, `max`/`mean`: a row uses its study's aggregate (`patientN/studyM` from the path),
//!   also when its own image was not predicted (counted in `rows_from_study`).
//! - MIMIC: predictions are per image (`files/pXX/p{subject}/s{study}/{dicom}.jpg`); the study
//!   row uses the aggregate of its images (`none` only for one-image studies).
//!
//! A row with no prediction is kept unchanged and counted. A prediction that matches no row is
//! an error (it was made from another CSV).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::aggregate;
use super::policy::{Aggregate, Decision, RelabelPolicy};
use super::probs::Probabilities;
use super::rawcsv::{escape, RawCsv};
use super::summary::{short, FindingSummary, Summary};
use crate::data::chexpert::patient_study;
use crate::data::labels::Observation;
use crate::data::textfile;
use crate::error::{Error, Result};

/// Layout of a label CSV, detected from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// CheXpert `train.csv` (and the noise lab's): a `Path` column, one row per image.
    CheXpert,
    /// MIMIC-CXR-JPG `mimic-cxr-2.0.0-chexpert.csv`: `subject_id,study_id`, one row per study.
    Mimic,
}

impl Format {
    /// `Path` column → CheXpert; `subject_id` and `study_id` → MIMIC.
    pub fn detect(header: &[String]) -> Option<Format> {
        let has = |n: &str| header.iter().any(|h| h == n);
        if has("Path") {
            Some(Format::CheXpert)
        } else if has("subject_id") && has("study_id") {
            Some(Format::Mimic)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::CheXpert => "chexpert",
            Format::Mimic => "mimic",
        }
    }
}

/// One changed cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// 1-based line of the row in the input (header = line 1).
    pub line: usize,
    /// Image `Path` (CheXpert) or `p{subject_id}/s{study_id}` (MIMIC).
    pub key: String,
    pub finding: String,
    /// The cell as it was (trimmed, unquoted; empty = blank).
    pub old: String,
    /// The cell as written.
    pub new: String,
    /// The probability the decision used (after aggregation).
    pub probability: f32,
}

/// The result of relabeling a CSV in memory.
#[derive(Debug, Clone)]
pub struct Relabeled {
    /// The new CSV's bytes.
    pub csv: Vec<u8>,
    pub changes: Vec<Change>,
    pub summary: Summary,
}

impl Relabeled {
    /// The companion CSV of changed cells, with `checkpoint` in every row.
    pub fn changes_csv(&self) -> String {
        let mut s = String::from("line,key,finding,old,new,probability,checkpoint\n");
        for c in &self.changes {
            s.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                c.line,
                escape(&c.key),
                escape(&c.finding),
                escape(&c.old),
                escape(&c.new),
                c.probability,
                escape(&self.summary.checkpoint)
            ));
        }
        s
    }
}

/// Relabels the CSV `bytes` (named `input` in errors and the summary).
pub fn relabel_bytes(
    input: &Path,
    bytes: Vec<u8>,
    probs: &Probabilities,
    policy: &RelabelPolicy,
    checkpoint: &str,
) -> Result<Relabeled> {
    policy.validate()?;
    let csv = RawCsv::parse(input, bytes)?;
    let header = csv.header();
    let format = Format::detect(&header).ok_or_else(|| {
        Error::input(
            input,
            format!(
                "cannot relabel this CSV: no `Path` column (CheXpert) and no \
                 `subject_id,study_id` (MIMIC-CXR labels) in the header {header:?}"
            ),
        )
    })?;
    // (index in probs, column in the CSV) of every finding relabeled.
    let mut targets: Vec<(usize, usize)> = Vec::new();
    for f in &policy.findings {
        if !probs.findings.contains(f) {
            return Err(Error::Config(format!(
                "relabel.findings names {f:?} but the model does not predict it (it predicts \
                 {:?})",
                probs.findings
            )));
        }
    }
    for (k, f) in probs.findings.iter().enumerate() {
        if !policy.relabels(f) {
            continue;
        }
        let col = csv.column(f).ok_or_else(|| {
            Error::input(
                input,
                format!("missing finding column {f:?}; found columns {header:?}"),
            )
        })?;
        targets.push((k, col));
    }

    let n_rows = csv.rows.len() - 1;
    let mut summary = Summary {
        input: input.display().to_string(),
        output: String::new(),
        checkpoint: checkpoint.to_string(),
        format: format.name().to_string(),
        policy: policy.clone(),
        rows: n_rows,
        rows_predicted: 0,
        rows_from_study: 0,
        rows_without_prediction: 0,
        unpredicted_examples: Vec::new(),
        changed: 0,
        findings: targets
            .iter()
            .map(|&(k, _)| FindingSummary {
                finding: probs.findings[k].clone(),
                ..Default::default()
            })
            .collect(),
    };

    let rows = match format {
        Format::CheXpert => chexpert_rows(input, &csv, probs, policy.aggregate)?,
        Format::Mimic => mimic_rows(input, &csv, probs, policy.aggregate)?,
    };

    let mut edits = Vec::new();
    let mut changes = Vec::new();
    for (r, row) in rows.into_iter().enumerate() {
        let line = csv.rows[r + 1].line;
        let Some(p) = row.probs else {
            summary.rows_without_prediction += 1;
            if summary.unpredicted_examples.len() < 5 {
                summary
                    .unpredicted_examples
                    .push(format!("line {line}: {}", row.key));
            }
            continue;
        };
        summary.rows_predicted += 1;
        if row.from_study {
            summary.rows_from_study += 1;
        }
        for (t, &(k, col)) in targets.iter().enumerate() {
            let finding = &probs.findings[k];
            let old_text = csv.value(r + 1, col);
            let old = Observation::parse(&old_text)
                .map_err(|m| Error::csv(input, line, format!("column {finding:?}: {m}")))?;
            if policy.cells.covers(old) {
                summary.findings[t].in_scope += 1;
            }
            let (new, to) = match policy.decide(finding, old, p[k]) {
                Decision::Keep => continue,
                Decision::Hard(o) => (o.as_cell().to_string(), short(o)),
                Decision::Soft(v) => (format!("{v:.4}"), "p"),
            };
            summary.count(t, old, to);
            edits.push((r + 1, col, new.clone()));
            changes.push(Change {
                line,
                key: row.key.clone(),
                finding: finding.clone(),
                old: old_text.trim().to_string(),
                new,
                probability: p[k],
            });
        }
    }
    Ok(Relabeled {
        csv: csv.with_edits(&edits),
        changes,
        summary,
    })
}

/// A data row's key and the `[C]` probabilities it uses, if any.
struct RowProbs {
    key: String,
    probs: Option<Vec<f32>>,
    /// No prediction of its own; took its study's aggregate.
    from_study: bool,
}

fn unmatched_error(input: &Path, what: &str, keys: Vec<&str>) -> Error {
    let n = keys.len();
    let shown: Vec<&str> = keys.into_iter().take(3).collect();
    Error::input(
        input,
        format!(
            "{n} predicted {what} match no row of this CSV (e.g. {shown:?}); the predictions \
             were made from another CSV — predict this file's images"
        ),
    )
}

fn chexpert_rows(
    input: &Path,
    csv: &RawCsv,
    probs: &Probabilities,
    how: Aggregate,
) -> Result<Vec<RowProbs>> {
    let path_col = csv
        .column("Path")
        .ok_or_else(|| Error::input(input, "missing column \"Path\""))?;
    let by_path: HashMap<&str, usize> = probs
        .paths
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    let studies = if how == Aggregate::None {
        None
    } else {
        let keys = probs
            .paths
            .iter()
            .map(|p| {
                patient_study(p).map(|(_, s)| s).ok_or_else(|| {
                    Error::Other(format!(
                        "predicted image {p:?} has no .../patientN/studyM/... in its path; \
                         cannot aggregate by study"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Some(aggregate::by_key(probs, &keys, how)?)
    };
    let mut used: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(csv.rows.len() - 1);
    for r in 1..csv.rows.len() {
        let path = csv.value(r, path_col).trim().to_string();
        let own = by_path.get_key_value(path.as_str());
        if let Some((k, _)) = own {
            used.insert(k);
        }
        let (probs_row, from_study) = match &studies {
            None => (own.map(|(_, &i)| probs.row(i).to_vec()), false),
            Some(agg) => {
                let study = patient_study(&path).map(|(_, s)| s).ok_or_else(|| {
                    Error::csv(
                        input,
                        csv.rows[r].line,
                        format!(
                            "Path {path:?} has no .../patientN/studyM/...; cannot aggregate by \
                             study (set relabel.aggregate = \"none\")"
                        ),
                    )
                })?;
                let v = agg.get(&study).cloned();
                let from = v.is_some() && own.is_none();
                (v, from)
            }
        };
        out.push(RowProbs {
            key: path,
            probs: probs_row,
            from_study,
        });
    }
    if used.len() < probs.len() {
        let missing = probs
            .paths
            .iter()
            .map(String::as_str)
            .filter(|p| !used.contains(p))
            .collect();
        return Err(unmatched_error(input, "images", missing));
    }
    Ok(out)
}

/// `(subject_id, study_id)` from a MIMIC-CXR-JPG image path `.../p{subject}/s{study}/x.jpg`.
pub fn mimic_ids(path: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = path.split(['/', '\\']).collect();
    let digits = |s: &str, prefix: char| -> Option<String> {
        let rest = s.strip_prefix(prefix)?;
        (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())).then(|| rest.to_string())
    };
    (1..parts.len()).rev().find_map(|i| {
        let study = digits(parts[i], 's')?;
        let subject = digits(parts[i - 1], 'p')?;
        Some((subject, study))
    })
}

fn mimic_rows(
    input: &Path,
    csv: &RawCsv,
    probs: &Probabilities,
    how: Aggregate,
) -> Result<Vec<RowProbs>> {
    let (Some(sub_col), Some(stu_col)) = (csv.column("subject_id"), csv.column("study_id")) else {
        return Err(Error::input(input, "missing subject_id or study_id column"));
    };
    let mut subject_of: HashMap<String, String> = HashMap::new();
    let mut keys = Vec::with_capacity(probs.len());
    for p in &probs.paths {
        let (subject, study) = mimic_ids(p).ok_or_else(|| {
            Error::Other(format!(
                "predicted image {p:?} is not a MIMIC-CXR-JPG path \
                 (files/pXX/p<subject_id>/s<study_id>/<dicom_id>.jpg)"
            ))
        })?;
        if let Some(prev) = subject_of.insert(study.clone(), subject.clone()) {
            if prev != subject {
                return Err(Error::Other(format!(
                    "predicted images put study {study} under subjects {prev} and {subject}"
                )));
            }
        }
        keys.push(study);
    }
    let agg = aggregate::by_key(probs, &keys, how)?;
    let mut used: HashSet<String> = HashSet::new();
    let mut out = Vec::with_capacity(csv.rows.len() - 1);
    for r in 1..csv.rows.len() {
        let line = csv.rows[r].line;
        let subject = csv.value(r, sub_col).trim().to_string();
        let study = csv.value(r, stu_col).trim().to_string();
        if !used.insert(study.clone()) {
            return Err(Error::csv(
                input,
                line,
                format!("study_id {study} has a second row; MIMIC label files hold one per study"),
            ));
        }
        let v = agg.get(&study).cloned();
        if v.is_some() && subject_of[&study] != subject {
            return Err(Error::csv(
                input,
                line,
                format!(
                    "study {study} belongs to subject {subject} here but its predicted images \
                     are under p{}; the files come from different releases",
                    subject_of[&study]
                ),
            ));
        }
        out.push(RowProbs {
            key: format!("p{subject}/s{study}"),
            probs: v,
            from_study: false,
        });
    }
    let missing: Vec<&str> = {
        let mut m: Vec<&str> = agg
            .keys()
            .map(String::as_str)
            .filter(|s| !used.contains(*s))
            .collect();
        m.sort_unstable();
        m
    };
    if !missing.is_empty() {
        return Err(unmatched_error(input, "studies", missing));
    }
    Ok(out)
}

/// Where a relabel writes: the CSV, the companion CSV of changes and the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Outputs {
    pub csv: PathBuf,
    pub changes: PathBuf,
    pub summary_json: PathBuf,
    pub summary_md: PathBuf,
}

impl Outputs {
    /// `relabeled.csv` → `relabeled.changes.csv`, `relabeled.summary.json`,
    /// `relabeled.summary.md` in the same folder.
    pub fn beside(csv: &Path) -> Outputs {
        let stem = csv
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "relabeled".into());
        let with = |suffix: &str| csv.with_file_name(format!("{stem}.{suffix}"));
        Outputs {
            csv: csv.to_path_buf(),
            changes: with("changes.csv"),
            summary_json: with("summary.json"),
            summary_md: with("summary.md"),
        }
    }

    fn all(&self) -> [&Path; 4] {
        [
            &self.csv,
            &self.changes,
            &self.summary_json,
            &self.summary_md,
        ]
    }
}

/// Relabels the CSV file `input` (plain or gzip) and writes `out`. Refuses, before writing
/// anything, when any output resolves to the input. The CSV is written last (each file through a
/// temporary name and a rename), so its presence means the relabel finished.
pub fn relabel_file(
    input: &Path,
    out: &Outputs,
    probs: &Probabilities,
    policy: &RelabelPolicy,
    checkpoint: &str,
) -> Result<Summary> {
    let input_real = std::fs::canonicalize(input).map_err(|e| Error::io(input, e))?;
    for o in out.all() {
        if same_file(&input_real, o)? {
            return Err(Error::Usage(format!(
                "refusing to overwrite the input: {} resolves to {}; choose another --out",
                o.display(),
                input_real.display()
            )));
        }
    }
    let name = out
        .csv
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    if name.as_deref().is_some_and(|n| n.ends_with(".gz")) {
        return Err(Error::Usage(format!(
            "{}: the relabeled CSV is written as plain text; give it a .csv name",
            out.csv.display()
        )));
    }
    let bytes = textfile::read_bytes(input)?;
    let mut r = relabel_bytes(input, bytes, probs, policy, checkpoint)?;
    r.summary.output = out.csv.display().to_string();
    for o in out.all() {
        if let Some(dir) = o.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
    }
    write_atomic(&out.changes, r.changes_csv().as_bytes())?;
    write_atomic(&out.summary_json, r.summary.json()?.as_bytes())?;
    write_atomic(&out.summary_md, r.summary.markdown().as_bytes())?;
    write_atomic(&out.csv, &r.csv)?;
    Ok(r.summary)
}

/// Whether `candidate` (which may not exist yet) is the file `real` (already canonical).
fn same_file(real: &Path, candidate: &Path) -> Result<bool> {
    if candidate.exists() {
        let c = std::fs::canonicalize(candidate).map_err(|e| Error::io(candidate, e))?;
        if c == real {
            return Ok(true);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let (a, b) = (std::fs::metadata(real), std::fs::metadata(&c));
            if let (Ok(a), Ok(b)) = (a, b) {
                return Ok(a.dev() == b.dev() && a.ino() == b.ino());
            }
        }
        return Ok(false);
    }
    // Not there yet: resolve its folder (if that exists) and compare the full path.
    let (Some(dir), Some(name)) = (candidate.parent(), candidate.file_name()) else {
        return Ok(false);
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    match std::fs::canonicalize(dir) {
        Ok(d) => Ok(d.join(name) == real),
        Err(_) => Ok(false),
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
