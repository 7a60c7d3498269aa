//! AUROC under integer group weights, from one sort: the engine of the study bootstrap.
//!
//! A bootstrap resample draws studies with replacement; a study drawn `c` times contributes
//! each of its images `c` times. Sorting once and then recomputing AUROC per resample from
//! weights keeps a resample at one branch-free O(M) pass with no sort.
//!
//! Walk the labelled rows in ascending score order, negatives before tied positives, keeping
//! `B`, the weight of negatives seen so far; each positive adds `w_i * B`, which sums
//! `num_le = Σ_pos w_i W_neg(score <= s_i)`. Ties count one half, so each block of tied
//! scores holding both classes is corrected by half its `W_pos,b * W_neg,b`:
//!
//! ```text
//! AUROC_w = (2 num_le - Σ_b W_pos,b W_neg,b) / (2 W_pos W_neg)
//! ```
//!
//! The correction visits only the rows of mixed tie blocks. All sums are integers, so a
//! resample's AUROC is exact up to the final division and equals scikit-learn's on the
//! expanded rows.

/// One finding's labelled rows, sorted once, ready for weighted AUROC.
///
/// # Shapes
/// Built from `scores`, `labels`, `groups` of length `[M]`; weights passed to
/// [`RankedAuroc::auroc`] are indexed by group (`[S]`, S = number of groups/studies).
#[derive(Debug, Clone)]
pub struct RankedAuroc {
    /// `group << 1 | label`, ascending score, negatives before tied positives.
    order: Vec<u32>,
    /// `[start, end)` ranges of `order` that are tie blocks holding both classes.
    mixed_ties: Vec<(u32, u32)>,
    n_pos: usize,
}

impl RankedAuroc {
    /// Sorts one finding's labelled rows. `groups[i]` is row `i`'s study index (below 2^31).
    ///
    /// # Panics
    /// If the three slices differ in length, or a group index is 2^31 or more (programming
    /// errors).
    pub fn new(scores: &[f64], labels: &[bool], groups: &[u32]) -> Self {
        assert!(scores.len() == labels.len() && scores.len() == groups.len());
        let mut rows: Vec<(f64, u32)> = (0..scores.len())
            .map(|i| {
                assert!(groups[i] < 1 << 31, "group index too large");
                // Label as the low bit: sorting by (score, bit) puts negatives first in ties.
                (scores[i], groups[i] << 1 | labels[i] as u32)
            })
            .collect();
        rows.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then((a.1 & 1).cmp(&(b.1 & 1))));
        let n_pos = rows.iter().filter(|r| r.1 & 1 == 1).count();
        let mut mixed_ties = Vec::new();
        let mut s = 0;
        while s < rows.len() {
            let mut e = s + 1;
            while e < rows.len() && rows[e].0.total_cmp(&rows[s].0).is_eq() {
                e += 1;
            }
            // Sorted by label inside the block: mixed iff first is negative and last positive.
            if rows[s].1 & 1 == 0 && rows[e - 1].1 & 1 == 1 {
                mixed_ties.push((s as u32, e as u32));
            }
            s = e;
        }
        RankedAuroc {
            order: rows.into_iter().map(|x| x.1).collect(),
            mixed_ties,
            n_pos,
        }
    }

    /// Number of labelled positives and negatives (unweighted).
    pub fn counts(&self) -> (usize, usize) {
        (self.n_pos, self.order.len() - self.n_pos)
    }

    /// AUROC with row weights `w[group]` (`u8`, `u16` or `u32` counts); `None` when the
    /// weighted positives or negatives sum to zero.
    ///
    /// The summed weights of one finding must stay below 2^32 (so `W_pos * W_neg` fits in
    /// 64 bits; [`super::bootstrap`] checks it).
    ///
    /// # Shapes
    /// `w`: `[S]`.
    pub fn auroc<W: Copy + Into<u64>>(&self, w: &[W]) -> Option<f64> {
        let (mut below, mut num, mut w_pos) = (0u64, 0u64, 0u64);
        for &e in &self.order {
            let wi: u64 = w[(e >> 1) as usize].into();
            let wl = wi * (e & 1) as u64;
            num += wl * below;
            w_pos += wl;
            below += wi - wl;
        }
        let w_neg = below;
        if w_pos == 0 || w_neg == 0 {
            return None;
        }
        let mut corr = 0u64;
        for &(s, e) in &self.mixed_ties {
            let (mut p, mut n) = (0u64, 0u64);
            for &x in &self.order[s as usize..e as usize] {
                let wi: u64 = w[(x >> 1) as usize].into();
                if x & 1 == 1 {
                    p += wi;
                } else {
                    n += wi;
                }
            }
            corr += p * n;
        }
        // num <= W_pos W_neg < 2^62, so 2 num fits.
        Some((2 * num - corr) as f64 / (2.0 * w_pos as f64 * w_neg as f64))
    }

    /// [`RankedAuroc::auroc`] for `R` resamples at once from interleaved byte weights
    /// `w[group][r]`: one pass over the sorted rows and one gather per row serve all `R`
    /// resamples (the bootstrap's hot loop).
    ///
    /// # Shapes
    /// `w`: `[S][R]`; returns `[R]`.
    pub fn auroc_batch<const R: usize>(&self, w: &[[u8; R]]) -> [Option<f64>; R] {
        let mut below = [0u64; R];
        let mut num = [0u64; R];
        let mut w_pos = [0u64; R];
        for &e in &self.order {
            let wi = &w[(e >> 1) as usize];
            // All ones for a positive, zero for a negative.
            let m = 0u32.wrapping_sub(e & 1);
            for r in 0..R {
                let x = wi[r] as u32;
                let wl = x & m;
                num[r] += wl as u64 * below[r];
                w_pos[r] += wl as u64;
                below[r] += (x ^ wl) as u64;
            }
        }
        let mut out = [None; R];
        for r in 0..R {
            if w_pos[r] == 0 || below[r] == 0 {
                continue;
            }
            let mut corr = 0u64;
            for &(s, e) in &self.mixed_ties {
                let (mut p, mut n) = (0u64, 0u64);
                for &x in &self.order[s as usize..e as usize] {
                    let wi = w[(x >> 1) as usize][r] as u64;
                    if x & 1 == 1 {
                        p += wi;
                    } else {
                        n += wi;
                    }
                }
                corr += p * n;
            }
            out[r] = Some((2 * num[r] - corr) as f64 / (2.0 * w_pos[r] as f64 * below[r] as f64));
        }
        out
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
            let got = r.auroc(&w);
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
        let w = [2u8, 0, 3, 1, 1, 4];
        let (mut s, mut l) = (Vec::new(), Vec::new());
        for i in 0..scores.len() {
            for _ in 0..w[groups[i] as usize] {
                // (u8 weights here: the generic path is the one the bootstrap uses for counts
                // below 256.)
                s.push(scores[i]);
                l.push(labels[i]);
            }
        }
        let r = RankedAuroc::new(&scores, &labels, &groups);
        let got = r.auroc(&w).unwrap();
        assert!((got - auroc(&s, &l).unwrap()).abs() < 1e-15);
        // Dropping every positive study leaves AUROC undefined.
        assert_eq!(r.auroc(&[1u32, 0, 0, 0, 0, 1]), None);
    }
}
