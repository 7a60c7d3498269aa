//! One file per subcommand: argument struct and `run`.

pub mod ablate;
pub mod bench;
pub mod eval;
pub mod pipeline;
pub mod predict;
pub mod relabel;
pub mod stats;
pub mod synth;
pub mod train;
