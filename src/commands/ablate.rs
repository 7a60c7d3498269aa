//! `noisycxr ablate`: run an experiment file (base config × runs × seeds) and write its table.

use std::path::PathBuf;

use clap::Args;

use crate::ablate::{self, spec::parse_var, Experiment};
use crate::error::Result;

#[derive(Debug, Args)]
pub struct AblateArgs {
    /// Experiment file (e.g. experiments/mentor-cpu.toml).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Results folder [default: <file's folder>/results/<experiment name>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// A `${NAME}` used in the experiment (overrides its [vars]); repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// cpu, cuda or cuda:N for every run (overrides the configs' device).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// Train at most N runs in this invocation, then stop; the next invocation continues.
    #[arg(long, value_name = "N")]
    pub max_runs: Option<usize>,
    /// Print the plan (and what is already finished); train nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(a: &AblateArgs) -> Result<()> {
    let vars = a
        .vars
        .iter()
        .map(|v| parse_var(v))
        .collect::<Result<Vec<_>>>()?;
    let exp = Experiment::from_file(&a.file, &vars)?;
    let o = ablate::run(
        &exp,
        &ablate::Options {
            out: a.out.clone(),
            max_runs: a.max_runs,
            device: a.device.clone(),
            dry_run: a.dry_run,
        },
    )?;
    if let Some(t) = &o.table {
        println!("\n{}", t.markdown(""));
    }
    println!(
        "{} trained, {} skipped; results in {}",
        o.trained,
        o.skipped,
        o.dir.display()
    );
    Ok(())
}
