//! From a [`DataConfig`] to CSV files and image roots: locating the dataset folder, telling the
//! file formats apart by their header, and reading a CSV with the right reader.

use std::path::{Path, PathBuf};

use super::chexpert::{self, Layout};
use super::mimic::{self, MimicFiles};
use super::nih::{self, NihFiles};
use super::official::OfficialSplit;
use super::record::Dataset;
use super::textfile;
use crate::config::{DataConfig, DatasetFormat};
use crate::error::{Error, Result};

/// One CSV and the folder its image paths are relative to.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvSource {
    pub csv: PathBuf,
    pub images: PathBuf,
    /// Official split to keep (MIMIC-CXR, NIH); `None` reads every row.
    pub split: Option<OfficialSplit>,
}

/// Which CSVs a run uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Sources {
    pub train: CsvSource,
    /// Tuning CSV; `None` means "carve a patient-level split out of train".
    pub tune: Option<CsvSource>,
    /// Reported test CSV, if any.
    pub test: Option<CsvSource>,
}

/// Resolves the CSVs named by `cfg`: `--csv/--images` directly (every row, no official split),
/// otherwise inside the dataset root: CheXpert's `CheXpert-v1.0-small/` layout with the
/// configured CSV names; MIMIC-CXR-JPG's and NIH's release files under their own names
/// (`train_csv`/`tune_csv`/`test_csv` do not apply) with the official split — MIMIC
/// train/validate/test, NIH train_val/test with tuning carved out of train.
pub fn resolve(cfg: &DataConfig) -> Result<Sources> {
    if let Some(csv) = &cfg.csv {
        let images = match &cfg.images {
            Some(i) => i.clone(),
            None => default_image_root(csv)?,
        };
        return Ok(Sources {
            train: CsvSource {
                csv: csv.clone(),
                images,
                split: None,
            },
            tune: None,
            test: None,
        });
    }
    match cfg.format {
        DatasetFormat::Chexpert => {
            let layout = Layout::locate(&cfg.root)?;
            let src = |name: &str| CsvSource {
                csv: layout.csv(name),
                images: layout.root.clone(),
                split: None,
            };
            let optional = |name: &Option<String>| -> Result<Option<CsvSource>> {
                match name {
                    None => Ok(None),
                    Some(n) => {
                        let s = src(n);
                        if s.csv.is_file() {
                            Ok(Some(s))
                        } else {
                            Err(Error::input(
                                &s.csv,
                                "configured CSV not found; fix data.tune_csv / data.test_csv \
                                 or remove the entry",
                            ))
                        }
                    }
                }
            };
            Ok(Sources {
                train: src(&cfg.train_csv),
                tune: optional(&cfg.tune_csv)?,
                test: optional(&cfg.test_csv)?,
            })
        }
        DatasetFormat::Mimic => {
            let files = MimicFiles::locate(&cfg.root)?;
            if files.split.is_none() {
                return Err(Error::input(
                    &cfg.root,
                    format!(
                        "no {}(.gz) here; the official split is needed to tell train from \
                         test. Copy it in, or pass --csv FILE to read every row",
                        mimic::SPLIT_CSV
                    ),
                ));
            }
            let src = |s| CsvSource {
                csv: files.labels.clone(),
                images: cfg.root.clone(),
                split: Some(s),
            };
            Ok(Sources {
                train: src(OfficialSplit::Train),
                tune: Some(src(OfficialSplit::Validate)),
                test: Some(src(OfficialSplit::Test)),
            })
        }
        DatasetFormat::Nih => {
            let files = NihFiles::locate(&cfg.root)?;
            if files.train_val_list.is_none() || files.test_list.is_none() {
                return Err(Error::input(
                    &cfg.root,
                    format!(
                        "{} and {} must lie beside {}; the official split is needed to tell \
                         train from test. Copy them in, or pass --csv FILE to read every row",
                        nih::TRAIN_VAL_LIST,
                        nih::TEST_LIST,
                        files.entries.display()
                    ),
                ));
            }
            let src = |s| CsvSource {
                csv: files.entries.clone(),
                images: cfg.root.clone(),
                split: Some(s),
            };
            Ok(Sources {
                train: src(OfficialSplit::Train),
                tune: None,
                test: Some(src(OfficialSplit::Test)),
            })
        }
    }
}

/// The image root of a CheXpert-style CSV named without `--images`: paths start with the CSV's
/// own folder name (`CheXpert-v1.0-small/...`), so the root is that folder's parent; otherwise
/// the CSV's folder.
pub fn default_image_root(csv: &Path) -> Result<PathBuf> {
    let dir = csv
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."));
    let first = first_data_field(csv)?;
    let dir_name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|f| f.to_string_lossy().to_string()));
    match (first, dir_name) {
        (Some(f), Some(name)) if f.starts_with(&format!("{name}/")) => Ok(dir
            .join("..")
            .canonicalize()
            .unwrap_or_else(|_| dir.join(".."))),
        _ => Ok(dir.to_path_buf()),
    }
}

fn first_data_field(csv: &Path) -> Result<Option<String>> {
    let text = read_text(csv)?;
    Ok(text
        .lines()
        .nth(1)
        .and_then(|l| l.split(',').next())
        .map(|s| s.trim_matches('"').to_string()))
}

/// Tells formats apart by header: CheXpert (`Path` + `Frontal/Lateral`), MIMIC's label CSV
/// (`subject_id` + `study_id` + findings), NIH's `Data_Entry_2017.csv` (`Image Index` +
/// `Finding Labels`).
pub fn detect(csv: &Path) -> Result<DatasetFormat> {
    let text = read_text(csv)?;
    let header = text
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches('\u{feff}');
    let cols: Vec<&str> = header
        .split(',')
        .map(|c| c.trim().trim_matches('"'))
        .collect();
    let has = |n: &str| cols.contains(&n);
    if has("Path") && (has("Frontal/Lateral") || has("No Finding")) {
        Ok(DatasetFormat::Chexpert)
    } else if has("subject_id") && has("study_id") {
        Ok(DatasetFormat::Mimic)
    } else if has("Image Index") && has("Finding Labels") {
        Ok(DatasetFormat::Nih)
    } else {
        Err(Error::input(
            csv,
            format!(
                "cannot tell the format from the header {header:?}: expected CheXpert \
                 (Path, Frontal/Lateral, ...), MIMIC-CXR (subject_id, study_id, ...) or NIH \
                 (Image Index, Finding Labels, ...)"
            ),
        ))
    }
}

/// A CSV's text, gunzipped if need be (MIMIC's files ship as `.csv.gz`).
fn read_text(csv: &Path) -> Result<String> {
    String::from_utf8(textfile::read_bytes(csv)?)
        .map_err(|_| Error::input(csv, "not UTF-8 text; is this really a CSV file?"))
}

/// Reads one CSV with the reader for its format. MIMIC finds its metadata and split files
/// beside the labels CSV, NIH its split lists beside `Data_Entry_2017.csv`.
pub fn read(src: &CsvSource, format: DatasetFormat) -> Result<Dataset> {
    match format {
        DatasetFormat::Chexpert => match src.split {
            None => chexpert::read(&src.csv, &src.images),
            Some(s) => Err(Error::input(
                &src.csv,
                format!("CheXpert has no official split file; cannot select {s:?}"),
            )),
        },
        DatasetFormat::Mimic => mimic::read(&MimicFiles::beside(&src.csv)?, &src.images, src.split),
        DatasetFormat::Nih => nih::read(&NihFiles::beside(&src.csv), &src.images, src.split),
    }
}
