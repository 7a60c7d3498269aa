//! MentorNet-inspired reweighting (after Jiang et al. 2018, without a learned mentor).
//!
//! **The rule.** With `ℓ` the *detached* per-element loss after the uncertainty policy:
//!
//! ```text
//! w = 1        if ℓ ≤ τ
//! w = τ / ℓ    otherwise
//! ```
//!
//! A high-loss cell — likely mislabeled — is still learned from, but its pull is capped: its
//! weighted loss `w·ℓ` never exceeds `τ` (instead of being dropped, as MentorNet's 0/1 weights
//! would). Modes:
//!
//! - `mode = "fixed"`: one threshold `τ = tau` (nats); `noisycxr train --mentor 0.5`.
//! - `mode = "percentile"`: `τ_c` is the `percentile`-th percentile (0–100, linear
//!   interpolation as numpy's default) of finding `c`'s losses over the cells present in the
//!   batch — MentorNet's λ. A finding with no cell present gets `τ = ∞` (weights 1).
//! - **Blanks.** When blank = missing, blank cells enter the loss as negative targets with weight
//!   `blank_weight` (default 0.5) instead of being masked (the seed's "weight for NaN labels");
//!   the rule above then applies to them too (final weight `blank_weight · w`). With
//!   `blank_weight = 0` they stay masked. With blank = negative they are ordinary negatives.
//! - **Warm-up.** During the first `warmup_epochs` epochs the mentor does nothing: weights are 1
//!   and blanks are treated as the policy says.
//!
//! ```toml
//! [noise.mentor]
//! mode = "fixed"        # "off" (default) | "fixed" | "percentile"
//! tau = 0.5
//! percentile = 90.0
//! blank_weight = 0.5
//! warmup_epochs = 0
//! ```

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::batch::LabelBatch;
use super::layout::HeadLayout;
use super::uncertainty::BlankAs;
use crate::error::{Error, Result};

/// How the threshold τ is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MentorMode {
    /// No reweighting.
    #[default]
    Off,
    /// `τ = tau`.
    Fixed,
    /// `τ_c` = the `percentile`-th percentile of finding `c`'s losses in the batch.
    Percentile,
}

/// `[noise.mentor]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MentorConfig {
    pub mode: MentorMode,
    /// Threshold in nats (fixed mode).
    pub tau: f32,
    /// q in `[0, 100]` (percentile mode).
    pub percentile: f32,
    /// Weight of blank cells admitted as negatives when blank = missing; 0 keeps them masked.
    pub blank_weight: f32,
    /// Epochs (from 0) during which the mentor is off.
    pub warmup_epochs: u64,
}

impl Default for MentorConfig {
    fn default() -> Self {
        MentorConfig {
            mode: MentorMode::Off,
            tau: 0.5,
            percentile: 90.0,
            blank_weight: 0.5,
            warmup_epochs: 0,
        }
    }
}

impl MentorConfig {
    /// Checks values; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.tau.is_finite() && self.tau >= 0.0) {
            return Err(Error::Config(format!(
                "noise.mentor.tau = {} must be a finite number >= 0",
                self.tau
            )));
        }
        if !(0.0..=100.0).contains(&self.percentile) {
            return Err(Error::Config(format!(
                "noise.mentor.percentile = {} must be in [0, 100]",
                self.percentile
            )));
        }
        if !(0.0..=1.0).contains(&self.blank_weight) {
            return Err(Error::Config(format!(
                "noise.mentor.blank_weight = {} must be in [0, 1]",
                self.blank_weight
            )));
        }
        Ok(())
    }
}

/// Per-element weights from the detached per-element loss (the small trait the mentor and the
/// class weighting implement).
pub trait SampleWeighter {
    /// Weights for one batch, or `None` for all ones. `loss` is detached inside.
    ///
    /// # Shapes
    /// - `loss`: `[N, C]`; `labels`: targets `[N, W]`, mask `[N, C]`
    /// - returns: `[N, C]`, no gradient
    fn weights(
        &self,
        loss: &Tensor,
        labels: &LabelBatch,
        layout: &HeadLayout,
        epoch: u64,
    ) -> Result<Option<Tensor>>;
}

/// The configured mentor.
#[derive(Debug, Clone)]
pub struct Mentor {
    cfg: MentorConfig,
    blank: BlankAs,
}

/// numpy's default (`linear`) percentile of unsorted values; `None` for no values.
pub fn percentile(values: &mut [f32], q: f32) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let pos = (q as f64 / 100.0) * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(values.len() - 1);
    let frac = (pos - lo as f64) as f32;
    Some(values[lo] + frac * (values[hi] - values[lo]))
}

