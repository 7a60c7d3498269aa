//! The pipeline file: a base training config plus an ordered list of stages, validated in one
//! place ([`PipelineConfig::validate`]), which also resolves every stage's own training config.
//!
//! ```toml
//! name = "recipe-cpu"
//!
//! [base]                    # a whole `noisycxr train --config` file, inline
//! size = "cpu"
//! [base.data]
//! root = "data/noiselab"
//! ...
//!
//! [[stage]]
//! kind = "train"            # train | relabel | train_head | eval
//! name = "train"            # folder OUT/01-train; default: the kind (names must be unique)
//! set = { train = { epochs = 4 } }   # merged onto [base] for this stage (train, train_head,
//!                                    # and the fold models of an out-of-fold relabel)
//!
//! [[stage]]
//! kind = "relabel"
//! from = "train"            # whose best checkpoint predicts (not with folds)
//! folds = 3                 # optional: out-of-fold, K models trained with base + set
//! policy = { cells = "both", low = 0.1, high = 0.9 }   # crate::relabel::RelabelPolicy
//!
//! [[stage]]
//! kind = "train_head"       # head-only retrain of `from`'s best checkpoint ...
//! from = "train"
//! labels = "relabel"        # ... on that relabel stage's CSV
//!
//! [[stage]]
//! kind = "eval"             # `from`'s best checkpoint on the base config's test CSV
//! from = "train_head"
//! ```
//! A `train` stage with `labels` retrains the whole model on a relabeled CSV (U-SelfTrained).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Config, DatasetFormat};
use crate::error::{Error, Result};
use crate::relabel::RelabelPolicy;

/// What a stage does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// Train a model (from scratch, or on a relabeled CSV with `labels`).
    Train,
    /// Relabel the training CSV with `from`'s checkpoint, or out of fold with `folds`.
    Relabel,
    /// Retrain only the head of `from`'s checkpoint on `labels`' relabeled CSV.
    TrainHead,
    /// Evaluate `from`'s checkpoint on the test CSV.
    Eval,
}

impl StageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Train => "train",
            StageKind::Relabel => "relabel",
            StageKind::TrainHead => "train_head",
            StageKind::Eval => "eval",
        }
    }

    /// Whether the stage leaves a checkpoint (`best/`) another stage can use.
    pub fn makes_checkpoint(self) -> bool {
        matches!(self, StageKind::Train | StageKind::TrainHead)
    }
}

/// One `[[stage]]` entry as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub kind: StageKind,
    /// Folder suffix and the name other stages refer to; default the kind.
    #[serde(default)]
    pub name: Option<String>,
    /// The stage whose best checkpoint this one uses (relabel, train_head, eval).
    #[serde(default)]
    pub from: Option<String>,
    /// The relabel stage whose CSV this one trains on (train, train_head).
    #[serde(default)]
    pub labels: Option<String>,
    /// Overrides merged onto `[base]` (train, train_head, relabel with folds).
    #[serde(default)]
    pub set: toml::Table,
    /// Relabel policy (relabel; default [`RelabelPolicy::default`]).
    #[serde(default)]
    pub policy: Option<RelabelPolicy>,
    /// Out-of-fold relabeling with this many folds (relabel; ≥ 2).
    #[serde(default)]
    pub folds: Option<usize>,
    /// Apply the checkpoint's calibration.json temperatures (relabel; default true).
    #[serde(default)]
    pub calibrate: Option<bool>,
}

impl StageSpec {
    /// The stage's name: `name`, or its kind when unnamed.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.kind.as_str())
    }
}

/// The whole pipeline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Title of the report.
    #[serde(default)]
    pub name: String,
    /// The training config every stage starts from (same keys as a `--config` file).
    #[serde(default)]
    pub base: toml::Table,
    #[serde(rename = "stage", default)]
    pub stages: Vec<StageSpec>,
}

/// A stage with everything resolved: its folder, its training config, its references.
#[derive(Debug, Clone)]
pub struct Stage {
    /// 1-based position.
    pub index: usize,
    pub name: String,
    pub spec: StageSpec,
    /// `OUT/<nn>-<name>`.
    pub dir: PathBuf,
    /// `[base]` + `set` (+ for train stages: `out`, `labels`' CSV, `init`), validated.
    pub config: Config,
    /// Index (0-based) of the `from` stage.
    pub from: Option<usize>,
    /// Index (0-based) of the `labels` stage.
    pub labels: Option<usize>,
    /// A digest of what defines this stage (spec + base), to notice a changed config on resume.
    pub fingerprint: String,
}

