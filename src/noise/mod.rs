//! Noisy-label techniques, one per file, each behind a small trait and switched by one config
//! line under `[noise]`. Defaults: everything off, uncertain → U-LSR 0.5, blank → negative.
//!
//! | file              | technique                                   | trait              | switch                          |
//! |-------------------|---------------------------------------------|--------------------|---------------------------------|
//! | `uncertainty.rs`  | U-Ignore/Zeros/Ones/LSR/MultiClass, blanks  | [`TargetPolicy`]   | `uncertainty.policy = "ones"`   |
//! | `smoothing.rs`    | label smoothing ε                           | [`BatchTransform`] | `smoothing.epsilon = 0.1`       |
//! | `mixup.rs`        | mixup, λ ~ Beta(α, α)                       | [`BatchTransform`] | `mixup.alpha = 0.2`             |
//! | `hierarchy.rs`    | consistency loss, conditional training      | [`LossTerm`]       | `hierarchy.weight = 0.1`        |
//! | `mentor.rs`       | MentorNet-style reweighting, blank weight   | [`SampleWeighter`] | `mentor.mode = "fixed"`         |
//! | `class_weight.rs` | `pos_weight` from counts, ChestX-ray8 β     | [`SampleWeighter`] | `class_weight.mode = "..."`     |
//! | `layout.rs`       | head layout (binary / 3-way per finding)    |                    | follows the policy              |
//!
//! [`Noise`] plugs them together in the order the trainer needs:
//!
//! ```text
//! prepare: observations ─policy→ targets, mask ─mentor: admit blanks→ ─conditional mask→
//!          ─smoothing→ ─mixup (images too)→ (images, LabelBatch)
//! loss:    outputs ─layout.loss→ ℓ [N,C];  w = prior · class weight · mentor(ℓ detached)
//!          total = Σ w·m·ℓ / max(Σ m, 1) + hierarchy term(probabilities)
//! ```

pub mod batch;
pub mod class_weight;
pub mod hierarchy;
pub mod layout;
pub mod mentor;
pub mod mixup;
pub mod smoothing;
pub mod uncertainty;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

pub use batch::LabelBatch;
pub use class_weight::{ClassWeight, ClassWeightConfig, ClassWeightMode};
pub use hierarchy::{Hierarchy, HierarchyConfig, LossTerm};
pub use layout::{HeadLayout, OutputKind};
pub use mentor::{Mentor, MentorConfig, MentorMode, SampleWeighter};
pub use mixup::{Mixup, MixupConfig};
pub use smoothing::{Smoothing, SmoothingConfig};
pub use uncertainty::{BlankAs, Policy, TargetPolicy, UncertaintyConfig, UncertaintyPolicy};

use crate::data::Observation;
use crate::error::Result;
use crate::loss::reduce;

/// A transform of one training batch (images and labels), keyed by `(epoch, batch)` for any
/// random draw. Implemented by label smoothing and mixup.
pub trait BatchTransform {
    /// Whether the transform changes anything.
    fn is_active(&self) -> bool;

    /// Transforms one batch.
    ///
    /// # Shapes
    /// `images [N, ...]`, labels (targets `[N, W]`, the rest `[N, C]`) → same shapes
    fn apply(
        &self,
        images: &Tensor,
        labels: &LabelBatch,
        layout: &HeadLayout,
        epoch: u64,
        batch: u64,
    ) -> Result<(Tensor, LabelBatch)>;
}

/// `[noise]`: every technique's configuration. Defaults: all off (U-LSR 0.5, blank = negative).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NoiseConfig {
    pub uncertainty: UncertaintyConfig,
    pub smoothing: SmoothingConfig,
    pub mixup: MixupConfig,
    pub hierarchy: HierarchyConfig,
    pub mentor: MentorConfig,
    pub class_weight: ClassWeightConfig,
}

impl NoiseConfig {
    /// Checks every technique's values; errors name the field (`noise.mentor.tau`, ...).
    pub fn validate(&self) -> Result<()> {
        self.uncertainty.validate()?;
        self.smoothing.validate()?;
        self.mixup.validate()?;
        self.hierarchy.validate()?;
        self.mentor.validate()?;
        self.class_weight.validate()
    }
}

