//! [`HeadLayout`]: how a classifier head's outputs map to findings, so that binary findings and
//! U-MultiClass findings can share one head.
//!
//! Layout rule: findings are laid out in their dataset order; a binary finding takes one output
//! column (a logit), a U-MultiClass finding takes three consecutive columns, in the order
//! **negative, positive, uncertain** ([`NEG`], [`POS`], [`UNC`]). With every finding binary the
//! head is the usual `C` logits; with every finding U-MultiClass it is `3·C` outputs, finding
//! `c` at columns `3c, 3c+1, 3c+2`. Targets use the same columns (a probability per binary
//! column, a distribution over the three classes per U-MultiClass finding).
//!
//! Loss per finding: binary cross-entropy with logits for a binary finding, softmax
//! cross-entropy over its three outputs for a U-MultiClass finding. The probability reported
//! for a U-MultiClass finding is the softmax over positive vs negative only:
//! `p = e^{z_pos} / (e^{z_pos} + e^{z_neg}) = σ(z_pos − z_neg)` (CheXpert paper).

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::loss::{bce_with_logits, soft_cross_entropy};

/// Column of the negative class inside a U-MultiClass finding's three outputs.
pub const NEG: usize = 0;
/// Column of the positive class inside a U-MultiClass finding's three outputs.
pub const POS: usize = 1;
/// Column of the uncertain class inside a U-MultiClass finding's three outputs.
pub const UNC: usize = 2;

/// How one finding is predicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// One logit, sigmoid probability, binary cross-entropy.
    Binary,
    /// Three logits (negative, positive, uncertain), softmax cross-entropy.
    MultiClass,
}

impl OutputKind {
    /// Output columns this finding takes.
    pub fn width(self) -> usize {
        match self {
            OutputKind::Binary => 1,
            OutputKind::MultiClass => 3,
        }
    }
}

/// Map from head outputs to findings. See the module doc for the layout rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadLayout {
    kinds: Vec<OutputKind>,
    offsets: Vec<usize>,
    width: usize,
}

fn idx(v: &[usize], device: &Device) -> Result<Tensor> {
    let v: Vec<u32> = v.iter().map(|&i| i as u32).collect();
    Ok(Tensor::from_vec(v.clone(), v.len(), device)?)
}

impl HeadLayout {
    /// A layout from one kind per finding.
    pub fn new(kinds: Vec<OutputKind>) -> Self {
        let mut offsets = Vec::with_capacity(kinds.len());
        let mut w = 0;
        for k in &kinds {
            offsets.push(w);
            w += k.width();
        }
        HeadLayout {
            kinds,
            offsets,
            width: w,
        }
    }

    /// `c` binary findings: the usual head of `c` logits.
    pub fn binary(c: usize) -> Self {
        Self::new(vec![OutputKind::Binary; c])
    }

    /// Number of head outputs `W` (what the model's head must produce).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of findings `C`.
    pub fn n_findings(&self) -> usize {
        self.kinds.len()
    }

    /// Kind of each finding.
    pub fn kinds(&self) -> &[OutputKind] {
        &self.kinds
    }

    /// First output column of finding `c`.
    pub fn offset(&self, c: usize) -> usize {
        self.offsets[c]
    }

    /// True when every finding is binary (`W = C`).
    pub fn is_all_binary(&self) -> bool {
        self.kinds.iter().all(|k| *k == OutputKind::Binary)
    }

    fn check(&self, what: &str, t: &Tensor, width: usize) -> Result<usize> {
        match t.dims() {
            [n, w] if *w == width => Ok(*n),
            d => Err(Error::Other(format!(
                "{what} has shape {d:?}; this head layout needs [N, {width}] \
                 ({} findings, {} of them U-MultiClass)",
                self.kinds.len(),
                self.kinds
                    .iter()
                    .filter(|k| **k == OutputKind::MultiClass)
                    .count()
            ))),
        }
    }

