//! The data side: label vocabulary, readers for CheXpert / MIMIC-CXR / NIH ChestX-ray14,
//! patient-level splits, the image pipeline and the noise lab.

pub mod chexpert;
pub mod csvio;
pub mod labels;
pub mod mapping;
pub mod mimic;
pub mod nih;
pub mod nih_bbox;
pub mod official;
pub mod preprocess;
pub mod record;
pub mod source;
pub mod split;
pub mod stats;
pub mod textfile;
pub mod image;
pub mod augment;
pub mod loader;
pub mod cache;
pub mod bench;
pub mod synth;

pub use labels::{Observation, CHEXPERT_FINDINGS, COMPETITION_TASKS, HIERARCHY};
pub use record::{Dataset, DatasetKind, Projection, Record, Sex, Skip, View};
