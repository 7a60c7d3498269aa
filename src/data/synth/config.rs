//! What the noise lab generates: sizes, image geometry and the simulated labeler's noise rates.
//!
//! Every finding has its own row in [`FINDING_SPECS`] (prevalence, cue, noise rates). The global
//! rates in [`NoiseConfig`] are the **means over the 13 labelled findings** (all but
//! `No Finding`, which the labeler derives); setting one rescales every finding's default rate
//! by the same factor, so the per-finding structure (Atelectasis uncertain mostly positive,
//! Consolidation uncertain mostly negative, ...) is kept while the overall level follows the flag.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One finding's generative and noise defaults.
///
/// Rates are probabilities; *cell* means one (study, finding) label of the training set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FindingSpec {
    /// CheXpert column name.
    pub name: &'static str,
    /// Logit of the finding's *own* draw at average acuity and age (before the hierarchy adds
    /// positives from children).
    pub base_logit: f64,
    /// Weight of the study's acuity latent (ICU-ness) on the logit.
    pub acuity: f64,
    /// Weight of standardised age ((age - 60) / 17) on the logit.
    pub age: f64,
    /// Probability that a truly negative image carries a look-alike ("mimic") of the cue.
    pub mimic_rate: f64,
    /// Default fraction of cells labelled `-1`.
    pub uncertain: f64,
    /// P(truth = 1 | label = -1): above 0.5 U-Ones is right more often, below U-Zeros.
    pub uncertain_ppv: f64,
    /// Default P(blank | truth = 1, not `-1`): a present finding the report does not mention.
    pub miss: f64,
    /// Default P(`0.0` | truth = 1, mentioned, not `-1`).
    pub false_negative: f64,
    /// Default P(`1.0` | truth = 0, not `-1`).
    pub false_positive: f64,
    /// Default P(`0.0` | truth = 0, not `-1`, not a false positive): explicit negation.
    pub negation: f64,
}

const fn spec(
    name: &'static str,
    base_logit: f64,
    acuity: f64,
    age: f64,
    mimic_rate: f64,
    uncertain: f64,
    uncertain_ppv: f64,
    miss: f64,
    false_negative: f64,
    false_positive: f64,
    negation: f64,
) -> FindingSpec {
    FindingSpec {
        name,
        base_logit,
        acuity,
        age,
        mimic_rate,
        uncertain,
        uncertain_ppv,
        miss,
        false_negative,
        false_positive,
        negation,
    }
}

/// Per-finding defaults for the 13 labelled findings, in CheXpert column order (index `k` here is
/// column `k + 1` of [`crate::data::CHEXPERT_FINDINGS`]; `No Finding` is derived).
///
/// Prevalences are shaped like CheXpert's training set (Support Devices and Lung Opacity about
/// half the studies, Pleural Effusion ~40 %, Pleural Other and Pneumonia a few percent); the
/// uncertain rates and their P(truth | -1) follow the CheXpert paper's finding that U-Ones wins
/// on Atelectasis and Edema while Consolidation and Cardiomegaly prefer other policies.
#[rustfmt::skip]
pub const FINDING_SPECS: [FindingSpec; 13] = [
    //    name                          logit  acu   age  mimic  unc    ppv   miss  fn    fp     neg
    spec("Enlarged Cardiomediastinum", -3.4, 0.3, 0.3, 0.20, 0.045, 0.35, 0.45, 0.06, 0.010, 0.05),
    spec("Cardiomegaly",               -1.9, 0.3, 0.7, 0.25, 0.035, 0.45, 0.20, 0.05, 0.020, 0.05),
    spec("Lung Opacity",               -1.2, 0.3, 0.1, 0.25, 0.025, 0.75, 0.12, 0.04, 0.030, 0.02),
    spec("Lung Lesion",                -3.1, 0.0, 0.5, 0.20, 0.008, 0.55, 0.30, 0.04, 0.005, 0.01),
    spec("Edema",                      -1.2, 0.5, 0.4, 0.20, 0.060, 0.75, 0.20, 0.06, 0.030, 0.12),
    spec("Consolidation",              -2.9, 0.4, 0.0, 0.25, 0.090, 0.22, 0.30, 0.08, 0.010, 0.10),
    spec("Pneumonia",                  -3.3, 0.4, 0.0, 0.20, 0.045, 0.30, 0.35, 0.10, 0.010, 0.02),
    spec("Atelectasis",                -1.4, 0.3, 0.2, 0.25, 0.120, 0.80, 0.30, 0.05, 0.020, 0.01),
    spec("Pneumothorax",               -2.3, 0.3,-0.2, 0.15, 0.015, 0.35, 0.10, 0.03, 0.010, 0.28),
    spec("Pleural Effusion",           -0.3, 0.5, 0.5, 0.25, 0.050, 0.60, 0.12, 0.04, 0.030, 0.30),
    spec("Pleural Other",              -4.0, 0.0, 0.3, 0.15, 0.010, 0.50, 0.40, 0.05, 0.003, 0.01),
    spec("Fracture",                   -3.1, 0.2, 0.3, 0.20, 0.004, 0.50, 0.50, 0.05, 0.003, 0.03),
    spec("Support Devices",             0.0, 1.4, 0.0, 0.10, 0.005, 0.85, 0.08, 0.01, 0.010, 0.01),
];

