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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::chexpert;
    use crate::data::csvio::{Table, Width};
    use crate::relabel::policy::{Cells, Output};
    use serde_json::Value;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/relabel")
            .join(name)
    }

    /// Cells pandas expects (`tests/fixtures/relabel/make_relabel.py`).
    fn expected() -> Value {
        serde_json::from_str(include_str!("../../tests/fixtures/relabel/expected.json")).unwrap()
    }

    fn probs_csv(name: &str) -> Probabilities {
        let t = Table::read(&fixture(name), Width::Exact).unwrap();
        let findings: Vec<String> = t.header[1..].to_vec();
        let paths = t
            .texts("Path")
            .unwrap()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let cols: Vec<Vec<&str>> = findings.iter().map(|f| t.texts(f).unwrap()).collect();
        let mut v = Vec::new();
        for i in 0..t.n_rows() {
            for c in &cols {
                v.push(c[i].parse::<f32>().unwrap());
            }
        }
        Probabilities::new(paths, findings, v).unwrap()
    }

    fn norm(cell: &str) -> String {
        match Observation::parse(cell) {
            Ok(o) => o.as_cell().to_string(),
            Err(_) => cell.trim().to_string(), // a soft value
        }
    }

    /// Checks one fixture case: expected cells, unchanged cells and rows byte-for-byte,
    /// protected cells, transition counts and rows without prediction.
    fn check_case(input: &str, probs: &str, case: &str, findings: &[String]) -> Relabeled {
        let exp = &expected()[case];
        let policy: RelabelPolicy = toml::from_str(exp["policy"].as_str().unwrap()).unwrap();
        let bytes = std::fs::read(fixture(input)).unwrap();
        let r = relabel_bytes(
            Path::new(input),
            bytes.clone(),
            &probs_csv(probs),
            &policy,
            "run-abc",
        )
        .unwrap();
        let a = RawCsv::parse(Path::new("in"), bytes.clone()).unwrap();
        let b = RawCsv::parse(Path::new("out"), r.csv.clone()).unwrap();
        assert_eq!(a.rows.len(), b.rows.len());
        let cols: Vec<usize> = findings.iter().map(|f| a.column(f).unwrap()).collect();
        let cells = exp["cells"].as_array().unwrap();
        for row in 1..a.rows.len() {
            let want = cells[row - 1].as_array().unwrap();
            for col in 0..a.rows[0].fields.len() {
                let (old, new) = (a.raw(row, col), b.raw(row, col));
                let Some(k) = cols.iter().position(|&c| c == col) else {
                    assert_eq!(old, new, "{case}: non-label field changed, row {row}");
                    continue;
                };
                let want = want[k].as_str().unwrap();
                let old_obs = Observation::parse(&a.value(row, col)).unwrap();
                if want == old_obs.as_cell() {
                    assert_eq!(old, new, "{case}: unchanged cell rewritten, row {row} {k}");
                } else {
                    assert_eq!(norm(&b.value(row, col)), want, "{case}: row {row} {k}");
                    assert_eq!(a.is_quoted(row, col), b.is_quoted(row, col));
                }
                if !policy.cells.covers(old_obs) {
                    assert_eq!(old, new, "{case}: protected cell changed, row {row} {k}");
                }
            }
        }
        // Whole lines without a change are byte-identical, line ends and blank lines included.
        let lines = |x: &[u8]| -> Vec<Vec<u8>> {
            x.split_inclusive(|&c| c == b'\n')
                .map(|l| l.to_vec())
                .collect()
        };
        let (la, lb) = (lines(&bytes), lines(&r.csv));
        assert_eq!(la.len(), lb.len());
        let changed_lines: HashSet<usize> = r.changes.iter().map(|c| c.line).collect();
        for (i, (x, y)) in la.iter().zip(&lb).enumerate() {
            if !changed_lines.contains(&(i + 1)) {
                assert_eq!(x, y, "{case}: line {} differs", i + 1);
            }
            assert_eq!(x.ends_with(b"\r\n"), y.ends_with(b"\r\n"));
        }
        // Counts.
        let s = &r.summary;
        assert_eq!(
            s.rows_without_prediction as u64,
            exp["rows_without_prediction"].as_u64().unwrap(),
            "{case}"
        );
        let trans = exp["transitions"].as_object().unwrap();
        let mut total = 0;
        for f in &s.findings {
            let want: BTreeMap<String, usize> = trans[&f.finding]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap() as usize))
                .collect();
            assert_eq!(f.transitions, want, "{case}: {}", f.finding);
            total += f.changed;
        }
        assert_eq!(total, r.changes.len());
        assert_eq!(s.changed, r.changes.len());
        r
    }

    use std::collections::BTreeMap;

    fn chexpert_findings() -> Vec<String> {
        crate::data::labels::CHEXPERT_FINDINGS
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn chexpert_cases_match_pandas_and_keep_bytes() {
        let f = chexpert_findings();
        for case in [
            "default",
            "all_between_uncertain",
            "uncertain_only_max",
            "blank_soft",
            "all_soft",
        ] {
            let r = check_case("chexpert_train.csv", "chexpert_probs.csv", case, &f);
            if !case.ends_with("soft") {
                // The hard output parses with the same reader as the input.
                let t =
                    Table::from_bytes(Path::new("out.csv"), r.csv.clone(), Width::Exact).unwrap();
                let before =
                    chexpert::read(&fixture("chexpert_train.csv"), Path::new("/d")).unwrap();
                let after = chexpert::from_table(&t, Path::new("/d")).unwrap();
                assert_eq!(before.records.len(), after.records.len());
                for (x, y) in before.records.iter().zip(&after.records) {
                    assert_eq!(
                        (&x.path, x.sex, x.age, x.view),
                        (&y.path, y.sex, y.age, y.view)
                    );
                }
            }
        }
    }

    #[test]
    fn study_max_fills_laterals_from_their_study() {
        let r = check_case(
            "chexpert_train.csv",
            "chexpert_probs.csv",
            "uncertain_only_max",
            &chexpert_findings(),
        );
        // 11 rows (`grep -c` on the fixture): 8 frontals predicted, 3 laterals take their
        // study's maximum.
        assert_eq!(r.summary.rows, 11);
        assert_eq!(r.summary.rows_predicted, 11);
        assert_eq!(r.summary.rows_from_study, 3);
        let r = check_case(
            "chexpert_train.csv",
            "chexpert_probs.csv",
            "default",
            &chexpert_findings(),
        );
        assert_eq!(
            (r.summary.rows_predicted, r.summary.rows_from_study),
            (8, 0)
        );
    }

    #[test]
    fn mimic_study_rows_match_pandas() {
        let alpha: Vec<String> = expected()["mimic_mean"]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        for case in ["mimic_mean", "mimic_max"] {
            let r = check_case("mimic_labels.csv", "mimic_probs.csv", case, &alpha);
            assert_eq!(r.summary.format, "mimic");
            assert!(r.changes.iter().all(|c| c.key.starts_with("p100000")));
            // Parses with the CSV layer, every label cell a valid observation, no final newline.
            let t = Table::from_bytes(Path::new("o.csv"), r.csv.clone(), Width::Exact).unwrap();
            for f in &alpha {
                for c in t.texts(f).unwrap() {
                    Observation::parse(c).unwrap();
                }
            }
            assert!(!r.csv.ends_with(b"\n"));
        }
        // `none` is refused for a study with several predicted images.
        let policy = RelabelPolicy::default();
        let bytes = std::fs::read(fixture("mimic_labels.csv")).unwrap();
        let e = relabel_bytes(
            Path::new("m.csv"),
            bytes,
            &probs_csv("mimic_probs.csv"),
            &policy,
            "x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("relabel.aggregate"), "{e}");
    }

    const HEADER: &str = "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,Support Devices";
    const P1: &str = "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg";

    fn one_row(edema: &str) -> Vec<u8> {
        format!("{HEADER}\n{P1},Female,68,Frontal,AP,,,,,,{edema},,,,,,,,\n").into_bytes()
    }

    fn edema(p: f32) -> Probabilities {
        Probabilities::new(vec![P1.into()], vec!["Edema".into()], vec![p]).unwrap()
    }

    #[test]
    fn mismatched_predictions_and_bad_cells_are_errors() {
        let pol = RelabelPolicy::default();
        let other = Probabilities::new(
            vec!["CheXpert-v1.0-small/train/patient00009/study1/view1_frontal.jpg".into()],
            vec!["Edema".into()],
            vec![0.5],
        )
        .unwrap();
        let e = relabel_bytes(Path::new("t.csv"), one_row(""), &other, &pol, "x").unwrap_err();
        assert!(e.to_string().contains("match no row"), "{e}");
        let e = relabel_bytes(Path::new("t.csv"), one_row("2.0"), &edema(0.5), &pol, "x")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.csv:2:") && e.contains("Edema") && e.contains("2.0"),
            "{e}"
        );
        let e = relabel_bytes(
            Path::new("t.csv"),
            b"a,b\n1,2\n".to_vec(),
            &edema(0.5),
            &pol,
            "x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot relabel"), "{e}");
        let mut only = pol.clone();
        only.findings = vec!["Cardiomegaly".into()];
        let e =
            relabel_bytes(Path::new("t.csv"), one_row(""), &edema(0.5), &only, "x").unwrap_err();
        assert!(e.to_string().contains("relabel.findings"), "{e}");
        // Findings outside `findings` are left alone.
        let p = Probabilities::new(
            vec![P1.into()],
            vec!["Edema".into(), "Atelectasis".into()],
            vec![0.99, 0.99],
        )
        .unwrap();
        only.findings = vec!["Atelectasis".into()];
        let r = relabel_bytes(Path::new("t.csv"), one_row(""), &p, &only, "x").unwrap();
        assert_eq!(r.changes.len(), 1);
        assert_eq!(r.changes[0].finding, "Atelectasis");
        assert_eq!(r.summary.findings.len(), 1);
    }

    #[test]
    fn soft_values_have_four_decimals_and_hard_uses_chexpert_spelling() {
        let mut pol = RelabelPolicy::default();
        let r = relabel_bytes(Path::new("t.csv"), one_row(""), &edema(0.95), &pol, "x").unwrap();
        assert_eq!(r.csv, one_row("1.0"));
        let r = relabel_bytes(Path::new("t.csv"), one_row("-1"), &edema(0.05), &pol, "x").unwrap();
        assert_eq!(r.csv, one_row("0.0"));
        pol.output = Output::Soft;
        pol.cells = Cells::Blank;
        let r = relabel_bytes(Path::new("t.csv"), one_row(""), &edema(0.375), &pol, "ck").unwrap();
        assert_eq!(r.csv, one_row("0.3750"));
        assert_eq!(
            r.changes_csv(),
            format!(
                "line,key,finding,old,new,probability,checkpoint\n2,{P1},Edema,,0.3750,0.375,ck\n"
            )
        );
    }

    #[test]
    fn refuses_to_overwrite_the_input() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("train.csv");
        std::fs::write(&input, one_row("")).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let pol = RelabelPolicy::default();
        let p = edema(0.95);
        let run = |out: &Path| relabel_file(&input, &Outputs::beside(out), &p, &pol, "x");
        let refused = |out: PathBuf| {
            let e = run(&out).unwrap_err();
            assert!(e.to_string().contains("refusing to overwrite"), "{e}");
            assert_eq!(e.exit_code(), 2);
        };
        refused(input.clone());
        refused(dir.path().join("sub/../train.csv"));
        std::os::unix::fs::symlink(&input, dir.path().join("link.csv")).unwrap();
        refused(dir.path().join("link.csv"));
        std::fs::hard_link(&input, dir.path().join("hard.csv")).unwrap();
        refused(dir.path().join("hard.csv"));
        // The companion of `train.changes` would be the input's own name... and an output whose
        // summary or changes file is the input is refused too.
        let alt = dir.path().join("x.changes.csv");
        std::fs::copy(&input, &alt).unwrap();
        let e = relabel_file(
            &alt,
            &Outputs::beside(&dir.path().join("x.csv")),
            &p,
            &pol,
            "x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("refusing"), "{e}");
        // Nothing was written, the input is intact.
        assert_eq!(std::fs::read(&input).unwrap(), one_row(""));
        assert!(!dir.path().join("x.csv").exists());
        assert!(!dir.path().join("train.changes.csv").exists());
    }

    #[test]
    fn writes_csv_changes_and_summary_from_gzip_input() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("train.csv.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&one_row("-1.0")).unwrap();
        std::fs::write(&input, enc.finish().unwrap()).unwrap();
        let out = Outputs::beside(&dir.path().join("out/relabeled.csv"));
        let s = relabel_file(
            &input,
            &out,
            &edema(0.02),
            &RelabelPolicy::default(),
            "run7",
        )
        .unwrap();
        assert_eq!(std::fs::read(&out.csv).unwrap(), one_row("0.0"));
        let changes =
            std::fs::read_to_string(dir.path().join("out/relabeled.changes.csv")).unwrap();
        assert_eq!(
            changes.lines().nth(1).unwrap(),
            format!("2,{P1},Edema,-1.0,0.0,0.02,run7")
        );
        let back: Summary =
            serde_json::from_str(&std::fs::read_to_string(&out.summary_json).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.findings[0].transitions["-1->0"], 1);
        let md = std::fs::read_to_string(&out.summary_md).unwrap();
        assert!(
            md.contains("| Edema | 1 | 1 | 1 |") && md.contains("-1→0"),
            "{md}"
        );
        let e = relabel_file(
            &input,
            &Outputs::beside(&dir.path().join("r.csv.gz")),
            &edema(0.02),
            &RelabelPolicy::default(),
            "x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("plain text"), "{e}");
    }
}
