//! One file per subcommand: argument struct and `run`.

pub mod stats;
pub mod synth;
pub mod train;
