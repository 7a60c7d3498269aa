//! Training: the `[model]` / `[train]` configuration, the run's splits, the loop with its
//! checkpoints, and the final report. The noisy-label techniques live in [`crate::noise`].

pub mod config;
pub mod sets;
pub mod state;
pub mod trainer;

pub use trainer::{run, Outcome, RunOptions};
