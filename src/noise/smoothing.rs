//! Label smoothing of targets, independent of the uncertainty policy:
//! `t ← t·(1 − ε) + ε/K` with `K = 2` for a binary finding (`t(1−ε) + ε/2`) and `K = 3` for
//! each class of a U-MultiClass finding. Masks and weights are untouched.
//!
//! Switch: `[noise.smoothing] epsilon = 0.1` (0 = off).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::batch::LabelBatch;
use super::layout::HeadLayout;
use super::BatchTransform;
use crate::error::{Error, Result};

/// `[noise.smoothing]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SmoothingConfig {
    /// ε in `[0, 1)`; 0 = off.
    pub epsilon: f32,
}

impl SmoothingConfig {
    /// Checks values; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.epsilon) {
            return Err(Error::Config(format!(
                "noise.smoothing.epsilon = {} must be in [0, 1) (0 = off)",
                self.epsilon
            )));
        }
        Ok(())
    }
}

/// Label smoothing with a fixed ε.
#[derive(Debug, Clone)]
pub struct Smoothing {
    epsilon: f32,
}

impl Smoothing {
    /// Builds the transform (validates `cfg`).
    pub fn new(cfg: &SmoothingConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Smoothing {
            epsilon: cfg.epsilon,
        })
    }

    /// Smoothed targets.
    ///
    /// # Shapes
    /// `targets [N, W]` → `[N, W]`
    pub fn smooth(&self, targets: &Tensor, layout: &HeadLayout) -> Result<Tensor> {
        if self.epsilon == 0.0 {
            return Ok(targets.clone());
        }
        let eps = self.epsilon as f64;
        let k = layout.classes_per_column(targets.dtype(), targets.device())?;
        let add = k.recip()?.affine(eps, 0.0)?; // ε / K per column
        Ok(targets.affine(1.0 - eps, 0.0)?.broadcast_add(&add)?)
    }
}

impl BatchTransform for Smoothing {
    fn is_active(&self) -> bool {
        self.epsilon > 0.0
    }

    fn apply(
        &self,
        images: &Tensor,
        labels: &LabelBatch,
        layout: &HeadLayout,
        _epoch: u64,
        _batch: u64,
    ) -> Result<(Tensor, LabelBatch)> {
        let mut out = labels.clone();
        out.targets = self.smooth(&labels.targets, layout)?;
        Ok((images.clone(), out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::host_f32;
    use crate::noise::layout::OutputKind;
    use candle_core::Device;

    /// ε = 0.1: binary 1 → 0.95, 0 → 0.05, 0.5 → 0.5; a U-MultiClass one-hot [0, 1, 0] →
    /// [0.1/3, 0.9 + 0.1/3, 0.1/3].
    #[test]
    fn smoothing_by_hand() -> Result<()> {
        let l = HeadLayout::new(vec![OutputKind::Binary, OutputKind::MultiClass]);
        let s = Smoothing::new(&SmoothingConfig { epsilon: 0.1 })?;
        let t = Tensor::new(
            &[[1f32, 0., 1., 0.], [0., 1., 0., 0.], [0.5, 0., 0., 1.]],
            &Device::Cpu,
        )?;
        let got = host_f32(&s.smooth(&t, &l)?)?;
        let e3 = 0.1f32 / 3.0;
        let want = [
            0.95,
            e3,
            0.9 + e3,
            e3, //
            0.05,
            0.9 + e3,
            e3,
            e3, //
            0.5,
            e3,
            e3,
            0.9 + e3,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
        assert!(SmoothingConfig { epsilon: 1.0 }.validate().is_err());
        Ok(())
    }
}
