//! Evaluation: AUROC per finding with study-bootstrap confidence intervals, means over the
//! competition tasks and all defined findings, paired comparisons (bootstrap and DeLong),
//! thresholds, calibration, study aggregation and ensembles, subgroups, reports and plots.
//!
//! Everything here is a pure function of [`Predictions`] (probabilities, targets, study ids);
//! `train` (per-epoch validation) and `noisycxr eval` share it.

pub mod aggregate;
pub mod auroc;
pub mod bench;
pub mod bootstrap;
pub mod calibration;
pub mod compare;
pub mod crossdata;
pub mod delong;
pub mod plots;
pub mod predictions;
pub mod ranked;
pub mod report;
pub mod subgroups;
pub mod summary;
pub mod thresholds;
pub mod tuned;

#[cfg(test)]
mod fixtures;

pub use aggregate::{ensemble, study_level, Aggregation};
pub use bootstrap::{bootstrap_cis, BootstrapCis, BootstrapConfig, Interval};
pub use calibration::{calibration_table, Temperatures};
pub use compare::{compare, Comparison};
pub use plots::EpochPoint;
pub use predictions::{Column, Predictions};
pub use report::{evaluate, write_outputs, EvalOptions, EvalReport};
pub use summary::{summarize, FindingMetrics, Mean, Summary};
pub use thresholds::{Criterion, Thresholds};
pub use tuned::Tuned;