/// Spec of a CheXpert finding by name (`None` for `No Finding` and unknown names).
pub fn finding_spec(name: &str) -> Option<&'static FindingSpec> {
    FINDING_SPECS.iter().find(|s| s.name == name)
}

fn mean_of(f: impl Fn(&FindingSpec) -> f64) -> f64 {
    FINDING_SPECS.iter().map(f).sum::<f64>() / FINDING_SPECS.len() as f64
}

/// The simulated report labeler's noise, as means over the 13 labelled findings.
///
/// Each finding's rate is its [`FindingSpec`] default times `flag / mean(defaults)`. Within a
/// finding, which cells get the noise depends on the cue: faint positives (and negatives with a
/// strong look-alike) are more often uncertain, blank or flipped — the probability of cell `i` is
/// `sigmoid(b + faintness_slope * x_i)` with `x_i` the cell's faintness (1 - cue strength) or
/// mimic strength, and `b` solved so that the finding's mean rate is exactly its target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoiseConfig {
    /// Mean fraction of training cells labelled `-1` (uncertain).
    pub uncertain_rate: f64,
    /// Mean P(blank | truth positive, not `-1`): positives the report does not mention.
    pub miss_rate: f64,
    /// Mean P(`0.0` | truth positive, mentioned, not `-1`).
    pub false_negative_rate: f64,
    /// Mean P(`1.0` | truth negative, not `-1`).
    pub false_positive_rate: f64,
    /// Mean P(`0.0` | truth negative, not `-1`, not flipped): explicit negations; the rest of
    /// the negatives are blank.
    pub negation_rate: f64,
    /// Logistic slope of the noise on faintness (0 = noise independent of the image).
    pub faintness_slope: f64,
}

impl Default for NoiseConfig {
    fn default() -> Self {
        NoiseConfig {
            uncertain_rate: mean_of(|s| s.uncertain),
            miss_rate: mean_of(|s| s.miss),
            false_negative_rate: mean_of(|s| s.false_negative),
            false_positive_rate: mean_of(|s| s.false_positive),
            negation_rate: mean_of(|s| s.negation),
            faintness_slope: 4.0,
        }
    }
}

/// Target rates of one finding after scaling its defaults by the global flags.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FindingRates {
    pub uncertain: f64,
    pub uncertain_ppv: f64,
    pub miss: f64,
    pub false_negative: f64,
    pub false_positive: f64,
    pub negation: f64,
}

impl NoiseConfig {
    /// A labeler that makes no mistakes: no `-1`, no blanks for positives, no flips. Negatives
    /// are still blank unless `negation_rate` says otherwise.
    pub fn none() -> Self {
        NoiseConfig {
            uncertain_rate: 0.0,
            miss_rate: 0.0,
            false_negative_rate: 0.0,
            false_positive_rate: 0.0,
            negation_rate: 1.0,
            faintness_slope: 0.0,
        }
    }

    /// The rates of finding `k` (index into [`FINDING_SPECS`]).
    pub fn rates(&self, k: usize) -> FindingRates {
        let s = &FINDING_SPECS[k];
        let scale =
            |flag: f64, own: f64, mean: f64| if mean > 0.0 { own * flag / mean } else { flag };
        FindingRates {
            uncertain: scale(self.uncertain_rate, s.uncertain, mean_of(|s| s.uncertain)),
            uncertain_ppv: s.uncertain_ppv,
            miss: scale(self.miss_rate, s.miss, mean_of(|s| s.miss)),
            false_negative: scale(
                self.false_negative_rate,
                s.false_negative,
                mean_of(|s| s.false_negative),
            ),
            false_positive: scale(
                self.false_positive_rate,
                s.false_positive,
                mean_of(|s| s.false_positive),
            ),
            negation: scale(self.negation_rate, s.negation, mean_of(|s| s.negation)).min(1.0),
        }
    }

    /// Checks that every rate is a probability and that no finding's scaled rate reaches 1.
    pub fn validate(&self) -> Result<()> {
        type Own = fn(&FindingSpec) -> f64;
        let fields: [(&str, f64, Own); 4] = [
            ("uncertain_rate", self.uncertain_rate, |s| s.uncertain),
            ("miss_rate", self.miss_rate, |s| s.miss),
            ("false_negative_rate", self.false_negative_rate, |s| {
                s.false_negative
            }),
            ("false_positive_rate", self.false_positive_rate, |s| {
                s.false_positive
            }),
        ];
        for (name, v, own) in fields {
            if !(0.0..1.0).contains(&v) || !v.is_finite() {
                return Err(Error::Config(format!(
                    "synth.noise.{name} = {v} must be in [0, 1)"
                )));
            }
            let worst = FINDING_SPECS
                .iter()
                .map(|s| (s.name, own(s) * v / mean_of(own)))
                .fold(("", 0.0f64), |a, b| if b.1 > a.1 { b } else { a });
            if worst.1 >= 0.95 {
                return Err(Error::Config(format!(
                    "synth.noise.{name} = {v} scales {}'s rate to {:.3}; rates are means over \
                     findings and each finding's must stay below 0.95 — use at most {:.4}",
                    worst.0,
                    worst.1,
                    v * 0.95 / worst.1
                )));
            }
        }
        if !(0.0..=1.0).contains(&self.negation_rate) || !self.negation_rate.is_finite() {
            return Err(Error::Config(format!(
                "synth.noise.negation_rate = {} must be in [0, 1]",
                self.negation_rate
            )));
        }
        if !self.faintness_slope.is_finite() || self.faintness_slope.abs() > 20.0 {
            return Err(Error::Config(format!(
                "synth.noise.faintness_slope = {} must be in [-20, 20] (0 = uniform noise)",
                self.faintness_slope
            )));
        }
        Ok(())
    }
}

