//! MIMIC-CXR-JPG reader: labels per *study* joined to images per *DICOM*.
//!
//! Three files, read by column name (all may be `.csv.gz`, as PhysioNet ships them):
//! - labels, `mimic-cxr-2.0.0-chexpert.csv` (or `-negbio.csv`): `subject_id,study_id` and the 14
//!   CheXpert findings **in alphabetical order**, one row per study, cells `1.0`/`0.0`/`-1.0`/
//!   empty as in CheXpert;
//! - `mimic-cxr-2.0.0-metadata.csv`: `dicom_id,subject_id,study_id,ViewPosition,...`, one row per
//!   image;
//! - `mimic-cxr-2.0.0-split.csv`: `dicom_id,study_id,subject_id,split` (`train`/`validate`/`test`),
//!   needed only when a split is asked for.
//!
//! Every image of a labelled study becomes one [`Record`] whose `labels` follow
//! [`CHEXPERT_FINDINGS`] order (not the file's), path
//! `files/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg` relative to the folder that
//! holds `files/`, patient `p{subject_id}`, study `p{subject_id}/s{study_id}`, `line` = the study's
//! line in the labels CSV. Sex and age are not in MIMIC-CXR (they live in MIMIC-IV): `None`.
//! Images of studies without a label row, label rows without images, and images outside the
//! requested split are listed in [`Dataset::skipped`] with the reason.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::csvio::{Table, Width};
use super::labels::{Observation, CHEXPERT_FINDINGS};
use super::official::OfficialSplit;
use super::record::{Dataset, DatasetKind, Projection, Record, Skip, View};
use super::textfile;
use crate::error::{Error, Result};

/// Standard file names in a MIMIC-CXR-JPG folder (each may also carry `.gz`).
pub const LABELS_CSV: &str = "mimic-cxr-2.0.0-chexpert.csv";
pub const METADATA_CSV: &str = "mimic-cxr-2.0.0-metadata.csv";
pub const SPLIT_CSV: &str = "mimic-cxr-2.0.0-split.csv";

/// The CSVs a MIMIC-CXR-JPG dataset is read from.
#[derive(Debug, Clone, PartialEq)]
pub struct MimicFiles {
    /// Study-level labels (`mimic-cxr-2.0.0-chexpert.csv` or `-negbio.csv`).
    pub labels: PathBuf,
    /// Image-level metadata (`mimic-cxr-2.0.0-metadata.csv`).
    pub metadata: PathBuf,
    /// Official split; `None` when the folder has none (then no split can be asked for).
    pub split: Option<PathBuf>,
}

impl MimicFiles {
    /// The metadata and split files in the labels CSV's own folder, by their standard names
    /// (plain or `.gz`).
    pub fn beside(labels: &Path) -> Result<MimicFiles> {
        let dir = match labels.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let metadata = textfile::find(dir, METADATA_CSV).ok_or_else(|| {
            Error::input(
                labels,
                format!(
                    "MIMIC-CXR labels need {METADATA_CSV}(.gz) in the same folder ({}) for image \
                     paths and views; copy it there",
                    dir.display()
                ),
            )
        })?;
        Ok(MimicFiles {
            labels: labels.to_path_buf(),
            metadata,
            split: textfile::find(dir, SPLIT_CSV),
        })
    }

    /// The three files inside a MIMIC-CXR-JPG root folder (the one that also holds `files/`).
    pub fn locate(root: &Path) -> Result<MimicFiles> {
        let labels = textfile::find(root, LABELS_CSV).ok_or_else(|| {
            Error::input(
                root,
                format!(
                    "no {LABELS_CSV}(.gz) here; pass --data DIR pointing at the MIMIC-CXR-JPG \
                     folder (the one holding files/ and the CSVs), or --csv FILE"
                ),
            )
        })?;
        Self::beside(&labels)
    }
}

