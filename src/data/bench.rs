//! `noisycxr bench data`: images per second per core of decode + fit + augment + normalise,
//! ours against Pillow in the same run (plain, and with `draft()` reduced-scale decoding), at
//! 1024² → `size` (NIH-like films) and 320×390 → `size` (CheXpert-small), plus the rate from the
//! preprocessed [`Cache`].
//!
//! The films are synthetic (seeded, chest-like shapes with film grain, JPEG quality 90), written
//! to a scratch folder that is removed afterwards. Pillow runs `benches/data_pillow.py` on the
//! same files; both sides use one thread, one warm-up pass and `reps` timed passes.

use rand::Rng;
use std::path::{Path, PathBuf};

use super::augment::{self, AugmentConfig};
use super::cache::Cache;
use super::image::decode::decode_jpeg_crate;
use super::image::{decode_bytes, decode_file, fit, normalize_into, Geometry};
use super::loader::{prepare_file, Source};
use super::preprocess::{Preprocess, ResizeMode};
use crate::error::{Error, Result};
use crate::rng::{keyed, Stream};

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct DataBenchOptions {
    /// Films per set.
    pub n_images: usize,
    /// Timed passes over each set (after one warm-up pass).
    pub reps: usize,
    /// Model input side.
    pub size: usize,
    /// Python with Pillow and numpy; `None` skips the Pillow columns.
    pub python: Option<PathBuf>,
    /// The Pillow script (`benches/data_pillow.py`).
    pub script: PathBuf,
    /// Scratch folder (a fresh one under the system temp dir when `None`).
    pub workdir: Option<PathBuf>,
    pub seed: u64,
}

impl Default for DataBenchOptions {
    fn default() -> Self {
        DataBenchOptions {
            n_images: 24,
            reps: 3,
            size: 224,
            python: None,
            script: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/data_pillow.py"),
            workdir: None,
            seed: 0,
        }
    }
}

/// One set's figures, images per CPU-second (per core).
#[derive(Debug, Clone, PartialEq)]
pub struct DataBenchRow {
    /// e.g. `1024x1024->224`.
    pub set: String,
    pub n_images: usize,
    /// Ours: read + decode (reduced-scale where possible) + fit + augment + normalise.
    pub ours: f64,
    /// Ours from the memory-mapped cache (augment + normalise only).
    pub ours_cached: f64,
    /// Building the cache, one thread (the first epoch's cost).
    pub cache_build: f64,
    pub pillow: Option<f64>,
    pub pillow_draft: Option<f64>,
    /// Mean |ours − ours-at-full-decode| of the fitted image, in 8-bit levels: what
    /// reduced-scale decoding changes.
    pub reduced_decode_diff: f64,
    /// JPEG decode alone at the reduced scale, in memory: our fast path
    /// (`image::jpeg_reduced`)...
    pub decode_ours: f64,
    /// ...and `jpeg-decoder`'s own DCT scaling (`Decoder::scale`), the crate baseline.
    pub decode_crate: f64,
}

/// The whole benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct DataBench {
    pub rows: Vec<DataBenchRow>,
    pub pillow_version: Option<String>,
}

impl DataBench {
    /// A Markdown table with ratios against Pillow.
    pub fn markdown(&self) -> String {
        let f = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
        let r = |a: f64, b: Option<f64>| {
            b.map(|b| format!("{:.2}x", a / b))
                .unwrap_or_else(|| "-".into())
        };
        let mut s = String::from(
            "| set | ours img/s | Pillow img/s | Pillow draft img/s | ours / Pillow | ours / draft \
             | ours cached img/s | cache build img/s | reduced-decode diff (levels) |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for x in &self.rows {
            s += &format!(
                "| {} | {:.1} | {} | {} | {} | {} | {:.1} | {:.1} | {:.2} |\n",
                x.set,
                x.ours,
                f(x.pillow),
                f(x.pillow_draft),
                r(x.ours, x.pillow),
                r(x.ours, x.pillow_draft),
                x.ours_cached,
                x.cache_build,
                x.reduced_decode_diff
            );
        }
        s += "\n| set | JPEG decode at reduced scale, ours img/s | jpeg-decoder `scale()` img/s | ours / jpeg-decoder |\n|---|---|---|---|\n";
        for x in &self.rows {
            s += &format!(
                "| {} | {:.1} | {:.1} | {:.2}x |\n",
                x.set,
                x.decode_ours,
                x.decode_crate,
                x.decode_ours / x.decode_crate
            );
        }
        s += &format!(
            "\nImages per CPU-second (one thread each, process CPU time); {} films per set; Pillow {}.\n",
            self.rows.first().map(|r| r.n_images).unwrap_or(0),
            self.pillow_version.as_deref().unwrap_or("not run")
        );
        s
    }

