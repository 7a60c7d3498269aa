//! Command-line behaviour: stats output, error messages and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_noisycxr"))
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

/// (stdout, stderr) as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Asserts success (printing both streams if not) and returns (stdout, stderr).
pub fn ok(o: &Output) -> (String, String) {
    let (out, err) = text(o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    (out, err)
}

/// Generates a noise lab of `n_train` / `n_valid` / `n_test` images with `seed` in `dir`; returns
/// its `CheXpert-v1.0-small/` folder.
pub fn synth_lab(dir: &Path, n_train: usize, n_valid: usize, n_test: usize, seed: u64) -> PathBuf {
    let n = |v: usize| v.to_string();
    let (a, b, c, d) = (n(n_train), n(n_valid), n(n_test), seed.to_string());
    ok(&run(&[
        "synth",
        "--out",
        dir.to_str().unwrap(),
        "--n-train",
        &a,
        "--n-valid",
        &b,
        "--n-test",
        &c,
        "--seed",
        &d,
    ]));
    dir.join("CheXpert-v1.0-small")
}

#[test]
fn stats_counts_a_chexpert_csv() {
    let csv = fixtures().join("chexpert/CheXpert-v1.0-small/train.csv");
    let o = run(&["stats", csv.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    // Counted by hand from the fixture (8 rows): Cardiomegaly blank 5, -1 1, 0 1 (patient00005), 1 0.
    assert!(out.contains("| Cardiomegaly | 6 | 1 | 1 | 0 |"), "{out}");
    assert!(out.contains("| Pneumothorax | 4 | 0 | 4 | 0 |"), "{out}");
    assert!(out.contains("8 rows, 5 patients, 6 studies"), "{out}");
    assert!(out.contains("Frontal 6, Lateral 2"), "{out}");
}

#[test]
fn stats_csv_format_has_a_header_and_one_row_per_finding() {
    let csv = fixtures().join("chexpert/CheXpert-v1.0-small/train.csv");
    let o = run(&["stats", "--format", "csv", csv.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "set,finding,blank,uncertain,negative,positive");
    assert_eq!(
        lines
            .iter()
            .filter(|l| !l.contains(",view:") && !l.contains(",projection:"))
            .count(),
        15
    );
    assert!(out.contains(",Support Devices,6,0,0,2\n"), "{out}");
}

#[test]
fn bad_label_value_fails_with_line_and_exit_code_2() {
    let csv = fixtures().join("chexpert/CheXpert-v1.0-small/bad_value.csv");
    let o = run(&["stats", csv.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad_value.csv:3:") && err.contains("Cardiomegaly") && err.contains("\"2.0\""),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn wrong_field_count_fails_with_line() {
    let csv = fixtures().join("chexpert/CheXpert-v1.0-small/bad_width.csv");
    let o = run(&["stats", csv.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad_width.csv:3:") && err.contains("12 fields"),
        "{err}"
    );
}

#[test]
fn missing_file_and_unknown_config_key_are_usage_errors() {
    let o = run(&["stats", "/nonexistent/train.csv"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("/nonexistent/train.csv"));

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "seed = 1\n[data]\nfrontal = true\n").unwrap();
    let csv = fixtures().join("chexpert/CheXpert-v1.0-small/train.csv");
    let o = run(&[
        "stats",
        "--config",
        cfg.to_str().unwrap(),
        csv.to_str().unwrap(),
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("c.toml") && err.contains("frontal"), "{err}");
}
