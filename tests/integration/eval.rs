//! `eval` and `predict` through the real binary: a tiny noise lab, two 1-epoch runs, then
//! single-model and ensemble evaluation, a comparison (runs and predictions.csv files),
//! prediction of files and of a CSV, and bad input.

use std::path::Path;

use crate::cli::{ok, run, synth_lab};

const FINDINGS: &str = "No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,\
Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,\
Pleural Other,Fracture,Support Devices";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn train(lab: &Path, out: &Path, seed: &str) {
    ok(&run(&[
        "train",
        "--data",
        s(lab),
        "--out",
        s(out),
        "--model",
        "resnet_tiny",
        "--image-size",
        "32",
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--seed",
        seed,
    ]));
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn eval_ensemble_compare_and_predict_on_a_tiny_lab() {
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("lab");
    synth_lab(&lab, 96, 40, 40, 5);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    train(&lab, &a, "1");
    train(&lab, &b, "2");
    // The trainer saved temperatures and thresholds with the best checkpoint.
    let cal = read_json(&a.join("best/calibration.json"));
    assert_eq!(cal["findings"].as_array().unwrap().len(), 14);
    assert_eq!(cal["thresholds"].as_array().unwrap().len(), 3);

    let test_csv = lab.join("CheXpert-v1.0-small/test.csv");
    let n_test = std::fs::read_to_string(&test_csv).unwrap().lines().count() - 1;

    // Single model.
    let e1 = dir.path().join("e1");
    let (out, _) = ok(&run(&[
        "eval",
        "--checkpoint",
        s(&a),
        "--csv",
        s(&test_csv),
        "--out",
        s(&e1),
        "--resamples",
        "50",
    ]));
    assert!(
        out.contains("single model") && out.contains("| Cardiomegaly |"),
        "{out}"
    );
    assert!(out.contains("Operating points"), "{out}");
    let preds = std::fs::read_to_string(e1.join("predictions.csv")).unwrap();
    assert_eq!(
        preds.lines().next().unwrap(),
        format!("Path,Study,{FINDINGS}")
    );
    assert_eq!(preds.lines().count(), n_test + 1);
    let m = read_json(&e1.join("metrics.json"));
    assert_eq!(m["model"], "single model");
    assert_eq!(m["temperature_scaled"], true);
    assert_eq!(m["cis"]["config"]["resamples"], 50);
    assert!(e1.join("report.md").is_file());
    for png in ["roc.png", "reliability.png", "training.png"] {
        let img = image::open(e1.join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
        assert!(img.width() > 100 && img.height() > 100, "{png}");
    }

    // Without calibration, at study level, as CSV.
    let e2 = dir.path().join("e2");
    let (out, _) = ok(&run(&[
        "eval",
        "--checkpoint",
        s(&b),
        "--csv",
        s(&test_csv),
        "--out",
        s(&e2),
        "--resamples",
        "50",
        "--no-calibration",
        "--aggregate",
        "max",
        "--format",
        "csv",
    ]));
    assert!(
        out.starts_with("set,model,level,finding,auroc,ci_lo,ci_hi"),
        "{out}"
    );
    assert!(out.contains(",study (max),Cardiomegaly,"), "{out}");
    assert_eq!(
        read_json(&e2.join("metrics.json"))["temperature_scaled"],
        false
    );

    // Ensemble of two runs.
    let e3 = dir.path().join("e3");
    let (out, _) = ok(&run(&[
        "eval",
        "--checkpoint",
        s(&a),
        s(&b),
        "--csv",
        s(&test_csv),
        "--out",
        s(&e3),
        "--resamples",
        "50",
    ]));
    assert!(out.contains("ensemble of 2"), "{out}");
    let md = std::fs::read_to_string(e3.join("report.md")).unwrap();
    assert!(md.contains("ensemble of 2"), "{md}");
    assert_eq!(
        read_json(&e3.join("metrics.json"))["model"],
        "ensemble of 2"
    );

    // Compare two runs, then the same two as predictions.csv files: same numbers.
    let c1 = dir.path().join("c1");
    let (out, _) = ok(&run(&[
        "eval",
        "--compare",
        s(&a),
        s(&b),
        "--csv",
        s(&test_csv),
        "--out",
        s(&c1),
        "--resamples",
        "50",
        "--no-calibration",
    ]));
    assert!(out.contains("difference [95% CI]"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("| **mean, all defined**"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(" [") && line.contains(", "), "{line}");
    let e4 = dir.path().join("e4");
    ok(&run(&[
        "eval",
        "--checkpoint",
        s(&a),
        "--csv",
        s(&test_csv),
        "--out",
        s(&e4),
        "--resamples",
        "50",
        "--no-calibration",
    ]));
    let e5 = dir.path().join("e5");
    ok(&run(&[
        "eval",
        "--checkpoint",
        s(&b),
        "--csv",
        s(&test_csv),
        "--out",
        s(&e5),
        "--resamples",
        "50",
        "--no-calibration",
    ]));
    let c2 = dir.path().join("c2");
    ok(&run(&[
        "eval",
        "--compare",
        s(&e4.join("predictions.csv")),
        s(&e5.join("predictions.csv")),
        "--csv",
        s(&test_csv),
        "--out",
        s(&c2),
        "--resamples",
        "50",
    ]));
    let (j1, j2) = (
        read_json(&c1.join("comparison.json")),
        read_json(&c2.join("comparison.json")),
    );
    assert_eq!(
        j1["comparison"]["mean_all"], j2["comparison"]["mean_all"],
        "runs and their predictions.csv files compare the same"
    );
    assert!(j1["comparison"]["mean_all"]["ci"]["lo"].is_number());

    // Cross-dataset: the test images as an NIH ChestX-ray14 folder (PNG, `Finding Labels`);
    // a CheXpert-named model is scored on the 7 findings both vocabularies share.
    let nih = dir.path().join("nih");
    std::fs::create_dir_all(nih.join("images")).unwrap();
    let chex = std::fs::read_to_string(&test_csv).unwrap();
    let header: Vec<&str> = chex.lines().next().unwrap().split(',').collect();
    let nih_names = [
        ("Atelectasis", "Atelectasis"),
        ("Cardiomegaly", "Cardiomegaly"),
        ("Pleural Effusion", "Effusion"),
        ("Pneumonia", "Pneumonia"),
        ("Pneumothorax", "Pneumothorax"),
        ("Consolidation", "Consolidation"),
        ("Edema", "Edema"),
    ];
    let mut entries = String::from(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,\
         View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n",
    );
    for (i, line) in chex.lines().skip(1).enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        let name = format!("{:08}_000.png", i + 1);
        image::open(lab.join(cells[0]))
            .unwrap()
            .save(nih.join("images").join(&name))
            .unwrap();
        let found: Vec<&str> = nih_names
            .iter()
            .filter(|(c, _)| cells[header.iter().position(|h| h == c).unwrap()] == "1.0")
            .map(|(_, n)| *n)
            .collect();
        let labels = if found.is_empty() {
            "No Finding".to_string()
        } else {
            found.join("|")
        };
        entries.push_str(&format!(
            "{name},{labels},0,{},50,M,PA,32,32,0.143,0.143\n",
            i + 1
        ));
    }
    std::fs::write(nih.join("Data_Entry_2017.csv"), entries).unwrap();
    let e6 = dir.path().join("e6");
    let (out, err) = ok(&run(&[
        "eval",
        "--checkpoint",
        s(&a),
        "--csv",
        s(&nih.join("Data_Entry_2017.csv")),
        "--images",
        s(&nih),
        "--out",
        s(&e6),
        "--resamples",
        "50",
    ]));
    assert!(out.contains("cross-dataset, 7 shared findings"), "{out}");
    assert!(
        out.contains("| Pleural Effusion |") && !out.contains("| Support Devices |"),
        "{out}"
    );
    assert!(err.contains("no labels here for No Finding"), "{err}");
    // The labels arrive through the mapping: each shared finding has the positives and
    // negatives it has in the CheXpert CSV. (AUROCs differ slightly: a JPEG is decoded at
    // reduced scale, its PNG copy in full and then resized.)
    let (m1, m6) = (
        read_json(&e1.join("metrics.json")),
        read_json(&e6.join("metrics.json")),
    );
    let counts = |m: &serde_json::Value, f: &str| {
        let x = m["summary"]["per_finding"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["finding"] == f)
            .unwrap_or_else(|| panic!("{f} missing"))
            .clone();
        (x["n_pos"].clone(), x["n_neg"].clone())
    };
    for (c, _) in nih_names {
        assert_eq!(counts(&m1, c), counts(&m6, c), "{c}");
    }

    // Predict image files and a CSV.
    let first = preds.lines().nth(1).unwrap().split(',').next().unwrap();
    let img1 = lab.join(first);
    let second = preds.lines().nth(2).unwrap().split(',').next().unwrap();
    let img2 = lab.join(second);
    let p1 = dir.path().join("p1.csv");
    ok(&run(&[
        "predict",
        "--checkpoint",
        s(&a.join("best")),
        "--out",
        s(&p1),
        s(&img1),
        s(&img2),
    ]));
    let text = std::fs::read_to_string(&p1).unwrap();
    assert_eq!(text.lines().next().unwrap(), format!("Path,{FINDINGS}"));
    assert_eq!(text.lines().count(), 3);
    assert!(text.lines().nth(1).unwrap().starts_with(s(&img1)));
    // The same image through eval's predictions (calibrated in both): same probabilities.
    let eval_row: Vec<&str> = preds.lines().nth(1).unwrap().split(',').skip(2).collect();
    let pred_row: Vec<&str> = text.lines().nth(1).unwrap().split(',').skip(1).collect();
    for (x, y) in eval_row.iter().zip(&pred_row) {
        let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
        assert!((x - y).abs() < 1e-6, "{x} vs {y}");
    }
    let p2 = dir.path().join("p2.csv");
    ok(&run(&[
        "predict",
        "--checkpoint",
        s(&a),
        "--csv",
        s(&test_csv),
        "--out",
        s(&p2),
    ]));
    assert_eq!(
        std::fs::read_to_string(&p2).unwrap().lines().count(),
        n_test + 1
    );

    // A preset with imported weights (our safetensors use timm key names); a head of another
    // width would stay random and is refused.
    let weights = a.join("best/model.safetensors");
    let p4 = dir.path().join("p4.csv");
    ok(&run(&[
        "predict",
        "--model",
        "resnet_tiny",
        "--weights",
        s(&weights),
        "--out",
        s(&p4),
        s(&img1),
    ]));
    let text = std::fs::read_to_string(&p4).unwrap();
    assert_eq!(text.lines().next().unwrap(), format!("Path,{FINDINGS}"));
    assert_eq!(text.lines().count(), 2);
    let o = run(&[
        "predict",
        "--model",
        "resnet_tiny",
        "--weights",
        s(&weights),
        "--num-classes",
        "3",
        "--out",
        s(&p4),
        s(&img1),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("model.safetensors"), "{err}");

    // A corrupt image is counted and skipped, or fails with --strict (exit 2, file named).
    let bad = dir.path().join("corrupt.jpg");
    std::fs::write(&bad, b"not a jpeg").unwrap();
    let p3 = dir.path().join("p3.csv");
    let (_, err) = ok(&run(&[
        "predict",
        "--checkpoint",
        s(&a),
        "--out",
        s(&p3),
        s(&img1),
        s(&bad),
    ]));
    assert!(
        err.contains("1 of 2 images") && err.contains("corrupt.jpg"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&p3).unwrap().lines().count(), 2);
    let o = run(&[
        "predict",
        "--checkpoint",
        s(&a),
        "--strict",
        "--out",
        s(&p3),
        s(&img1),
        s(&bad),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("corrupt.jpg") && !err.contains("panicked"),
        "{err}"
    );
    // Not a checkpoint; a missing CSV.
    let o = run(&[
        "eval",
        "--checkpoint",
        s(&lab),
        "--csv",
        s(&test_csv),
        "--out",
        s(&e1),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(s(&lab)) && err.contains("model.json"), "{err}");
    let missing = dir.path().join("missing.csv");
    let o = run(&[
        "eval",
        "--checkpoint",
        s(&a),
        "--csv",
        s(&missing),
        "--out",
        s(&e1),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("missing.csv"), "{err}");
}