/// The parts of one step's loss.
#[derive(Debug, Clone)]
pub struct StepLoss {
    /// What to call `backward()` on: `data + hierarchy`. Scalar.
    pub total: Tensor,
    /// The masked, weighted per-element loss, reduced. Scalar.
    pub data: Tensor,
    /// The hierarchy consistency term (already weighted), when on. Scalar.
    pub hierarchy: Option<Tensor>,
    /// The effective per-element weights `[N, C]` (prior · class weight · mentor), detached;
    /// for logging (e.g. the mean weight of present cells).
    pub weights: Tensor,
}

/// Every technique, resolved against a dataset's findings, in pipeline order.
#[derive(Debug, Clone)]
pub struct Noise {
    policy: UncertaintyPolicy,
    smoothing: Smoothing,
    mixup: Mixup,
    hierarchy: Hierarchy,
    mentor: Mentor,
    class_weight: ClassWeight,
}

impl Noise {
    /// Builds the pipeline for `findings` (dataset order); `seed` keys the policy's draws and
    /// mixup.
    pub fn new(cfg: &NoiseConfig, findings: &[String], seed: u64) -> Result<Self> {
        cfg.validate()?;
        let policy = UncertaintyPolicy::new(&cfg.uncertainty, findings, seed)?;
        Ok(Noise {
            smoothing: Smoothing::new(&cfg.smoothing)?,
            mixup: Mixup::new(&cfg.mixup, seed)?,
            hierarchy: Hierarchy::new(&cfg.hierarchy, findings)?,
            mentor: Mentor::new(&cfg.mentor, policy.blank())?,
            class_weight: ClassWeight::new(&cfg.class_weight)?,
            policy,
        })
    }

    /// Fits what needs the training set (the `pos_weight` counts); call once before training.
    /// `rows[i]` = training record `i`'s observations.
    pub fn fit(&mut self, rows: &[&[Observation]]) -> Result<()> {
        self.class_weight.fit(&self.policy, rows)
    }

    /// The head layout: the model's head must have `layout().width()` outputs.
    pub fn layout(&self) -> &HeadLayout {
        self.policy.layout()
    }

    /// The resolved uncertainty policy.
    pub fn policy(&self) -> &UncertaintyPolicy {
        &self.policy
    }

    /// The class weighting (its fitted `pos_weight` is worth logging).
    pub fn class_weight(&self) -> &ClassWeight {
        &self.class_weight
    }

    /// One training batch's inputs: policy, blank admission, conditional mask, smoothing,
    /// mixup. `samples[i]` is row `i`'s dataset index, `batch` the batch index in the epoch.
    ///
    /// # Shapes
    /// - `images`: `[N, ...]` (e.g. `[N, 3, H, W]`); `rows`: N rows of C observations
    /// - returns images of the same shape and a [`LabelBatch`] (targets `[N, W]`, rest `[N, C]`)
    pub fn prepare(
        &self,
        images: &Tensor,
        rows: &[&[Observation]],
        samples: &[u64],
        epoch: u64,
        batch: u64,
    ) -> Result<(Tensor, LabelBatch)> {
        let labels = self.policy.encode(rows, samples, epoch, images.device())?;
        let mut labels = self.mentor.admit_blanks(&labels, epoch)?;
        if self.hierarchy.is_conditional() {
            let pos = self.layout().positive_target(&labels.targets)?;
            labels.mask = self.hierarchy.conditional_mask(&labels.mask, &pos)?;
        }
        let layout = self.layout();
        let (x, labels) = self
            .smoothing
            .apply(images, &labels, layout, epoch, batch)?;
        self.mixup.apply(&x, &labels, layout, epoch, batch)
    }