impl Mentor {
    /// Builds the mentor; `blank` is the uncertainty policy's blank switch.
    pub fn new(cfg: &MentorConfig, blank: BlankAs) -> Result<Self> {
        cfg.validate()?;
        Ok(Mentor {
            cfg: cfg.clone(),
            blank,
        })
    }

    /// Whether the mentor acts in `epoch` (on and past its warm-up).
    pub fn is_active(&self, epoch: u64) -> bool {
        self.cfg.mode != MentorMode::Off && epoch >= self.cfg.warmup_epochs
    }

    /// Admits blank cells as negatives of weight `blank_weight` (when active, blank = missing
    /// and `blank_weight > 0`); otherwise returns the labels unchanged. Call it right after
    /// the policy, before smoothing and mixup.
    ///
    /// # Shapes
    /// labels: mask / weight / blank `[N, C]` → same
    pub fn admit_blanks(&self, labels: &LabelBatch, epoch: u64) -> Result<LabelBatch> {
        if !self.is_active(epoch) || self.blank != BlankAs::Missing || self.cfg.blank_weight == 0.0
        {
            return Ok(labels.clone());
        }
        // Cells that are blank and currently out of the loss.
        let admit = (&labels.blank * labels.mask.affine(-1.0, 1.0)?)?;
        let keep = admit.affine(-1.0, 1.0)?;
        let mut out = labels.clone();
        out.mask = (&labels.mask + &admit)?;
        out.weight =
            ((&labels.weight * &keep)? + admit.affine(self.cfg.blank_weight as f64, 0.0)?)?;
        Ok(out)
    }

    /// τ of each finding for a batch (percentile mode), or `tau` repeated (fixed mode).
    ///
    /// # Shapes
    /// `loss [N, C]`, `mask [N, C]` → `C` values
    pub fn thresholds(&self, loss: &Tensor, mask: &Tensor) -> Result<Vec<f32>> {
        let c = match loss.dims() {
            [_, c] => *c,
            d => {
                return Err(Error::Other(format!(
                    "mentor: loss has shape {d:?}; expected [N, C]"
                )))
            }
        };
        if self.cfg.mode != MentorMode::Percentile {
            return Ok(vec![self.cfg.tau; c]);
        }
        let l = loss.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        let m = mask.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        Ok((0..c)
            .map(|f| {
                let mut v: Vec<f32> = l
                    .iter()
                    .zip(&m)
                    .filter(|(_, mr)| mr[f] > 0.0)
                    .map(|(lr, _)| lr[f])
                    .collect();
                percentile(&mut v, self.cfg.percentile).unwrap_or(f32::INFINITY)
            })
            .collect())
    }

    /// The rule `w = 1 if ℓ ≤ τ else τ/ℓ` on the detached loss, τ per finding.
    ///
    /// # Shapes
    /// `loss [N, C]`, `mask [N, C]` → `[N, C]` (no gradient)
    pub fn rule(&self, loss: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let l = loss.detach();
        let tau = self.thresholds(&l, mask)?;
        let c = tau.len();
        let tau = Tensor::from_vec(tau, (1, c), l.device())?.to_dtype(l.dtype())?;
        let below = l.broadcast_le(&tau)?;
        let capped = tau.broadcast_div(&l)?; // only read where ℓ > τ ≥ 0, so ℓ > 0
        Ok(below.where_cond(&l.ones_like()?, &capped)?)
    }
}

