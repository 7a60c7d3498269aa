//! Area under the ROC curve (ties count one half), average precision and the ROC curve.
//!
//! A finding whose labelled rows hold only one class has no AUROC: the functions return
//! `None`, and callers leave it out of means (never 0.5).
//!
//! All functions take `scores` and `labels` of equal length (`[M]`) and panic if the lengths
//! differ (a programming error, not bad input). Scores must not be NaN
//! ([`super::Predictions::validate`] guarantees this).

/// `(score, label)` pairs sorted ascending by score (NaN-free input; `total_cmp` keeps the
/// order total).
fn sorted_pairs(scores: &[f64], labels: &[bool]) -> Vec<(f64, bool)> {
    assert_eq!(
        scores.len(),
        labels.len(),
        "scores and labels must have the same length"
    );
    let mut v: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    v.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// Tie blocks of ascending `sorted`, as `(n_pos, n_neg, score)`, in ascending order.
fn tie_blocks(sorted: &[(f64, bool)]) -> Vec<(u64, u64, f64)> {
    let mut out = Vec::new();
    let mut s = 0;
    while s < sorted.len() {
        let v = sorted[s].0;
        let (mut p, mut n, mut e) = (0u64, 0u64, s);
        while e < sorted.len() && sorted[e].0.total_cmp(&v).is_eq() {
            if sorted[e].1 {
                p += 1;
            } else {
                n += 1;
            }
            e += 1;
        }
        out.push((p, n, v));
        s = e;
    }
    out
}

fn auroc_blocks(blocks: &[(u64, u64, f64)]) -> Option<f64> {
    // Twice the Mann-Whitney U statistic, in integers: exact.
    let (mut u2, mut neg_below, mut n_pos) = (0u128, 0u64, 0u64);
    for &(p, n, _) in blocks {
        u2 += p as u128 * (2 * neg_below + n) as u128;
        neg_below += n;
        n_pos += p;
    }
    if n_pos == 0 || neg_below == 0 {
        return None;
    }
    Some(u2 as f64 / (2.0 * n_pos as f64 * neg_below as f64))
}

fn ap_blocks(blocks: &[(u64, u64, f64)]) -> Option<f64> {
    let n_pos: u64 = blocks.iter().map(|b| b.0).sum();
    if n_pos == 0 {
        return None;
    }
    let (mut tp, mut fp, mut ap, mut prev_recall) = (0u64, 0u64, 0.0f64, 0.0f64);
    for &(p, n, _) in blocks.iter().rev() {
        tp += p;
        fp += n;
        let recall = tp as f64 / n_pos as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
    }
    Some(ap)
}

/// AUROC = P(score of a random positive > score of a random negative) + ½ P(equal): the
/// Mann–Whitney U statistic over `n_pos * n_neg`, equal to scikit-learn's `roc_auc_score`.
/// `None` when there are no positives or no negatives.
///
/// # Shapes
/// `scores`, `labels`: `[M]`.
pub fn auroc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    auroc_blocks(&tie_blocks(&sorted_pairs(scores, labels)))
}

/// Average precision as scikit-learn's `average_precision_score` computes it: the sum over
/// distinct score thresholds (high to low) of `(R_k - R_{k-1}) * P_k`, without interpolation.
/// `None` when there are no positives (recall undefined); 1.0 when all labels are positive.
///
/// # Shapes
/// `scores`, `labels`: `[M]`.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Option<f64> {
    ap_blocks(&tie_blocks(&sorted_pairs(scores, labels)))
}

/// [`auroc`] and [`average_precision`] from a single sort.
pub fn auroc_and_ap(scores: &[f64], labels: &[bool]) -> (Option<f64>, Option<f64>) {
    let blocks = tie_blocks(&sorted_pairs(scores, labels));
    (auroc_blocks(&blocks), ap_blocks(&blocks))
}

/// Points of the ROC curve, one per distinct score (high to low), starting at (0, 0).
///
/// # Shapes
/// `fpr`, `tpr`, `thresholds`: `[T + 1]` for `T` distinct scores; `thresholds[0]` is `+inf`
/// and a row counts as positive when `score >= threshold`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RocCurve {
    pub fpr: Vec<f64>,
    pub tpr: Vec<f64>,
    pub thresholds: Vec<f64>,
}