    /// The step's loss from the head outputs.
    ///
    /// # Shapes
    /// - `outputs`: `[N, W]`; `labels` as returned by [`Noise::prepare`]
    /// - returns scalars (and weights `[N, C]`), see [`StepLoss`]
    pub fn loss(&self, outputs: &Tensor, labels: &LabelBatch, epoch: u64) -> Result<StepLoss> {
        let layout = self.layout();
        let pw = self.class_weight.pos_weight(outputs.device())?;
        let el = layout.loss(outputs, &labels.targets, pw.as_ref())?;
        let dt = el.dtype();
        let mut w = labels.weight.to_dtype(dt)?;
        for s in [
            &self.class_weight as &dyn SampleWeighter,
            &self.mentor as &dyn SampleWeighter,
        ] {
            if let Some(x) = s.weights(&el.detach(), labels, layout, epoch)? {
                w = (w * x.to_dtype(dt)?)?;
            }
        }
        let w = w.detach();
        let data = reduce(&el, &labels.mask, Some(&w))?;
        let hierarchy = self.hierarchy.term(&self.probabilities(outputs)?)?;
        let total = match &hierarchy {
            Some(h) => (&data + h)?,
            None => data.clone(),
        };
        Ok(StepLoss {
            total,
            data,
            hierarchy,
            weights: w,
        })
    }

