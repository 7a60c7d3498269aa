//! Writes a noise-lab dataset to disk in CheXpert-v1.0-small layout, and reuses one that exists.
//!
//! ```text
//! OUT/CheXpert-v1.0-small/
//!     train.csv          noisy labels from the simulated labeler (blank / -1.0 / 0.0 / 1.0)
//!     train_clean.csv    the same rows with the clean truth (1.0 / 0.0 everywhere)
//!     valid.csv          clean truth, the tuning split (thresholds, calibration, selection)
//!     test.csv           clean truth, the reported split
//!     synth.json         the config, counts and the realised noise per finding
//!     {train,valid,test}/patientNNNNN/studyN/view1_frontal.jpg (+ view2_lateral.jpg)
//! ```
//!
//! The folder is built under `CheXpert-v1.0-small.partial/` and renamed when complete, so a
//! folder without `.partial` always holds a whole dataset. Bytes depend only on the config
//! (seed included), never on the thread count.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use super::config::SynthConfig;
use super::labeler::{clean_labels, label_split, measure, FindingNoise};
use super::render::render;
use super::truth::{sample_split, Split, StudyTruth, K};
use crate::data::chexpert::Layout;
use crate::data::labels::{Observation, CHEXPERT_FINDINGS};
use crate::data::record::Sex;
use crate::error::{Error, Result};

/// Name of the dataset folder inside `--out`.
pub const DIR_NAME: &str = "CheXpert-v1.0-small";
/// Manifest file name inside the dataset folder.
pub const MANIFEST: &str = "synth.json";
/// Version of the generator; bumped whenever the same config would give other bytes.
pub const GENERATOR: &str = "noisycxr-synth/1";

/// Counts of one split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitCounts {
    pub split: Split,
    pub images: usize,
    pub studies: usize,
    pub patients: usize,
    pub laterals: usize,
    /// Clean-truth prevalence per finding (fraction of studies), CheXpert column order.
    pub prevalence: Vec<(String, f64)>,
}

/// What [`generate`] wrote; also saved as `synth.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SynthSummary {
    pub generator: String,
    pub config: SynthConfig,
    pub splits: Vec<SplitCounts>,
    /// The simulated labeler's realised noise on `train.csv`, per finding (cells = studies).
    pub train_noise: Vec<FindingNoise>,
}

impl SynthSummary {
    /// A Markdown report: split sizes, then per finding the train prevalence, the noisy cell
    /// counts and the realised noise rates (what `noisycxr synth` prints).
    pub fn to_markdown(&self) -> String {
        let pct = |v: Option<f64>| {
            v.map(|x| format!("{:.1}", 100.0 * x))
                .unwrap_or_else(|| "-".into())
        };
        let mut s = format!(
            "# Noise lab ({}, seed {})\n\n",
            self.generator, self.config.seed
        );
        s.push_str(
            "| split | images | studies | patients | laterals |\n|---|---:|---:|---:|---:|\n",
        );
        for c in &self.splits {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                c.split.dir(),
                c.images,
                c.studies,
                c.patients,
                c.laterals
            ));
        }
        s.push_str(
            "\nTraining labels per finding (cells = studies; rates in %):\n\n\
             | finding | truth + | blank | -1 | 0 | 1 | P(+ given -1) | missed + | false - | false + | P(- given blank) |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let train = self.splits.iter().find(|c| c.split == Split::Train);
        for (j, f) in self.train_noise.iter().enumerate() {
            let prev = train.map(|t| t.prevalence[j].1);
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                f.finding,
                pct(prev),
                f.counts[0],
                f.counts[1],
                f.counts[2],
                f.counts[3],
                pct(f.uncertain_ppv),
                pct(f.miss_rate),
                pct(f.false_negative_rate),
                pct(f.false_positive_rate),
                pct(f.blank_npv)
            ));
        }
        s
    }
}