/// Deep-merges `over` onto `base`: tables merge key by key, anything else replaces.
pub fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Folder name of stage `index` (1-based).
pub fn stage_dir(out: &Path, index: usize, name: &str) -> PathBuf {
    out.join(format!("{index:02}-{name}"))
}

/// The relabeled CSV a relabel stage writes in its folder.
pub fn relabeled_csv(dir: &Path) -> PathBuf {
    dir.join("relabeled.csv")
}

/// Points `cfg`'s training CSV at `csv` (whose paths are relative to the dataset's image root),
/// keeping its tuning and test CSVs: CheXpert-layout configs only.
pub fn train_on(cfg: &mut Config, csv: &Path, field: &str) -> Result<()> {
    if cfg.data.csv.is_some() || cfg.data.format != DatasetFormat::Chexpert {
        return Err(Error::Config(format!(
            "{field}: training on a relabeled CSV needs a CheXpert-layout base config \
             (data.format = \"chexpert\", data.root = the dataset folder, no data.csv) so that \
             the tuning and test CSVs stay the dataset's"
        )));
    }
    cfg.data.train_csv = std::path::absolute(csv)
        .map_err(|e| Error::io(csv, e))?
        .display()
        .to_string();
    Ok(())
}

impl PipelineConfig {
    /// Reads a TOML file; unknown keys are errors naming the key and the file.
    pub fn from_file(path: &Path) -> Result<PipelineConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text).map_err(|e| match e {
            Error::Config(m) => Error::input(path, m),
            other => other,
        })
    }

    pub fn from_toml(text: &str) -> Result<PipelineConfig> {
        toml::from_str(text).map_err(|e| Error::Config(e.to_string()))
    }

    /// The base training config, parsed and validated.
    pub fn base_config(&self) -> Result<Config> {
        let c: Config = toml::Value::Table(self.base.clone())
            .try_into()
            .map_err(|e: toml::de::Error| Error::Config(format!("base: {e}")))?;
        c.validate()
            .map_err(|e| Error::Config(format!("base: {e}")))?;
        Ok(c)
    }

    /// Checks everything and resolves each stage under `out`. Errors name the stage
    /// (`stage[2] "relabel"`) and the field.
    pub fn validate(&self, out: &Path) -> Result<Vec<Stage>> {
        self.base_config()?;
        if self.stages.is_empty() {
            return Err(Error::Config(
                "no [[stage]] entries: a pipeline needs at least one stage".into(),
            ));
        }
        let base_text = toml::to_string(&self.base).unwrap_or_default();
        let mut stages: Vec<Stage> = Vec::with_capacity(self.stages.len());
        for (i, spec) in self.stages.iter().enumerate() {
            let name = spec.name().to_string();
            let at = format!("stage[{}] {name:?}", i + 1);
            let bad = |m: String| Error::Config(format!("{at}: {m}"));
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(bad(
                    "name must be non-empty letters, digits, '_' or '-' (it names a folder)".into(),
                ));
            }
            if stages.iter().any(|s| s.name == name) {
                return Err(bad(format!(
                    "another stage is already named {name:?}; give this one `name = \"...\"`"
                )));
            }
            let find = |field: &str, target: &Option<String>| -> Result<Option<usize>> {
                match target {
                    None => Ok(None),
                    Some(t) => stages
                        .iter()
                        .position(|s| &s.name == t)
                        .map(Some)
                        .ok_or_else(|| {
                            bad(format!(
                                "{field} = {t:?} names no earlier stage (earlier: {:?})",
                                stages.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()
                            ))
                        }),
                }
            };
            let from = find("from", &spec.from)?;
            let labels = find("labels", &spec.labels)?;
            if let Some(f) = from {
                if !stages[f].spec.kind.makes_checkpoint() {
                    return Err(bad(format!(
                        "from = {:?} is a {} stage, which leaves no checkpoint; name a train or \
                         train_head stage",
                        stages[f].name,
                        stages[f].spec.kind.as_str()
                    )));
                }
            }
            if let Some(l) = labels {
                if stages[l].spec.kind != StageKind::Relabel {
                    return Err(bad(format!(
                        "labels = {:?} is a {} stage; name a relabel stage",
                        stages[l].name,
                        stages[l].spec.kind.as_str()
                    )));
                }
            }
            let k = spec.kind;
            let only = |field: &str, present: bool, kinds: &[StageKind]| -> Result<()> {
                if present && !kinds.contains(&k) {
                    return Err(bad(format!(
                        "`{field}` does not apply to a {} stage",
                        k.as_str()
                    )));
                }
                Ok(())
            };
            only(
                "set",
                !spec.set.is_empty(),
                &[StageKind::Train, StageKind::TrainHead, StageKind::Relabel],
            )?;
            only(
                "labels",
                labels.is_some(),
                &[StageKind::Train, StageKind::TrainHead],
            )?;
            only(
                "from",
                from.is_some(),
                &[StageKind::Relabel, StageKind::TrainHead, StageKind::Eval],
            )?;
            only("policy", spec.policy.is_some(), &[StageKind::Relabel])?;
            only("folds", spec.folds.is_some(), &[StageKind::Relabel])?;
            only("calibrate", spec.calibrate.is_some(), &[StageKind::Relabel])?;
            match k {
                StageKind::TrainHead if from.is_none() || labels.is_none() => {
                    return Err(bad(
                        "a train_head stage needs from = \"<train stage>\" and labels = \
                         \"<relabel stage>\""
                            .into(),
                    ))
                }
                StageKind::Eval if from.is_none() => {
                    return Err(bad("an eval stage needs from = \"<train stage>\"".into()))
                }
                StageKind::Relabel => match (spec.folds, from) {
                    (None, None) => {
                        return Err(bad(
                            "a relabel stage needs from = \"<train stage>\" or folds = K".into(),
                        ))
                    }
                    (Some(_), Some(_)) => {
                        return Err(bad(
                            "give either from (one model) or folds (out-of-fold models), not both"
                                .into(),
                        ))
                    }
                    (Some(f), None) if f < 2 => {
                        return Err(bad(format!("folds = {f}: out-of-fold needs at least 2")))
                    }
                    _ => {}
                },
                _ => {}
            }
            if k == StageKind::Relabel && spec.folds.is_none() && !spec.set.is_empty() {
                return Err(bad(
                    "`set` applies to the fold models of an out-of-fold relabel only".into(),
                ));
            }
            if let Some(p) = &spec.policy {
                p.validate().map_err(|e| bad(e.to_string()))?;
            }
            let dir = stage_dir(out, i + 1, &name);
            let mut table = self.base.clone();
            merge(&mut table, &spec.set);
            let mut config: Config = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| bad(format!("base + set: {e}")))?;
            config.out = dir.clone();
            if let Some(l) = labels {
                train_on(&mut config, &relabeled_csv(&stages[l].dir), &at)?;
                // The relabeled CSV exists once its stage ran; the dataset root must not be
                // regenerated underneath it.
                config.data.synth_if_missing = false;
            }
            if k == StageKind::TrainHead {
                config.train.head_only = true;
                config.train.init = Some(stages[from.unwrap_or(0)].dir.join("best"));
            } else if k == StageKind::Train
                && (config.train.head_only || config.train.init.is_some())
            {
                return Err(bad(
                    "train.head_only / train.init belong to a train_head stage (use kind = \
                     \"train_head\" with from and labels)"
                        .into(),
                ));
            }
            if k == StageKind::Relabel && spec.folds.is_some() {
                config.train.head_only = false;
                config.train.init = None;
            }
            config.validate().map_err(|e| bad(e.to_string()))?;
            let fingerprint = {
                use sha2::{Digest, Sha256};
                let spec_text = serde_json::to_string(spec).unwrap_or_default();
                let h = Sha256::digest(format!("{base_text}\n{spec_text}").as_bytes());
                h.iter().take(8).map(|b| format!("{b:02x}")).collect()
            };
            stages.push(Stage {
                index: i + 1,
                name,
                spec: spec.clone(),
                dir,
                config,
                from,
                labels,
                fingerprint,
            });
        }
        Ok(stages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[base]\nsize = \"cpu\"\n[base.model]\npreset = \"resnet_tiny\"\n\
                        [base.train]\nepochs = 2\n";

    fn cfg(stages: &str) -> Result<Vec<Stage>> {
        PipelineConfig::from_toml(&format!("name = \"t\"\n{BASE}{stages}"))?
            .validate(Path::new("/o"))
    }

    #[test]
    fn stages_resolve_folders_overrides_and_references() {
        let s = cfg(r#"
[[stage]]
kind = "train"
set = { train = { lr = 0.01 } }
[[stage]]
kind = "relabel"
from = "train"
policy = { cells = "uncertain" }
[[stage]]
kind = "train_head"
from = "train"
labels = "relabel"
set = { train = { epochs = 5 } }
[[stage]]
kind = "eval"
from = "train_head"
"#)
        .unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].dir, Path::new("/o/01-train"));
        assert_eq!(s[2].dir, Path::new("/o/03-train_head"));
        assert_eq!(s[0].config.train.lr, 0.01);
        assert_eq!(s[0].config.train.epochs, 2, "base kept where set is silent");
        assert_eq!(s[2].config.train.epochs, 5);
        assert_eq!(s[2].config.train.lr, 1e-3, "set of stage 1 does not leak");
        assert!(s[2].config.train.head_only);
        assert_eq!(
            s[2].config.train.init.as_deref(),
            Some(Path::new("/o/01-train/best"))
        );
        assert_eq!(s[2].config.data.train_csv, "/o/02-relabel/relabeled.csv");
        assert_eq!(s[2].config.out, Path::new("/o/03-train_head"));
        assert_eq!((s[3].from, s[2].labels), (Some(2), Some(1)));
        assert_ne!(s[0].fingerprint, s[2].fingerprint);
    }

    #[test]
    fn mistakes_name_the_stage_and_field() {
        let check = |stages: &str, want: &[&str]| {
            let e = cfg(stages).unwrap_err().to_string();
            for w in want {
                assert!(e.contains(w), "{w:?} not in {e}");
            }
        };
        check("", &["no [[stage]]"]);
        check(
            "[[stage]]\nkind = \"relabel\"\nfrom = \"train\"\n",
            &[
                "stage[1] \"relabel\"",
                "from = \"train\" names no earlier stage",
            ],
        );
        check(
            "[[stage]]\nkind = \"train\"\n[[stage]]\nkind = \"train\"\n",
            &["stage[2]", "already named"],
        );
        check(
            "[[stage]]\nkind = \"train\"\n[[stage]]\nkind = \"eval\"\nfrom = \"train\"\npolicy = {}\n",
            &["stage[2] \"eval\"", "`policy` does not apply"],
        );
        check(
            "[[stage]]\nkind = \"train\"\n[[stage]]\nkind = \"train_head\"\nfrom = \"train\"\n",
            &["needs from", "labels"],
        );
        check(
            "[[stage]]\nkind = \"train\"\nset = { train = { epochs = 0 } }\n",
            &["stage[1] \"train\"", "train.epochs"],
        );
        check(
            "[[stage]]\nkind = \"train\"\nset = { train = { epoch = 3 } }\n",
            &["stage[1]", "epoch"],
        );
        check(
            "[[stage]]\nkind = \"train\"\n[[stage]]\nkind = \"relabel\"\nfolds = 1\n",
            &["folds = 1"],
        );
        check(
            "[[stage]]\nkind = \"train\"\n[[stage]]\nkind = \"eval\"\nfrom = \"train\"\n[[stage]]\nkind = \"relabel\"\nfrom = \"eval\"\n",
            &["leaves no checkpoint"],
        );
        check("[[stage]]\nkind = \"train\"\nlabel = \"x\"\n", &["label"]);
        let e = PipelineConfig::from_toml("[base]\nsed = 1\n[[stage]]\nkind = \"train\"\n")
            .unwrap()
            .validate(Path::new("/o"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("base") && e.contains("sed"), "{e}");
    }

    #[test]
    fn shipped_pipeline_configs_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap();
            if p.extension().is_some_and(|x| x == "toml") && text.contains("\n[[stage]]") {
                let c = PipelineConfig::from_file(&p).unwrap();
                let s = c
                    .validate(Path::new("/o"))
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                assert!(s.len() >= 3, "{}", p.display());
                n += 1;
            }
        }
        assert!(n >= 3, "recipe-cpu, recipe-chexpert, u-selftrained-cpu");
    }

    #[test]
    fn merge_is_deep() {
        // Tables merge key by key; leaves, arrays included, replace.
        let mut a: toml::Table =
            toml::from_str("[x]\na = 1\nb = 2\nv = [1, 2]\n[y]\nc = 3\n").unwrap();
        let b: toml::Table = toml::from_str("z = 0\n[x]\nb = 5\nd = 6\nv = [3]\n").unwrap();
        merge(&mut a, &b);
        let want: toml::Table =
            toml::from_str("z = 0\n[x]\na = 1\nb = 5\nd = 6\nv = [3]\n[y]\nc = 3\n").unwrap();
        assert_eq!(a, want);
    }
}