/// The ROC curve (scikit-learn's `roc_curve(..., drop_intermediate=False)` points, with
/// `+inf` as the first threshold). `None` when only one class is present.
pub fn roc_curve(scores: &[f64], labels: &[bool]) -> Option<RocCurve> {
    let blocks = tie_blocks(&sorted_pairs(scores, labels));
    let n_pos = blocks.iter().map(|b| b.0).sum::<u64>() as f64;
    let n_neg = blocks.iter().map(|b| b.1).sum::<u64>() as f64;
    if n_pos == 0.0 || n_neg == 0.0 {
        return None;
    }
    let mut c = RocCurve {
        fpr: vec![0.0],
        tpr: vec![0.0],
        thresholds: vec![f64::INFINITY],
    };
    let (mut tp, mut fp) = (0u64, 0u64);
    for &(p, n, v) in blocks.iter().rev() {
        tp += p;
        fp += n;
        c.fpr.push(fp as f64 / n_neg);
        c.tpr.push(tp as f64 / n_pos);
        c.thresholds.push(v);
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::fixtures::{load, Case};

    #[test]
    fn matches_sklearn_on_fixture_cases() {
        let cases: Vec<Case> = load(include_str!("../../tests/fixtures/eval/point.json"));
        assert!(cases.len() >= 8);
        for c in &cases {
            let got = auroc(&c.scores, &c.labels);
            match c.auroc {
                Some(want) => {
                    let g = got.unwrap_or_else(|| panic!("{}: AUROC undefined", c.name));
                    assert!(
                        (g - want).abs() < 1e-9,
                        "{}: auroc {g} vs sklearn {want}",
                        c.name
                    );
                }
                None => assert_eq!(got, None, "{}: AUROC must be undefined", c.name),
            }
            assert_eq!(
                auroc_and_ap(&c.scores, &c.labels),
                (
                    auroc(&c.scores, &c.labels),
                    average_precision(&c.scores, &c.labels)
                )
            );
            let got = average_precision(&c.scores, &c.labels);
            match c.ap {
                Some(want) => {
                    let g = got.unwrap_or_else(|| panic!("{}: AP undefined", c.name));
                    assert!(
                        (g - want).abs() < 1e-9,
                        "{}: AP {g} vs sklearn {want}",
                        c.name
                    );
                }
                None => assert_eq!(got, None, "{}: AP must be undefined", c.name),
            }
            if let Some(roc) = &c.roc {
                let g = roc_curve(&c.scores, &c.labels).expect("roc defined");
                assert_eq!(g.fpr.len(), roc.fpr.len(), "{}", c.name);
                for j in 0..g.fpr.len() {
                    assert!((g.fpr[j] - roc.fpr[j]).abs() < 1e-12, "{}", c.name);
                    assert!((g.tpr[j] - roc.tpr[j]).abs() < 1e-12, "{}", c.name);
                    let want = roc.thresholds[j].unwrap_or(f64::INFINITY);
                    assert_eq!(g.thresholds[j], want, "{}", c.name);
                }
            }
        }
    }

    #[test]
    fn hand_checked_ties_and_undefined() {
        // One positive tied with one of two negatives: (1 + 0.5) / 2 = 0.75.
        assert_eq!(auroc(&[0.5, 0.5, 0.1], &[true, false, false]), Some(0.75));
        // All tied: 0.5 exactly (defined, both classes present).
        assert_eq!(auroc(&[0.3, 0.3], &[true, false]), Some(0.5));
        assert_eq!(auroc(&[0.3, 0.9], &[true, true]), None);
        assert_eq!(auroc(&[0.3, 0.9], &[false, false]), None);
        assert_eq!(auroc(&[], &[]), None);
        assert_eq!(average_precision(&[0.3, 0.9], &[false, false]), None);
        assert_eq!(average_precision(&[0.3, 0.9], &[true, true]), Some(1.0));
        assert_eq!(roc_curve(&[0.3], &[true]), None);
    }
}
