//! The experiment file (`experiments/*.toml`): a base configuration, named runs that each
//! override part of it, the seeds every run is repeated over, the baseline column and an
//! optional oracle column. Parsed and validated in one place ([`Experiment::from_file`]);
//! [`Experiment::config`] gives the resolved [`Config`] of any (column, seed).
//!
//! ```toml
//! name = "mentor-cpu"              # results folder name (default: the file's stem)
//! description = "MentorNet threshold: none vs 0.3 vs 0.5"
//! kind = "train"                   # the base is a `train` config, or "pipeline" (see below)
//! base = "../configs/default.toml" # relative to this file; or an inline [base] table
//! seeds = [0, 1, 2]                # default [0, 1, 2]
//! baseline = "none"                # default: the first run
//! oracle = true                    # + the baseline's model trained on train_clean.csv
//!
//! [vars]                           # ${NAME} in string values; `--var NAME=VALUE` overrides
//! LAB = "data/noiselab-ablate"
//!
//! [common]                         # merged into the base for every run (trims, data paths)
//! data.root = "${LAB}"
//! train.epochs = 2
//!
//! [bootstrap]                      # paired study bootstrap of the Δ rows
//! resamples = 1000
//!
//! [[run]]
//! name = "none"
//! noise.mentor.mode = "off"        # every key but `name` is merged into the config
//! ```
//!
//! Merging: tables merge key by key (recursively), any other value (numbers, strings, arrays)
//! replaces the base's. The merged table is parsed by [`Config::from_toml`] (unknown keys are
//! errors) and checked by [`Config::validate`], so a typo in an override fails before anything
//! trains. Paths inside the configuration stay relative to the working directory, as with
//! `noisycxr train --config`; only `base` is relative to the experiment file.
//!
//! **`kind = "pipeline"`**: the base is a `noisycxr pipeline` file (`[base]` training config +
//! `[[stage]]` list) and every override addresses that file's keys: `base.model.preset = ...`
//! changes the training config of every stage, `stage = [{ kind = "train" }]` replaces the
//! stage list (arrays replace), so one table can hold plain training columns next to a
//! train → relabel → head-retrain column. Each (column, seed) is one pipeline run in its folder
//! (resumable stage by stage); when its last stage is not an `eval`, one is appended (`from`
//! the last stage with a checkpoint) so every column has test-set predictions. The oracle sets
//! `base.data.train_csv`. A `train` config given as a pipeline experiment's base (a file with
//! neither `base` nor `stage` keys) becomes the `[base]` of a one-stage pipeline
//! (`stage = [{ kind = "train" }]`), so CPU tables share `bases/cpu.toml` whatever their kind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use crate::config::{Config, DatasetFormat};
use crate::error::{Error, Result};
use crate::eval::BootstrapConfig;
use crate::pipeline::config::merge;
use crate::pipeline::config::StageSpec;
use crate::pipeline::{PipelineConfig, StageKind};

/// What the base configuration configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BaseKind {
    /// A `noisycxr train` configuration ([`Config`]).
    #[default]
    Train,
    /// A `noisycxr pipeline` configuration (train → relabel → head-only → eval).
    Pipeline,
}

/// The base configuration: a path relative to the experiment file, or an inline table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum BaseSpec {
    Path(PathBuf),
    Inline(Table),
}

/// One `[[run]]` entry as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct RunEntry {
    name: String,
    /// Every other key: overrides merged into the base.
    #[serde(flatten)]
    overrides: Table,
}

/// The file as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentFile {
    name: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    kind: BaseKind,
    base: Option<BaseSpec>,
    seeds: Option<Vec<u64>>,
    baseline: Option<String>,
    #[serde(default)]
    oracle: bool,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    #[serde(default)]
    common: Table,
    bootstrap: Option<BootstrapConfig>,
    #[serde(default, rename = "run")]
    runs: Vec<RunEntry>,
}