    /// CSV with the columns `set,ours_img_s,pillow_img_s,pillow_draft_img_s,ratio,ratio_draft,
    /// cached_img_s,cache_build_img_s,reduced_decode_diff,decode_ours_img_s,decode_crate_img_s`.
    pub fn csv(&self) -> String {
        let o = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_default();
        let mut s = String::from(
            "set,ours_img_s,pillow_img_s,pillow_draft_img_s,ratio,ratio_draft,cached_img_s,cache_build_img_s,reduced_decode_diff,decode_ours_img_s,decode_crate_img_s\n",
        );
        for x in &self.rows {
            s += &format!(
                "{},{:.3},{},{},{},{},{:.3},{:.3},{:.4},{:.3},{:.3}\n",
                x.set,
                x.ours,
                o(x.pillow),
                o(x.pillow_draft),
                o(x.pillow.map(|p| x.ours / p)),
                o(x.pillow_draft.map(|p| x.ours / p)),
                x.ours_cached,
                x.cache_build,
                x.reduced_decode_diff,
                x.decode_ours,
                x.decode_crate
            );
        }
        s
    }
}

/// A chest-like 8-bit film: body and lung fields, ribs, and Gaussian film grain (σ ≈ 3 levels).
pub fn synthetic_film(w: usize, h: usize, seed: u64, index: u64) -> Vec<u8> {
    let mut rng = keyed(seed, Stream::Synth, 0xBE_4C, index);
    let (cx, cy) = (
        w as f32 / 2.0 + rng.random_range(-0.03..0.03) * w as f32,
        h as f32 / 2.0,
    );
    let (fw, fh) = (w as f32, h as f32);
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            let (xf, yf) = (x as f32, y as f32);
            let body =
                (-(((xf - cx) / (0.42 * fw)).powi(2) + ((yf - cy) / (0.6 * fh)).powi(2))).exp();
            let lx = (xf - cx).abs() - 0.2 * fw;
            let lungs =
                (-((lx / (0.11 * fw)).powi(2) + ((yf - 0.45 * fh) / (0.25 * fh)).powi(2))).exp();
            let ribs = 0.04 * ((yf / fh * 40.0 + (xf - cx).abs() / fw * 6.0).sin()) * lungs;
            // Box–Muller grain.
            let (u1, u2): (f32, f32) = (rng.random::<f32>().max(1e-7), rng.random());
            let grain = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos() * 3.0;
            let v = (0.1 + 0.75 * body - 0.4 * lungs + ribs) * 255.0 + grain;
            out.push(v.clamp(0.0, 255.0) as u8);
        }
    }
    out
}

fn write_films(dir: &Path, w: usize, h: usize, n: usize, seed: u64) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    (0..n)
        .map(|i| {
            let path = dir.join(format!("film{i:04}.jpg"));
            let px = synthetic_film(w, h, seed, i as u64);
            let mut buf = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 90)
                .encode(&px, w as u32, h as u32, image::ExtendedColorType::L8)
                .map_err(|e| Error::image(&path, format!("JPEG encode: {e}")))?;
            std::fs::write(&path, buf).map_err(|e| Error::io(&path, e))?;
            Ok(path)
        })
        .collect()
}

/// CPU seconds used by this process so far (all threads): rates per CPU-second are rates per
/// core that other load on a shared machine barely moves (the Pillow script uses
/// `time.process_time()`, the same clock).
pub fn cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    if rc != 0 {
        return 0.0;
    }
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Images per CPU-second of `work` over `n` items: one warm-up pass, then `reps` timed passes.
fn rate(n: usize, reps: usize, mut work: impl FnMut(usize, usize) -> Result<()>) -> Result<f64> {
    for i in 0..n {
        work(0, i)?;
    }
    let t0 = cpu_seconds();
    for r in 0..reps {
        for i in 0..n {
            work(r + 1, i)?;
        }
    }
    Ok((reps * n) as f64 / (cpu_seconds() - t0).max(1e-9))
}

fn pillow(opts: &DataBenchOptions, python: &Path, dir: &Path) -> Result<(f64, f64, String)> {
    let out = std::process::Command::new(python)
        .arg(&opts.script)
        .arg("--dir")
        .arg(dir)
        .args([
            "--size",
            &opts.size.to_string(),
            "--reps",
            &opts.reps.to_string(),
        ])
        .output()
        .map_err(|e| Error::io(python, e))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "{} {} failed: {}",
            python.display(),
            opts.script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let j: serde_json::Value = serde_json::from_str(text.trim().lines().last().unwrap_or(""))
        .map_err(|e| Error::Other(format!("Pillow benchmark printed {text:?}: {e}")))?;
    let num = |k: &str| {
        j[k].as_f64()
            .ok_or_else(|| Error::Other(format!("Pillow benchmark: no {k:?} in {text:?}")))
    };
    Ok((
        num("plain")?,
        num("draft")?,
        j["pillow"].as_str().unwrap_or("?").to_string(),
    ))
}

