//! `ablate` through the real binary: a two-run, two-seed ablation (+ oracle) on a tiny noise
//! lab, stopped part-way and continued, then rerun with everything finished.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cli::{run, synth_lab, text as out_err};

/// (path, mtime, bytes) of every file under `dir`, sorted.
fn snapshot(dir: &Path) -> Vec<(PathBuf, SystemTime, Vec<u8>)> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let m = std::fs::metadata(&p).unwrap().modified().unwrap();
                v.push((p.clone(), m, std::fs::read(&p).unwrap()));
            }
        }
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn two_runs_two_seeds_table_and_restart_skips_finished_runs() {
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("lab");
    synth_lab(&lab, 160, 60, 60, 3);
    let exp = dir.path().join("tiny.toml");
    std::fs::write(
        &exp,
        format!(
            r#"
description = "plain vs MentorNet, tiny"
seeds = [1, 2]
baseline = "plain"
oracle = true

[vars]
LAB = "{}"

[base]
size = "cpu"
[base.data]
root = "${{LAB}}"
tune_csv = "valid.csv"
test_csv = "test.csv"
[base.model]
preset = "resnet_tiny"
img_size = 32
[base.train]
epochs = 1
batch_size = 16
bootstrap = 20

[bootstrap]
resamples = 100

[[run]]
name = "plain"

[[run]]
name = "mentor"
noise.mentor.mode = "fixed"
noise.mentor.tau = 0.3
"#,
            lab.display()
        ),
    )
    .unwrap();
    let res = dir.path().join("res");
    let ablate = |extra: &[&str]| {
        let mut a = vec![
            "ablate",
            exp.to_str().unwrap(),
            "--out",
            res.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        run(&a)
    };

    // Killed part-way (simulated: stop after 2 of the 6 runs).
    let o = ablate(&["--max-runs", "2"]);
    let (so, se) = out_err(&o);
    assert!(o.status.success(), "{se}");
    assert!(so.contains("[1/6] plain seed 1: training"), "{so}");
    assert!(so.contains("stopping after 2"), "{so}");
    assert!(!res.join("table.md").exists());
    assert!(res.join("plain/seed-2/metrics.json").is_file());
    assert!(!res.join("mentor/seed-1").exists());
    let finished = snapshot(&res.join("plain"));

    // Restarted: the finished runs are skipped untouched, the rest trained, the table written.
    let o = ablate(&[]);
    let (so, se) = out_err(&o);
    assert!(o.status.success(), "{se}");
    assert!(so.contains("[1/6] plain seed 1: skipped"), "{so}");
    assert!(so.contains("[2/6] plain seed 2: skipped"), "{so}");
    assert!(so.contains("[3/6] mentor seed 1: training"), "{so}");
    assert!(so.contains("[6/6] oracle seed 2: training"), "{so}");
    assert_eq!(
        snapshot(&res.join("plain")),
        finished,
        "a skipped run's folder changed"
    );
    let oracle_cfg = std::fs::read_to_string(res.join("oracle/seed-1/config.toml")).unwrap();
    assert!(
        oracle_cfg.contains("train_csv = \"train_clean.csv\""),
        "{oracle_cfg}"
    );
    let mentor_cfg = std::fs::read_to_string(res.join("mentor/seed-2/config.toml")).unwrap();
    assert!(mentor_cfg.contains("tau = 0.3") && mentor_cfg.contains("seed = 2"));

    // The table: 14 findings + 2 means + 2 Δ + 2 gap rows; three columns.
    let csv = std::fs::read_to_string(res.join("table.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + 14 + 6, "{csv}");
    assert!(lines[0].starts_with("row,plain_mean,plain_std,plain_n,plain_lo,plain_hi,mentor_mean"));
    assert!(lines[0].contains("oracle_mean"));
    for l in &lines {
        assert_eq!(l.split(',').count(), 1 + 3 * 5, "{l}");
    }
    let delta = lines
        .iter()
        .find(|l| l.starts_with("delta MEAN (") && l.contains("findings"))
        .unwrap_or_else(|| panic!("{csv}"));
    let f: Vec<&str> = delta.split(',').collect();
    // Baseline: empty; mentor: point, n = 2 seeds, lo <= point <= hi.
    assert_eq!(&f[1..6], &["", "", "", "", ""]);
    let num = |s: &str| {
        s.parse::<f64>()
            .unwrap_or_else(|_| panic!("{s:?} in {delta}"))
    };
    let (p, lo, hi) = (num(f[6]), num(f[9]), num(f[10]));
    assert_eq!(f[8], "2");
    assert!(lo <= p && p <= hi, "{delta}");
    // Each MEAN cell is over 2 seeds with a spread.
    let mean_row = lines
        .iter()
        .find(|l| l.starts_with("MEAN (") && l.contains("findings"))
        .unwrap();
    let m: Vec<&str> = mean_row.split(',').collect();
    assert_eq!(m[3], "2");
    assert!(num(m[2]) >= 0.0);
    let md = std::fs::read_to_string(res.join("table.md")).unwrap();
    for want in [
        "| Finding | plain (baseline) | mentor | oracle |",
        "single models",
        "test split",
        "Gap closed",
        "paired study-bootstrap",
    ] {
        assert!(md.contains(want), "{want:?} missing:\n{md}");
    }
    for f in [
        "experiment.toml",
        "provenance.json",
        "runs.jsonl",
        "table.json",
    ] {
        assert!(res.join(f).is_file(), "{f} missing");
    }

    // A run whose metrics.json is gone is resumed from its checkpoint (not retrained); all
    // else is skipped untouched.
    let before = snapshot(&res.join("mentor/seed-1"));
    std::fs::remove_file(res.join("oracle/seed-2/metrics.json")).unwrap();
    let o = ablate(&[]);
    let (so, se) = out_err(&o);
    assert!(o.status.success(), "{se}");
    assert_eq!(so.matches(": skipped").count(), 5, "{so}");
    assert!(so.contains("[6/6] oracle seed 2: resuming"), "{so}");
    assert!(se.contains("resuming"), "{se}");
    assert_eq!(snapshot(&res.join("mentor/seed-1")), before);
    assert_eq!(
        std::fs::read_to_string(res.join("table.csv")).unwrap(),
        csv,
        "the rebuilt table differs"
    );

    // Changing the experiment under finished runs is refused, naming the folder.
    let text = std::fs::read_to_string(&exp)
        .unwrap()
        .replace("tau = 0.3", "tau = 0.4");
    std::fs::write(&exp, text).unwrap();
    let o = ablate(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(out_err(&o).1.contains("another configuration"));
}

#[test]
fn bad_experiment_files_are_usage_errors_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("bad.toml");
    std::fs::write(&exp, "[[run]]\nname = \"a\"\nnoise.mentor.tua = 0.3\n").unwrap();
    let o = run(&["ablate", exp.to_str().unwrap(), "--dry-run"]);
    assert_eq!(o.status.code(), Some(2));
    let e = out_err(&o).1;
    assert!(
        e.contains("bad.toml") && e.contains("tua") && e.contains("run \"a\""),
        "{e}"
    );
    let o = run(&["ablate", exp.to_str().unwrap(), "--var", "novalue"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_pipeline_experiment_puts_a_relabel_and_head_retrain_column_beside_plain_training() {
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("lab");
    synth_lab(&lab, 160, 60, 60, 3);
    let exp = dir.path().join("pipe.toml");
    std::fs::write(
        &exp,
        format!(
            r#"
kind = "pipeline"
seeds = [1]
baseline = "plain"

[base]
name = "tiny recipe"
[base.base]
size = "cpu"
data.root = "{}"
data.tune_csv = "valid.csv"
data.test_csv = "test.csv"
model.preset = "resnet_tiny"
model.img_size = 32
train.epochs = 1
train.batch_size = 16
train.bootstrap = 20
[[base.stage]]
kind = "train"
[[base.stage]]
kind = "relabel"
from = "train"
[[base.stage]]
kind = "train_head"
from = "train"
labels = "relabel"
set = {{ train = {{ epochs = 1 }} }}

[bootstrap]
resamples = 100

[[run]]
name = "plain"
stage = [{{ kind = "train" }}]

[[run]]
name = "relabel-head"
"#,
            lab.display()
        ),
    )
    .unwrap();
    let res = dir.path().join("res");
    let ablate = || {
        run(&[
            "ablate",
            exp.to_str().unwrap(),
            "--out",
            res.to_str().unwrap(),
        ])
    };
    let o = ablate();
    let (so, se) = out_err(&o);
    assert!(o.status.success(), "{se}");
    assert!(so.contains("[2/2] relabel-head seed 1: training"), "{so}");
    // Each column is a pipeline run: plain = train + the appended eval; the other has every stage.
    for stage in ["01-train", "02-test_eval"] {
        assert!(res
            .join("plain/seed-1")
            .join(stage)
            .join("stage.json")
            .is_file());
    }
    let r = res.join("relabel-head/seed-1");
    for stage in ["01-train", "02-relabel", "03-train_head", "04-test_eval"] {
        assert!(r.join(stage).join("stage.json").is_file(), "{stage}");
    }
    assert!(r.join("02-relabel/relabeled.csv").is_file());
    // The column's predictions are its final eval stage's.
    assert_eq!(
        std::fs::read(r.join("test_predictions.csv")).unwrap(),
        std::fs::read(r.join("04-test_eval/predictions.csv")).unwrap()
    );
    let csv = std::fs::read_to_string(res.join("table.csv")).unwrap();
    let head = csv.lines().next().unwrap();
    assert!(
        head.starts_with("row,plain_mean,") && head.contains(",relabel-head_mean,"),
        "{head}"
    );
    assert!(csv.lines().any(|l| l.starts_with("delta MEAN (")), "{csv}");
    // Rerun: both skipped.
    let o = ablate();
    let (so, se) = out_err(&o);
    assert!(o.status.success(), "{se}");
    assert_eq!(so.matches(": skipped").count(), 2, "{so}");
}
