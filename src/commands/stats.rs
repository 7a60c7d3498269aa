//! `noisycxr stats [CSV...]`: per-finding counts of blank / -1 / 0 / 1 and view counts.

use std::path::PathBuf;

use clap::Args;

use crate::cli::{Common, Format};
use crate::data::source::{self, CsvSource};
use crate::data::stats::Stats;
use crate::error::Result;

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Label CSVs (CheXpert, MIMIC-CXR or NIH layout, told apart by header). Without any, the
    /// CSVs of the configured dataset (`--data`, default the noise lab) are counted.
    pub csvs: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Markdown)]
    pub format: Format,
    #[command(flatten)]
    pub common: Common,
}

pub fn run(a: &StatsArgs) -> Result<()> {
    let cfg = a.common.resolve()?;
    let mut srcs: Vec<CsvSource> = Vec::new();
    for csv in &a.csvs {
        srcs.push(CsvSource {
            csv: csv.clone(),
            images: source::default_image_root(csv)?,
            split: None,
        });
    }
    if srcs.is_empty() {
        super::synth::ensure_dataset(&cfg)?;
        let s = source::resolve(&cfg.data)?;
        srcs.push(s.train);
        srcs.extend(s.tune);
        srcs.extend(s.test);
    }
    for (i, src) in srcs.iter().enumerate() {
        let format = source::detect(&src.csv)?;
        let ds = source::read(src, format)?;
        let name = src.csv.display().to_string();
        let stats = Stats::of(&ds, &name);
        match a.format {
            Format::Markdown => println!("{}", stats.markdown()),
            Format::Csv => print!("{}", stats.csv(i == 0)),
        }
    }
    Ok(())
}