    /// Column of each finding's positive output (the binary logit, or the U-MultiClass
    /// positive class).
    fn pos_cols(&self) -> Vec<usize> {
        self.kinds
            .iter()
            .zip(&self.offsets)
            .map(|(k, o)| match k {
                OutputKind::Binary => *o,
                OutputKind::MultiClass => o + POS,
            })
            .collect()
    }

    /// Per-element loss in finding order: BCE-with-logits for binary findings (with
    /// `pos_weight`, which U-MultiClass findings ignore), softmax cross-entropy for U-MultiClass
    /// findings. Loss unit: nats.
    ///
    /// # Shapes
    /// - `outputs`, `targets`: `[N, W]`
    /// - `pos_weight`: `[C]` (one per finding; entries of U-MultiClass findings unused)
    /// - returns: `[N, C]`
    pub fn loss(
        &self,
        outputs: &Tensor,
        targets: &Tensor,
        pos_weight: Option<&Tensor>,
    ) -> Result<Tensor> {
        let n = self.check("head outputs", outputs, self.width)?;
        self.check("targets", targets, self.width)?;
        if let Some(p) = pos_weight {
            if p.dims() != [self.kinds.len()] {
                return Err(Error::Other(format!(
                    "pos_weight has shape {:?}; it must be [{}], one per finding",
                    p.dims(),
                    self.kinds.len()
                )));
            }
        }
        if self.is_all_binary() {
            return bce_with_logits(outputs, targets, pos_weight);
        }
        let dev = outputs.device();
        let bin: Vec<usize> = (0..self.kinds.len())
            .filter(|&c| self.kinds[c] == OutputKind::Binary)
            .collect();
        let multi: Vec<usize> = (0..self.kinds.len())
            .filter(|&c| self.kinds[c] == OutputKind::MultiClass)
            .collect();
        let mut parts = Vec::new();
        if !bin.is_empty() {
            let cols = idx(
                &bin.iter().map(|&c| self.offsets[c]).collect::<Vec<_>>(),
                dev,
            )?;
            let pw = match pos_weight {
                Some(p) => Some(p.index_select(&idx(&bin, p.device())?, 0)?),
                None => None,
            };
            parts.push(bce_with_logits(
                &outputs.index_select(&cols, 1)?,
                &targets.index_select(&cols, 1)?,
                pw.as_ref(),
            )?);
        }
        if !multi.is_empty() {
            let cols: Vec<usize> = multi
                .iter()
                .flat_map(|&c| {
                    let o = self.offsets[c];
                    [o + NEG, o + POS, o + UNC]
                })
                .collect();
            let cols = idx(&cols, dev)?;
            let m = multi.len();
            let z = outputs.index_select(&cols, 1)?.reshape((n, m, 3))?;
            let t = targets.index_select(&cols, 1)?.reshape((n, m, 3))?;
            parts.push(soft_cross_entropy(&z, &t)?);
        }
        // Back to finding order: the concatenation holds the binary findings, then the
        // U-MultiClass ones.
        let order: Vec<usize> = bin.iter().chain(&multi).copied().collect();
        let mut inverse = vec![0usize; order.len()];
        for (pos, &c) in order.iter().enumerate() {
            inverse[c] = pos;
        }
        Ok(Tensor::cat(&parts, 1)?.index_select(&idx(&inverse, dev)?, 1)?)
    }

