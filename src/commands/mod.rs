//! One file per subcommand: argument struct and `run`.

pub mod bench;
pub mod pipeline;
pub mod relabel;
pub mod stats;
pub mod synth;
pub mod train;
