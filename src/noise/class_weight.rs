//! Class weighting for rare findings, one of:
//!
//! - `mode = "pos_weight"`: a per-finding `pos_weight` for the binary cross-entropy from
//!   training-set counts after the policy, `pos_weight_c = |N_c| / |P_c|` (PyTorch's
//!   recommendation: 100 positives and 300 negatives → 3), clamped to
//!   `[1/max_pos_weight, max_pos_weight]`. `|P_c| = Σ m·t`, `|N_c| = Σ m·(1 − t)` over the
//!   training records (soft targets count fractionally; per-sample U-LSR draws use epoch 0).
//!   U-MultiClass findings ignore it.
//! - `mode = "chestxray8"`: ChestX-ray8's weighted cross-entropy, per batch and finding:
//!   β_P = |N|/(|P|+|N|) on positives, β_N = |P|/(|P|+|N|) on negatives
//!   ([`crate::loss::chestxray8_weights`]).
//!
//! ```toml
//! [noise.class_weight]
//! mode = "off"            # "off" (default) | "pos_weight" | "chestxray8"
//! max_pos_weight = 100.0
//! ```

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::batch::LabelBatch;
use super::layout::{HeadLayout, OutputKind, POS};
use super::mentor::SampleWeighter;
use super::uncertainty::UncertaintyPolicy;
use crate::data::Observation;
use crate::error::{Error, Result};
use crate::loss::chestxray8_weights;

/// Which class weighting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClassWeightMode {
    #[default]
    Off,
    /// Per-finding `pos_weight` from training-set counts.
    PosWeight,
    /// ChestX-ray8's per-batch β_P / β_N weights.
    Chestxray8,
}

/// `[noise.class_weight]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassWeightConfig {
    pub mode: ClassWeightMode,
    /// Upper clamp of `pos_weight` (its reciprocal is the lower clamp); `>= 1`.
    pub max_pos_weight: f32,
}

impl Default for ClassWeightConfig {
    fn default() -> Self {
        ClassWeightConfig {
            mode: ClassWeightMode::Off,
            max_pos_weight: 100.0,
        }
    }
}

impl ClassWeightConfig {
    /// Checks values; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.max_pos_weight.is_finite() && self.max_pos_weight >= 1.0) {
            return Err(Error::Config(format!(
                "noise.class_weight.max_pos_weight = {} must be a finite number >= 1",
                self.max_pos_weight
            )));
        }
        Ok(())
    }
}

/// Positive and negative target mass per finding over `rows` after `policy`
/// (`|P_c| = Σ m·t`, `|N_c| = Σ m·(1 − t)`, epoch 0 for per-sample draws).
pub fn count_targets(
    policy: &UncertaintyPolicy,
    rows: &[&[Observation]],
) -> Result<(Vec<f64>, Vec<f64>)> {
    use super::uncertainty::TargetPolicy;
    let layout = policy.layout();
    let (c, w) = (layout.n_findings(), layout.width());
    let (mut pos, mut neg) = (vec![0f64; c], vec![0f64; c]);
    let (mut t, mut m, mut b) = (vec![0f32; w], vec![0f32; c], vec![0f32; c]);
    for (i, row) in rows.iter().enumerate() {
        policy.encode_row(row, i as u64, 0, &mut t, &mut m, &mut b)?;
        for f in 0..c {
            let tp = match layout.kinds()[f] {
                OutputKind::Binary => t[layout.offset(f)],
                OutputKind::MultiClass => t[layout.offset(f) + POS],
            } as f64;
            pos[f] += m[f] as f64 * tp;
            neg[f] += m[f] as f64 * (1.0 - tp);
        }
    }
    Ok((pos, neg))
}

/// `pos_weight_c = neg_c / pos_c` clamped to `[1/max, max]` (`max` when a finding has no
/// positive; `1/max` when it has no negative; 1 when it has neither).
pub fn pos_weight_from_counts(pos: &[f64], neg: &[f64], max: f32) -> Vec<f32> {
    let max = max as f64;
    pos.iter()
        .zip(neg)
        .map(|(&p, &n)| {
            let r = if p <= 0.0 && n <= 0.0 {
                1.0
            } else if p <= 0.0 {
                max
            } else {
                n / p
            };
            r.clamp(1.0 / max, max) as f32
        })
        .collect()
}

