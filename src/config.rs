//! Run configuration: serde structs read from TOML (`configs/*.toml`), overridden by CLI flags,
//! validated in one place ([`Config::validate`]) and saved beside every run's outputs.
//!
//! Precedence: built-in defaults < `--config FILE` < command-line flags.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::chexpert::Filters;
use crate::error::{Error, Result};

/// Size class of a configuration: which presets shorthands like `--hybrid` resolve to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SizeClass {
    /// Tiny presets, the noise lab, CPU.
    Cpu,
    /// Full-size presets (ResNet-50, ViT-B/16, hybrid R50+ViT-B/16).
    #[default]
    Full,
}

/// Which reader a dataset needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DatasetFormat {
    /// CheXpert CSV layout (also what the noise lab writes).
    #[default]
    Chexpert,
    /// MIMIC-CXR-JPG: chexpert + metadata + split CSVs.
    Mimic,
    /// NIH ChestX-ray14: `Data_Entry_2017.csv` + split lists.
    Nih,
}

/// Where the data comes from and which rows are used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub format: DatasetFormat,
    /// Dataset root (`--data`): the folder holding `CheXpert-v1.0-small/` or the CSVs.
    pub root: PathBuf,
    /// A CSV named directly (`--csv`); overrides the root's training CSV.
    pub csv: Option<PathBuf>,
    /// Image root for `csv` (`--images`); paths in the CSV are relative to it.
    pub images: Option<PathBuf>,
    /// Training CSV name inside the dataset folder.
    pub train_csv: String,
    /// Tuning CSV name inside the dataset folder (the noise lab's `valid.csv`). When absent, a
    /// patient-level tuning split of `tune_fraction` is carved out of the training CSV.
    pub tune_csv: Option<String>,
    /// Fraction of training patients carved out for tuning when `tune_csv` is absent.
    pub tune_fraction: f64,
    /// Reported test CSV name (the noise lab's `test.csv`; CheXpert's `valid.csv`).
    pub test_csv: Option<String>,
    pub filters: Filters,
    /// Fail on the first missing/corrupt image instead of counting and skipping it.
    pub strict: bool,
    /// Generate the noise lab at `root` when it is absent (the embedded default).
    pub synth_if_missing: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            format: DatasetFormat::Chexpert,
            root: PathBuf::from("data/noiselab"),
            csv: None,
            images: None,
            train_csv: "train.csv".into(),
            tune_csv: None,
            tune_fraction: 0.1,
            test_csv: None,
            filters: Filters {
                frontal_only: true,
                projections: Vec::new(),
            },
            strict: false,
            synth_if_missing: false,
        }
    }
}

/// Image loading workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoaderConfig {
    /// Decoding threads; 0 = one per core.
    pub workers: usize,
    /// Batches decoded ahead of the consumer.
    pub prefetch: usize,
    /// Keep a memory-mapped cache of resized images so later epochs decode nothing.
    pub cache: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            workers: 0,
            prefetch: 4,
            cache: true,
        }
    }
}

/// The whole resolved configuration of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub size: SizeClass,
    /// Master seed: every random draw is keyed by it.
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Output folder of the run.
    pub out: PathBuf,
    pub data: DataConfig,
    pub loader: LoaderConfig,
    /// The noise lab generated at `data.root` when it is absent (`data.synth_if_missing`).
    pub synth: crate::data::synth::SynthConfig,
    pub model: crate::train::config::ModelSection,
    pub train: crate::train::config::TrainConfig,
    pub augment: crate::data::augment::AugmentConfig,
    /// The noisy-label techniques (all off by default).
    pub noise: crate::noise::NoiseConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            size: SizeClass::Cpu,
            seed: 0,
            device: "cpu".into(),
            out: PathBuf::from("runs/default"),
            data: DataConfig::default(),
            loader: LoaderConfig::default(),
            synth: Default::default(),
            model: Default::default(),
            train: Default::default(),
            augment: Default::default(),
            noise: Default::default(),
        }
    }
}

/// The embedded default configuration (`configs/default.toml`): the noise lab on CPU.
pub const EMBEDDED_DEFAULT: &str = include_str!("../configs/default.toml");

impl Config {
    /// The embedded default used when no `--config` is given: the noise lab, CPU, tiny presets.
    pub fn embedded() -> Config {
        Self::from_toml(EMBEDDED_DEFAULT).expect("configs/default.toml is valid (tested)")
    }

    /// Reads a TOML file; unknown keys are errors that name the key and the file.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text).map_err(|e| match e {
            Error::Config(m) => Error::input(path, m),
            other => other,
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Config> {
        toml::from_str(text).map_err(|e| Error::Config(e.to_string()))
    }

