//! NIH ChestX-ray14 reader: `Data_Entry_2017.csv` plus the official split lists.
//!
//! Header: `Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,
//! View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]` — the unquoted commas
//! inside the brackets make the header split into more fields than names, and some copies end
//! every line with a comma. Only the first seven columns are read, by name; copies with and
//! without the trailing comma both read.
//!
//! `Finding Labels` is `|`-separated names of [`NIH_FINDINGS`] or `No Finding`. NIH's text-mined
//! labels are binary: a listed finding is [`Observation::Positive`], every other one
//! [`Observation::Negative`] (NIH has no uncertain or "not mentioned" cells; this reader never
//! writes `Uncertain` or `Blank`). An unknown name is an error naming the line, never dropped.
//!
//! Records: `path` = the PNG relative to the image root (see [`ImageLayout`]), patient =
//! `Patient ID` as written, study = the image name without extension (one image per visit, e.g.
//! `00000001_000`), view frontal (NIH holds frontal views only), projection = `View Position`
//! (`PA`/`AP`), age in years (`58`, `058Y`; `M`/`D` suffixes of the first release are converted).
//! The official split is `train_val_list.txt` / `test_list.txt` ([`OfficialSplit::Train`] /
//! [`OfficialSplit::Test`]); NIH has no official validation list.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::csvio::{Table, Width};
use super::labels::Observation;
use super::official::OfficialSplit;
use super::record::{Dataset, DatasetKind, Projection, Record, Sex, Skip, View};
use super::textfile;
use crate::error::{Error, Result};

/// The 14 NIH ChestX-ray14 classes, in the order the dataset paper lists them.
pub const NIH_FINDINGS: [&str; 14] = [
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
];

/// The label text of an image with none of the 14 findings.
pub const NO_FINDING: &str = "No Finding";

/// Entry CSV names, newest first (the 2020 re-release renamed the file).
pub const ENTRY_CSVS: [&str; 2] = ["Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv"];
pub const TRAIN_VAL_LIST: &str = "train_val_list.txt";
pub const TEST_LIST: &str = "test_list.txt";

/// Index of an NIH class name in [`NIH_FINDINGS`].
pub fn nih_index(name: &str) -> Option<usize> {
    NIH_FINDINGS.iter().position(|f| *f == name)
}

/// The files an NIH dataset is read from.
#[derive(Debug, Clone, PartialEq)]
pub struct NihFiles {
    /// `Data_Entry_2017.csv` (or `_v2020.csv`).
    pub entries: PathBuf,
    /// `train_val_list.txt`, if present.
    pub train_val_list: Option<PathBuf>,
    /// `test_list.txt`, if present.
    pub test_list: Option<PathBuf>,
}

impl NihFiles {
    /// The split lists in the entry CSV's own folder, when there.
    pub fn beside(entries: &Path) -> NihFiles {
        let dir = match entries.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        NihFiles {
            entries: entries.to_path_buf(),
            train_val_list: textfile::find(dir, TRAIN_VAL_LIST),
            test_list: textfile::find(dir, TEST_LIST),
        }
    }

    /// The files inside an NIH root folder (the one holding `Data_Entry_2017.csv`).
    pub fn locate(root: &Path) -> Result<NihFiles> {
        ENTRY_CSVS
            .iter()
            .find_map(|n| textfile::find(root, n))
            .map(|e| Self::beside(&e))
            .ok_or_else(|| {
                Error::input(
                    root,
                    "no Data_Entry_2017.csv (or Data_Entry_2017_v2020.csv) here; pass --data DIR \
                     pointing at the ChestX-ray14 folder, or --csv FILE",
                )
            })
    }
}

/// Where the PNGs lie under the image root.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageLayout {
    /// Every image in one folder given as a path prefix: `"images/"` (the release's tarballs
    /// extracted) or `""` (the root itself).
    Flat(String),
    /// Kaggle's `images_001/images/` … `images_012/images/`: image name → its folder prefix,
    /// from a directory scan.
    Shards(HashMap<String, String>),
}