/// Seeds used when the file names none.
pub const DEFAULT_SEEDS: [u64; 3] = [0, 1, 2];

/// Name of the oracle column (reserved: no run may use it).
pub const ORACLE: &str = "oracle";

/// One column of the table: a named set of overrides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Column {
    /// Column header and folder name.
    pub name: String,
    /// Merged into the base (after `[common]`).
    pub overrides: Table,
    /// The oracle: the baseline's overrides plus the clean-truth training CSV.
    pub oracle: bool,
}

/// A validated experiment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Experiment {
    /// Results folder name.
    pub name: String,
    pub description: String,
    /// The experiment file (`<inline>` for text parsed directly).
    pub file: PathBuf,
    pub kind: BaseKind,
    /// Where the base came from (a path, or `inline`).
    pub base_from: String,
    /// The base configuration table, before `[common]` and the run overrides.
    pub base: Table,
    /// Merged into every column.
    pub common: Table,
    pub seeds: Vec<u64>,
    /// Name of the baseline column.
    pub baseline: String,
    /// Runs in file order, then the oracle when configured.
    pub columns: Vec<Column>,
    /// `${NAME}` substitutions (file `[vars]` overridden by the command line).
    pub vars: BTreeMap<String, String>,
    /// Resamples of the paired bootstrap of the Δ rows.
    pub bootstrap: BootstrapConfig,
}

