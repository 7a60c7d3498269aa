//! Inference with trained checkpoints: resolving a run folder to its checkpoint, loading the
//! model with the head layout and calibration it was trained with ([`Trained`]), predicting
//! image files with progress and a skip report ([`predict_paths`]), and pairing predictions
//! with a labelled CSV of any supported format, over the findings model and CSV share
//! ([`labelled`]). `noisycxr eval`, `noisycxr predict` (and `relabel`) sit on top of it.

pub mod labelled;
pub mod predict;
pub mod trained;

pub use labelled::{attach_targets, read_csv, with_targets, Labelled};
pub use predict::{predict_paths, write_csv, PredictOptions, Predicted};
pub use trained::{checkpoint_dir, Trained};
