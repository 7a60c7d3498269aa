//! The clean truth of the noise lab: patients, their studies, and per study which findings are
//! present, how visible each one's cue is, and which negatives carry a look-alike.
//!
//! A study's findings come from one latent *acuity* (ICU-ness: drives Support Devices, Edema,
//! Pleural Effusion, AP films), the patient's age and a patient-level *frailty* shared by all of a
//! patient's studies. Each of the 13 pathologies/devices has its own draw; the hierarchy then adds
//! parents (Pneumonia ⇒ Consolidation ⇒ Lung Opacity; Edema, Lung Lesion, Atelectasis ⇒ Lung
//! Opacity; Cardiomegaly ⇒ Enlarged Cardiomediastinum). `No Finding` is true when none of the 12
//! pathologies is (Support Devices may co-occur, as in CheXpert).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::config::{SynthConfig, FINDING_SPECS};
use crate::data::labels::CHEXPERT_FINDINGS;
use crate::data::record::{Projection, Sex};
use crate::rng::{keyed, Stream};

/// Number of findings (CheXpert columns).
pub const K: usize = CHEXPERT_FINDINGS.len();

/// Column indices into [`CHEXPERT_FINDINGS`].
pub mod idx {
    pub const NO_FINDING: usize = 0;
    pub const ECM: usize = 1;
    pub const CARDIOMEGALY: usize = 2;
    pub const LUNG_OPACITY: usize = 3;
    pub const LUNG_LESION: usize = 4;
    pub const EDEMA: usize = 5;
    pub const CONSOLIDATION: usize = 6;
    pub const PNEUMONIA: usize = 7;
    pub const ATELECTASIS: usize = 8;
    pub const PNEUMOTHORAX: usize = 9;
    pub const EFFUSION: usize = 10;
    pub const PLEURAL_OTHER: usize = 11;
    pub const FRACTURE: usize = 12;
    pub const SUPPORT_DEVICES: usize = 13;
}

/// Which CSV / folder a study belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    /// Folder name under `CheXpert-v1.0-small/` (`train`, `valid`, `test`).
    pub fn dir(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }

    fn tag(self) -> u64 {
        match self {
            Split::Train => 1,
            Split::Valid => 2,
            Split::Test => 3,
        }
    }
}

/// Key of a keyed draw that belongs to one patient / study / purpose.
pub(crate) fn study_rng(
    seed: u64,
    split: Split,
    patient_in_split: u64,
    study: u64,
    purpose: u64,
) -> ChaCha8Rng {
    keyed(
        seed,
        Stream::Synth,
        (split.tag() << 40) | patient_in_split,
        (study << 8) | purpose,
    )
}

/// Purposes of keyed draws (the `b` low byte of [`study_rng`]).
pub(crate) mod purpose {
    pub const PATIENT: u64 = 1;
    pub const FINDINGS: u64 = 2;
    pub const ANATOMY: u64 = 3;
    pub const CUES: u64 = 4;
    pub const TEXTURE: u64 = 5;
    pub const LABELER: u64 = 6;
}

/// One study with its clean truth. All images of a study share its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyTruth {
    pub split: Split,
    /// Patient index within the split (0-based; keys the draws).
    pub patient_in_split: u64,
    /// Patient number written in the path (`patient{:05}`), unique across splits.
    pub patient_no: u64,
    /// Study number within the patient (1-based, `study{n}` in the path).
    pub study_no: u64,
    pub sex: Sex,
    /// Age in years at the study.
    pub age: u32,
    /// Projection of the frontal film (AP or PA); laterals are written with an empty `AP/PA`.
    pub projection: Projection,
    /// Whether the study also has a lateral image.
    pub lateral: bool,
    /// Acuity latent (standard normal); kept for analysis.
    pub acuity: f64,
    /// Clean label per finding (CheXpert column order).
    pub truth: [bool; K],
    /// Whether the finding's own cue is drawn (false for parents that are positive only
    /// because a child is, e.g. Lung Opacity implied by Edema).
    pub own_cue: [bool; K],
    /// Visibility of each positive finding's cue in (0, 1]; 0 for negatives.
    pub strength: [f32; K],
    /// Strength of a look-alike cue on a negative, in (0, 1]; 0 when none (and for positives).
    pub mimic: [f32; K],
}

