//! Provenance written beside every run's outputs: crate version, git commit, command line, and
//! the SHA-256 of each input CSV, plus the resolved configuration as `config.toml`.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::{Error, Result};

/// Git commit the binary was built from (`git describe --always --dirty`), if known.
pub const GIT_COMMIT: Option<&str> = option_env!("NOISYCXR_GIT_COMMIT");

/// One input file and its digest.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InputFile {
    pub path: PathBuf,
    pub sha256: String,
}

/// What produced a run's outputs.
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    pub crate_version: &'static str,
    pub git_commit: Option<&'static str>,
    pub command_line: Vec<String>,
    /// The library running CPU `f32` matrix products (the system's OpenBLAS, or the gemm
    /// crate; `NOISYCXR_BLAS`): results differ between them in the last bits.
    pub cpu_gemm: String,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    pub inputs: Vec<InputFile>,
}

impl Provenance {
    /// Provenance for the current process over the given input files.
    pub fn collect(inputs: &[PathBuf]) -> Result<Provenance> {
        Ok(Provenance {
            crate_version: env!("CARGO_PKG_VERSION"),
            git_commit: GIT_COMMIT,
            command_line: std::env::args().collect(),
            cpu_gemm: crate::ops::sgemm::cpu_gemm(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            inputs: inputs
                .iter()
                .map(|p| {
                    Ok(InputFile {
                        path: p.clone(),
                        sha256: sha256_file(p)?,
                    })
                })
                .collect::<Result<_>>()?,
        })
    }
}

/// Hex SHA-256 of a file's bytes.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates `out` and writes `config.toml` (the resolved config) and `provenance.json` into it.
pub fn write_run_header(out: &Path, cfg: &Config, inputs: &[PathBuf]) -> Result<Provenance> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let p = out.join("config.toml");
    std::fs::write(&p, cfg.to_toml()?).map_err(|e| Error::io(&p, e))?;
    let prov = Provenance::collect(inputs)?;
    write_json(&out.join("provenance.json"), &prov)?;
    Ok(prov)
}

/// Writes a value as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::Other(e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_the_standard_test_vector() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc.csv");
        std::fs::write(&p, b"abc").unwrap();
        // FIPS 180-2 test vector: SHA-256("abc")
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn run_header_writes_config_and_provenance() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.csv");
        std::fs::write(&p, b"a\n1\n").unwrap();
        let out = dir.path().join("run");
        write_run_header(&out, &Config::default(), &[p]).unwrap();
        let cfg = Config::from_file(&out.join("config.toml")).unwrap();
        assert_eq!(cfg, Config::default());
        let prov: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("provenance.json")).unwrap())
                .unwrap();
        assert_eq!(prov["inputs"][0]["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(prov["crate_version"], env!("CARGO_PKG_VERSION"));
    }
}
