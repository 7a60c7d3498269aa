//! `noisycxr pipeline CONFIG.toml`: run (or resume) a multi-stage recipe and print its report.

use std::path::PathBuf;

use clap::Args;

use crate::error::Result;
use crate::pipeline::{self, Options, PipelineConfig};

#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Pipeline file: a [base] training config and [[stage]] entries (see configs/recipe-cpu.toml).
    #[arg(value_name = "CONFIG.toml")]
    pub config: PathBuf,
    /// Output folder (one subfolder per stage, report.md). Default: runs/<file stem>.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Stop once stage N has finished (as if killed there); the same command resumes at N+1.
    #[arg(long, value_name = "N")]
    pub stop_after: Option<usize>,
    /// Only check the file (every stage's resolved config) and list the stages.
    #[arg(long)]
    pub check: bool,
}

pub fn run(a: &PipelineArgs) -> Result<()> {
    let cfg = PipelineConfig::from_file(&a.config)?;
    let out = match &a.out {
        Some(o) => o.clone(),
        None => PathBuf::from("runs").join(
            a.config
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "pipeline".into()),
        ),
    };
    if a.check {
        for s in cfg.validate(&out)? {
            println!(
                "{:>2}. {:<12} {:<10} -> {}",
                s.index,
                s.name,
                s.spec.kind.as_str(),
                s.dir.display()
            );
        }
        return Ok(());
    }
    let o = pipeline::run_with(
        &cfg,
        &out,
        Options {
            stop_after: a.stop_after,
        },
    )?;
    println!("{}", o.markdown);
    println!("report: {}", o.report.display());
    Ok(())
}
