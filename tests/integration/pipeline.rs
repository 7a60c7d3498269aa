//! `relabel` and `pipeline` through the real binary on a tiny noise lab (32² images,
//! resnet_tiny, 1–2 epochs).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::cli::{ok, run, synth_lab};

/// A tiny noise lab (160 / 60 / 60 images) in `dir`.
fn tiny_lab(dir: &Path) -> PathBuf {
    synth_lab(dir, 160, 60, 60, 5)
}

/// A training config on the lab: resnet_tiny at 32², one epoch.
fn base_toml(lab: &Path) -> String {
    format!(
        r#"size = "cpu"
seed = 1
[data]
root = "{}"
tune_csv = "valid.csv"
test_csv = "test.csv"
[model]
preset = "resnet_tiny"
img_size = 32
[train]
epochs = 1
batch_size = 16
lr = 0.005
bootstrap = 10
[loader]
workers = 2
"#,
        lab.display()
    )
}

/// `[base]` + every key of `base_toml` indented under it.
fn pipeline_toml(lab: &Path) -> String {
    let mut base = String::from("name = \"tiny\"\n[base]\n");
    for l in base_toml(lab).lines() {
        if let Some(section) = l.strip_prefix('[') {
            base.push_str(&format!("[base.{section}\n"));
        } else {
            base.push_str(l);
            base.push('\n');
        }
    }
    base + r#"
[[stage]]
kind = "train"

[[stage]]
kind = "relabel"
from = "train"
policy = { cells = "both", low = 0.3, high = 0.7 }

[[stage]]
kind = "train_head"
from = "train"
labels = "relabel"
set = { train = { epochs = 2, lr = 0.05 } }

[[stage]]
kind = "eval"
from = "train_head"
"#
}

fn tensors(p: &Path) -> HashMap<String, Vec<u8>> {
    let t = candle_core::safetensors::load(p, &candle_core::Device::Cpu).unwrap();
    t.into_iter()
        .map(|(k, v)| {
            let bytes: Vec<u8> = v
                .flatten_all()
                .unwrap()
                .to_dtype(candle_core::DType::F32)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .flat_map(|x| x.to_bits().to_le_bytes())
                .collect();
            (k, bytes)
        })
        .collect()
}

fn csv_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .split_inclusive('\n')
        .map(String::from)
        .collect()
}