impl Experiment {
    /// Reads and validates `path`; `vars` (from `--var NAME=VALUE`) override the file's
    /// `[vars]`.
    pub fn from_file(path: &Path, vars: &[(String, String)]) -> Result<Experiment> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "experiment".into());
        Self::parse(&text, path, dir, &stem, vars)
    }

    /// Parses experiment text; `file` names it in errors, `dir` anchors a relative `base`,
    /// `default_name` is used when the file has no `name`.
    pub fn parse(
        text: &str,
        file: &Path,
        dir: &Path,
        default_name: &str,
        vars: &[(String, String)],
    ) -> Result<Experiment> {
        let bad = |m: String| Error::input(file, m);
        let f: ExperimentFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let (base, base_from) = match f.base {
            None => (
                toml::from_str::<Table>(crate::config::EMBEDDED_DEFAULT)
                    .map_err(|e| bad(format!("embedded default config: {e}")))?,
                "embedded default (configs/default.toml)".to_string(),
            ),
            Some(BaseSpec::Inline(t)) => (t, "inline [base] table".to_string()),
            Some(BaseSpec::Path(p)) => {
                let p = if p.is_absolute() { p } else { dir.join(p) };
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    bad(format!(
                        "base = {:?}: {e} (a base path is relative to the experiment file)",
                        p.display()
                    ))
                })?;
                let t = toml::from_str::<Table>(&text)
                    .map_err(|e| Error::input(&p, format!("base config: {e}")))?;
                (t, p.display().to_string())
            }
        };
        let base = match f.kind {
            BaseKind::Pipeline if !base.contains_key("base") && !base.contains_key("stage") => {
                let mut p = Table::new();
                p.insert("base".into(), Value::Table(base));
                p.insert(
                    "stage".into(),
                    Value::Array(vec![Value::Table(
                        toml::from_str("kind = \"train\"").map_err(|x| bad(x.to_string()))?,
                    )]),
                );
                p
            }
            _ => base,
        };
        let mut all_vars = f.vars;
        for (k, v) in vars {
            all_vars.insert(k.clone(), v.clone());
        }
        let columns: Vec<Column> = f
            .runs
            .into_iter()
            .map(|r| Column {
                name: r.name,
                overrides: r.overrides,
                oracle: false,
            })
            .collect();
        let baseline = f
            .baseline
            .or_else(|| columns.first().map(|c| c.name.clone()))
            .unwrap_or_default();
        let mut e = Experiment {
            name: f.name.unwrap_or_else(|| default_name.to_string()),
            description: f.description,
            file: file.to_path_buf(),
            kind: f.kind,
            base_from,
            base,
            common: f.common,
            seeds: f.seeds.unwrap_or_else(|| DEFAULT_SEEDS.to_vec()),
            baseline,
            columns,
            vars: all_vars,
            bootstrap: f.bootstrap.unwrap_or_default(),
        };
        if f.oracle {
            if let Some(b) = e.columns.iter().find(|c| c.name == e.baseline) {
                let mut o = b.overrides.clone();
                let clean = match f.kind {
                    BaseKind::Train => "data.train_csv = \"train_clean.csv\"",
                    BaseKind::Pipeline => "base.data.train_csv = \"train_clean.csv\"",
                };
                merge(
                    &mut o,
                    &toml::from_str::<Table>(clean).map_err(|x| bad(x.to_string()))?,
                );
                e.columns.push(Column {
                    name: ORACLE.into(),
                    overrides: o,
                    oracle: true,
                });
            }
        }
        e.validate()?;
        Ok(e)
    }

    /// Checks every field, and resolves every column's configuration once so a bad override
    /// fails before anything trains. Errors name the file and the field or run.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::input(&self.file, m));
        if !valid_name(&self.name) {
            return bad(format!(
                "name = {:?}: use letters, digits, '-', '_' or '.' (it names the results folder)",
                self.name
            ));
        }
        if self.seeds.is_empty() {
            return bad("seeds = []: give at least one seed (default [0, 1, 2])".into());
        }
        for (i, s) in self.seeds.iter().enumerate() {
            if self.seeds[..i].contains(s) {
                return bad(format!("seeds: {s} is listed twice"));
            }
        }
        let runs: Vec<&Column> = self.columns.iter().filter(|c| !c.oracle).collect();
        if runs.is_empty() {
            return bad("no [[run]] entries: add at least one `[[run]]` with a `name`".into());
        }
        for (i, c) in runs.iter().enumerate() {
            if !valid_name(&c.name) {
                return bad(format!(
                    "run {}: name = {:?}: use letters, digits, '-', '_' or '.' (it names a folder)",
                    i + 1,
                    c.name
                ));
            }
            if runs[..i].iter().any(|o| o.name == c.name) {
                return bad(format!("run name {:?} is used twice", c.name));
            }
            if c.name == ORACLE && self.columns.iter().any(|c| c.oracle) {
                return bad(format!(
                    "run name {ORACLE:?} is reserved for the oracle column (oracle = true)"
                ));
            }
        }
        if !runs.iter().any(|c| c.name == self.baseline) {
            return bad(format!(
                "baseline = {:?} is not a run name; the runs are {:?}",
                self.baseline,
                runs.iter().map(|c| c.name.as_str()).collect::<Vec<_>>()
            ));
        }
        self.bootstrap
            .validate()
            .map_err(|e| Error::input(&self.file, format!("[bootstrap]: {e}")))?;
        for c in &self.columns {
            let cfg = self.config(c, self.seeds[0], Path::new("."))?;
            if c.oracle && (cfg.data.csv.is_some() || cfg.data.format != DatasetFormat::Chexpert) {
                return bad(
                    "oracle = true needs a noise-lab dataset folder (data.format = \"chexpert\", \
                     no data.csv): the lab writes train_clean.csv next to train.csv"
                        .into(),
                );
            }
            if cfg.data.test_csv.is_none() && cfg.data.format == DatasetFormat::Chexpert {
                return bad(format!(
                    "run {:?}: data.test_csv is not set; the table reports the test split, never \
                     the tuning split (CheXpert: test_csv = \"valid.csv\", with a tune_csv or a \
                     carved tuning split)",
                    c.name
                ));
            }
        }
        Ok(())
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The merged, variable-substituted configuration table of `col` (base ← `[common]` ←
    /// the column's overrides), before `seed` and `out` are set.
    pub fn table(&self, col: &Column) -> Result<Table> {
        let mut t = self.base.clone();
        merge(&mut t, &self.common);
        merge(&mut t, &col.overrides);
        substitute(&mut t, &self.vars, "")
            .map_err(|m| Error::input(&self.file, format!("run {:?}: {m}", col.name)))?;
        Ok(t)
    }

    /// The resolved, validated training configuration of `col` for `seed`, writing into
    /// `out`. For a pipeline experiment: the pipeline's `[base]` (what the table reads the data,
    /// seed and device from); [`Experiment::resolve`] also gives the whole pipeline.
    pub fn config(&self, col: &Column, seed: u64, out: &Path) -> Result<Config> {
        Ok(self.resolve(col, seed, out)?.0)
    }

    /// [`Experiment::config`] and, for a pipeline experiment, [`Experiment::pipeline`], each
    /// resolved and validated once.
    pub fn resolve(
        &self,
        col: &Column,
        seed: u64,
        out: &Path,
    ) -> Result<(Config, Option<PipelineConfig>)> {
        let ctx = |m: String| {
            Error::input(
                &self.file,
                format!("run {:?} (base + [common] + its overrides): {m}", col.name),
            )
        };
        let (mut cfg, pipe) = match self.kind {
            BaseKind::Train => {
                let t = self.table(col)?;
                let text = toml::to_string(&t).map_err(|e| Error::Other(e.to_string()))?;
                (
                    Config::from_toml(&text).map_err(|e| ctx(e.to_string()))?,
                    None,
                )
            }
            BaseKind::Pipeline => {
                let p = self.pipeline(col, seed, out)?;
                (p.base_config().map_err(|e| ctx(e.to_string()))?, Some(p))
            }
        };
        cfg.seed = seed;
        cfg.out = out.to_path_buf();
        cfg.validate().map_err(|e| ctx(e.to_string()))?;
        Ok((cfg, pipe))
    }

    /// The resolved, validated pipeline of `col` for `seed`, run in `out` (pipeline
    /// experiments only): `[base]` gets `seed`, and an `eval` stage is appended when the last
    /// stage is not one.
    pub fn pipeline(&self, col: &Column, seed: u64, out: &Path) -> Result<PipelineConfig> {
        let ctx = |m: String| {
            Error::input(
                &self.file,
                format!(
                    "run {:?} (pipeline base + [common] + its overrides): {m}",
                    col.name
                ),
            )
        };
        if self.kind != BaseKind::Pipeline {
            return Err(ctx("not a kind = \"pipeline\" experiment".into()));
        }
        let t = self.table(col)?;
        let mut p: PipelineConfig = Value::Table(t)
            .try_into()
            .map_err(|e: toml::de::Error| ctx(e.to_string()))?;
        p.base.insert("seed".into(), Value::Integer(seed as i64));
        if p.stages.last().is_some_and(|s| s.kind != StageKind::Eval) {
            let from = p
                .stages
                .iter()
                .rev()
                .find(|s| s.kind.makes_checkpoint())
                .map(|s| s.name().to_string())
                .ok_or_else(|| {
                    ctx("no train or train_head stage: nothing to evaluate on the test set".into())
                })?;
            p.stages.push(StageSpec {
                kind: StageKind::Eval,
                name: Some(unused_name(&p.stages, "test_eval")),
                from: Some(from),
                labels: None,
                set: Table::new(),
                policy: None,
                folds: None,
                calibrate: None,
            });
        }
        p.validate(out).map_err(|e| ctx(e.to_string()))?;
        Ok(p)
    }
}

