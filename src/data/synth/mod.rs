//! The noise lab: CheXpert-format datasets whose images are rendered from a known clean truth and
//! whose training labels come from a simulated report labeler (DESIGN.md §7).
//!
//! Real CheXpert training labels have no clean truth; here every image's truth is known, so a
//! technique can be scored on how much label noise it undoes and a relabel entry by entry.
//!
//! - [`config`]: sizes, seed and the labeler's noise rates ([`SynthConfig`], per-finding
//!   defaults in [`FINDING_SPECS`]).
//! - [`truth`]: patients, studies and their findings (hierarchy, acuity, cue strengths,
//!   look-alikes).
//! - [`canvas`] and [`render`]: the films, one visible cue per finding.
//! - [`labeler`]: structured noise — faint cues are more often blank, uncertain or flipped;
//!   each finding has its own P(truth | -1).
//! - [`generate`]: the folder on disk ([`generate()`](generate::generate), [`ensure`]).

pub mod canvas;
pub mod config;
pub mod generate;
pub mod labeler;
pub mod render;
pub mod truth;

pub use config::{finding_spec, FindingSpec, NoiseConfig, SynthConfig, FINDING_SPECS};
pub use generate::{ensure, Ensured, SynthSummary};
pub use labeler::FindingNoise;
pub use truth::Split;
