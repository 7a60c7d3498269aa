//! Test-only loading of the JSON fixtures that `tests/fixtures/eval/make_fixtures.py` writes
//! with scikit-learn / numpy / scipy.

use serde::de::DeserializeOwned;

/// The `cases` array of a fixture file `{"generator": ..., "cases": [...]}`.
pub fn load<T: DeserializeOwned>(json: &str) -> Vec<T> {
    #[derive(serde::Deserialize)]
    struct File<T> {
        #[allow(dead_code)]
        generator: String,
        cases: Vec<T>,
    }
    let f: File<T> = serde_json::from_str(json).expect("fixture JSON parses");
    f.cases
}

/// ROC points as scikit-learn's `roc_curve(drop_intermediate=False)` returns them.
#[derive(Debug, serde::Deserialize)]
pub struct Roc {
    pub fpr: Vec<f64>,
    pub tpr: Vec<f64>,
    /// The first threshold (+inf) is `null` in JSON.
    pub thresholds: Vec<Option<f64>>,
}

/// One case of `point.json`.
#[derive(Debug, serde::Deserialize)]
pub struct Case {
    pub name: String,
    pub scores: Vec<f64>,
    pub labels: Vec<bool>,
    pub auroc: Option<f64>,
    pub ap: Option<f64>,
    pub roc: Option<Roc>,
}
