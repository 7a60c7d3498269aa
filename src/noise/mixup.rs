//! Mixup (Zhang et al. 2018) on a batch: `λ ~ Beta(α, α)` and one permutation `π` of the batch,
//! both drawn from `rng::keyed(seed, Stream::Mixup, epoch, batch)`;
//!
//! ```text
//! x̃ = λ·x + (1 − λ)·x[π]        (images)
//! t̃ = λ·t + (1 − λ)·t[π]        (soft targets, every head column)
//! m̃ = m · m[π]                  (a masked cell stays masked)
//! w̃ = λ·w + (1 − λ)·w[π]        (prior weights)
//! b̃ = b · b[π]                  (blank only if both were blank)
//! ```
//!
//! Switch: `[noise.mixup] alpha = 0.2` (0 = off).

use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};

use super::batch::LabelBatch;
use super::layout::HeadLayout;
use super::BatchTransform;
use crate::error::{Error, Result};
use crate::rng::{keyed, Stream};

/// `[noise.mixup]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MixupConfig {
    /// α of `Beta(α, α)`; 0 = off.
    pub alpha: f32,
}

impl MixupConfig {
    /// Checks values; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(Error::Config(format!(
                "noise.mixup.alpha = {} must be a finite number >= 0 (0 = off)",
                self.alpha
            )));
        }
        Ok(())
    }
}

/// Mixup with a seeded `λ` and permutation per `(epoch, batch)`.
#[derive(Debug, Clone)]
pub struct Mixup {
    alpha: f32,
    seed: u64,
}

fn blend(a: &Tensor, b: &Tensor, lambda: f64) -> Result<Tensor> {
    Ok((a.affine(lambda, 0.0)? + b.affine(1.0 - lambda, 0.0)?)?)
}

impl Mixup {
    /// Builds the transform (validates `cfg`).
    pub fn new(cfg: &MixupConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        Ok(Mixup {
            alpha: cfg.alpha,
            seed,
        })
    }

    /// `λ` and the permutation for batch `batch` of `epoch`, of `n` rows.
    pub fn draw(&self, n: usize, epoch: u64, batch: u64) -> Result<(f32, Vec<usize>)> {
        let mut rng = keyed(self.seed, Stream::Mixup, epoch, batch);
        let beta = Beta::new(self.alpha as f64, self.alpha as f64)
            .map_err(|e| Error::Config(format!("noise.mixup.alpha = {}: {e}", self.alpha)))?;
        let lambda = beta.sample(&mut rng) as f32;
        let mut perm: Vec<usize> = (0..n).collect();
        perm.shuffle(&mut rng);
        Ok((lambda, perm))
    }

    /// Mixes a batch with a given `λ` and permutation (`perm[i]` = the partner of row `i`).
    ///
    /// # Shapes
    /// - `images`: `[N, ...]` (e.g. `[N, C, H, W]`)
    /// - `labels`: targets `[N, W]`, mask / weight / blank `[N, C]`
    /// - returns the mixed images and labels, same shapes
    pub fn mix(
        images: &Tensor,
        labels: &LabelBatch,
        lambda: f32,
        perm: &[usize],
    ) -> Result<(Tensor, LabelBatch)> {
        let n = labels.len();
        if perm.len() != n || images.dims().first() != Some(&n) {
            return Err(Error::Other(format!(
                "mixup: {} images, {n} label rows and a permutation of {}; they must agree",
                images.dims().first().copied().unwrap_or(0),
                perm.len()
            )));
        }
        if !(0.0..=1.0).contains(&lambda) {
            return Err(Error::Other(format!(
                "mixup: lambda = {lambda} is not in [0, 1]"
            )));
        }
        let p: Vec<u32> = perm.iter().map(|&i| i as u32).collect();
        let p = Tensor::from_vec(p, n, images.device())?;
        let l = lambda as f64;
        let take =
            |t: &Tensor| -> Result<Tensor> { Ok(t.index_select(&p.to_device(t.device())?, 0)?) };
        let mixed = LabelBatch {
            targets: blend(&labels.targets, &take(&labels.targets)?, l)?,
            mask: (&labels.mask * take(&labels.mask)?)?,
            weight: blend(&labels.weight, &take(&labels.weight)?, l)?,
            blank: (&labels.blank * take(&labels.blank)?)?,
        };
        Ok((blend(images, &take(images)?, l)?, mixed))
    }
}

