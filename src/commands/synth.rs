//! `noisycxr synth`: generate the noise lab.

use clap::Args;

use crate::config::Config;
use crate::error::{Error, Result};

#[derive(Debug, Args)]
pub struct SynthArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub args: Vec<String>,
}

pub fn run(_a: &SynthArgs) -> Result<()> {
    Err(Error::NotAvailable(
        "synth",
        "the noise lab generator is being merged",
    ))
}

/// Generates the noise lab at `cfg.data.root` when it is the configured default and absent.
pub fn ensure_dataset(_cfg: &Config) -> Result<()> {
    Ok(())
}