/// The configured class weighting.
#[derive(Debug, Clone)]
pub struct ClassWeight {
    mode: ClassWeightMode,
    max: f32,
    pos_weight: Option<Vec<f32>>,
}

impl ClassWeight {
    /// Builds it; in `pos_weight` mode, call [`ClassWeight::fit`] on the training set before
    /// the first step.
    pub fn new(cfg: &ClassWeightConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(ClassWeight {
            mode: cfg.mode,
            max: cfg.max_pos_weight,
            pos_weight: None,
        })
    }

    /// The mode.
    pub fn mode(&self) -> ClassWeightMode {
        self.mode
    }

    /// Counts the training records and sets `pos_weight` (no-op in other modes).
    pub fn fit(&mut self, policy: &UncertaintyPolicy, rows: &[&[Observation]]) -> Result<()> {
        if self.mode == ClassWeightMode::PosWeight {
            let (p, n) = count_targets(policy, rows)?;
            self.pos_weight = Some(pos_weight_from_counts(&p, &n, self.max));
        }
        Ok(())
    }

    /// The fitted `pos_weight`, host side.
    pub fn pos_weight_values(&self) -> Option<&[f32]> {
        self.pos_weight.as_deref()
    }

    /// `pos_weight` as a tensor for [`HeadLayout::loss`], or `None` (other modes). In
    /// `pos_weight` mode before [`ClassWeight::fit`] it is an error.
    ///
    /// # Shapes
    /// returns `[C]`, f32
    pub fn pos_weight(&self, device: &Device) -> Result<Option<Tensor>> {
        match (self.mode, &self.pos_weight) {
            (ClassWeightMode::PosWeight, Some(v)) => {
                Ok(Some(Tensor::from_vec(v.clone(), v.len(), device)?))
            }
            (ClassWeightMode::PosWeight, None) => Err(Error::Other(
                "noise.class_weight.mode = \"pos_weight\" needs the training-set counts: call \
                 ClassWeight::fit (Noise::fit) before the first step"
                    .into(),
            )),
            _ => Ok(None),
        }
    }
}

impl SampleWeighter for ClassWeight {
    fn weights(
        &self,
        _loss: &Tensor,
        labels: &LabelBatch,
        layout: &HeadLayout,
        _epoch: u64,
    ) -> Result<Option<Tensor>> {
        if self.mode != ClassWeightMode::Chestxray8 {
            return Ok(None);
        }
        let t = layout.positive_target(&labels.targets)?;
        Ok(Some(chestxray8_weights(&t, &labels.mask)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::uncertainty::{BlankAs, Policy, UncertaintyConfig};
    use Observation::{Blank as B, Negative as N, Positive as P, Uncertain as U};

    /// Two findings over four records under U-Ones, blank = missing:
    /// F0 = [P, N, N, N] → |P| = 1, |N| = 3 → 3. F1 = [U, B, N, P] → U→1, B masked:
    /// |P| = 2, |N| = 1 → 0.5. Under U-LSR 0.5, F1's uncertain counts half: |P| = 1.5, |N| = 1.5.
    #[test]
    fn pos_weight_from_hand_counted_records() -> Result<()> {
        let rows: [&[Observation]; 4] = [&[P, U], &[N, B], &[N, N], &[N, P]];
        let names = vec!["F0".to_string(), "F1".to_string()];
        let mut cfg = UncertaintyConfig {
            policy: Policy::Ones,
            blank: BlankAs::Missing,
            ..Default::default()
        };
        let pol = UncertaintyPolicy::new(&cfg, &names, 0)?;
        let mut cw = ClassWeight::new(&ClassWeightConfig {
            mode: ClassWeightMode::PosWeight,
            max_pos_weight: 100.0,
        })?;
        assert!(cw.pos_weight(&Device::Cpu).is_err(), "not fitted yet");
        cw.fit(&pol, &rows)?;
        assert_eq!(cw.pos_weight_values().unwrap(), [3.0, 0.5]);
        cfg.policy = Policy::Lsr;
        let pol = UncertaintyPolicy::new(&cfg, &names, 0)?;
        assert_eq!(
            count_targets(&pol, &rows)?,
            (vec![1.0, 1.5], vec![3.0, 1.5])
        );
        assert_eq!(
            pos_weight_from_counts(&[0.0, 5.0, 0.0, 1.0], &[7.0, 0.0, 0.0, 1000.0], 100.0),
            [100.0, 0.01, 1.0, 100.0]
        );
        Ok(())
    }
}