/// The whole noise lab: how many images, how big, which seed, how noisy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    /// Images (CSV rows) in `train.csv` / `train_clean.csv`.
    pub n_train: usize,
    /// Images in `valid.csv` (clean; the tuning set).
    pub n_valid: usize,
    /// Images in `test.csv` (clean; the reported set).
    pub n_test: usize,
    /// Seed of every draw (truth, anatomy, cues, labeler).
    pub seed: u64,
    /// Short side of the images in pixels (CheXpert-v1.0-small: 320). Frontal images are
    /// `short_side` wide and `round(1.15 * short_side)` tall; laterals are square.
    pub short_side: u32,
    /// JPEG quality, 1-100.
    pub jpeg_quality: u8,
    /// Fraction of studies that also get a lateral view (`view2_lateral.jpg`, same labels).
    pub lateral_fraction: f64,
    pub noise: NoiseConfig,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            n_train: 12_000,
            n_valid: 1_000,
            n_test: 2_000,
            seed: 0,
            short_side: 320,
            jpeg_quality: 90,
            lateral_fraction: 0.1,
            noise: NoiseConfig::default(),
        }
    }
}

impl SynthConfig {
    /// A small, fast configuration for tests: 64 px images, a few hundred rows.
    pub fn tiny(seed: u64) -> Self {
        SynthConfig {
            n_train: 240,
            n_valid: 40,
            n_test: 40,
            seed,
            short_side: 64,
            ..SynthConfig::default()
        }
    }

    /// Checks every field; the error names the field and the allowed range.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("n_train", self.n_train),
            ("n_valid", self.n_valid),
            ("n_test", self.n_test),
        ] {
            if v == 0 || v > 5_000_000 {
                return Err(Error::Config(format!(
                    "synth.{name} = {v} must be in 1..=5000000"
                )));
            }
        }
        if !(32..=4096).contains(&self.short_side) {
            return Err(Error::Config(format!(
                "synth.short_side = {} must be in 32..=4096 pixels",
                self.short_side
            )));
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return Err(Error::Config(format!(
                "synth.jpeg_quality = {} must be in 1..=100",
                self.jpeg_quality
            )));
        }
        if !(0.0..=1.0).contains(&self.lateral_fraction) {
            return Err(Error::Config(format!(
                "synth.lateral_fraction = {} must be in [0, 1]",
                self.lateral_fraction
            )));
        }
        self.noise.validate()
    }

    /// Frontal image size `(width, height)` in pixels.
    pub fn frontal_size(&self) -> (u32, u32) {
        let s = self.short_side;
        (s, ((s as f64) * 1.15).round() as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::CHEXPERT_FINDINGS;

    #[test]
    fn specs_follow_chexpert_column_order() {
        for (k, s) in FINDING_SPECS.iter().enumerate() {
            assert_eq!(s.name, CHEXPERT_FINDINGS[k + 1]);
        }
    }

    #[test]
    fn default_flags_leave_per_finding_defaults_unchanged() {
        let n = NoiseConfig::default();
        for (k, s) in FINDING_SPECS.iter().enumerate() {
            let r = n.rates(k);
            assert!((r.uncertain - s.uncertain).abs() < 1e-12);
            assert!((r.miss - s.miss).abs() < 1e-12);
            assert!((r.false_positive - s.false_positive).abs() < 1e-12);
        }
        // Doubling a flag doubles every finding's rate and the mean.
        let d = NoiseConfig {
            miss_rate: 2.0 * n.miss_rate,
            ..n.clone()
        };
        let mean: f64 = (0..13).map(|k| d.rates(k).miss).sum::<f64>() / 13.0;
        assert!((mean - 2.0 * n.miss_rate).abs() < 1e-12);
    }

    #[test]
    fn validate_names_the_field() {
        let mut c = SynthConfig::default();
        c.validate().unwrap();
        c.noise.miss_rate = 0.5; // Fracture's 0.50 default scaled x1.9 > 0.95
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("synth.noise.miss_rate") && e.contains("Fracture"),
            "{e}"
        );
        let mut c = SynthConfig::default();
        c.short_side = 8;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("synth.short_side"));
        let mut c = SynthConfig::default();
        c.lateral_fraction = 1.5;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("lateral_fraction"));
        let e = toml::from_str::<SynthConfig>("n_train = 5\nbogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }
}