/// Reads MIMIC-CXR-JPG. `image_root` is the folder holding `files/`. With `split`, only that
/// official split's images are kept (the split file is then required).
pub fn read(
    files: &MimicFiles,
    image_root: &Path,
    split: Option<OfficialSplit>,
) -> Result<Dataset> {
    let labels = Table::from_bytes(
        &files.labels,
        textfile::read_bytes(&files.labels)?,
        Width::Exact,
    )?;
    let meta = Table::from_bytes(
        &files.metadata,
        textfile::read_bytes(&files.metadata)?,
        Width::Exact,
    )?;
    let split_of = match split {
        None => None,
        Some(s) => {
            let path = files.split.as_ref().ok_or_else(|| {
                Error::input(
                    &files.metadata,
                    format!(
                        "the {s} split was asked for but there is no {SPLIT_CSV}(.gz) beside the \
                         labels CSV; copy it there or read without a split"
                    ),
                )
            })?;
            let t = Table::from_bytes(path, textfile::read_bytes(path)?, Width::Exact)?;
            Some((s, read_split(&t)?))
        }
    };
    from_tables(
        &labels,
        &meta,
        split_of.as_ref().map(|(s, m)| (*s, m)),
        image_root,
    )
}

/// Split CSV → `dicom_id → (split, subject_id, study_id)`.
type SplitMap = HashMap<String, (OfficialSplit, String, String)>;

fn read_split(t: &Table) -> Result<SplitMap> {
    let dicom = t.texts("dicom_id")?;
    let subject = t.texts("subject_id")?;
    let study = t.texts("study_id")?;
    let split = t.texts("split")?;
    let mut m = HashMap::with_capacity(t.n_rows());
    for i in 0..t.n_rows() {
        let s = OfficialSplit::parse(split[i]).ok_or_else(|| {
            Error::csv(
                &t.file,
                t.line(i),
                format!("split value {:?} is not train, validate or test", split[i]),
            )
        })?;
        let d = dicom[i].trim();
        let prev = m.insert(
            d.to_string(),
            (
                s,
                subject[i].trim().to_string(),
                study[i].trim().to_string(),
            ),
        );
        if prev.is_some() {
            return Err(Error::csv(
                &t.file,
                t.line(i),
                format!("dicom_id {d:?} appears twice; each image belongs to one split"),
            ));
        }
    }
    Ok(m)
}