fn counts(split: Split, st: &[StudyTruth]) -> SplitCounts {
    let mut patients: Vec<u64> = st.iter().map(|s| s.patient_no).collect();
    patients.dedup();
    let n = st.len().max(1) as f64;
    SplitCounts {
        split,
        images: st.iter().map(|s| s.n_images()).sum(),
        studies: st.len(),
        patients: patients.len(),
        laterals: st.iter().filter(|s| s.lateral).count(),
        prevalence: (0..K)
            .map(|j| {
                let p = st.iter().filter(|s| s.truth[j]).count() as f64 / n;
                (CHEXPERT_FINDINGS[j].to_string(), p)
            })
            .collect(),
    }
}

/// CheXpert's CSV header.
pub fn csv_header() -> String {
    let mut h = String::from("Path,Sex,Age,Frontal/Lateral,AP/PA");
    for f in CHEXPERT_FINDINGS {
        h.push(',');
        h.push_str(f);
    }
    h
}

fn write_csv(path: &Path, st: &[StudyTruth], labels: &[[Observation; K]]) -> Result<()> {
    let mut s = csv_header();
    s.push('\n');
    for (t, l) in st.iter().zip(labels) {
        for lateral in [false, true] {
            if lateral && !t.lateral {
                continue;
            }
            let sex = match t.sex {
                Sex::Female => "Female",
                Sex::Male => "Male",
                Sex::Unknown => "Unknown",
            };
            let (view, proj) = if lateral {
                ("Lateral", "")
            } else {
                ("Frontal", t.projection.as_str())
            };
            s.push_str(&format!(
                "{},{},{},{},{}",
                t.image_path(lateral),
                sex,
                t.age,
                view,
                proj
            ));
            for o in l {
                s.push(',');
                s.push_str(o.as_cell());
            }
            s.push('\n');
        }
    }
    fs::write(path, s).map_err(|e| Error::io(path, e))
}

fn encode_jpeg(px: &[u8], w: usize, h: usize, quality: u8, path: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(px.len() / 4);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality)
        .encode(px, w as u32, h as u32, image::ExtendedColorType::L8)
        .map_err(|e| Error::image(path, format!("JPEG encoding failed: {e}")))?;
    Ok(buf)
}