impl ImageLayout {
    /// `root/images/` when it exists; else the `images_*/images/` shards when there are any;
    /// else PNGs directly in `root` when it holds some; else `images/` (the release layout,
    /// for a CSV read without its images).
    pub fn detect(root: &Path) -> Result<ImageLayout> {
        if root.join("images").is_dir() {
            return Ok(ImageLayout::Flat("images/".into()));
        }
        let Ok(entries) = std::fs::read_dir(root) else {
            return Ok(ImageLayout::Flat("images/".into()));
        };
        let mut shards = Vec::new();
        let mut pngs_here = false;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("images_") && e.path().join("images").is_dir() {
                shards.push(name);
            } else if name.to_ascii_lowercase().ends_with(".png") {
                pngs_here = true;
            }
        }
        if !shards.is_empty() {
            shards.sort();
            let mut map = HashMap::new();
            for s in shards {
                let dir = root.join(&s).join("images");
                for e in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
                    let e = e.map_err(|e| Error::io(&dir, e))?;
                    let f = e.file_name().to_string_lossy().to_string();
                    map.entry(f).or_insert_with(|| format!("{s}/images/"));
                }
            }
            return Ok(ImageLayout::Shards(map));
        }
        Ok(ImageLayout::Flat(if pngs_here {
            String::new()
        } else {
            "images/".into()
        }))
    }

    /// Path of image `name` relative to the root; `None` when a shard scan did not find it.
    pub fn path(&self, name: &str) -> Option<String> {
        match self {
            ImageLayout::Flat(prefix) => Some(format!("{prefix}{name}")),
            ImageLayout::Shards(map) => map.get(name).map(|p| format!("{p}{name}")),
        }
    }
}

/// Reads NIH ChestX-ray14. `image_root` is the folder holding `images/` (or the shards). With
/// `split`, only that official list's images are kept (the list file is then required).
pub fn read(files: &NihFiles, image_root: &Path, split: Option<OfficialSplit>) -> Result<Dataset> {
    let t = Table::from_bytes(
        &files.entries,
        textfile::read_bytes(&files.entries)?,
        Width::TolerateTrailing,
    )?;
    let keep = match split {
        None => None,
        Some(OfficialSplit::Validate) => {
            return Err(Error::Config(
                "NIH ChestX-ray14 has no official validation list; read the train split and \
                 carve a patient-level tuning set with data.tune_fraction"
                    .into(),
            ))
        }
        Some(s) => Some((s, split_lists(files)?)),
    };
    let layout = ImageLayout::detect(image_root)?;
    from_table(&t, &layout, keep.as_ref().map(|(s, m)| (*s, m)), image_root)
}

/// Image name → official split, from both lists; an image in both is an error.
fn split_lists(files: &NihFiles) -> Result<HashMap<String, OfficialSplit>> {
    let mut m = HashMap::new();
    for (path, s, name) in [
        (&files.train_val_list, OfficialSplit::Train, TRAIN_VAL_LIST),
        (&files.test_list, OfficialSplit::Test, TEST_LIST),
    ] {
        let path = path.as_ref().ok_or_else(|| {
            Error::input(
                &files.entries,
                format!(
                    "an official split was asked for but {name} is not beside this CSV; copy \
                     train_val_list.txt and test_list.txt there or read without a split"
                ),
            )
        })?;
        let bytes = textfile::read_bytes(path)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::input(path, "not UTF-8 text; expected one image name a line"))?;
        for (i, l) in text.lines().enumerate() {
            let n = l.trim();
            if n.is_empty() {
                continue;
            }
            if let Some(prev) = m.insert(n.to_string(), s) {
                return Err(Error::csv(
                    path,
                    i + 1,
                    format!("image {n} is already listed in the {prev} list; the lists must not overlap"),
                ));
            }
        }
    }
    Ok(m)
}

