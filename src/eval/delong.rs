//! DeLong's test for two correlated AUROCs on the same rows (DeLong, DeLong & Clarke-Pearson
//! 1988), with the fast midrank algorithm of Sun & Xu (2014): O(M log M) instead of
//! O(n_pos * n_neg).

use serde::{Deserialize, Serialize};

/// DeLong's test of `AUROC_a == AUROC_b`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeLong {
    pub auroc_a: f64,
    pub auroc_b: f64,
    /// Variances and covariance of the two AUROC estimates.
    pub var_a: f64,
    pub var_b: f64,
    pub cov_ab: f64,
    /// `(auroc_a - auroc_b) / sqrt(var_a + var_b - 2 cov_ab)`; `None` when that variance is 0.
    pub z: Option<f64>,
    /// Two-sided p-value `2 (1 - Φ(|z|))`; 1 when both AUROCs and the variance are equal
    /// (identical rankings), `None` when only the variance is 0.
    pub p_value: Option<f64>,
}

/// Midranks (1-based, ties get the mean of their ranks).
fn midranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_unstable_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut out = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j < idx.len() && x[idx[j]].total_cmp(&x[idx[i]]).is_eq() {
            j += 1;
        }
        let r = 0.5 * (i + j - 1) as f64 + 1.0;
        for &k in &idx[i..j] {
            out[k] = r;
        }
        i = j;
    }
    out
}

/// Per-model AUROC and structural components: `v10` (one per positive), `v01` (one per
/// negative).
fn components(scores: &[f64], labels: &[bool]) -> (f64, Vec<f64>, Vec<f64>) {
    let pos: Vec<f64> = scores
        .iter()
        .zip(labels)
        .filter(|x| *x.1)
        .map(|x| *x.0)
        .collect();
    let neg: Vec<f64> = scores
        .iter()
        .zip(labels)
        .filter(|x| !*x.1)
        .map(|x| *x.0)
        .collect();
    let (m, n) = (pos.len() as f64, neg.len() as f64);
    let tx = midranks(&pos);
    let ty = midranks(&neg);
    let all: Vec<f64> = pos.iter().chain(&neg).copied().collect();
    let tz = midranks(&all);
    let auc = tz[..pos.len()].iter().sum::<f64>() / (m * n) - (m + 1.0) / (2.0 * n);
    let v10 = (0..pos.len()).map(|i| (tz[i] - tx[i]) / n).collect();
    let v01 = (0..neg.len())
        .map(|j| 1.0 - (tz[pos.len() + j] - ty[j]) / m)
        .collect();
    (auc, v10, v01)
}

/// Sample covariance (denominator `len - 1`).
fn cov(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let ma = a.iter().sum::<f64>() / n;
    let mb = b.iter().sum::<f64>() / n;
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - ma) * (y - mb))
        .sum::<f64>()
        / (n - 1.0)
}

/// DeLong's test comparing scores `a` and `b` on the same rows; `None` unless there are at
/// least two positives and two negatives (the variance needs them).
///
/// # Shapes
/// `a`, `b`, `labels`: `[M]` (panics if they differ: a programming error).
pub fn delong(a: &[f64], b: &[f64], labels: &[bool]) -> Option<DeLong> {
    assert!(a.len() == labels.len() && b.len() == labels.len());
    let m = labels.iter().filter(|&&l| l).count();
    let n = labels.len() - m;
    if m < 2 || n < 2 {
        return None;
    }
    let (auc_a, v10a, v01a) = components(a, labels);
    let (auc_b, v10b, v01b) = components(b, labels);
    let (m, n) = (m as f64, n as f64);
    let var_a = cov(&v10a, &v10a) / m + cov(&v01a, &v01a) / n;
    let var_b = cov(&v10b, &v10b) / m + cov(&v01b, &v01b) / n;
    let cov_ab = cov(&v10a, &v10b) / m + cov(&v01a, &v01b) / n;
    let var = var_a + var_b - 2.0 * cov_ab;
    let diff = auc_a - auc_b;
    let (z, p_value) = if var > 1e-300 {
        let z = diff / var.sqrt();
        (
            Some(z),
            Some(libm::erfc(z.abs() / std::f64::consts::SQRT_2)),
        )
    } else if diff == 0.0 {
        (None, Some(1.0))
    } else {
        (None, None)
    };
    Some(DeLong {
        auroc_a: auc_a,
        auroc_b: auc_b,
        var_a,
        var_b,
        cov_ab,
        z,
        p_value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::fixtures::load;

    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        a: Vec<f64>,
        b: Vec<f64>,
        labels: Vec<bool>,
        auc_a: f64,
        auc_b: f64,
        var_a: f64,
        var_b: f64,
        cov_ab: f64,
        z: f64,
        p: f64,
    }

    #[test]
    fn matches_reference_implementation() {
        // Reference: Sun & Xu's fast algorithm in numpy, cross-checked in the script against
        // the O(m n) definition and scipy.stats.norm for the p-value.
        let cases: Vec<Case> = load(include_str!("../../tests/fixtures/eval/delong.json"));
        for c in &cases {
            let d = delong(&c.a, &c.b, &c.labels).unwrap();
            let close = |x: f64, y: f64| (x - y).abs() < 1e-9 * (1.0 + y.abs());
            assert!(
                close(d.auroc_a, c.auc_a) && close(d.auroc_b, c.auc_b),
                "{}",
                c.name
            );
            assert!(
                close(d.var_a, c.var_a) && close(d.var_b, c.var_b),
                "{}",
                c.name
            );
            assert!(close(d.cov_ab, c.cov_ab), "{}", c.name);
            assert!(
                close(d.z.unwrap(), c.z),
                "{}: z {:?} vs {}",
                c.name,
                d.z,
                c.z
            );
            // erfc vs scipy's norm.sf: relative agreement (p spans 1e-6 .. 0.9).
            let p = d.p_value.unwrap();
            assert!(
                (p - c.p).abs() <= 1e-9 * c.p.max(1e-300) + 1e-15,
                "{}: p {p} vs {}",
                c.name,
                c.p
            );
        }
    }

    #[test]
    fn identical_models_and_too_few_rows() {
        let s = [0.1, 0.4, 0.35, 0.8, 0.2];
        let l = [false, false, true, true, true];
        let d = delong(&s, &s, &l).unwrap();
        assert_eq!((d.z, d.p_value), (None, Some(1.0)));
        assert!(delong(&s, &s, &[true, false, false, false, false]).is_none());
    }
}