/// Runs the benchmark (takes tens of seconds at the defaults).
pub fn run(opts: &DataBenchOptions) -> Result<DataBench> {
    if opts.n_images == 0 || opts.reps == 0 || opts.size == 0 {
        return Err(Error::Usage(
            "bench data: --n-images, --reps and --size must be at least 1".into(),
        ));
    }
    let (root, remove) = match &opts.workdir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("noisycxr-bench-data-{}", std::process::id())),
            true,
        ),
    };
    let result = run_in(opts, &root);
    if remove {
        let _ = std::fs::remove_dir_all(&root);
    }
    result
}

fn run_in(opts: &DataBenchOptions, root: &Path) -> Result<DataBench> {
    let pre = Preprocess {
        resize: ResizeMode::Crop,
        ..Preprocess::half(opts.size)
    };
    let g = Geometry::from(&pre);
    let aug = AugmentConfig::default();
    let per = pre.channels * pre.size * pre.size;
    let mut rows = Vec::new();
    let mut version = None;
    for (w, h) in [(1024usize, 1024usize), (320, 390)] {
        let set = format!("{w}x{h}->{}", opts.size);
        let dir = root.join(&set);
        let paths = write_films(&dir, w, h, opts.n_images, opts.seed)?;
        let mut buf = vec![0.0f32; per];
        let ours = rate(paths.len(), opts.reps, |r, i| {
            let img = prepare_file(&paths[i], &g)?;
            let t = aug.draw(opts.seed, r as u64, i as u64, pre.size);
            normalize_into(&augment::apply(&img, t.as_ref()), &pre, &mut buf)
        })?;
        let cache_file = root.join(format!("{set}.cache"));
        let t0 = cpu_seconds();
        Cache::build(&cache_file, &paths, g, 1)?;
        let build_cpu = (cpu_seconds() - t0).max(1e-9);
        let cache = Cache::open(&cache_file, &paths, g)?;
        let ours_cached = rate(paths.len(), opts.reps, |r, i| {
            let img = cache.prepared(i)?;
            let t = aug.draw(opts.seed, r as u64, i as u64, pre.size);
            normalize_into(&augment::apply(&img, t.as_ref()), &pre, &mut buf)
        })?;
        let bytes = paths
            .iter()
            .map(|p| std::fs::read(p).map_err(|e| Error::io(p, e)))
            .collect::<Result<Vec<_>>>()?;
        let decode_ours = rate(paths.len(), opts.reps, |_, i| {
            decode_bytes(&bytes[i], Some(&g), &paths[i]).map(drop)
        })?;
        let decode_crate = rate(paths.len(), opts.reps, |_, i| {
            decode_jpeg_crate(&bytes[i], Some(&g), &paths[i]).map(drop)
        })?;
        let mut diff = 0.0f64;
        for p in &paths {
            let reduced = prepare_file(p, &g)?.to_u8();
            let full = fit(&decode_file(p, None)?, &g)?.to_u8();
            diff += reduced
                .iter()
                .zip(&full)
                .map(|(a, b)| (*a as f64 - *b as f64).abs())
                .sum::<f64>()
                / full.len() as f64;
        }
        let (pillow, pillow_draft) = match &opts.python {
            Some(py) => {
                let (p, d, v) = pillow(opts, py, &dir)?;
                version = Some(v);
                (Some(p), Some(d))
            }
            None => (None, None),
        };
        rows.push(DataBenchRow {
            set,
            n_images: paths.len(),
            ours,
            ours_cached,
            cache_build: paths.len() as f64 / build_cpu,
            pillow,
            pillow_draft,
            reduced_decode_diff: diff / paths.len() as f64,
            decode_ours,
            decode_crate,
        });
    }
    Ok(DataBench {
        rows,
        pillow_version: version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_run_reports_every_set() {
        let tmp = tempfile::tempdir().unwrap();
        let b = run(&DataBenchOptions {
            n_images: 2,
            reps: 1,
            size: 32,
            workdir: Some(tmp.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(b.rows.len(), 2);
        assert!(b
            .rows
            .iter()
            .all(|r| r.ours > 0.0 && r.ours_cached > 0.0 && r.pillow.is_none()));
        // Reduced-scale decoding changes the fitted image by a few levels at most on average.
        assert!(b.rows.iter().all(|r| r.reduced_decode_diff < 3.0), "{b:?}");
        assert!(b.csv().starts_with("set,ours_img_s,pillow_img_s"));
        assert_eq!(b.markdown().lines().count(), 6);
    }
}