impl StudyTruth {
    /// CSV `Path` of the frontal (`lateral = false`) or lateral image.
    pub fn image_path(&self, lateral: bool) -> String {
        let view = if lateral {
            "view2_lateral.jpg"
        } else {
            "view1_frontal.jpg"
        };
        format!(
            "CheXpert-v1.0-small/{}/patient{:05}/study{}/{}",
            self.split.dir(),
            self.patient_no,
            self.study_no,
            view
        )
    }

    /// Number of images (1, or 2 with a lateral).
    pub fn n_images(&self) -> usize {
        1 + self.lateral as usize
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample::<f64, _>(StandardNormal)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Draws the studies of one split until they hold exactly `n_images` images. Patients are
/// numbered from `first_patient_no`; the draws depend only on `(seed, split, patient index)`, so a
/// split's content does not change when another split's size does.
pub fn sample_split(
    cfg: &SynthConfig,
    split: Split,
    n_images: usize,
    first_patient_no: u64,
) -> Vec<StudyTruth> {
    let mut out = Vec::new();
    let mut left = n_images;
    let mut p: u64 = 0;
    while left > 0 {
        let mut rng = study_rng(cfg.seed, split, p, 0, purpose::PATIENT);
        let sex = if rng.random::<f64>() < 0.58 {
            Sex::Male
        } else {
            Sex::Female
        };
        let base_age = (60.0 + 17.0 * normal(&mut rng)).clamp(18.0, 90.0);
        let frailty = normal(&mut rng);
        // 1 + geometric number of studies: 60 % one, 24 % two, ... capped at 6.
        let mut n_studies = 1u64;
        while n_studies < 6 && rng.random::<f64>() < 0.4 {
            n_studies += 1;
        }
        for s in 1..=n_studies {
            if left == 0 {
                break;
            }
            let years = (s - 1) as f64 * 0.4;
            let age = (base_age + years).round().min(90.0) as u32;
            let mut st = sample_study(cfg, split, p, s, sex, age, frailty);
            if st.lateral && left < 2 {
                st.lateral = false;
            }
            left -= st.n_images();
            st.patient_no = first_patient_no + p;
            out.push(st);
        }
        p += 1;
    }
    out
}

/// Draws one study's findings, cue strengths and look-alikes.
fn sample_study(
    cfg: &SynthConfig,
    split: Split,
    p: u64,
    s: u64,
    sex: Sex,
    age: u32,
    frailty: f64,
) -> StudyTruth {
    use idx::*;
    let mut rng = study_rng(cfg.seed, split, p, s, purpose::FINDINGS);
    let acuity = 0.6 * frailty + 0.8 * normal(&mut rng);
    let age_z = (age as f64 - 60.0) / 17.0;
    let lateral = rng.random::<f64>() < cfg.lateral_fraction;
    let mut own = [false; K];
    let mut strength = [0f32; K];
    for (k, spec) in FINDING_SPECS.iter().enumerate() {
        let j = k + 1;
        let pr = sigmoid(spec.base_logit + spec.acuity * acuity + spec.age * age_z);
        let u: f64 = rng.random();
        let st: f64 = rng.random();
        if u < pr {
            own[j] = true;
            strength[j] = (0.15 + 0.85 * st) as f32;
        }
    }
    // Hierarchy: a positive child implies a positive parent.
    let mut truth = own;
    if truth[PNEUMONIA] && !own[CONSOLIDATION] {
        // Pneumonia is drawn on top of a consolidation of comparable visibility.
        own[CONSOLIDATION] = true;
        strength[CONSOLIDATION] = strength[PNEUMONIA].max(0.3);
        truth[CONSOLIDATION] = true;
    }
    for child in [EDEMA, CONSOLIDATION, PNEUMONIA, LUNG_LESION, ATELECTASIS] {
        if truth[child] {
            truth[LUNG_OPACITY] = true;
            strength[LUNG_OPACITY] = strength[LUNG_OPACITY].max(strength[child]);
        }
    }
    if truth[CARDIOMEGALY] {
        truth[ECM] = true;
        strength[ECM] = strength[ECM].max(strength[CARDIOMEGALY]);
    }
    truth[NO_FINDING] = !(1..SUPPORT_DEVICES).any(|j| truth[j]);
    if truth[NO_FINDING] {
        strength[NO_FINDING] = 1.0;
    }
    // Look-alikes on negatives (nipple shadows, skin folds, AP magnification, ...).
    let mut mimic = [0f32; K];
    for (k, spec) in FINDING_SPECS.iter().enumerate() {
        let j = k + 1;
        let u: f64 = rng.random();
        let m: f64 = rng.random();
        if !truth[j] && u < spec.mimic_rate {
            mimic[j] = (0.2 + 0.8 * m) as f32;
        }
    }
    // Portable AP films are the ICU's: more likely with high acuity or devices.
    let ap_logit = 0.6 + 1.0 * acuity + if truth[SUPPORT_DEVICES] { 1.0 } else { 0.0 };
    let projection = if rng.random::<f64>() < sigmoid(ap_logit) {
        Projection::AP
    } else {
        Projection::PA
    };
    StudyTruth {
        split,
        patient_in_split: p,
        patient_no: 0,
        study_no: s,
        sex,
        age,
        projection,
        lateral,
        acuity,
        truth,
        own_cue: own,
        strength,
        mimic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::labels::{chexpert_index, HIERARCHY};

    #[test]
    fn splits_hold_exactly_n_images_and_respect_the_hierarchy() {
        let cfg = SynthConfig {
            lateral_fraction: 0.5,
            ..SynthConfig::default()
        };
        let st = sample_split(&cfg, Split::Train, 501, 1);
        assert_eq!(st.iter().map(|s| s.n_images()).sum::<usize>(), 501);
        for s in &st {
            for (parent, child) in HIERARCHY {
                let (p, c) = (
                    chexpert_index(parent).unwrap(),
                    chexpert_index(child).unwrap(),
                );
                assert!(!s.truth[c] || s.truth[p], "{child} without {parent}");
            }
            let any = (1..13).any(|j| s.truth[j]);
            assert_eq!(s.truth[0], !any);
            for j in 0..K {
                assert_eq!(s.truth[j], s.strength[j] > 0.0);
                assert!(!(s.truth[j] && s.mimic[j] > 0.0));
            }
        }
        // Same draws for the same key, whatever the requested size.
        let a = sample_split(&cfg, Split::Valid, 50, 1);
        let b = sample_split(&cfg, Split::Valid, 80, 1);
        assert_eq!(a[..10], b[..10]);
    }

    #[test]
    fn prevalences_are_shaped_like_chexpert() {
        let cfg = SynthConfig::default();
        let st = sample_split(&cfg, Split::Train, 20_000, 1);
        let n = st.len() as f64;
        let prev: Vec<f64> = (0..K)
            .map(|j| st.iter().filter(|s| s.truth[j]).count() as f64 / n)
            .collect();
        for (j, p) in prev.iter().enumerate() {
            eprintln!("{:28} {:.3}", CHEXPERT_FINDINGS[j], p);
        }
        // Broad CheXpert shape (train labels, DESIGN.md §2): devices and opacity common, effusion
        // frequent, pleural other and pneumonia rare, no finding around a tenth.
        use idx::*;
        assert!((0.35..0.65).contains(&prev[SUPPORT_DEVICES]));
        assert!((0.35..0.65).contains(&prev[LUNG_OPACITY]));
        assert!((0.25..0.50).contains(&prev[EFFUSION]));
        assert!((0.01..0.04).contains(&prev[PLEURAL_OTHER]));
        assert!((0.02..0.07).contains(&prev[PNEUMONIA]));
        assert!((0.08..0.22).contains(&prev[NO_FINDING]));
        // The labeler's No Finding (no pathology positive or uncertain) is rarer still, as the
        // 10 % of CheXpert's.
        let noisy = crate::data::synth::labeler::label_split(cfg.seed, &cfg.noise, &st);
        let nf = noisy
            .iter()
            .filter(|l| l[NO_FINDING] == crate::data::Observation::Positive)
            .count();
        let nf = nf as f64 / n;
        eprintln!("noisy No Finding {nf:.3}");
        assert!((0.05..0.18).contains(&nf), "noisy No Finding {nf}");
        let ap = st.iter().filter(|s| s.projection == Projection::AP).count() as f64 / n;
        assert!((0.55..0.85).contains(&ap), "AP share {ap}");
    }
}