/// Builds the dataset from the parsed entry table.
fn from_table(
    t: &Table,
    layout: &ImageLayout,
    split: Option<(OfficialSplit, &HashMap<String, OfficialSplit>)>,
    image_root: &Path,
) -> Result<Dataset> {
    let index = t.texts("Image Index")?;
    let findings = t.texts("Finding Labels")?;
    let patient = t.texts("Patient ID")?;
    let age = optional(t, "Patient Age")?;
    let sex = optional(t, "Patient Gender")?;
    let vp = optional(t, "View Position")?;
    let followup = optional(t, "Follow-up #")?;
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(t.n_rows());
    let mut records = Vec::with_capacity(t.n_rows());
    let mut skipped = Vec::new();
    for i in 0..t.n_rows() {
        let line = t.line(i);
        let name = index[i].trim();
        if name.is_empty() {
            return Err(Error::csv(&t.file, line, "empty Image Index cell"));
        }
        if let Some(prev) = seen.insert(name, line) {
            return Err(Error::csv(
                &t.file,
                line,
                format!("image {name} already has a row at line {prev}"),
            ));
        }
        let labels = parse_findings(findings[i]).map_err(|m| Error::csv(&t.file, line, m))?;
        // Integer checks catch columns shifted by a stray comma.
        let pid = patient[i].trim();
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::csv(
                &t.file,
                line,
                format!("Patient ID {pid:?} is not an integer; is a comma out of place?"),
            ));
        }
        if let Some(f) = followup.as_ref().map(|c| c[i].trim()) {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::csv(
                    &t.file,
                    line,
                    format!("Follow-up # {f:?} is not an integer; is a comma out of place?"),
                ));
            }
        }
        let skip = |reason: String| Skip {
            file: t.file.clone(),
            line,
            reason,
        };
        if let Some((want, lists)) = split {
            match lists.get(name) {
                None => {
                    skipped.push(skip(format!(
                        "image {name} is in neither {TRAIN_VAL_LIST} nor {TEST_LIST}"
                    )));
                    continue;
                }
                Some(s) if *s != want => {
                    skipped.push(skip(format!("official split is {s}, not {want}")));
                    continue;
                }
                Some(_) => {}
            }
        }
        let Some(path) = layout.path(name) else {
            skipped.push(skip(format!(
                "image {name} not found under {}/images_*/images/",
                image_root.display()
            )));
            continue;
        };
        let age_v = match age.as_ref().map(|c| c[i].trim()) {
            None | Some("") => None,
            Some(a) => Some(parse_age(a).ok_or_else(|| {
                Error::csv(
                    &t.file,
                    line,
                    format!("Patient Age {a:?} is not a number of years (58, 058Y, 7M, 20D)"),
                )
            })?),
        };
        let study = name
            .rsplit_once('.')
            .map(|(stem, _)| stem)
            .unwrap_or(name)
            .to_string();
        records.push(Record {
            path,
            patient: pid.to_string(),
            study,
            sex: sex.as_ref().map(|c| Sex::parse(c[i])),
            age: age_v,
            view: Some(View::Frontal),
            projection: vp.as_ref().and_then(|c| Projection::parse(c[i])),
            labels,
            line,
        });
    }
    Ok(Dataset {
        kind: DatasetKind::Nih,
        csv: t.file.clone(),
        image_root: image_root.to_path_buf(),
        findings: NIH_FINDINGS.iter().map(|s| s.to_string()).collect(),
        records,
        skipped,
    })
}

fn optional<'a>(t: &'a Table, name: &str) -> Result<Option<Vec<&'a str>>> {
    if t.has(name) {
        t.texts(name).map(Some)
    } else {
        Ok(None)
    }
}

/// One `Finding Labels` cell → 14 observations in [`NIH_FINDINGS`] order.
pub fn parse_findings(cell: &str) -> std::result::Result<Vec<Observation>, String> {
    let mut obs = vec![Observation::Negative; NIH_FINDINGS.len()];
    let cell = cell.trim();
    if cell == NO_FINDING {
        return Ok(obs);
    }
    if cell.is_empty() {
        return Err(format!(
            "empty Finding Labels cell; write {NO_FINDING:?} for an image without findings"
        ));
    }
    for part in cell.split('|') {
        let p = part.trim();
        match nih_index(p) {
            Some(k) => obs[k] = Observation::Positive,
            None if p == NO_FINDING => {
                return Err(format!(
                    "Finding Labels {cell:?} combines {NO_FINDING:?} with findings; fix the cell"
                ))
            }
            None => {
                return Err(format!(
                    "Finding Labels {cell:?}: unknown finding {p:?}; expected |-separated names \
                     from {NIH_FINDINGS:?} or {NO_FINDING:?}"
                ))
            }
        }
    }
    Ok(obs)
}

