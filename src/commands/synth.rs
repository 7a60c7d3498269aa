//! `noisycxr synth`: generate the noise lab (a CheXpert-format dataset with known clean truth).

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{Config, DatasetFormat};
use crate::data::synth::{self, Ensured, SynthConfig};
use crate::error::{Error, Result};

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output folder; `CheXpert-v1.0-small/` is created inside it.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// TOML config whose `[synth]` table is used; flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[arg(long, value_name = "N")]
    pub n_train: Option<usize>,
    #[arg(long, value_name = "N")]
    pub n_valid: Option<usize>,
    #[arg(long, value_name = "N")]
    pub n_test: Option<usize>,
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Mean fraction of training cells labelled -1 (uncertain).
    #[arg(long, value_name = "P")]
    pub uncertain_rate: Option<f64>,
    /// Mean P(blank | truly positive, not -1): positives the report does not mention.
    #[arg(long, value_name = "P")]
    pub miss_rate: Option<f64>,
    /// Mean P(0.0 | truly positive, mentioned, not -1).
    #[arg(long, value_name = "P")]
    pub false_negative_rate: Option<f64>,
    /// Mean P(1.0 | truly negative, not -1).
    #[arg(long, value_name = "P")]
    pub false_positive_rate: Option<f64>,
    /// Mean P(0.0 | truly negative, not -1, not flipped): explicit negations (the rest are blank).
    #[arg(long, value_name = "P")]
    pub negation_rate: Option<f64>,
    /// How strongly noise concentrates on faint cues (0 = independent of the image).
    #[arg(long, value_name = "X")]
    pub faintness_slope: Option<f64>,
}

impl SynthArgs {
    /// The resolved generator config and output folder.
    pub fn resolve(&self) -> Result<(SynthConfig, PathBuf)> {
        let base = match &self.config {
            Some(p) => Config::from_file(p)?,
            None => Config::embedded(),
        };
        let mut c = base.synth;
        let n = &mut c.noise;
        macro_rules! set {
            ($dst:expr, $src:expr) => {
                if let Some(v) = $src {
                    $dst = v;
                }
            };
        }
        set!(c.n_train, self.n_train);
        set!(c.n_valid, self.n_valid);
        set!(c.n_test, self.n_test);
        set!(c.seed, self.seed);
        set!(n.uncertain_rate, self.uncertain_rate);
        set!(n.miss_rate, self.miss_rate);
        set!(n.false_negative_rate, self.false_negative_rate);
        set!(n.false_positive_rate, self.false_positive_rate);
        set!(n.negation_rate, self.negation_rate);
        set!(n.faintness_slope, self.faintness_slope);
        c.validate()?;
        let out = self.out.clone().unwrap_or(base.data.root);
        Ok((c, out))
    }
}

pub fn run(a: &SynthArgs) -> Result<()> {
    let (cfg, out) = a.resolve()?;
    if out.join(synth::generate::DIR_NAME).exists() {
        return Err(Error::input(
            out.join(synth::generate::DIR_NAME),
            "already exists; remove it or choose another --out (the noise lab is never overwritten)",
        ));
    }
    let summary = generate(&cfg, &out)?;
    println!("{}", noise_table(&summary));
    println!("noise lab written to {}", out.join(synth::generate::DIR_NAME).display());
    Ok(())
}

/// The measured noise of the training labels per finding, as Markdown.
fn noise_table(s: &synth::SynthSummary) -> String {
    let pct = |v: Option<f64>| v.map(|x| format!("{:.1}%", 100.0 * x)).unwrap_or_else(|| "—".into());
    let mut t = String::from(
        "| Finding | true + | -1 rate | P(true + given -1) | miss | false − | false + | P(true − given blank) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for f in &s.train_noise {
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            f.finding,
            f.n_positive,
            pct(Some(f.uncertain_rate)),
            pct(f.uncertain_ppv),
            pct(f.miss_rate),
            pct(f.false_negative_rate),
            pct(f.false_positive_rate),
            pct(f.blank_npv)
        ));
    }
    t
}

fn generate(cfg: &SynthConfig, out: &std::path::Path) -> Result<synth::SynthSummary> {
    let bar = bar(cfg);
    let tick = || bar.inc(1);
    let s = synth::generate::generate(cfg, out, &tick)?;
    bar.finish_and_clear();
    Ok(s)
}

fn bar(cfg: &SynthConfig) -> ProgressBar {
    let b = ProgressBar::new((cfg.n_train + cfg.n_valid + cfg.n_test) as u64);
    b.set_style(
        ProgressStyle::with_template("noise lab [{bar:30}] {pos}/{len} images (ETA {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b
}

/// Generates the noise lab at `cfg.data.root` when the config asks for it (`data.synth_if_missing`,
/// CheXpert format, no `--csv`) and no dataset is there yet. An existing dataset is used as it
/// is (`noisycxr synth` regenerates one).
pub fn ensure_dataset(cfg: &Config) -> Result<()> {
    if !cfg.data.synth_if_missing
        || cfg.data.csv.is_some()
        || cfg.data.format != DatasetFormat::Chexpert
        || crate::data::chexpert::Layout::locate(&cfg.data.root).is_ok()
    {
        return Ok(());
    }
    let b = bar(&cfg.synth);
    let tick = || b.inc(1);
    let e = synth::ensure(&cfg.synth, &cfg.data.root, &tick)?;
    b.finish_and_clear();
    if let Ensured::Generated(layout, _) = e {
        eprintln!("generated the noise lab at {}", layout.dir.display());
    }
    Ok(())
}