impl SampleWeighter for Mentor {
    fn weights(
        &self,
        loss: &Tensor,
        labels: &LabelBatch,
        _layout: &HeadLayout,
        epoch: u64,
    ) -> Result<Option<Tensor>> {
        if !self.is_active(epoch) {
            return Ok(None);
        }
        Ok(Some(self.rule(loss, &labels.mask)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::host_f32;
    use candle_core::{DType, Device};

    fn mentor(mode: MentorMode, blank: BlankAs) -> Mentor {
        let cfg = MentorConfig {
            mode,
            tau: 0.5,
            percentile: 90.0,
            warmup_epochs: 2,
            ..Default::default()
        };
        Mentor::new(&cfg, blank).unwrap()
    }

    fn batch(mask: Tensor, blank: Tensor) -> LabelBatch {
        let n = mask.dims()[0];
        let c = mask.dims()[1];
        LabelBatch {
            targets: Tensor::zeros((n, c), DType::F32, &Device::Cpu).unwrap(),
            weight: Tensor::ones((n, c), DType::F32, &Device::Cpu).unwrap(),
            mask,
            blank,
        }
    }

    /// Fixed τ = 0.5 on ℓ = [0.1, 0.5, 1.0, 2.0, 0.0]: w = [1, 1, 0.5, 0.25, 1];
    /// off during the two warm-up epochs.
    #[test]
    fn fixed_mode_on_a_hand_made_loss_vector() -> Result<()> {
        let dev = Device::Cpu;
        let m = mentor(MentorMode::Fixed, BlankAs::Negative);
        let l = Tensor::new(&[[0.1f32], [0.5], [1.0], [2.0], [0.0]], &dev)?;
        let lb = batch(l.ones_like()?, l.zeros_like()?);
        let l1 = HeadLayout::binary(1);
        let w = m.weights(&l, &lb, &l1, 2)?.unwrap();
        assert_eq!(host_f32(&w)?, [1.0, 1.0, 0.5, 0.25, 1.0]);
        assert!(m.weights(&l, &lb, &l1, 1)?.is_none(), "warm-up");
        let off = mentor(MentorMode::Off, BlankAs::Negative);
        assert!(off.weights(&l, &lb, &l1, 9)?.is_none());
        Ok(())
    }

    /// Percentile mode, q = 90, per finding over present cells (numpy:
    /// `np.percentile([0.1, 0.2, 0.4, 0.8, 1.6], 90) = 1.28`, `np.percentile([3, 1, 2], 90)`
    /// = 2.8). Column 1's masked cells (100, 50) are excluded from its percentile.
    #[test]
    fn percentile_mode_on_a_hand_made_loss_matrix() -> Result<()> {
        let dev = Device::Cpu;
        let m = mentor(MentorMode::Percentile, BlankAs::Negative);
        let l = Tensor::new(
            &[
                [0.1f32, 3.0],
                [0.2, 100.0],
                [0.4, 1.0],
                [0.8, 50.0],
                [1.6, 2.0],
            ],
            &dev,
        )?;
        let mask = Tensor::new(&[[1f32, 1.], [1., 0.], [1., 1.], [1., 0.], [1., 1.]], &dev)?;
        let tau = m.thresholds(&l, &mask)?;
        assert!(
            (tau[0] - 1.28).abs() < 1e-6 && (tau[1] - 2.8).abs() < 1e-6,
            "{tau:?}"
        );
        let w = host_f32(&m.rule(&l, &mask)?)?;
        let want = [
            1.0,
            2.8 / 3.0,
            1.0,
            0.028,
            1.0,
            1.0,
            1.0,
            0.056,
            1.28 / 1.6,
            1.0,
        ];
        for (g, w2) in w.iter().zip(want) {
            assert!((g - w2).abs() < 1e-6, "{w:?}");
        }
        // A finding with no cell present: τ = ∞, weights 1.
        let none = m.thresholds(&l, &mask.zeros_like()?)?;
        assert!(none.iter().all(|t| t.is_infinite()));
        let mut v = vec![3.0, 1.0, 2.0];
        assert_eq!(percentile(&mut v, 75.0), Some(2.5)); // np.percentile([3, 1, 2], 75)
        Ok(())
    }

    #[test]
    fn blanks_enter_as_weighted_negatives_only_when_missing_and_active() -> Result<()> {
        let dev = Device::Cpu;
        // Cells: present, blank (masked), uncertain-ignored (masked, not blank).
        let mask = Tensor::new(&[[1f32, 0., 0.]], &dev)?;
        let blank = Tensor::new(&[[0f32, 1., 0.]], &dev)?;
        let lb = batch(mask, blank);
        let m = mentor(MentorMode::Fixed, BlankAs::Missing);
        let a = m.admit_blanks(&lb, 3)?;
        assert_eq!(host_f32(&a.mask)?, [1., 1., 0.]);
        assert_eq!(host_f32(&a.weight)?, [1., 0.5, 1.]);
        assert_eq!(host_f32(&a.targets)?, [0., 0., 0.]);
        // Warm-up, blank = negative, or mentor off: unchanged.
        for (mm, e) in [
            (mentor(MentorMode::Fixed, BlankAs::Missing), 0),
            (mentor(MentorMode::Fixed, BlankAs::Negative), 3),
            (mentor(MentorMode::Off, BlankAs::Missing), 3),
        ] {
            let u = mm.admit_blanks(&lb, e)?;
            assert_eq!(host_f32(&u.mask)?, [1., 0., 0.]);
            assert_eq!(host_f32(&u.weight)?, [1., 1., 1.]);
        }
        let bad = MentorConfig {
            percentile: 120.0,
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("percentile"));
        Ok(())
    }
}