    /// Reported probability of each finding: `σ(z)` for a binary finding, `σ(z_pos − z_neg)`
    /// (softmax over positive vs negative) for a U-MultiClass finding. Differentiable.
    ///
    /// # Shapes
    /// - `outputs`: `[N, W]`
    /// - returns: `[N, C]`
    pub fn probabilities(&self, outputs: &Tensor) -> Result<Tensor> {
        self.check("head outputs", outputs, self.width)?;
        if self.is_all_binary() {
            return Ok(candle_nn::ops::sigmoid(outputs)?);
        }
        let dev = outputs.device();
        let pos = outputs.index_select(&idx(&self.pos_cols(), dev)?, 1)?;
        // The negative logit of U-MultiClass findings; binary findings read their own column
        // and multiply it by 0.
        let neg_cols: Vec<usize> = self.offsets.iter().map(|o| o + NEG).collect();
        let is_multi: Vec<f32> = self
            .kinds
            .iter()
            .map(|k| (*k == OutputKind::MultiClass) as u8 as f32)
            .collect();
        let is_multi = Tensor::from_vec(is_multi, self.kinds.len(), dev)?.to_dtype(pos.dtype())?;
        let neg = outputs
            .index_select(&idx(&neg_cols, dev)?, 1)?
            .broadcast_mul(&is_multi)?;
        Ok(candle_nn::ops::sigmoid(&(pos - neg)?)?)
    }

    /// The probability-of-positive view of targets: the binary target, or the positive class's
    /// share of a U-MultiClass target. Used for conditional training and class weighting.
    ///
    /// # Shapes
    /// - `targets`: `[N, W]`
    /// - returns: `[N, C]`
    pub fn positive_target(&self, targets: &Tensor) -> Result<Tensor> {
        self.check("targets", targets, self.width)?;
        if self.is_all_binary() {
            return Ok(targets.clone());
        }
        Ok(targets.index_select(&idx(&self.pos_cols(), targets.device())?, 1)?)
    }