/// Builds the dataset from parsed tables (labels, metadata, optional `(split, split map)`).
fn from_tables(
    labels: &Table,
    meta: &Table,
    split: Option<(OfficialSplit, &SplitMap)>,
    image_root: &Path,
) -> Result<Dataset> {
    let missing: Vec<&str> = CHEXPERT_FINDINGS
        .iter()
        .copied()
        .filter(|f| !labels.has(f))
        .collect();
    if !missing.is_empty() {
        return Err(Error::input(
            &labels.file,
            format!(
                "not a MIMIC-CXR label file: finding columns {missing:?} are missing (found {:?}). \
                 Pass {LABELS_CSV} (or -negbio.csv), not the metadata or split file",
                labels.header
            ),
        ));
    }
    // Study → (row, line) in the labels table.
    let l_subject = labels.texts("subject_id")?;
    let l_study = labels.texts("study_id")?;
    let cols: Vec<Vec<&str>> = CHEXPERT_FINDINGS
        .iter()
        .map(|f| labels.texts(f))
        .collect::<Result<_>>()?;
    let mut studies: HashMap<&str, usize> = HashMap::with_capacity(labels.n_rows());
    let mut obs: Vec<Vec<Observation>> = Vec::with_capacity(labels.n_rows());
    for i in 0..labels.n_rows() {
        let line = labels.line(i);
        id(labels, line, "subject_id", l_subject[i])?;
        let study = id(labels, line, "study_id", l_study[i])?;
        if let Some(&j) = studies.get(study) {
            return Err(Error::csv(
                &labels.file,
                line,
                format!(
                    "study_id {study} already has a row at line {}; MIMIC label files hold one \
                     row per study",
                    labels.line(j)
                ),
            ));
        }
        studies.insert(study, i);
        let mut row = Vec::with_capacity(CHEXPERT_FINDINGS.len());
        for (k, col) in cols.iter().enumerate() {
            row.push(Observation::parse(col[i]).map_err(|m| {
                Error::csv(
                    &labels.file,
                    line,
                    format!("column {:?}: {m}", CHEXPERT_FINDINGS[k]),
                )
            })?);
        }
        obs.push(row);
    }

    let m_dicom = meta.texts("dicom_id")?;
    let m_subject = meta.texts("subject_id")?;
    let m_study = meta.texts("study_id")?;
    let m_view = if meta.has("ViewPosition") {
        Some(meta.texts("ViewPosition")?)
    } else {
        None
    };
    let mut seen: HashSet<&str> = HashSet::with_capacity(meta.n_rows());
    let mut used = vec![false; labels.n_rows()];
    let mut records = Vec::with_capacity(meta.n_rows());
    let mut skipped = Vec::new();
    for i in 0..meta.n_rows() {
        let line = meta.line(i);
        let dicom = m_dicom[i].trim();
        if dicom.is_empty() {
            return Err(Error::csv(&meta.file, line, "empty dicom_id cell"));
        }
        if !seen.insert(dicom) {
            return Err(Error::csv(
                &meta.file,
                line,
                format!("dicom_id {dicom:?} appears twice; each image has one metadata row"),
            ));
        }
        let subject = id(meta, line, "subject_id", m_subject[i])?;
        let study = id(meta, line, "study_id", m_study[i])?;
        let skip = |reason: String| Skip {
            file: meta.file.clone(),
            line,
            reason,
        };
        if let Some((want, map)) = split {
            match map.get(dicom) {
                None => {
                    skipped.push(skip(format!("dicom_id {dicom} is not in the split file")));
                    continue;
                }
                Some((s, sub, stu)) => {
                    if sub != subject || stu != study {
                        return Err(Error::csv(
                            &meta.file,
                            line,
                            format!(
                                "dicom_id {dicom} is subject {subject} study {study} here but \
                                 subject {sub} study {stu} in the split file; the files come \
                                 from different releases"
                            ),
                        ));
                    }
                    if *s != want {
                        skipped.push(skip(format!("official split is {s}, not {want}")));
                        continue;
                    }
                }
            }
        }
        let Some(&row) = studies.get(study) else {
            skipped.push(skip(format!(
                "study {study} has no row in {}",
                labels.file.display()
            )));
            continue;
        };
        let l_sub = l_subject[row].trim();
        if l_sub != subject {
            return Err(Error::csv(
                &meta.file,
                line,
                format!(
                    "study {study} belongs to subject {subject} here but to subject {l_sub} at \
                     {}:{}; the files come from different releases",
                    labels.file.display(),
                    labels.line(row)
                ),
            ));
        }
        used[row] = true;
        let vp = m_view.as_ref().map(|v| v[i]).unwrap_or("");
        records.push(Record {
            path: image_path(subject, study, dicom),
            patient: format!("p{subject}"),
            study: format!("p{subject}/s{study}"),
            sex: None,
            age: None,
            view: view_of(vp),
            projection: Projection::parse(vp),
            labels: obs[row].clone(),
            line: labels.line(row),
        });
    }
    if split.is_none() {
        for (row, u) in used.iter().enumerate() {
            if !u {
                skipped.push(Skip {
                    file: labels.file.clone(),
                    line: labels.line(row),
                    reason: format!(
                        "study {} has no image in {}",
                        l_study[row].trim(),
                        meta.file.display()
                    ),
                });
            }
        }
    }
    Ok(Dataset {
        kind: DatasetKind::Mimic,
        csv: labels.file.clone(),
        image_root: image_root.to_path_buf(),
        findings: CHEXPERT_FINDINGS.iter().map(|s| s.to_string()).collect(),
        records,
        skipped,
    })
}

/// A numeric id cell, trimmed; a `.0` suffix (ids saved through a float column) is an error
/// that says so rather than a silent fix.
fn id<'a>(t: &Table, line: usize, col: &str, cell: &'a str) -> Result<&'a str> {
    let v = cell.trim();
    if v.len() < 2 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::csv(
            &t.file,
            line,
            format!(
                "{col} {cell:?} is not an integer id of at least two digits; \
                 MIMIC ids look like 10000032 (re-export the file without float formatting)"
            ),
        ));
    }
    Ok(v)
}

/// `files/p10/p10000032/s50414267/<dicom_id>.jpg`.
pub fn image_path(subject_id: &str, study_id: &str, dicom_id: &str) -> String {
    let prefix = subject_id.get(..2).unwrap_or(subject_id);
    format!("files/p{prefix}/p{subject_id}/s{study_id}/{dicom_id}.jpg")
}