#[test]
fn pipeline_resumes_by_stage_head_only_keeps_backbone_and_relabel_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let chex = tiny_lab(&dir.path().join("lab"));
    let lab = dir.path().join("lab");
    let cfg = dir.path().join("tiny.toml");
    std::fs::write(&cfg, pipeline_toml(&lab)).unwrap();
    let out = dir.path().join("out");
    let (o, c) = (out.to_str().unwrap(), cfg.to_str().unwrap());

    // --check lists the stages without running anything.
    let (stdout, _) = ok(&run(&["pipeline", c, "--out", o, "--check"]));
    assert!(stdout.contains("3. train_head"), "{stdout}");
    assert!(!out.join("01-train").exists());

    // Stopped after stage 1 ("killed" there): only stage 1 finished.
    let (_, err) = ok(&run(&["pipeline", c, "--out", o, "--stop-after", "1"]));
    assert!(err.contains("stopping after stage 1"), "{err}");
    assert!(out.join("01-train/stage.json").is_file());
    assert!(!out.join("02-relabel").exists());
    let ck_before = std::fs::read(out.join("01-train/best/model.safetensors")).unwrap();

    // Rerun: stage 1 is skipped, the rest run.
    let (stdout, err) = ok(&run(&["pipeline", c, "--out", o]));
    assert!(
        err.contains("stage 1/4 train (train): already done, skipped"),
        "{err}"
    );
    assert!(
        err.contains("stage 2/4 relabel (relabel): running"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("01-train/best/model.safetensors")).unwrap(),
        ck_before,
        "the finished stage was not retrained"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert_eq!(stdout.trim_end().lines().next(), Some("# Pipeline tiny"));
    for want in [
        "| 1 | train | train |",
        "| 2 | relabel | relabel |",
        "| 3 | train_head | train_head |",
        "| 4 | eval | eval |",
        "(single model)",
        "label noise per finding against the truth",
    ] {
        assert!(report.contains(want), "{want:?} missing from\n{report}");
    }
    assert!(out.join("04-eval/predictions.csv").is_file());
    // A third run does nothing but rebuild the report.
    let (_, err) = ok(&run(&["pipeline", c, "--out", o]));
    assert_eq!(err.matches("already done, skipped").count(), 4, "{err}");
    // A changed definition of a finished stage is refused.
    let changed = pipeline_toml(&lab).replace("low = 0.3", "low = 0.2");
    std::fs::write(&cfg, changed).unwrap();
    let e = run(&["pipeline", c, "--out", o]);
    assert_eq!(e.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&e.stderr).contains("another definition"));

    // Head-only retraining: every backbone tensor (weights and BatchNorm buffers) bit-identical,
    // the head's changed.
    let a = tensors(&out.join("01-train/best/model.safetensors"));
    let b = tensors(&out.join("03-train_head/best/model.safetensors"));
    assert_eq!(
        a.keys().collect::<HashSet<_>>(),
        b.keys().collect::<HashSet<_>>()
    );
    let (mut head, mut backbone) = (0, 0);
    for (k, v) in &a {
        if k.starts_with("fc.") {
            head += 1;
            assert_ne!(v, &b[k], "head tensor {k} did not change");
        } else {
            backbone += 1;
            assert_eq!(v, &b[k], "backbone tensor {k} changed");
        }
    }
    assert_eq!(head, 2, "fc.weight and fc.bias");
    assert!(backbone > 10);

    // The relabeled CSV: reads with the CheXpert reader, unchanged lines byte-for-byte, and
    // within changed lines only the cells listed in the changes file differ.
    let input = chex.join("train.csv");
    let relabeled = out.join("02-relabel/relabeled.csv");
    let before = noisycxr::data::chexpert::read(&input, &lab).unwrap();
    let after = noisycxr::data::chexpert::read(&relabeled, &lab).unwrap();
    assert_eq!(before.records.len(), after.records.len());
    let changes = csv_lines(&out.join("02-relabel/relabeled.changes.csv"));
    assert!(changes.len() > 1, "the relabel changed nothing");
    let mut changed: HashMap<usize, HashSet<String>> = HashMap::new();
    for l in &changes[1..] {
        let f: Vec<&str> = l.trim_end().split(',').collect();
        changed
            .entry(f[0].parse().unwrap())
            .or_default()
            .insert(f[2].to_string());
    }
    let (li, lo) = (csv_lines(&input), csv_lines(&relabeled));
    assert_eq!(li.len(), lo.len());
    let header: Vec<&str> = li[0].trim_end().split(',').collect();
    for (n, (x, y)) in li.iter().zip(&lo).enumerate() {
        match changed.get(&(n + 1)) {
            None => assert_eq!(x, y, "line {} changed without a record", n + 1),
            Some(cols) => {
                let (fx, fy): (Vec<&str>, Vec<&str>) = (
                    x.trim_end().split(',').collect(),
                    y.trim_end().split(',').collect(),
                );
                for (c, name) in header.iter().enumerate() {
                    if !cols.contains(*name) {
                        assert_eq!(fx[c], fy[c], "line {} {name}", n + 1);
                    }
                }
            }
        }
    }
    let stage: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("02-relabel/stage.json")).unwrap())
            .unwrap();
    assert!(stage["relabel"]["noise_before"].as_f64().is_some());

    // The CLI refuses to overwrite its input (directly or through `..`), leaving it intact.
    let sha = std::fs::read(&input).unwrap();
    let ck = out.join("01-train");
    for target in [input.clone(), chex.join("train/../train.csv")] {
        let e = run(&[
            "relabel",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--csv",
            input.to_str().unwrap(),
            "--out",
            target.to_str().unwrap(),
        ]);
        assert_eq!(e.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&e.stderr).contains("refusing to overwrite"),
            "{}",
            String::from_utf8_lossy(&e.stderr)
        );
    }
    assert_eq!(std::fs::read(&input).unwrap(), sha);

    // The CLI with policy flags; on the lab it scores against train_clean.csv.
    let r = dir.path().join("r/relabeled.csv");
    let (stdout, _) = ok(&run(&[
        "relabel",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--csv",
        input.to_str().unwrap(),
        "--out",
        r.to_str().unwrap(),
        "--cells",
        "uncertain",
        "--cutoff",
        "Edema=0.4:0.6",
    ]));
    assert!(stdout.contains("Label noise against the truth"), "{stdout}");
    assert!(dir.path().join("r/relabeled.score.json").is_file());
    // Only -1 cells changed.
    for l in &csv_lines(&dir.path().join("r/relabeled.changes.csv"))[1..] {
        let f: Vec<&str> = l.trim_end().split(',').collect();
        assert_eq!(f[3], "-1.0", "{l}");
    }
}

