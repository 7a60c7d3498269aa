//! Ablations (`noisycxr ablate`): a base configuration × named runs × seeds, run in sequence
//! and resumably, summarised in a table in the seed's layout with paired-bootstrap
//! differences from the baseline and, on the noise lab, the share of the noise gap closed.
//!
//! - [`spec`]: the experiment file, parsed and validated in one place;
//! - [`runner`]: runs every (column, seed), skips finished ones, resumes interrupted ones;
//! - [`table`]: cells (mean ± sample std over seeds), differences, gap closed; Markdown/CSV.

pub mod runner;
pub mod spec;
pub mod table;

pub use runner::{run, Options, Outcome};
pub use spec::Experiment;
pub use table::AblationTable;
