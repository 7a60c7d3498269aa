//! Uncertainty policies: raw observations → targets and mask.
//!
//! | raw cell          | U-Ignore | U-Zeros | U-Ones | U-LSR      | U-LSR-Ones     | U-LSR-Zeros  | U-MultiClass    |
//! |-------------------|----------|---------|--------|------------|----------------|--------------|-----------------|
//! | positive (`1.0`)  | 1        | 1       | 1      | 1          | 1              | 1            | class positive  |
//! | negative (`0.0`)  | 0        | 0       | 0      | 0          | 0              | 0            | class negative  |
//! | uncertain (`-1.0`)| masked   | 0       | 1      | `lsr_value`| U(0.55, 0.85)  | U(0, 0.3)    | class uncertain |
//! | blank             | per `blank`: negative (0 / class negative) or missing (masked)                       |||||||
//!
//! - U-LSR with a fixed value (default 0.5, the design card's "uncertain → 0.5").
//! - U-LSR-Ones / U-LSR-Zeros draw a fresh target per sample, finding and epoch from
//!   `rng::keyed(seed, Stream::Policy, epoch, sample)` (one uniform per finding, always drawn,
//!   so adding a finding's override never shifts another's draw); ranges from Pham et al.,
//!   configurable.
//! - U-MultiClass trains three outputs per finding (see [`super::layout`]); the reported
//!   probability is the softmax over positive vs negative.
//! - `blank = "negative"` (default): not mentioned = negative. `blank = "missing"`: masked —
//!   and then MentorNet-style reweighting may admit blanks back as down-weighted negatives.
//! - A masked cell always carries the negative target (0, or class negative).
//!
//! One default policy plus per-finding overrides by finding name:
//!
//! ```toml
//! [noise.uncertainty]
//! policy = "ones"
//! blank = "missing"
//! overrides = { "Cardiomegaly" = "multi_class", "Pleural Effusion" = "multi_class" }
//! ```

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::batch::LabelBatch;
use super::layout::{HeadLayout, OutputKind, NEG, POS, UNC};
use crate::data::Observation;
use crate::error::{Error, Result};
use crate::rng::{keyed, Stream};

/// What an uncertain (`-1`) label becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Masked: the cell does not enter the loss.
    Ignore,
    /// Negative (0).
    Zeros,
    /// Positive (1).
    Ones,
    /// A fixed soft target, `lsr_value` (default 0.5).
    #[default]
    Lsr,
    /// A soft target drawn per sample from `lsr_ones_range` (default U(0.55, 0.85)).
    LsrOnes,
    /// A soft target drawn per sample from `lsr_zeros_range` (default U(0, 0.3)).
    LsrZeros,
    /// A third class: three outputs per finding (negative, positive, uncertain).
    MultiClass,
}

/// What a blank (not mentioned) cell becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BlankAs {
    /// Negative (target 0), in the loss.
    #[default]
    Negative,
    /// Masked (out of the loss), unless the mentor admits it.
    Missing,
}

/// `[noise.uncertainty]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UncertaintyConfig {
    /// Policy of every finding without an override.
    pub policy: Policy,
    /// Per-finding policies, keyed by finding name (e.g. `"Cardiomegaly"`).
    pub overrides: BTreeMap<String, Policy>,
    /// Blank = negative or blank = missing.
    pub blank: BlankAs,
    /// Target of an uncertain cell under `lsr`.
    pub lsr_value: f32,
    /// `[low, high]` of the uniform draw under `lsr_ones`.
    pub lsr_ones_range: [f32; 2],
    /// `[low, high]` of the uniform draw under `lsr_zeros`.
    pub lsr_zeros_range: [f32; 2],
}

impl Default for UncertaintyConfig {
    fn default() -> Self {
        UncertaintyConfig {
            policy: Policy::Lsr,
            overrides: BTreeMap::new(),
            blank: BlankAs::Negative,
            lsr_value: 0.5,
            lsr_ones_range: [0.55, 0.85],
            lsr_zeros_range: [0.0, 0.3],
        }
    }
}

fn check_range(name: &str, r: [f32; 2]) -> Result<()> {
    if !(0.0 <= r[0] && r[0] <= r[1] && r[1] <= 1.0) {
        return Err(Error::Config(format!(
            "noise.uncertainty.{name} = {r:?} must be [low, high] with 0 <= low <= high <= 1"
        )));
    }
    Ok(())
}