/// Age in years from `58`, `058Y`, `7M` (months) or `20D` (days).
pub fn parse_age(s: &str) -> Option<f32> {
    let s = s.trim();
    let (num, div) = match s.chars().last()? {
        'Y' | 'y' => (&s[..s.len() - 1], 1.0),
        'M' | 'm' => (&s[..s.len() - 1], 12.0),
        'D' | 'd' => (&s[..s.len() - 1], 365.25),
        _ => (s, 1.0),
    };
    let v: f32 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v / div)
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
            assert_eq!(r.line as u64, x["line"].as_u64().unwrap());
            assert_eq!(r.age, Some(x["age"].as_f64().unwrap() as f32));
            assert_eq!(r.sex, Some(Sex::parse(x["sex"].as_str().unwrap())));
            assert_eq!(r.view, Some(View::Frontal));
            assert_eq!(
                r.projection.map(|p| p.as_str()),
                Some(x["projection"].as_str().unwrap())
            );
            let mut pos: Vec<&str> = NIH_FINDINGS
                .iter()
                .zip(&r.labels)
                .filter(|(_, o)| **o == Observation::Positive)
                .map(|(f, _)| *f)
                .collect();
            pos.sort_unstable();
            let want: Vec<&str> = x["positives"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(pos, want, "{}", r.path);
            assert!(r
                .labels
                .iter()
                .all(|o| matches!(o, Observation::Positive | Observation::Negative)));
        }
        assert_eq!(ds.skipped.len() as u64, exp["skipped"].as_u64().unwrap());
    }

    #[test]
    fn reads_the_release_csv_and_official_lists_like_pandas() {
        let root = fixture("nih");
        let files = NihFiles::locate(&root).unwrap();
        let e = expected();
        for (key, split) in [
            ("all", None),
            ("train", Some(OfficialSplit::Train)),
            ("test", Some(OfficialSplit::Test)),
        ] {
            let ds = read(&files, &root, split).unwrap();
            assert_eq!(ds.kind, DatasetKind::Nih);
            assert_eq!(ds.findings, NIH_FINDINGS);
            check(&ds, &e["nih"][key]);
        }
        let e = read(&files, &root, Some(OfficialSplit::Validate)).unwrap_err();
        assert!(e.to_string().contains("tune_fraction"), "{e}");
        // Through the data source: official train/test, tuning carved out later.
        let cfg = DataConfig {
            format: DatasetFormat::Nih,
            root: root.clone(),
            ..DataConfig::default()
        };
        let s = source::resolve(&cfg).unwrap();
        assert!(s.tune.is_none());
        assert_eq!(source::detect(&s.train.csv).unwrap(), DatasetFormat::Nih);
        check(
            &source::read(&s.train, DatasetFormat::Nih).unwrap(),
            &expected()["nih"]["train"],
        );
        check(
            &source::read(&s.test.unwrap(), DatasetFormat::Nih).unwrap(),
            &expected()["nih"]["test"],
        );
    }

    #[test]
    fn copies_without_the_trailing_comma_read_the_same() {
        let src = fixture("nih/Data_Entry_2017.csv");
        let text = std::fs::read_to_string(&src).unwrap();
        let trimmed: String = text
            .lines()
            .map(|l| format!("{}\n", l.strip_suffix(',').unwrap_or(l)))
            .collect();
        assert_ne!(trimmed, text);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("Data_Entry_2017.csv");
        std::fs::write(&p, trimmed).unwrap();
        let root = fixture("nih");
        let a = read(&NihFiles::beside(&src), &root, None).unwrap();
        let b = read(&NihFiles::beside(&p), &root, None).unwrap();
        assert_eq!(a.records, b.records);
    }

    #[test]
    fn bad_rows_and_overlapping_lists_name_the_line() {
        let d = tempfile::tempdir().unwrap();
        let h = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n";
        let p = d.path().join("Data_Entry_2017.csv");
        let ok = "00000001_000.png,Mass,0,1,58,M,PA,2500,2048,0.14,0.14,\n";
        for (row, needle) in [
            (
                "00000002_000.png,Mass|Tumour,0,2,58,M,PA,2500,2048,0.14,0.14,\n",
                "Tumour",
            ),
            (
                "00000002_000.png,Mass,0,2,old,M,PA,2500,2048,0.14,0.14,\n",
                "\"old\"",
            ),
            (
                "00000001_000.png,Mass,0,1,58,M,PA,2500,2048,0.14,0.14,\n",
                "line 2",
            ),
            // An unquoted comma shifts the columns: caught by the integer checks.
            (
                "00000002_000.png,Mass,Nodule,0,2,58,M,PA,2500,2048,0.14,0.14,\n",
                "\"Nodule\"",
            ),
        ] {
            std::fs::write(&p, format!("{h}{ok}{row}")).unwrap();
            let e = read(&NihFiles::beside(&p), d.path(), None).unwrap_err();
            let m = e.to_string();
            assert!(
                m.contains("Data_Entry_2017.csv:3:") && m.contains(needle),
                "{m}"
            );
            assert_eq!(e.exit_code(), 2);
        }
        std::fs::write(&p, format!("{h}{ok}")).unwrap();
        std::fs::write(d.path().join(TRAIN_VAL_LIST), "00000001_000.png\n").unwrap();
        std::fs::write(d.path().join(TEST_LIST), "\n00000001_000.png\n").unwrap();
        let e = read(&NihFiles::beside(&p), d.path(), Some(OfficialSplit::Test)).unwrap_err();
        assert!(e.to_string().contains("test_list.txt:2:"), "{e}");
    }

    #[test]
    fn kaggle_shards_are_indexed_and_missing_images_reported() {
        let d = tempfile::tempdir().unwrap();
        for (shard, name) in [
            ("images_001", "00000001_000.png"),
            ("images_002", "00000002_000.png"),
        ] {
            let dir = d.path().join(shard).join("images");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), b"png").unwrap();
        }
        let h = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n";
        let p = d.path().join("Data_Entry_2017.csv");
        std::fs::write(
            &p,
            format!(
                "{h}00000001_000.png,No Finding,0,1,58,M,PA\n\
                 00000002_000.png,Hernia,0,2,060Y,F,AP\n\
                 00000003_000.png,Mass,0,3,40,F,AP\n"
            ),
        )
        .unwrap();
        let ds = read(&NihFiles::beside(&p), d.path(), None).unwrap();
        let paths: Vec<&str> = ds.records.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "images_001/images/00000001_000.png",
                "images_002/images/00000002_000.png"
            ]
        );
        assert!(ds.image_path(1).is_file());
        assert_eq!(ds.records[1].age, Some(60.0));
        assert_eq!(ds.skipped.len(), 1);
        assert_eq!(ds.skipped[0].line, 4);
        assert!(ds.skipped[0].reason.contains("00000003_000.png"));
    }

    #[test]
    fn finding_cells_parse_or_name_the_bad_part() {
        let o = parse_findings("Effusion|Infiltration").unwrap();
        assert_eq!(o[2], Observation::Positive);
        assert_eq!(o[3], Observation::Positive);
        assert_eq!(
            o.iter().filter(|x| **x == Observation::Negative).count(),
            12
        );
        assert!(parse_findings("No Finding")
            .unwrap()
            .iter()
            .all(|x| *x == Observation::Negative));
        let e = parse_findings("Effusion|Infiltrate").unwrap_err();
        assert!(e.contains("\"Infiltrate\""), "{e}");
        assert!(parse_findings("No Finding|Mass").is_err());
        assert!(parse_findings("").is_err());
    }

    #[test]
    fn ages_in_every_release_spelling() {
        assert_eq!(parse_age("58"), Some(58.0));
        assert_eq!(parse_age("058Y"), Some(58.0));
        assert_eq!(parse_age("6M"), Some(0.5));
        assert_eq!(parse_age("old"), None);
        assert_eq!(parse_age("-3"), None);
        assert_eq!(parse_age(""), None);
    }
}