#[test]
fn out_of_fold_never_predicts_a_row_with_a_model_trained_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let chex = tiny_lab(&dir.path().join("lab"));
    let lab = dir.path().join("lab");
    let cfg = dir.path().join("train.toml");
    std::fs::write(&cfg, base_toml(&lab)).unwrap();
    let out = dir.path().join("oof/relabeled.csv");
    let input = chex.join("train.csv");
    let (stdout, _) = ok(&run(&[
        "relabel",
        "--folds",
        "3",
        "--config",
        cfg.to_str().unwrap(),
        "--csv",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--low",
        "0.3",
        "--high",
        "0.7",
    ]));
    assert!(stdout.contains("fold of each row"), "{stdout}");
    let rows = noisycxr::data::chexpert::read(&input, &lab).unwrap();
    let assign = csv_lines(&dir.path().join("oof/relabeled.folds.csv"));
    assert_eq!(assign[0].trim_end(), "line,path,patient,fold,model");
    assert_eq!(
        assign.len() - 1,
        rows.records.len(),
        "every row predicted once"
    );
    // What each fold's model trained on: its subset CSV.
    let trained: Vec<(HashSet<String>, HashSet<String>)> = (0..3)
        .map(|k| {
            let d = noisycxr::data::chexpert::read(
                &dir.path()
                    .join(format!("oof/relabeled.folds/fold{k}/train.csv")),
                &lab,
            )
            .unwrap();
            (
                d.records.iter().map(|r| r.path.clone()).collect(),
                d.records.iter().map(|r| r.patient.clone()).collect(),
            )
        })
        .collect();
    let mut models = HashSet::new();
    for l in &assign[1..] {
        let f: Vec<&str> = l.trim_end().split(',').collect();
        let (path, patient, fold) = (f[1], f[2], f[3].parse::<usize>().unwrap());
        assert!(
            !trained[fold].0.contains(path),
            "{path} predicted by a model trained on it"
        );
        assert!(
            !trained[fold].1.contains(patient),
            "{patient} seen by fold {fold}'s model"
        );
        // ... and every other fold's model did train on it.
        for (k, t) in trained.iter().enumerate() {
            if k != fold {
                assert!(
                    t.0.contains(path),
                    "{path} missing from fold {k}'s training rows"
                );
            }
        }
        assert!(f[4].contains(&format!("fold{fold}")), "{l}");
        models.insert(f[4].to_string());
    }
    assert_eq!(models.len(), 3);
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("oof/relabeled.summary.json")).unwrap(),
    )
    .unwrap();
    assert!(summary["checkpoint"]
        .as_str()
        .unwrap()
        .starts_with("out-of-fold K=3"));
}