/// Frontal/lateral from MIMIC's `ViewPosition`: `PA`, `AP` and their decubitus/axial variants
/// (`AP AXIAL`, `PA LLD`, `AP RLD`, ...) are frontal; `LATERAL`, `LL`, `RL`, `XTABLE LATERAL`
/// are lateral; empty and oblique/other views (`LAO`, `RAO`, `LPO`, `SWIMMERS`, ...) are
/// unknown (`None`), which `frontal_only` keeps — filter by projection to drop them.
pub fn view_of(view_position: &str) -> Option<View> {
    let v = view_position.trim().to_ascii_uppercase();
    let first = v.split_whitespace().next().unwrap_or("");
    if v.contains("LATERAL") || first == "LL" || first == "RL" {
        Some(View::Lateral)
    } else if first == "PA" || first == "AP" {
        Some(View::Frontal)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DataConfig, DatasetFormat};
    use crate::data::source;
    use serde_json::Value;

    fn fixture(p: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/readers")
            .join(p)
    }

    /// Records pandas derived from the same files (`tests/fixtures/readers/make_fixtures.py`).
    fn expected() -> Value {
        serde_json::from_str(include_str!("../../tests/fixtures/readers/expected.json")).unwrap()
    }

    fn check(ds: &Dataset, exp: &Value) {
        let recs = exp["records"].as_array().unwrap();
        assert_eq!(ds.records.len(), recs.len());
        for (r, x) in ds.records.iter().zip(recs) {
            assert_eq!(r.path, x["path"].as_str().unwrap());
            assert_eq!(r.patient, x["patient"].as_str().unwrap());
            assert_eq!(r.study, x["study"].as_str().unwrap());
            assert_eq!(r.line as u64, x["line"].as_u64().unwrap(), "{}", r.path);
            let cells: Vec<&str> = r.labels.iter().map(|o| o.as_cell()).collect();
            let want: Vec<&str> = x["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(cells, want, "{}", r.path);
            let vp = x["view_position"].as_str().unwrap();
            assert_eq!(r.view, view_of(vp), "{vp:?}");
            assert_eq!(r.projection, Projection::parse(vp), "{vp:?}");
            assert_eq!((r.sex, r.age), (None, None));
        }
        assert_eq!(ds.skipped.len() as u64, exp["skipped"].as_u64().unwrap());
    }

    #[test]
    fn joins_labels_metadata_and_split_like_pandas() {
        let root = fixture("mimic");
        let files = MimicFiles::locate(&root).unwrap();
        assert!(files.metadata.to_string_lossy().ends_with(".csv.gz"));
        let e = expected();
        for (key, split) in [
            ("all", None),
            ("train", Some(OfficialSplit::Train)),
            ("validate", Some(OfficialSplit::Validate)),
            ("test", Some(OfficialSplit::Test)),
        ] {
            let ds = read(&files, &root, split).unwrap();
            assert_eq!(ds.kind, DatasetKind::Mimic);
            assert_eq!(ds.findings, CHEXPERT_FINDINGS);
            check(&ds, &e["mimic"][key]);
        }
        // The unlabelled study's images and the image-less study are reported, not dropped
        // silently.
        let all = read(&files, &root, None).unwrap();
        assert!(all
            .skipped
            .iter()
            .any(|s| s.reason.contains("has no image") && s.file == files.labels));
        assert!(all.skipped.iter().any(|s| s.reason.contains("has no row")));
    }

    #[test]
    fn resolves_a_release_folder_into_official_splits() {
        let cfg = DataConfig {
            format: DatasetFormat::Mimic,
            root: fixture("mimic"),
            ..DataConfig::default()
        };
        let s = source::resolve(&cfg).unwrap();
        assert_eq!(source::detect(&s.train.csv).unwrap(), DatasetFormat::Mimic);
        let e = expected();
        let tune = s.tune.unwrap();
        let test = s.test.unwrap();
        for (src, key) in [(&s.train, "train"), (&tune, "validate"), (&test, "test")] {
            let ds = source::read(src, DatasetFormat::Mimic).unwrap();
            check(&ds, &e["mimic"][key]);
        }
        // `--csv` reads every row of the labels CSV.
        let src = source::CsvSource {
            csv: s.train.csv.clone(),
            images: source::default_image_root(&s.train.csv).unwrap(),
            split: None,
        };
        assert_eq!(src.images, fixture("mimic"));
        check(
            &source::read(&src, DatasetFormat::Mimic).unwrap(),
            &e["mimic"]["all"],
        );
    }

    const LABELS: &str = "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices";

    fn write_release(dir: &Path, labels: &str, meta: &str, split: Option<&str>) -> MimicFiles {
        std::fs::write(dir.join(LABELS_CSV), labels).unwrap();
        std::fs::write(dir.join(METADATA_CSV), meta).unwrap();
        if let Some(s) = split {
            std::fs::write(dir.join(SPLIT_CSV), s).unwrap();
        }
        MimicFiles::beside(&dir.join(LABELS_CSV)).unwrap()
    }

    #[test]
    fn inconsistent_files_fail_with_file_line_and_value() {
        let d = tempfile::tempdir().unwrap();
        let row = ",,,,,,,,,,,,,,"; // 14 empty findings
        let meta = "dicom_id,subject_id,study_id,ViewPosition\nd1,10000032,50000000,PA\n";
        // The study belongs to another subject in the labels file.
        let f = write_release(
            d.path(),
            &format!("{LABELS}\n10000099,50000000{row}\n"),
            meta,
            None,
        );
        let e = read(&f, d.path(), None).unwrap_err().to_string();
        assert!(e.contains(":2:") && e.contains("10000099"), "{e}");
        // Duplicate study rows.
        let f = write_release(
            d.path(),
            &format!("{LABELS}\n10000032,50000000{row}\n10000032,50000000{row}\n"),
            meta,
            None,
        );
        let e = read(&f, d.path(), None).unwrap_err().to_string();
        assert!(e.contains(":3:") && e.contains("line 2"), "{e}");
        // Ids written as floats.
        let f = write_release(
            d.path(),
            &format!("{LABELS}\n10000032.0,50000000{row}\n"),
            meta,
            None,
        );
        let e = read(&f, d.path(), None).unwrap_err().to_string();
        assert!(e.contains("10000032.0"), "{e}");
        // A bad label value names its column.
        let f = write_release(
            d.path(),
            &format!("{LABELS}\n10000032,50000000,,2.0,,,,,,,,,,,,\n"),
            meta,
            None,
        );
        let e = read(&f, d.path(), None).unwrap_err().to_string();
        assert!(e.contains("Cardiomegaly") && e.contains("2.0"), "{e}");
        // A split asked for without the split file.
        let f = write_release(
            d.path(),
            &format!("{LABELS}\n10000032,50000000{row}\n"),
            meta,
            None,
        );
        let e = read(&f, d.path(), Some(OfficialSplit::Test)).unwrap_err();
        assert!(e.to_string().contains(SPLIT_CSV), "{e}");
        // The split file disagreeing with the metadata.
        let f = write_release(
            d.path(),
            &format!("{LABELS}\n10000032,50000000{row}\n"),
            meta,
            Some("dicom_id,study_id,subject_id,split\nd1,50000001,10000032,train\n"),
        );
        let e = read(&f, d.path(), Some(OfficialSplit::Train))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("50000001") && e.contains("different releases"),
            "{e}"
        );
        // The metadata file passed as the labels file.
        let f = MimicFiles::beside(&d.path().join(METADATA_CSV)).unwrap();
        let e = read(&f, d.path(), None).unwrap_err().to_string();
        assert!(e.contains("not a MIMIC-CXR label file"), "{e}");
        // No metadata beside the labels.
        let d2 = tempfile::tempdir().unwrap();
        std::fs::write(d2.path().join(LABELS_CSV), LABELS).unwrap();
        let e = MimicFiles::beside(&d2.path().join(LABELS_CSV)).unwrap_err();
        assert!(e.to_string().contains(METADATA_CSV), "{e}");
    }

    #[test]
    fn image_paths_follow_the_release_layout() {
        assert_eq!(
            image_path(
                "10000032",
                "50414267",
                "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"
            ),
            "files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg"
        );
    }

    #[test]
    fn view_positions_map_to_views() {
        for (vp, want) in [
            ("PA", Some(View::Frontal)),
            ("AP", Some(View::Frontal)),
            ("AP AXIAL", Some(View::Frontal)),
            ("PA LLD", Some(View::Frontal)),
            ("LATERAL", Some(View::Lateral)),
            ("XTABLE LATERAL", Some(View::Lateral)),
            ("LL", Some(View::Lateral)),
            ("LAO", None),
            ("SWIMMERS", None),
            ("", None),
        ] {
            assert_eq!(view_of(vp), want, "{vp:?}");
        }
    }
}