/// Generates the dataset into `out/CheXpert-v1.0-small/`. Fails if that folder already exists
/// (see [`ensure`] to reuse one). `tick` is called once per image written (for progress bars).
pub fn generate(cfg: &SynthConfig, out: &Path, tick: &(dyn Fn() + Sync)) -> Result<SynthSummary> {
    cfg.validate()?;
    let dir = out.join(DIR_NAME);
    if dir.exists() {
        return Err(Error::input(
            &dir,
            "already exists; delete it or pass another --out to generate a new noise lab",
        ));
    }
    let tmp = out.join(format!("{DIR_NAME}.partial"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;

    let train = sample_split(cfg, Split::Train, cfg.n_train, 1);
    let next = |st: &[StudyTruth]| st.last().map(|s| s.patient_no + 1).unwrap_or(1);
    let valid = sample_split(cfg, Split::Valid, cfg.n_valid, next(&train));
    let test = sample_split(cfg, Split::Test, cfg.n_test, next(&valid));
    let noisy = label_split(cfg.seed, &cfg.noise, &train);

    // Images, in parallel; each depends only on its study's key.
    let (fw, fh) = cfg.frontal_size();
    let side = cfg.short_side as usize;
    let jobs: Vec<(&StudyTruth, bool)> = [&train, &valid, &test]
        .into_iter()
        .flat_map(|st| st.iter())
        .flat_map(|s| {
            let l = s.lateral;
            std::iter::once((s, false)).chain(l.then_some((s, true)))
        })
        .collect();
    jobs.par_iter()
        .try_for_each(|&(s, lateral)| -> Result<()> {
            let (w, h) = if lateral {
                (side, side)
            } else {
                (fw as usize, fh as usize)
            };
            let rel = s.image_path(lateral);
            let path = tmp.join(rel.strip_prefix(&format!("{DIR_NAME}/")).unwrap_or(&rel));
            let px = render(cfg.seed, s, lateral, w, h);
            let bytes = encode_jpeg(&px, w, h, cfg.jpeg_quality, &path)?;
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
            tick();
            Ok(())
        })?;

    let clean = |st: &[StudyTruth]| st.iter().map(clean_labels).collect::<Vec<_>>();
    write_csv(&tmp.join("train.csv"), &train, &noisy)?;
    write_csv(&tmp.join("train_clean.csv"), &train, &clean(&train))?;
    write_csv(&tmp.join("valid.csv"), &valid, &clean(&valid))?;
    write_csv(&tmp.join("test.csv"), &test, &clean(&test))?;

    let summary = SynthSummary {
        generator: GENERATOR.to_string(),
        config: cfg.clone(),
        splits: vec![
            counts(Split::Train, &train),
            counts(Split::Valid, &valid),
            counts(Split::Test, &test),
        ],
        train_noise: measure(&train, &noisy),
    };
    let json = serde_json::to_string_pretty(&summary)
        .map_err(|e| Error::Other(format!("serialising {MANIFEST}: {e}")))?;
    let mf = tmp.join(MANIFEST);
    let mut f = fs::File::create(&mf).map_err(|e| Error::io(&mf, e))?;
    f.write_all(json.as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .map_err(|e| Error::io(&mf, e))?;
    fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
    Ok(summary)
}

/// Outcome of [`ensure`].
#[derive(Debug, Clone, PartialEq)]
pub enum Ensured {
    /// A dataset made with the same config was already there.
    Reused(Layout),
    /// The dataset was generated now.
    Generated(Layout, Box<SynthSummary>),
}

impl Ensured {
    /// Where the dataset lives.
    pub fn layout(&self) -> &Layout {
        match self {
            Ensured::Reused(l) | Ensured::Generated(l, _) => l,
        }
    }
}

/// Returns the noise lab under `out`, generating it when `out/CheXpert-v1.0-small/` is absent.
/// A folder made with another config (or another generator version) is an error that names the
/// first differing field, never silently reused or overwritten.
pub fn ensure(cfg: &SynthConfig, out: &Path, tick: &(dyn Fn() + Sync)) -> Result<Ensured> {
    let dir = out.join(DIR_NAME);
    let layout = Layout {
        root: out.to_path_buf(),
        dir: dir.clone(),
    };
    if !dir.exists() {
        let s = generate(cfg, out, tick)?;
        return Ok(Ensured::Generated(layout, Box::new(s)));
    }
    let mf = dir.join(MANIFEST);
    let text = fs::read_to_string(&mf).map_err(|e| {
        Error::input(
            &mf,
            format!("cannot read the noise-lab manifest ({e}); is {} a noise lab? delete it or pass another --out", dir.display()),
        )
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::input(
            &mf,
            format!("not valid JSON ({e}); delete the folder to regenerate"),
        )
    })?;
    let gen = v.get("generator").and_then(|g| g.as_str()).unwrap_or("");
    if gen != GENERATOR {
        return Err(Error::input(
            &mf,
            format!("made by generator {gen:?}, this build writes {GENERATOR:?}; delete the folder to regenerate"),
        ));
    }
    let want = serde_json::to_value(cfg).map_err(|e| Error::Other(e.to_string()))?;
    let have = v.get("config").cloned().unwrap_or(serde_json::Value::Null);
    if let Some(field) = first_difference(&want, &have, "synth") {
        return Err(Error::input(
            &mf,
            format!(
                "this noise lab was made with another config ({field} differs); \
                 delete {} or pass another --out",
                dir.display()
            ),
        ));
    }
    Ok(Ensured::Reused(layout))
}

/// Dotted path of the first field where two JSON values differ.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, path: &str) -> Option<String> {
    match (a, b) {
        (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
            for (k, va) in x {
                let p = format!("{path}.{k}");
                match y.get(k) {
                    Some(vb) => {
                        if let Some(d) = first_difference(va, vb, &p) {
                            return Some(d);
                        }
                    }
                    None => return Some(p),
                }
            }
            y.keys()
                .find(|k| !x.contains_key(*k))
                .map(|k| format!("{path}.{k}"))
        }
        _ if a == b => None,
        _ => Some(path.to_string()),
    }
}

/// The dataset's CSV paths: `(train, train_clean, valid, test)`.
pub fn csv_paths(layout: &Layout) -> [PathBuf; 4] {
    ["train.csv", "train_clean.csv", "valid.csv", "test.csv"].map(|n| layout.csv(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::chexpert;

    fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((
                        p.strip_prefix(dir).unwrap().to_path_buf(),
                        fs::read(&p).unwrap(),
                    ));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn same_seed_same_bytes_on_any_thread_count_and_chexpert_reader_reads_it() {
        let cfg = SynthConfig {
            lateral_fraction: 0.3,
            ..SynthConfig::tiny(11)
        };
        let tmp = tempfile::tempdir().unwrap();
        let run = |name: &str, threads: usize| {
            let out = tmp.path().join(name);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| generate(&cfg, &out, &|| {})).unwrap();
            out
        };
        let a = run("a", 1);
        let b = run("b", 2);
        let (ta, tb) = (tree(&a.join(DIR_NAME)), tree(&b.join(DIR_NAME)));
        assert_eq!(ta.len(), tb.len());
        assert!(ta == tb, "outputs differ between 1 and 2 threads");
        // Another seed gives other images.
        let c = tmp.path().join("c");
        generate(
            &SynthConfig {
                seed: 12,
                ..cfg.clone()
            },
            &c,
            &|| {},
        )
        .unwrap();
        let tc = tree(&c.join(DIR_NAME));
        let img = PathBuf::from("train/patient00001/study1/view1_frontal.jpg");
        let find =
            |t: &[(PathBuf, Vec<u8>)]| t.iter().find(|(p, _)| *p == img).map(|x| x.1.clone());
        assert_ne!(find(&ta), find(&tc));

        // The CheXpert reader takes every CSV; counts and images are where they should be.
        let layout = chexpert::Layout::locate(&a).unwrap();
        let [train, clean, valid, test] = csv_paths(&layout);
        let train = chexpert::read(&train, &layout.root).unwrap();
        let clean = chexpert::read(&clean, &layout.root).unwrap();
        assert_eq!(train.records.len(), cfg.n_train);
        assert_eq!(
            chexpert::read(&valid, &layout.root).unwrap().records.len(),
            cfg.n_valid
        );
        assert_eq!(
            chexpert::read(&test, &layout.root).unwrap().records.len(),
            cfg.n_test
        );
        let (fw, fh) = cfg.frontal_size();
        for (i, r) in train.records.iter().enumerate() {
            assert_eq!(r.path, clean.records[i].path);
            let img = image::open(train.image_path(i)).unwrap();
            let want = if r.view == Some(crate::data::View::Lateral) {
                (64, 64)
            } else {
                (fw, fh)
            };
            assert_eq!((img.width(), img.height()), want, "{}", r.path);
            assert_eq!(img.color(), image::ColorType::L8);
            assert!(clean.records[i]
                .labels
                .iter()
                .all(|o| matches!(o, Observation::Positive | Observation::Negative)));
        }
        assert!(train
            .records
            .iter()
            .any(|r| r.labels.contains(&Observation::Uncertain)));
        assert!(train
            .records
            .iter()
            .any(|r| r.labels.contains(&Observation::Blank)));

        // ensure() reuses the same config and refuses another one, naming the field.
        assert!(matches!(
            ensure(&cfg, &a, &|| {}).unwrap(),
            Ensured::Reused(_)
        ));
        let other = SynthConfig {
            n_test: 41,
            ..cfg.clone()
        };
        let e = ensure(&other, &a, &|| {}).unwrap_err().to_string();
        assert!(e.contains("synth.n_test"), "{e}");
        assert!(generate(&cfg, &a, &|| {}).is_err());
    }
}