impl BatchTransform for Mixup {
    fn is_active(&self) -> bool {
        self.alpha > 0.0
    }

    fn apply(
        &self,
        images: &Tensor,
        labels: &LabelBatch,
        _layout: &HeadLayout,
        epoch: u64,
        batch: u64,
    ) -> Result<(Tensor, LabelBatch)> {
        if !self.is_active() {
            return Ok((images.clone(), labels.clone()));
        }
        let (lambda, perm) = self.draw(labels.len(), epoch, batch)?;
        Self::mix(images, labels, lambda, &perm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::host_f32;
    use candle_core::Device;

    /// λ = 0.75, π = [2, 0, 1]; images are [N=3, 1, 1, 2]. Hand-computed:
    /// row 0 mixes rows 0 and 2: image 0.75·[1, 2] + 0.25·[5, 6] = [2, 3];
    /// target 0.75·[1, 0] + 0.25·[0, 0.5] = [0.75, 0.125]; mask [1, 1]·[1, 0] = [1, 0];
    /// row 1 mixes rows 1 and 0: image 0.75·[3, 4] + 0.25·[1, 2] = [2.5, 3.5].
    #[test]
    fn mixup_with_fixed_lambda_by_hand() -> Result<()> {
        let dev = Device::Cpu;
        let img = Tensor::new(&[1f32, 2., 3., 4., 5., 6.], &dev)?.reshape((3, 1, 1, 2))?;
        let lb = LabelBatch {
            targets: Tensor::new(&[[1f32, 0.], [0., 1.], [0., 0.5]], &dev)?,
            mask: Tensor::new(&[[1f32, 1.], [0., 1.], [1., 0.]], &dev)?,
            weight: Tensor::new(&[[1f32, 1.], [0.5, 1.], [1., 0.5]], &dev)?,
            blank: Tensor::new(&[[0f32, 1.], [1., 0.], [0., 1.]], &dev)?,
        };
        let (x, m) = Mixup::mix(&img, &lb, 0.75, &[2, 0, 1])?;
        assert_eq!(x.dims(), &[3, 1, 1, 2]);
        assert_eq!(host_f32(&x)?, [2., 3., 2.5, 3.5, 4.5, 5.5]);
        assert_eq!(host_f32(&m.targets)?, [0.75, 0.125, 0.25, 0.75, 0.0, 0.625]);
        assert_eq!(host_f32(&m.mask)?, [1., 0., 0., 1., 0., 0.]);
        assert_eq!(host_f32(&m.weight)?, [1., 0.875, 0.625, 1., 0.875, 0.625]);
        assert_eq!(host_f32(&m.blank)?, [0., 1., 0., 0., 0., 0.]);
        Ok(())
    }

    #[test]
    fn draws_are_keyed_permutations_and_lambda_in_unit_interval() -> Result<()> {
        let m = Mixup::new(&MixupConfig { alpha: 0.4 }, 3)?;
        let (l1, p1) = m.draw(16, 2, 5)?;
        let (l2, p2) = m.draw(16, 2, 5)?;
        let (l3, p3) = m.draw(16, 2, 6)?;
        assert_eq!((l1, &p1), (l2, &p2));
        assert!(l1 != l3 || p1 != p3);
        assert!((0.0..=1.0).contains(&l1));
        let mut s = p1.clone();
        s.sort();
        assert_eq!(s, (0..16).collect::<Vec<_>>());
        // Beta(0.4, 0.4) is U-shaped: over many batches the mean is near 0.5 and most draws
        // lie outside [0.25, 0.75]: P = 0.7127 (scipy: b = beta(0.4, 0.4);
        // b.cdf(0.25) + 1 - b.cdf(0.75)).
        let ls: Vec<f32> = (0..2000).map(|b| m.draw(2, 0, b).unwrap().0).collect();
        let mean = ls.iter().sum::<f32>() / ls.len() as f32;
        let outside = ls.iter().filter(|l| **l < 0.25 || **l > 0.75).count() as f32 / 2000.0;
        assert!((mean - 0.5).abs() < 0.03, "{mean}");
        assert!((outside - 0.7127).abs() < 0.04, "{outside}");
        assert!(MixupConfig { alpha: -1.0 }.validate().is_err());
        Ok(())
    }
}
