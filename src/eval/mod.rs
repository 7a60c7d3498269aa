//! Evaluation: AUROC per finding with study-bootstrap confidence intervals, means over the
//! competition tasks and all defined findings, paired comparisons (bootstrap and DeLong),
//! thresholds, calibration, study aggregation and ensembles, subgroups, reports and plots.
//!
//! Everything here is a pure function of [`Predictions`] (probabilities, targets, study ids);
//! `train` (per-epoch validation) and `noisycxr eval` share it.

pub mod auroc;
pub mod bench;
pub mod bootstrap;
pub mod predictions;
pub mod ranked;
pub mod summary;

#[cfg(test)]
mod fixtures;

pub use bootstrap::{bootstrap_cis, BootstrapCis, BootstrapConfig, Interval};
pub use predictions::{Column, Predictions};
pub use summary::{summarize, FindingMetrics, Mean, Summary};