impl UncertaintyConfig {
    /// Checks values; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.lsr_value) {
            return Err(Error::Config(format!(
                "noise.uncertainty.lsr_value = {} must be in [0, 1]",
                self.lsr_value
            )));
        }
        check_range("lsr_ones_range", self.lsr_ones_range)?;
        check_range("lsr_zeros_range", self.lsr_zeros_range)?;
        if let Some(k) = self.overrides.keys().find(|k| k.trim().is_empty()) {
            return Err(Error::Config(format!(
                "noise.uncertainty.overrides has an empty finding name {k:?}"
            )));
        }
        Ok(())
    }
}

/// Turns raw observations into targets and a mask for the loss (the small trait every policy
/// implementation satisfies; [`UncertaintyPolicy`] is the configured one).
pub trait TargetPolicy {
    /// The head layout the targets follow (U-MultiClass findings take three columns).
    fn layout(&self) -> &HeadLayout;

    /// Encodes one batch. `rows[i]` holds record `i`'s observations in finding order,
    /// `samples[i]` its index in the dataset (keys per-sample draws), `epoch` the epoch.
    ///
    /// # Shapes
    /// returns a [`LabelBatch`]: targets `[N, W]`, mask / weight / blank `[N, C]`, all f32
    fn encode(
        &self,
        rows: &[&[Observation]],
        samples: &[u64],
        epoch: u64,
        device: &Device,
    ) -> Result<LabelBatch>;
}

/// The configured uncertainty policy, resolved against a dataset's findings.
#[derive(Debug, Clone)]
pub struct UncertaintyPolicy {
    policies: Vec<Policy>,
    blank: BlankAs,
    lsr_value: f32,
    ones: [f32; 2],
    zeros: [f32; 2],
    seed: u64,
    layout: HeadLayout,
    draws: bool,
}

impl UncertaintyPolicy {
    /// Resolves `cfg` for `findings` (dataset order). An override naming a finding the dataset
    /// does not have is an error that lists the dataset's findings.
    pub fn new(cfg: &UncertaintyConfig, findings: &[String], seed: u64) -> Result<Self> {
        cfg.validate()?;
        for name in cfg.overrides.keys() {
            if !findings.iter().any(|f| f == name) {
                return Err(Error::Config(format!(
                    "noise.uncertainty.overrides names {name:?}, which is not a finding of this \
                     dataset; use one of: {}",
                    findings.join(", ")
                )));
            }
        }
        let policies: Vec<Policy> = findings
            .iter()
            .map(|f| cfg.overrides.get(f).copied().unwrap_or(cfg.policy))
            .collect();
        let layout = HeadLayout::new(
            policies
                .iter()
                .map(|p| match p {
                    Policy::MultiClass => OutputKind::MultiClass,
                    _ => OutputKind::Binary,
                })
                .collect(),
        );
        let draws = policies
            .iter()
            .any(|p| matches!(p, Policy::LsrOnes | Policy::LsrZeros));
        Ok(UncertaintyPolicy {
            policies,
            blank: cfg.blank,
            lsr_value: cfg.lsr_value,
            ones: cfg.lsr_ones_range,
            zeros: cfg.lsr_zeros_range,
            seed,
            layout,
            draws,
        })
    }

    /// Policy of each finding, in finding order.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The blank switch.
    pub fn blank(&self) -> BlankAs {
        self.blank
    }

    /// Encodes one record into `targets` (`W` values), `mask`, `blank` (`C` values each).
    pub fn encode_row(
        &self,
        obs: &[Observation],
        sample: u64,
        epoch: u64,
        targets: &mut [f32],
        mask: &mut [f32],
        blank: &mut [f32],
    ) -> Result<()> {
        let c = self.policies.len();
        if obs.len() != c {
            return Err(Error::Other(format!(
                "sample {sample} has {} observations but the policy was built for {c} findings",
                obs.len()
            )));
        }
        let mut rng = self
            .draws
            .then(|| keyed(self.seed, Stream::Policy, epoch, sample));
        for (f, (&o, &p)) in obs.iter().zip(&self.policies).enumerate() {
            let u: f32 = match rng.as_mut() {
                Some(r) => r.random(),
                None => 0.0,
            };
            let off = self.layout.offset(f);
            // (target, in loss)
            let (t, m) = match o {
                Observation::Positive => (1.0, true),
                Observation::Negative => (0.0, true),
                Observation::Blank => (0.0, self.blank == BlankAs::Negative),
                Observation::Uncertain => match p {
                    Policy::Ignore => (0.0, false),
                    Policy::Zeros => (0.0, true),
                    Policy::Ones => (1.0, true),
                    Policy::Lsr => (self.lsr_value, true),
                    Policy::LsrOnes => (self.ones[0] + u * (self.ones[1] - self.ones[0]), true),
                    Policy::LsrZeros => (self.zeros[0] + u * (self.zeros[1] - self.zeros[0]), true),
                    Policy::MultiClass => (f32::NAN, true), // class uncertain, below
                },
            };
            if p == Policy::MultiClass {
                let class = match o {
                    Observation::Positive => POS,
                    Observation::Uncertain => UNC,
                    Observation::Negative | Observation::Blank => NEG,
                };
                for k in 0..3 {
                    targets[off + k] = (k == class) as u8 as f32;
                }
            } else {
                targets[off] = t;
            }
            mask[f] = m as u8 as f32;
            blank[f] = (o == Observation::Blank) as u8 as f32;
        }
        Ok(())
    }
}