    /// The resolved configuration as TOML (what is saved beside a run).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::Config(e.to_string()))
    }

    /// Checks every field; the error names the field and the allowed values.
    pub fn validate(&self) -> Result<()> {
        if parse_device(&self.device)? == DeviceSpec::Cpu {
            if let Some(why) = self.train.precision.cpu_unsupported() {
                return Err(Error::Config(format!("train.precision = {why}")));
            }
        }
        let d = &self.data;
        if !(0.0..1.0).contains(&d.tune_fraction) {
            return Err(Error::Config(format!(
                "data.tune_fraction = {} must be in [0, 1)",
                d.tune_fraction
            )));
        }
        if d.images.is_some() && d.csv.is_none() {
            return Err(Error::Config(
                "data.images (--images) needs data.csv (--csv) as well".into(),
            ));
        }
        if self.loader.prefetch == 0 {
            return Err(Error::Config("loader.prefetch must be at least 1".into()));
        }
        self.synth.validate()?;
        self.train.validate()?;
        self.augment.validate()?;
        self.noise.validate()?;
        if !self.model.preset.is_empty() {
            crate::model::presets::info(&self.model.preset)?;
        }
        Ok(())
    }
}

/// A parsed `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<DeviceSpec> {
    match s {
        "cpu" => Ok(DeviceSpec::Cpu),
        "cuda" => Ok(DeviceSpec::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceSpec::Cuda)
            .ok_or_else(|| Error::Config(format!("device = {s:?}: use cpu, cuda or cuda:N"))),
    }
}

impl DeviceSpec {
    /// The candle device; CUDA needs a build with `--features cuda`.
    pub fn device(self) -> Result<candle_core::Device> {
        match self {
            DeviceSpec::Cpu => Ok(candle_core::Device::Cpu),
            DeviceSpec::Cuda(i) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(Error::Config(format!(
                        "device cuda:{i} requested but this binary was built without CUDA; \
                         rebuild with `cargo build --release --features cuda`"
                    )));
                }
                // cudarc loads libcuda and the CUDA libraries at run time and panics when one is
                // missing; turn that into an error that says what to install.
                let hook = std::panic::take_hook();
                std::panic::set_hook(Box::new(|_| {}));
                let made = std::panic::catch_unwind(|| candle_core::Device::new_cuda(i));
                std::panic::set_hook(hook);
                match made {
                    Ok(d) => Ok(d?),
                    Err(p) => {
                        let msg = p
                            .downcast_ref::<String>()
                            .map(String::as_str)
                            .or_else(|| p.downcast_ref::<&str>().copied())
                            .unwrap_or("unknown error");
                        let first = msg.split(" - ").next().unwrap_or(msg);
                        Err(Error::Config(format!(
                            "device cuda:{i}: {first}. Needs an NVIDIA driver (libcuda) and the \
                             CUDA 13 runtime, cuBLAS and NVRTC libraries on \
                             LD_LIBRARY_PATH (e.g. the nvidia/cu13/lib folder of a PyTorch \
                             CUDA wheel)"
                        )))
                    }
                }
            }
        }
    }
}

/// Device memory in use on a CUDA device, all processes together, and its total, in bytes
/// (`None` on the CPU or when the driver does not answer).
pub fn device_memory(device: &candle_core::Device) -> Option<(usize, usize)> {
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(d) = device {
        let (free, total) = d.cuda_stream().context().mem_get_info().ok()?;
        return Some((total - free, total));
    }
    let _ = device;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip_through_toml() {
        let c = Config::default();
        c.validate().unwrap();
        let back = Config::from_toml(&c.to_toml().unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn embedded_default_is_the_noise_lab_and_valid() {
        let c = Config::embedded();
        c.validate().unwrap();
        assert_eq!(c.size, SizeClass::Cpu);
        assert!(c.data.synth_if_missing);
        assert_eq!(c.data.tune_csv.as_deref(), Some("valid.csv"));
        assert_eq!(c.data.test_csv.as_deref(), Some("test.csv"));
    }

    #[test]
    fn shipped_configs_parse_and_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            // Pipeline files (`[[stage]]`) are checked by `pipeline::config`'s tests.
            let pipeline = std::fs::read_to_string(&p).unwrap().contains("\n[[stage]]");
            if p.extension().map(|x| x == "toml").unwrap_or(false) && !pipeline {
                Config::from_file(&p).unwrap().validate().unwrap();
            }
        }
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let e = Config::from_toml("seed = 1\n[data]\nroot = \"x\"\nfrontal = true\n").unwrap_err();
        assert!(e.to_string().contains("frontal"), "{e}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut c = Config::default();
        c.device = "gpu".into();
        assert!(c.validate().unwrap_err().to_string().contains("device"));
        let mut c = Config::default();
        c.data.tune_fraction = 1.5;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("tune_fraction"));
        assert_eq!(parse_device("cuda:1").unwrap(), DeviceSpec::Cuda(1));
    }
}
