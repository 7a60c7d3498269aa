//! # noisycxr
//!
//! Train chest X-ray classifiers that stay accurate when their training labels are noisy.
//!
//! Data flows: CSV + images → [`data::Dataset`] of raw observations (no policy applied) →
//! uncertainty policy → loader → batch transforms → model → per-element loss → sample weights →
//! optimizer; then evaluation, relabeling and head-only retraining. See `README.md` and
//! `../shared/DESIGN.md` for the recipe.

pub mod ablate;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod inference;
pub mod loss;
pub mod model;
pub mod noise;
pub mod ops;
pub mod optim;
pub mod pipeline;
pub mod provenance;
pub mod relabel;
pub mod rng;
pub mod runtime;
pub mod train;

pub use error::{Error, Result};