/// `want`, or `want_2`, `want_3`, ... : a stage name no stage in `stages` uses.
fn unused_name(stages: &[StageSpec], want: &str) -> String {
    let taken = |n: &str| stages.iter().any(|s| s.name() == n);
    let mut name = want.to_string();
    let mut i = 2;
    while taken(&name) {
        name = format!("{want}_{i}");
        i += 1;
    }
    name
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Replaces `${NAME}` in every string value of `t` (recursively, arrays included). Errors
/// name the key and the unknown variable.
fn substitute(
    t: &mut Table,
    vars: &BTreeMap<String, String>,
    prefix: &str,
) -> std::result::Result<(), String> {
    for (k, v) in t.iter_mut() {
        let key = if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        };
        substitute_value(v, vars, &key)?;
    }
    Ok(())
}

fn substitute_value(
    v: &mut Value,
    vars: &BTreeMap<String, String>,
    key: &str,
) -> std::result::Result<(), String> {
    match v {
        Value::String(s) => *s = expand(s, vars, key)?,
        Value::Table(t) => substitute(t, vars, key)?,
        Value::Array(a) => {
            for x in a {
                substitute_value(x, vars, key)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Expands `${NAME}` in `s`.
fn expand(
    s: &str,
    vars: &BTreeMap<String, String>,
    key: &str,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find('}') else {
            return Err(format!("{key} = {s:?}: unclosed `${{`"));
        };
        let name = &after[..j];
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => {
                return Err(format!(
                    "{key} = {s:?}: unknown variable ${{{name}}}; define it in [vars] or pass \
                     --var {name}=VALUE (known: {:?})",
                    vars.keys().collect::<Vec<_>>()
                ))
            }
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses `NAME=VALUE` (a `--var` flag).
pub fn parse_var(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(Error::Usage(format!(
            "--var {s:?}: use NAME=VALUE, e.g. --var CHEXPERT=/data/chexpert"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Experiment> {
        Experiment::parse(text, Path::new("exp.toml"), Path::new("."), "exp", &[])
    }

    const TWO: &str = r#"
seeds = [3, 4]
baseline = "plain"
oracle = true
[vars]
LAB = "data/lab"
[common]
data.root = "${LAB}/x"
train.epochs = 2
[[run]]
name = "plain"
noise.mentor.mode = "off"
[[run]]
name = "mentor"
noise.mentor.mode = "fixed"
noise.mentor.tau = 0.3
model.preset = "hybrid_tiny"
"#;

    #[test]
    fn runs_merge_over_common_over_the_base_and_the_oracle_uses_clean_labels() {
        let e = parse(TWO).unwrap();
        assert_eq!(e.name, "exp");
        assert_eq!(e.seeds, vec![3, 4]);
        let names: Vec<&str> = e.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["plain", "mentor", "oracle"]);
        let m = e
            .config(e.column("mentor").unwrap(), 4, Path::new("o"))
            .unwrap();
        assert_eq!(m.seed, 4);
        assert_eq!(m.out, PathBuf::from("o"));
        assert_eq!(m.train.epochs, 2);
        assert_eq!(m.data.root, PathBuf::from("data/lab/x"));
        assert_eq!(m.noise.mentor.tau, 0.3);
        assert_eq!(m.model.preset, "hybrid_tiny");
        // Untouched base values survive the merge (embedded default: lr 0.002, U-LSR).
        assert_eq!(m.train.lr, 0.002);
        assert_eq!(m.train.batch_size, 32);
        let p = e
            .config(e.column("plain").unwrap(), 3, Path::new("o"))
            .unwrap();
        assert_eq!(p.noise.mentor.mode, crate::noise::MentorMode::Off);
        assert_eq!(p.data.train_csv, "train.csv");
        let o = e
            .config(e.column("oracle").unwrap(), 3, Path::new("o"))
            .unwrap();
        assert_eq!(o.data.train_csv, "train_clean.csv");
        assert_eq!(o.noise.mentor.mode, crate::noise::MentorMode::Off);
        assert_eq!(o.model.preset, p.model.preset);
    }

    #[test]
    fn defaults_three_seeds_first_run_baseline_no_oracle() {
        let e = parse("[[run]]\nname = \"a\"\n[[run]]\nname = \"b\"\n").unwrap();
        assert_eq!(e.seeds, DEFAULT_SEEDS.to_vec());
        assert_eq!(e.baseline, "a");
        assert_eq!(e.columns.len(), 2);
        assert_eq!(e.bootstrap.resamples, 1000);
    }

    #[test]
    fn cli_vars_override_file_vars() {
        let e = Experiment::parse(
            TWO,
            Path::new("exp.toml"),
            Path::new("."),
            "exp",
            &[("LAB".into(), "/mnt/lab".into())],
        )
        .unwrap();
        let c = e.config(&e.columns[0], 3, Path::new("o")).unwrap();
        assert_eq!(c.data.root, PathBuf::from("/mnt/lab/x"));
        assert_eq!(parse_var("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(parse_var("novalue").is_err());
    }

    #[test]
    fn errors_name_the_field_and_the_run() {
        let cases: &[(&str, &[&str])] = &[
            // A typo inside a run's override: the key and the run are named.
            (
                "[[run]]\nname = \"a\"\nnoise.mentor.tua = 0.3\n",
                &["run \"a\"", "tua"],
            ),
            // A value that fails Config::validate.
            (
                "[[run]]\nname = \"a\"\ntrain.lr = -1.0\n",
                &["run \"a\"", "train.lr"],
            ),
            ("seeds = []\n[[run]]\nname = \"a\"\n", &["seeds"]),
            (
                "seeds = [1, 1]\n[[run]]\nname = \"a\"\n",
                &["seeds", "twice"],
            ),
            (
                "baseline = \"zz\"\n[[run]]\nname = \"a\"\n",
                &["baseline", "zz"],
            ),
            ("[[run]]\nname = \"a/b\"\n", &["name", "a/b"]),
            (
                "[[run]]\nname = \"a\"\n[[run]]\nname = \"a\"\n",
                &["\"a\"", "twice"],
            ),
            ("seed = [1]\n[[run]]\nname = \"a\"\n", &["seed"]),
            ("", &["[[run]]"]),
            (
                "oracle = true\n[[run]]\nname = \"a\"\n[[run]]\nname = \"oracle\"\n",
                &["reserved"],
            ),
            (
                "[[run]]\nname = \"a\"\ndata.root = \"${NOPE}\"\n",
                &["data.root", "NOPE", "--var"],
            ),
            (
                "[bootstrap]\nresamples = 1\n[[run]]\nname = \"a\"\n",
                &["bootstrap.resamples"],
            ),
            // A pipeline experiment's overrides address the pipeline file (`base.train...`).
            (
                "kind = \"pipeline\"\n[[run]]\nname = \"a\"\ntrain.epochs = 2\n",
                &["run \"a\"", "pipeline", "train"],
            ),
            (
                "[base]\nsize = \"cpu\"\n[[run]]\nname = \"a\"\n",
                &["data.test_csv", "tuning"],
            ),
        ];
        for (text, needles) in cases {
            match parse(text) {
                Ok(_) => panic!("accepted:\n{text}"),
                Err(e) => {
                    let m = e.to_string();
                    assert!(m.contains("exp.toml"), "{m}");
                    for n in *needles {
                        assert!(m.contains(n), "{n:?} not in {m:?}");
                    }
                }
            }
        }
    }

    const PIPE: &str = r#"
kind = "pipeline"
seeds = [5]
baseline = "plain"
oracle = true
[base]
name = "p"
[base.base]
size = "cpu"
data.root = "lab"
data.tune_csv = "valid.csv"
data.test_csv = "test.csv"
[[base.stage]]
kind = "train"
[[base.stage]]
kind = "relabel"
from = "train"
[[base.stage]]
kind = "train_head"
from = "train"
labels = "relabel"
[common]
base.train.epochs = 2
[[run]]
name = "plain"
stage = [{ kind = "train" }]
[[run]]
name = "relabel"
base.model.preset = "hybrid_tiny"
"#;

    #[test]
    fn pipeline_experiments_override_the_pipeline_file_and_end_in_an_eval_stage() {
        let e = parse(PIPE).unwrap();
        assert_eq!(e.kind, BaseKind::Pipeline);
        let out = Path::new("o");
        let col = |n: &str| e.column(n).unwrap();
        // `stage = [...]` replaces the stage list; an eval of the last checkpoint is appended.
        let p = e.pipeline(col("plain"), 5, out).unwrap();
        let kinds: Vec<_> = p.stages.iter().map(|s| (s.kind, s.from.clone())).collect();
        assert_eq!(
            kinds,
            [
                (StageKind::Train, None),
                (StageKind::Eval, Some("train".to_string()))
            ]
        );
        let r = e.pipeline(col("relabel"), 5, out).unwrap();
        assert_eq!(r.stages.len(), 4);
        assert_eq!(r.stages[3].from.as_deref(), Some("train_head"));
        assert_eq!(r.stages[3].name.as_deref(), Some("test_eval"));
        // The table reads the pipeline's base: seed, [common] and the run's overrides merged.
        let c = e.config(col("relabel"), 5, out).unwrap();
        assert_eq!((c.seed, c.train.epochs), (5, 2));
        assert_eq!(c.model.preset, "hybrid_tiny");
        assert_eq!(r.base["seed"].as_integer(), Some(5));
        // The oracle is the baseline's pipeline on the clean truth.
        let o = e.config(col(ORACLE), 5, out).unwrap();
        assert_eq!(o.data.train_csv, "train_clean.csv");
        assert_eq!(e.pipeline(col(ORACLE), 5, out).unwrap().stages.len(), 2);
        // A train config as the base: a one-stage pipeline around it.
        let w = parse(
            "kind = \"pipeline\"\n[base]\nsize = \"cpu\"\ndata.test_csv = \"t.csv\"\n\
             [[run]]\nname = \"a\"\nbase.train.epochs = 3\n",
        )
        .unwrap();
        let p = w.pipeline(&w.columns[0], 0, out).unwrap();
        assert_eq!(p.stages.len(), 2);
        assert_eq!(
            (p.stages[0].kind, p.stages[1].kind),
            (StageKind::Train, StageKind::Eval)
        );
        assert_eq!(w.config(&w.columns[0], 0, out).unwrap().train.epochs, 3);
        // A stage error names the run and the stage.
        let bad = PIPE.replace("from = \"train\"\nlabels", "from = \"nope\"\nlabels");
        let m = parse(&bad).unwrap_err().to_string();
        assert!(m.contains("run \"relabel\"") && m.contains("nope"), "{m}");
    }

    #[test]
    fn base_path_is_relative_to_the_experiment_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("configs")).unwrap();
        std::fs::write(
            dir.path().join("configs/b.toml"),
            "seed = 9\n[train]\nepochs = 7\n[data]\ntest_csv = \"test.csv\"\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("experiments")).unwrap();
        let f = dir.path().join("experiments/x.toml");
        std::fs::write(&f, "base = \"../configs/b.toml\"\n[[run]]\nname = \"a\"\n").unwrap();
        let e = Experiment::from_file(&f, &[]).unwrap();
        assert_eq!(e.name, "x");
        let c = e.config(&e.columns[0], 1, Path::new("o")).unwrap();
        assert_eq!((c.train.epochs, c.seed), (7, 1));
        std::fs::write(&f, "base = \"missing.toml\"\n[[run]]\nname = \"a\"\n").unwrap();
        let m = Experiment::from_file(&f, &[]).unwrap_err().to_string();
        assert!(m.contains("missing.toml") && m.contains("base"), "{m}");
    }

    #[test]
    fn shipped_experiments_parse_and_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let e = Experiment::from_file(&p, &[]).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(e.seeds.len(), 3, "{}", p.display());
                assert_eq!(e.name, p.file_stem().unwrap().to_string_lossy());
                n += 1;
            }
        }
        assert_eq!(
            n, 9,
            "backbone, mentor, recipe, uncertainty x cpu, chexpert; techniques-cpu"
        );
    }
}