impl TargetPolicy for UncertaintyPolicy {
    fn layout(&self) -> &HeadLayout {
        &self.layout
    }

    fn encode(
        &self,
        rows: &[&[Observation]],
        samples: &[u64],
        epoch: u64,
        device: &Device,
    ) -> Result<LabelBatch> {
        if rows.len() != samples.len() {
            return Err(Error::Other(format!(
                "encode: {} label rows but {} sample indices",
                rows.len(),
                samples.len()
            )));
        }
        let (n, c, w) = (rows.len(), self.policies.len(), self.layout.width());
        let mut t = vec![0f32; n * w];
        let mut m = vec![0f32; n * c];
        let mut b = vec![0f32; n * c];
        for (i, (row, &s)) in rows.iter().zip(samples).enumerate() {
            self.encode_row(
                row,
                s,
                epoch,
                &mut t[i * w..(i + 1) * w],
                &mut m[i * c..(i + 1) * c],
                &mut b[i * c..(i + 1) * c],
            )?;
        }
        Ok(LabelBatch {
            targets: Tensor::from_vec(t, (n, w), device)?,
            mask: Tensor::from_vec(m, (n, c), device)?,
            weight: Tensor::ones((n, c), candle_core::DType::F32, device)?,
            blank: Tensor::from_vec(b, (n, c), device)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::host_f32;
    use Observation::{Blank as B, Negative as N, Positive as P, Uncertain as U};

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("F{i}")).collect()
    }

    fn cfg(policy: Policy, blank: BlankAs) -> UncertaintyConfig {
        UncertaintyConfig {
            policy,
            blank,
            ..Default::default()
        }
    }

    /// Hand-written table: one row `[P, N, U, B]` under every fixed policy and both blank
    /// switches; expected (targets, mask) from the table in the module doc.
    #[test]
    fn each_policy_on_a_hand_written_table() -> Result<()> {
        let row = [P, N, U, B];
        let dev = Device::Cpu;
        let cases: [(Policy, BlankAs, [f32; 4], [f32; 4]); 8] = [
            (
                Policy::Ignore,
                BlankAs::Negative,
                [1., 0., 0., 0.],
                [1., 1., 0., 1.],
            ),
            (
                Policy::Ignore,
                BlankAs::Missing,
                [1., 0., 0., 0.],
                [1., 1., 0., 0.],
            ),
            (
                Policy::Zeros,
                BlankAs::Negative,
                [1., 0., 0., 0.],
                [1., 1., 1., 1.],
            ),
            (
                Policy::Zeros,
                BlankAs::Missing,
                [1., 0., 0., 0.],
                [1., 1., 1., 0.],
            ),
            (
                Policy::Ones,
                BlankAs::Negative,
                [1., 0., 1., 0.],
                [1., 1., 1., 1.],
            ),
            (
                Policy::Ones,
                BlankAs::Missing,
                [1., 0., 1., 0.],
                [1., 1., 1., 0.],
            ),
            (
                Policy::Lsr,
                BlankAs::Negative,
                [1., 0., 0.5, 0.],
                [1., 1., 1., 1.],
            ),
            (
                Policy::Lsr,
                BlankAs::Missing,
                [1., 0., 0.5, 0.],
                [1., 1., 1., 0.],
            ),
        ];
        for (p, b, t, m) in cases {
            let pol = UncertaintyPolicy::new(&cfg(p, b), &names(4), 1)?;
            assert_eq!(pol.layout().width(), 4);
            let lb = pol.encode(&[&row], &[0], 0, &dev)?;
            assert_eq!(host_f32(&lb.targets)?, t, "{p:?} {b:?} targets");
            assert_eq!(host_f32(&lb.mask)?, m, "{p:?} {b:?} mask");
            assert_eq!(host_f32(&lb.blank)?, [0., 0., 0., 1.]);
            assert_eq!(host_f32(&lb.weight)?, [1.; 4]);
        }
        Ok(())
    }

    #[test]
    fn multiclass_targets_and_overrides_by_name() -> Result<()> {
        let findings: Vec<String> = ["Atelectasis", "Cardiomegaly", "Edema"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut c = cfg(Policy::Ones, BlankAs::Missing);
        c.overrides
            .insert("Cardiomegaly".into(), Policy::MultiClass);
        c.overrides.insert("Edema".into(), Policy::Ignore);
        let pol = UncertaintyPolicy::new(&c, &findings, 1)?;
        assert_eq!(pol.layout().width(), 5);
        let dev = Device::Cpu;
        let rows: [&[Observation]; 4] = [&[U, U, U], &[B, B, B], &[P, P, N], &[N, N, P]];
        let lb = pol.encode(&rows, &[0, 1, 2, 3], 0, &dev)?;
        // columns: Atelectasis | Cardiomegaly neg, pos, unc | Edema
        #[rustfmt::skip]
        let want_t = [
            1., 0., 0., 1., 0.,
            0., 1., 0., 0., 0.,
            1., 0., 1., 0., 0.,
            0., 1., 0., 0., 1.,
        ];
        #[rustfmt::skip]
        let want_m = [
            1., 1., 0.,
            0., 0., 0.,
            1., 1., 1.,
            1., 1., 1.,
        ];
        assert_eq!(host_f32(&lb.targets)?, want_t);
        assert_eq!(host_f32(&lb.mask)?, want_m);

        c.overrides.insert("Pleural Effusion".into(), Policy::Zeros);
        let e = UncertaintyPolicy::new(&c, &findings, 1).unwrap_err();
        assert!(
            e.to_string().contains("Pleural Effusion") && e.to_string().contains("Edema"),
            "{e}"
        );
        Ok(())
    }

    #[test]
    fn lsr_draws_are_in_range_keyed_and_vary_by_epoch() -> Result<()> {
        let mut c = cfg(Policy::LsrOnes, BlankAs::Negative);
        c.overrides.insert("F1".into(), Policy::LsrZeros);
        let pol = UncertaintyPolicy::new(&c, &names(2), 7)?;
        let dev = Device::Cpu;
        let rows: Vec<&[Observation]> = vec![&[U, U]; 200];
        let samples: Vec<u64> = (0..200).collect();
        let t0 = host_f32(&pol.encode(&rows, &samples, 0, &dev)?.targets)?;
        let again = host_f32(&pol.encode(&rows, &samples, 0, &dev)?.targets)?;
        let t1 = host_f32(&pol.encode(&rows, &samples, 1, &dev)?.targets)?;
        assert_eq!(t0, again, "same key, same draws");
        assert_ne!(t0, t1, "a new epoch draws anew");
        let ones: Vec<f32> = t0.iter().step_by(2).copied().collect();
        let zeros: Vec<f32> = t0.iter().skip(1).step_by(2).copied().collect();
        assert!(ones.iter().all(|v| (0.55..=0.85).contains(v)), "{ones:?}");
        assert!(zeros.iter().all(|v| (0.0..=0.3).contains(v)), "{zeros:?}");
        // Spread over the range, not a constant.
        let (lo, hi) = ones
            .iter()
            .fold((1f32, 0f32), |(a, b), v| (a.min(*v), b.max(*v)));
        assert!(lo < 0.6 && hi > 0.8, "{lo} {hi}");
        // A batch of one sample sees the same draw as inside a big batch.
        let single = host_f32(&pol.encode(&[rows[17]], &[17], 0, &dev)?.targets)?;
        assert_eq!(single, t0[34..36]);
        Ok(())
    }

    #[test]
    fn bad_config_and_rows_are_errors() {
        let mut c = UncertaintyConfig::default();
        c.lsr_ones_range = [0.9, 0.5];
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("lsr_ones_range"));
        let mut c = UncertaintyConfig::default();
        c.lsr_value = 1.5;
        assert!(c.validate().unwrap_err().to_string().contains("lsr_value"));
        let pol = UncertaintyPolicy::new(&UncertaintyConfig::default(), &names(3), 0).unwrap();
        let e = pol.encode(&[&[P, N]], &[5], 0, &Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("sample 5"), "{e}");
        let toml_err = toml::from_str::<UncertaintyConfig>("policy = \"u_ones\"").unwrap_err();
        assert!(toml_err.to_string().contains("u_ones"), "{toml_err}");
    }
}
