//! The data side: label vocabulary, readers for CheXpert / MIMIC-CXR / NIH ChestX-ray14,
//! patient-level splits, the image pipeline and the noise lab.

pub mod labels;
pub mod record;
pub mod csvio;
pub mod chexpert;
pub mod preprocess;
pub mod synth;

pub use labels::{Observation, CHEXPERT_FINDINGS, COMPETITION_TASKS, HIERARCHY};
pub use record::{Dataset, DatasetKind, Projection, Record, Sex, Skip, View};