    /// Reported probabilities: sigmoid, or softmax over positive vs negative for U-MultiClass
    /// findings; under conditional training, marginals along the hierarchy chain.
    ///
    /// # Shapes
    /// `outputs [N, W]` → `[N, C]`
    pub fn probabilities(&self, outputs: &Tensor) -> Result<Tensor> {
        self.hierarchy
            .marginals(&self.layout().probabilities(outputs)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::CHEXPERT_FINDINGS;
    use crate::loss::{bce_with_logits, host_f32};
    use candle_core::{DType, Device, Var};
    use Observation::{Blank as B, Negative as N, Positive as P, Uncertain as U};

    fn chexpert() -> Vec<String> {
        CHEXPERT_FINDINGS.iter().map(|s| s.to_string()).collect()
    }

    fn rows(n: usize) -> Vec<Vec<Observation>> {
        let cycle = [P, N, U, B, B, N, P];
        (0..n)
            .map(|i| (0..14).map(|f| cycle[(i * 3 + f) % cycle.len()]).collect())
            .collect()
    }

    #[test]
    fn defaults_are_off_validate_and_round_trip_through_toml() -> Result<()> {
        let c = NoiseConfig::default();
        c.validate()?;
        let text = toml::to_string(&c).unwrap();
        assert_eq!(toml::from_str::<NoiseConfig>(&text).unwrap(), c);
        assert_eq!(c.mentor.mode, MentorMode::Off);
        assert_eq!(c.mixup.alpha, 0.0);
        assert_eq!(c.uncertainty.policy, Policy::Lsr);
        // One line per technique switches it on.
        let on: NoiseConfig = toml::from_str(
            "mentor.mode = \"fixed\"\nmixup.alpha = 0.2\nsmoothing.epsilon = 0.1\n\
             hierarchy.weight = 0.1\nclass_weight.mode = \"chestxray8\"\n\
             uncertainty.policy = \"multi_class\"\n",
        )
        .unwrap();
        on.validate()?;
        assert_eq!(on.mentor.tau, 0.5);
        let e = toml::from_str::<NoiseConfig>("[mentor]\nthreshold = 0.5\n").unwrap_err();
        assert!(e.to_string().contains("threshold"), "{e}");
        Ok(())
    }

    /// With every technique off, the pipeline's loss is exactly the masked mean of the
    /// per-element BCE (checked against PyTorch in `loss.rs`) under the policy's targets.
    #[test]
    fn everything_off_is_plain_masked_bce() -> Result<()> {
        let dev = Device::Cpu;
        let f = chexpert();
        let noise = Noise::new(&NoiseConfig::default(), &f, 1)?;
        let r = rows(5);
        let rr: Vec<&[Observation]> = r.iter().map(|v| v.as_slice()).collect();
        let img = Tensor::zeros((5, 1, 2, 2), DType::F32, &dev)?;
        let (x, lb) = noise.prepare(&img, &rr, &[0, 1, 2, 3, 4], 0, 0)?;
        assert_eq!(host_f32(&x)?, host_f32(&img)?);
        let out = Tensor::from_vec(
            (0..70)
                .map(|i| (i as f32 * 0.37).sin() * 3.0)
                .collect::<Vec<_>>(),
            (5, 14),
            &dev,
        )?;
        let got = noise.loss(&out, &lb, 0)?;
        assert!(got.hierarchy.is_none());
        let el = bce_with_logits(&out, &lb.targets, None)?;
        let want = reduce(&el, &lb.mask, None)?;
        assert_eq!(got.total.to_scalar::<f32>()?, want.to_scalar::<f32>()?);
        assert_eq!(host_f32(&got.weights)?, [1.0; 70]);
        Ok(())
    }

    /// Every technique on at once, a mixed binary / U-MultiClass head, logits up to ±100:
    /// the loss is finite, every head output gets a finite gradient, the mentor caps weights.
    #[test]
    fn full_recipe_step_is_finite_and_differentiable() -> Result<()> {
        let dev = Device::Cpu;
        let f = chexpert();
        let mut cfg: NoiseConfig = toml::from_str(
            "[uncertainty]\npolicy = \"lsr_ones\"\nblank = \"missing\"\n\
             overrides = { \"Cardiomegaly\" = \"multi_class\", \"Edema\" = \"ignore\" }\n\
             [smoothing]\nepsilon = 0.05\n[mixup]\nalpha = 0.4\n\
             [hierarchy]\nweight = 0.5\nconditional = true\n\
             [mentor]\nmode = \"percentile\"\npercentile = 70.0\n\
             [class_weight]\nmode = \"pos_weight\"\n",
        )
        .unwrap();
        let r = rows(8);
        let rr: Vec<&[Observation]> = r.iter().map(|v| v.as_slice()).collect();
        let mut noise = Noise::new(&cfg, &f, 3)?;
        assert_eq!(noise.layout().width(), 16);
        noise.fit(&rr)?;
        let img = Tensor::from_vec(
            (0..8 * 4).map(|i| i as f32).collect::<Vec<_>>(),
            (8, 1, 2, 2),
            &dev,
        )?;
        let (x, lb) = noise.prepare(&img, &rr, &(10..18).collect::<Vec<u64>>(), 1, 4)?;
        assert_eq!(x.dims(), img.dims());
        let mut o: Vec<f32> = (0..8 * 16).map(|i| (i as f32 * 0.71).cos() * 4.0).collect();
        o[0] = 100.0;
        o[17] = -100.0;
        let v = Var::from_tensor(&Tensor::from_vec(o, (8, 16), &dev)?)?;
        let s = noise.loss(v.as_tensor(), &lb, 1)?;
        let total = s.total.to_scalar::<f32>()?;
        assert!(total.is_finite() && total > 0.0, "{total}");
        assert!(s.hierarchy.is_some());
        let w = host_f32(&s.weights)?;
        assert!(w.iter().all(|x| (0.0..=1.0 + 1e-6).contains(x)));
        assert!(w.iter().any(|x| *x < 1.0), "percentile 70 caps some cells");
        let g = host_f32(s.total.backward()?.get(v.as_tensor()).unwrap())?;
        assert!(g.iter().all(|x| x.is_finite()));
        assert!(g.iter().filter(|x| **x != 0.0).count() > 64, "{g:?}");
        // Reported probabilities are in [0, 1], one per finding.
        let p = host_f32(&noise.probabilities(v.as_tensor())?)?;
        assert_eq!(p.len(), 8 * 14);
        assert!(p.iter().all(|x| (0.0..=1.0).contains(x)));
        // An override for a finding the dataset lacks is a config error naming it.
        cfg.uncertainty
            .overrides
            .insert("Infiltration".into(), Policy::Ones);
        let e = Noise::new(&cfg, &f, 3).unwrap_err();
        assert!(e.to_string().contains("Infiltration"), "{e}");
        Ok(())
    }
}
