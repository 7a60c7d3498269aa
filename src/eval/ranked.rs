//! AUROC under integer group weights, from one sort: the engine of the study bootstrap.
//!
//! A bootstrap resample draws studies with replacement; a study drawn `c` times contributes
//! each of its images `c` times. Sorting once and then recomputing AUROC per resample from
//! weights keeps a resample at O(M) with no sort:
//!
//! ```text
//! AUROC_w = Σ_pos w_i (C[lo_i] + C[hi_i]) / (2 W_pos W_neg)
//! ```
//!
//! where negatives are sorted ascending, `C[j]` is the summed weight of the first `j`
//! negatives, `lo_i` the number of negatives scoring strictly below positive `i` and `hi_i`
//! the number scoring at most its score (ties count one half). All sums are integers, so a
//! resample's AUROC is exact up to the final division and equals scikit-learn's on the
//! expanded rows.

/// One finding's labelled rows, sorted once, ready for weighted AUROC.
///
/// # Shapes
/// Built from `scores`, `labels`, `groups` of length `[M]`; weights passed to
/// [`RankedAuroc::auroc`] are indexed by group (`[S]`, S = number of groups/studies).
#[derive(Debug, Clone)]
pub struct RankedAuroc {
    neg_group: Vec<u32>,
    pos_group: Vec<u32>,
    /// `lo + hi` would overflow nothing: both are at most the number of negatives.
    pos_lo: Vec<u32>,
    pos_hi: Vec<u32>,
}

impl RankedAuroc {
    /// Sorts one finding's labelled rows. `groups[i]` is row `i`'s study index.
    ///
    /// # Panics
    /// If the three slices differ in length (a programming error).
    pub fn new(scores: &[f64], labels: &[bool], groups: &[u32]) -> Self {
        assert!(scores.len() == labels.len() && scores.len() == groups.len());
        let mut neg: Vec<(f64, u32)> = Vec::new();
        let mut pos: Vec<(f64, u32)> = Vec::new();
        for i in 0..scores.len() {
            if labels[i] {
                pos.push((scores[i], groups[i]));
            } else {
                neg.push((scores[i], groups[i]));
            }
        }
        neg.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        pos.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let (mut pos_lo, mut pos_hi) =
            (Vec::with_capacity(pos.len()), Vec::with_capacity(pos.len()));
        // Positives ascending, so both cursors only move forward.
        let (mut lo, mut hi) = (0usize, 0usize);
        for &(s, _) in &pos {
            while lo < neg.len() && neg[lo].0.total_cmp(&s).is_lt() {
                lo += 1;
            }
            hi = hi.max(lo);
            while hi < neg.len() && neg[hi].0.total_cmp(&s).is_le() {
                hi += 1;
            }
            pos_lo.push(lo as u32);
            pos_hi.push(hi as u32);
        }
        RankedAuroc {
            neg_group: neg.into_iter().map(|x| x.1).collect(),
            pos_group: pos.into_iter().map(|x| x.1).collect(),
            pos_lo,
            pos_hi,
        }
    }

    /// Number of labelled positives and negatives (unweighted).
    pub fn counts(&self) -> (usize, usize) {
        (self.pos_group.len(), self.neg_group.len())
    }

    /// AUROC with row weights `w[group]`; `None` when the weighted positives or negatives sum
    /// to zero. `cum` is scratch space reused across calls.
    ///
    /// Total weights must stay below 2^32 (true for any bootstrap of fewer than ~65,000 rows
    /// per study times studies; [`super::bootstrap`] checks it).
    ///
    /// # Shapes
    /// `w`: `[S]`.
    pub fn auroc(&self, w: &[u32], cum: &mut Vec<u32>) -> Option<f64> {
        cum.clear();
        cum.reserve(self.neg_group.len() + 1);
        let mut c = 0u32;
        cum.push(0);
        for &g in &self.neg_group {
            c += w[g as usize];
            cum.push(c);
        }
        let w_neg = c as u64;
        let (mut num, mut w_pos) = (0u64, 0u64);
        for ((&g, &lo), &hi) in self.pos_group.iter().zip(&self.pos_lo).zip(&self.pos_hi) {
            let wi = w[g as usize] as u64;
            w_pos += wi;
            num += wi * (cum[lo as usize] as u64 + cum[hi as usize] as u64);
        }
        if w_pos == 0 || w_neg == 0 {
            return None;
        }
        Some(num as f64 / (2.0 * w_pos as f64 * w_neg as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::auroc::auroc;
    use crate::eval::fixtures::{load, Case};

    #[test]
    fn unit_weights_equal_plain_auroc_on_fixtures() {
        let cases: Vec<Case> = load(include_str!("../../tests/fixtures/eval/point.json"));
        for c in &cases {
            let groups: Vec<u32> = (0..c.scores.len() as u32).collect();
            let r = RankedAuroc::new(&c.scores, &c.labels, &groups);
            let w = vec![1u32; c.scores.len()];
            let got = r.auroc(&w, &mut Vec::new());
            match c.auroc {
                Some(want) => assert!((got.unwrap() - want).abs() < 1e-12, "{}", c.name),
                None => assert_eq!(got, None, "{}", c.name),
            }
        }
    }

    #[test]
    fn integer_weights_equal_repeating_rows() {
        // Weighted AUROC must equal the plain AUROC of the rows repeated w times.
        let scores = [0.1, 0.4, 0.35, 0.8, 0.4, 0.4, 0.9, 0.35];
        let labels = [false, false, true, true, true, false, true, false];
        let groups = [0u32, 1, 1, 2, 3, 3, 4, 5];
        let w = [2u32, 0, 3, 1, 1, 4];
        let (mut s, mut l) = (Vec::new(), Vec::new());
        for i in 0..scores.len() {
            for _ in 0..w[groups[i] as usize] {
                s.push(scores[i]);
                l.push(labels[i]);
            }
        }
        let r = RankedAuroc::new(&scores, &labels, &groups);
        let got = r.auroc(&w, &mut Vec::new()).unwrap();
        assert!((got - auroc(&s, &l).unwrap()).abs() < 1e-15);
        // Dropping every positive study leaves AUROC undefined.
        assert_eq!(r.auroc(&[1, 0, 0, 0, 0, 1], &mut Vec::new()), None);
    }
}