    /// Number of classes each output column belongs to: 2 for a binary column, 3 for a
    /// U-MultiClass column (label smoothing spreads ε over that many classes).
    ///
    /// # Shapes
    /// returns `[W]` (`dtype`, on `device`)
    pub fn classes_per_column(&self, dtype: DType, device: &Device) -> Result<Tensor> {
        let v: Vec<f32> = self
            .kinds
            .iter()
            .flat_map(|k| match k {
                OutputKind::Binary => vec![2.0f32],
                OutputKind::MultiClass => vec![3.0; 3],
            })
            .collect();
        Ok(Tensor::from_vec(v, self.width, device)?.to_dtype(dtype)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::host_f32;
    use candle_core::Var;

    #[test]
    fn layout_rule_offsets_and_width() {
        use OutputKind::*;
        let l = HeadLayout::new(vec![Binary, MultiClass, Binary, MultiClass]);
        assert_eq!(l.width(), 8);
        assert_eq!(
            (0..4).map(|c| l.offset(c)).collect::<Vec<_>>(),
            [0, 1, 4, 5]
        );
        assert_eq!(HeadLayout::new(vec![MultiClass; 14]).width(), 42);
        assert!(HeadLayout::binary(3).is_all_binary());
    }

    /// A mixed layout must give each finding exactly the loss it would get alone: the BCE of
    /// its logit or the cross-entropy of its three outputs (both checked against PyTorch in
    /// `loss.rs`), in finding order, with pos_weight applied to binary findings only.
    #[test]
    fn mixed_layout_loss_and_probabilities_per_finding() -> Result<()> {
        use OutputKind::*;
        let dev = Device::Cpu;
        let l = HeadLayout::new(vec![MultiClass, Binary, MultiClass]);
        // columns: f0 = 0..3, f1 = 3, f2 = 4..7
        let out = Tensor::new(
            &[
                [2.0f32, -1.0, 0.5, 1.5, -100.0, 100.0, 0.0],
                [0.0, 0.0, 0.0, -2.0, 3.0, 1.0, -1.0],
            ],
            &dev,
        )?;
        let tgt = Tensor::new(
            &[
                [0f32, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0, 1.0, 0.2, 0.7, 0.1],
            ],
            &dev,
        )?;
        let pw = Tensor::new(&[5f32, 3.0, 7.0], &dev)?;
        let v = Var::from_tensor(&out)?;
        let el = l.loss(v.as_tensor(), &tgt, Some(&pw))?;
        assert_eq!(el.dims(), &[2, 3]);
        let got = host_f32(&el)?;
        let ce = |z: [f32; 3], t: [f32; 3]| {
            let m = z.iter().cloned().fold(f32::MIN, f32::max);
            let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f32>().ln();
            -(0..3).map(|k| t[k] * (z[k] - lse)).sum::<f32>()
        };
        let bce = |x: f32, t: f32, p: f32| {
            let sp = (-x).max(0.0) + (-x.abs()).exp().ln_1p();
            (1.0 - t) * x + (1.0 + (p - 1.0) * t) * sp
        };
        let want = [
            ce([2.0, -1.0, 0.5], [0.0, 1.0, 0.0]),
            bce(1.5, 0.0, 3.0),
            ce([-100.0, 100.0, 0.0], [1.0, 0.0, 0.0]),
            ce([0.0, 0.0, 0.0], [0.0, 0.0, 1.0]),
            bce(-2.0, 1.0, 3.0),
            ce([3.0, 1.0, -1.0], [0.2, 0.7, 0.1]),
        ];
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                "{got:?} vs {want:?}"
            );
        }
        assert!((want[2] - 200.0).abs() < 1e-3);
        // Gradient reaches every output column.
        let g = el.sum_all()?.backward()?;
        let g = host_f32(g.get(v.as_tensor()).unwrap())?;
        assert!(g.iter().all(|x| x.is_finite()));
        assert!(g[..7].iter().all(|x| *x != 0.0), "{g:?}");

        let p = host_f32(&l.probabilities(&out)?)?;
        let s = |x: f32| 1.0 / (1.0 + (-x).exp());
        let want = [
            s(-1.0 - 2.0),
            s(1.5),
            s(100.0 - (-100.0)),
            s(0.0),
            s(-2.0),
            s(1.0 - 3.0),
        ];
        for (g, w) in p.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{p:?} vs {want:?}");
        }
        let pt = host_f32(&l.positive_target(&tgt)?)?;
        assert_eq!(pt, [1.0, 0.0, 0.0, 0.0, 1.0, 0.7]);
        Ok(())
    }

    #[test]
    fn wrong_widths_are_errors() {
        let dev = Device::Cpu;
        let l = HeadLayout::new(vec![OutputKind::MultiClass; 2]);
        let x = Tensor::zeros((2, 2), DType::F32, &dev).unwrap();
        let e = l.loss(&x, &x, None).unwrap_err().to_string();
        assert!(e.contains("[N, 6]"), "{e}");
        assert!(l.probabilities(&x).is_err());
    }

    /// An all-U-MultiClass head against PyTorch (`tests/fixtures/loss/cross_entropy.json`:
    /// `F.cross_entropy` with probability targets per finding, and
    /// `torch.sigmoid(z[..., 1] - z[..., 0])` for the reported probability).
    #[test]
    fn multiclass_head_matches_pytorch_fixture() -> Result<()> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/loss/cross_entropy.json");
        let f: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).expect("fixture")).unwrap();
        fn flat(v: &serde_json::Value) -> Vec<f32> {
            match v {
                serde_json::Value::Array(a) => a.iter().flat_map(flat).collect(),
                n => vec![n.as_f64().unwrap() as f32],
            }
        }
        let dev = Device::Cpu;
        let l = HeadLayout::new(vec![OutputKind::MultiClass; 3]);
        let z = Tensor::from_vec(flat(&f["logits"]), (4, 9), &dev)?;
        let t = Tensor::from_vec(flat(&f["targets"]), (4, 9), &dev)?;
        let checks = [
            (host_f32(&l.loss(&z, &t, None)?)?, flat(&f["loss"])),
            (host_f32(&l.probabilities(&z)?)?, flat(&f["prob_positive"])),
        ];
        for (got, want) in checks {
            assert_eq!(got.len(), 12);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                    "{got:?} vs {want:?}"
                );
            }
        }
        Ok(())
    }
}
