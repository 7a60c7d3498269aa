//! `noisycxr bench train`: training-step throughput of our presets against the same timm model
//! in PyTorch, in one invocation.
//!
//! For each preset both sides build the model, AdamW, a fixed random batch and BCE-with-logits
//! over `num_classes` outputs, then step **alternately** (one of ours, one of PyTorch's), so the
//! two see the same machine load; warm-up steps are dropped and the medians of the timed steps
//! reported. PyTorch runs `benches/torch_train.py` (embedded in the binary and written to a
//! temporary file) as a child process with the same thread count as our rayon pool.
//!
//! Timings: `fwd` = forward + loss (read back), `bwd` = backward, `opt` = optimizer step, all in
//! seconds; throughput = batch / median(fwd + bwd + opt) in images per second.
//!
//! `--device cuda --precision bf16|f16` benchmarks mixed precision on the GPU: ours with `f32`
//! master weights ([`crate::optim::MixedPrecision`], which `OptimizerConfig::build` picks), PyTorch with `torch.autocast` (+
//! `GradScaler` for `f16`); both sides synchronise the device before each timestamp.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::Rng;

use crate::error::{Error, Result};
use crate::model::{build, ModelConfig, ModelVars};
use crate::optim::{params_from_varmap, AdamWConfig, Optimizer, OptimizerConfig};
use crate::train::config::Precision;

const GIB: f64 = (1u64 << 30) as f64;

/// The PyTorch side, shipped inside the binary.
const TORCH_SCRIPT: &str = include_str!("../../benches/torch_train.py");

/// What to benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainBenchOptions {
    /// Preset names (see [`crate::model::PRESETS`]).
    pub models: Vec<String>,
    pub batch_size: usize,
    /// Square input side; `None` = each preset's default (224 full, 64 tiny).
    pub image_size: Option<usize>,
    /// Input channels; `None` = each preset's default (3 full, 1 tiny).
    pub in_chans: Option<usize>,
    /// Outputs of the head.
    pub num_classes: usize,
    /// Untimed steps per side before timing (≥ 2).
    pub warmup: usize,
    /// Timed steps per side (≥ 5).
    pub steps: usize,
    /// Python with torch and timm for the PyTorch column; `None` = ours only.
    pub python: Option<PathBuf>,
    /// `cpu`, `cuda` or `cuda:N`, for both sides.
    pub device: String,
    /// `f32`, or mixed precision `bf16` / `f16` on both sides.
    pub precision: Precision,
    /// Our CPU matrix products (`high` = `bf16×3` on AMX); PyTorch keeps its default
    /// (`highest`, its fastest `f32` path on this CPU: its `high` runs oneDNN's slower `tf32`
    /// emulation here), so a `high` row is compared against PyTorch in `f32`.
    pub matmul_precision: crate::ops::sgemm::MatmulPrecision,
}

impl Default for TrainBenchOptions {
    fn default() -> Self {
        TrainBenchOptions {
            models: vec![
                "resnet50".into(),
                "vit_b16".into(),
                "hybrid_r50_vit_b16".into(),
            ],
            batch_size: 8,
            image_size: None,
            in_chans: None,
            num_classes: 14,
            warmup: 2,
            steps: 5,
            python: None,
            device: "cpu".into(),
            precision: Precision::F32,
            matmul_precision: Default::default(),
        }
    }
}

impl TrainBenchOptions {
    /// Checks every field; errors name the option.
    pub fn validate(&self) -> Result<()> {
        if self.models.is_empty() {
            return Err(Error::Usage("--models needs at least one preset".into()));
        }
        for m in &self.models {
            crate::model::presets::info(m)?;
        }
        if self.batch_size < 2 {
            return Err(Error::Usage(format!(
                "--batch-size {} must be at least 2 (BatchNorm trains on batch statistics)",
                self.batch_size
            )));
        }
        if self.warmup < 2 || self.steps < 5 {
            return Err(Error::Usage(format!(
                "need at least 2 warm-up and 5 timed steps (--warmup, --steps), got {} and {}",
                self.warmup, self.steps
            )));
        }
        if self.num_classes == 0 {
            return Err(Error::Usage("--num-classes must be at least 1".into()));
        }
        if crate::config::parse_device(&self.device)? == crate::config::DeviceSpec::Cpu {
            if let Some(why) = self.precision.cpu_unsupported() {
                return Err(Error::Usage(format!("--precision {why}")));
            }
        }
        Ok(())
    }
}

/// Applies `opts.matmul_precision` to our CPU matrix products and returns the setup label:
/// device and precision of both sides, e.g. `cpu f32`, plus what matmul precision `high` means
/// on this CPU when it was asked for, or on a GPU what runs our convolutions.
fn apply_matmul_precision(opts: &TrainBenchOptions) -> String {
    let base = format!("{} {:?}", opts.device, opts.precision).to_lowercase();
    let cpu =
        crate::config::parse_device(&opts.device).ok() == Some(crate::config::DeviceSpec::Cpu);
    let base = if cpu {
        format!("{base}; our f32 GEMM: {}", crate::ops::sgemm::cpu_gemm())
    } else {
        format!("{base}; our convolutions on {}", gpu_convolutions())
    };
    match cpu
        .then(|| crate::ops::sgemm::set_matmul_precision(opts.matmul_precision))
        .flatten()
    {
        Some(what) => format!("{base}; ours at matmul precision high: {what}"),
        None => base,
    }
}

/// What runs our convolutions on a GPU in this build.
fn gpu_convolutions() -> &'static str {
    if cfg!(feature = "cudnn") {
        "cuDNN"
    } else {
        "candle's im2col + cuBLAS (build with --features cudnn for cuDNN)"
    }
}

/// Median timings of one side for one preset.
#[derive(Debug, Clone, PartialEq)]
pub struct StepTiming {
    pub fwd_s: f64,
    pub bwd_s: f64,
    pub opt_s: f64,
    /// Median of the per-step totals (not the sum of the medians).
    pub step_s: f64,
    /// Trainable parameters.
    pub params: usize,
}

impl StepTiming {
    /// Images per second at batch size `batch`.
    pub fn img_s(&self, batch: usize) -> f64 {
        batch as f64 / self.step_s
    }

    fn from_steps(steps: &[[f64; 3]], params: usize) -> StepTiming {
        let col = |i: usize| median(steps.iter().map(|s| s[i]).collect());
        StepTiming {
            fwd_s: col(0),
            bwd_s: col(1),
            opt_s: col(2),
            step_s: median(steps.iter().map(|s| s[0] + s[1] + s[2]).collect()),
            params,
        }
    }
}

/// One preset's result.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainBenchRow {
    pub model: String,
    pub image_size: usize,
    pub in_chans: usize,
    pub ours: StepTiming,
    /// `None` when PyTorch was not run or failed (see `pytorch_note`).
    pub pytorch: Option<StepTiming>,
    pub pytorch_note: Option<String>,
}

/// The whole table.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainBenchTable {
    pub rows: Vec<TrainBenchRow>,
    pub batch_size: usize,
    /// Threads of our pool, also given to PyTorch.
    pub threads: usize,
    /// Device and precision of both sides, e.g. `cpu f32`.
    pub setup: String,
    /// `torch x / timm y / AdamW kind`, when PyTorch ran.
    pub pytorch_version: Option<String>,
}

impl TrainBenchRow {
    /// Our throughput over PyTorch's (> 1: we are faster).
    pub fn ratio(&self, batch: usize) -> Option<f64> {
        self.pytorch
            .as_ref()
            .map(|p| self.ours.img_s(batch) / p.img_s(batch))
    }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}")).unwrap_or_default()
}

impl TrainBenchTable {
    /// CSV: `model,ours_img_s,pytorch_img_s,ratio` first, then the per-phase medians in ms,
    /// parameter counts, batch, size, channels and threads. Empty cells where PyTorch did not run.
    pub fn to_csv(&self) -> String {
        let mut s = String::from(
            "model,ours_img_s,pytorch_img_s,ratio,ours_fwd_ms,ours_bwd_ms,ours_opt_ms,\
             pytorch_fwd_ms,pytorch_bwd_ms,pytorch_opt_ms,ours_params,pytorch_params,\
             batch_size,image_size,in_chans,threads\n",
        );
        let b = self.batch_size;
        for r in &self.rows {
            let p = r.pytorch.as_ref();
            s += &format!(
                "{},{:.3},{},{},{:.1},{:.1},{:.1},{},{},{},{},{},{},{},{},{}\n",
                r.model,
                r.ours.img_s(b),
                fmt_opt(p.map(|p| p.img_s(b)), 3),
                fmt_opt(r.ratio(b), 3),
                r.ours.fwd_s * 1e3,
                r.ours.bwd_s * 1e3,
                r.ours.opt_s * 1e3,
                fmt_opt(p.map(|p| p.fwd_s * 1e3), 1),
                fmt_opt(p.map(|p| p.bwd_s * 1e3), 1),
                fmt_opt(p.map(|p| p.opt_s * 1e3), 1),
                r.ours.params,
                p.map(|p| p.params.to_string()).unwrap_or_default(),
                b,
                r.image_size,
                r.in_chans,
                self.threads
            );
        }
        s
    }

    /// A Markdown table with the same numbers, plus a header line (threads, versions) and
    /// notes for rows where PyTorch did not run.
    pub fn to_markdown(&self) -> String {
        let b = self.batch_size;
        let mut s = format!(
            "training step, batch {b}, {}, {} threads (both sides); PyTorch: {}\n\n",
            self.setup,
            self.threads,
            self.pytorch_version.as_deref().unwrap_or("not run")
        );
        s += "| model | size | ours img/s | PyTorch img/s | ratio | ours fwd / bwd / opt ms | PyTorch fwd / bwd / opt ms | params ours / PyTorch |\n";
        s += "|---|---|---|---|---|---|---|---|\n";
        for r in &self.rows {
            let p = r.pytorch.as_ref();
            let phases = |t: &StepTiming| {
                format!(
                    "{:.0} / {:.0} / {:.0}",
                    t.fwd_s * 1e3,
                    t.bwd_s * 1e3,
                    t.opt_s * 1e3
                )
            };
            s += &format!(
                "| {} | {}² | {:.2} | {} | {} | {} | {} | {} / {} |\n",
                r.model,
                r.image_size,
                r.ours.img_s(b),
                fmt_opt(p.map(|p| p.img_s(b)), 2),
                fmt_opt(r.ratio(b), 2),
                phases(&r.ours),
                p.map(phases).unwrap_or_default(),
                r.ours.params,
                p.map(|p| p.params.to_string()).unwrap_or_default()
            );
        }
        for r in &self.rows {
            if let Some(n) = &r.pytorch_note {
                s += &format!("\n{}: {n}", r.model);
            }
        }
        s
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Our side of one preset: model, optimizer and a fixed batch.
struct Ours {
    model: Box<dyn crate::model::Classifier>,
    opt: Box<dyn Optimizer>,
    device: Device,
    x: Tensor,
    y: Tensor,
    params: usize,
}

impl Ours {
    #[allow(clippy::too_many_arguments)]
    fn new(
        preset: &str,
        batch: usize,
        size: usize,
        chans: usize,
        classes: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Ours> {
        let mut cfg = ModelConfig::new(preset, classes);
        cfg.img_size = Some(size);
        cfg.in_chans = Some(chans);
        let vars = ModelVars::new(0, dtype, device);
        let model = build(&cfg, &vars)?;
        let params = params_from_varmap(&vars.params, |_| true)?;
        let opt = OptimizerConfig::Adamw(AdamWConfig::default()).build(params)?;
        let mut rng = crate::rng::keyed(0, crate::rng::Stream::Synth, 8, 0);
        let xv: Vec<f32> = (0..batch * chans * size * size)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let yv: Vec<f32> = (0..batch * classes)
            .map(|_| if rng.random_bool(0.5) { 1.0 } else { 0.0 })
            .collect();
        Ok(Ours {
            model,
            opt,
            device: device.clone(),
            x: Tensor::from_vec(xv, (batch, chans, size, size), device)?,
            y: Tensor::from_vec(yv, (batch, classes), device)?,
            params: vars.num_params(),
        })
    }

    fn step(&mut self) -> Result<[f64; 3]> {
        self.device.synchronize()?;
        let t0 = Instant::now();
        let logits = self.model.forward(&self.x, true)?;
        let loss = crate::loss::bce_with_logits(&logits, &self.y, None)?.mean_all()?;
        let _ = loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let grads = self.opt.backward(&loss)?;
        self.device.synchronize()?;
        let t2 = Instant::now();
        self.opt.step(&grads, 1e-4)?;
        self.device.synchronize()?;
        let t3 = Instant::now();
        Ok([
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
        ])
    }
}

/// The PyTorch child process for one preset.
struct Torch {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    params: usize,
    version: String,
    /// Device memory PyTorch's caching allocator held after the last step (CUDA only).
    reserved: Option<f64>,
}

impl Torch {
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        python: &Path,
        script: &Path,
        preset: &str,
        batch: usize,
        size: usize,
        chans: usize,
        classes: usize,
        threads: usize,
        device: &str,
        precision: Precision,
    ) -> std::result::Result<Torch, String> {
        let amp = match precision {
            Precision::F32 => "none",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        };
        let device = match device {
            "cuda" => "cuda:0",
            d => d,
        };
        let mut child = Command::new(python)
            .arg(script)
            .args(["--preset", preset])
            .args(["--batch-size", &batch.to_string()])
            .args(["--image-size", &size.to_string()])
            .args(["--in-chans", &chans.to_string()])
            .args(["--num-classes", &classes.to_string()])
            .args(["--threads", &threads.to_string()])
            .args(["--device", device, "--amp", amp])
            .env("OMP_NUM_THREADS", threads.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("no pipes to the PyTorch process".into());
        };
        let mut t = Torch {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            params: 0,
            version: String::new(),
            reserved: None,
        };
        let ready = t.read_json()?;
        t.params = ready["params"].as_u64().unwrap_or(0) as usize;
        t.version = format!(
            "torch {} / timm {} / AdamW {}",
            ready["torch"].as_str().unwrap_or("?"),
            ready["timm"].as_str().unwrap_or("?"),
            ready["optimizer"].as_str().unwrap_or("?")
        );
        Ok(t)
    }

    fn read_json(&mut self) -> std::result::Result<serde_json::Value, String> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .map_err(|e| format!("reading from PyTorch: {e}"))?;
        if n == 0 {
            let mut err = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            let tail: Vec<&str> = err.lines().rev().take(3).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!("PyTorch exited: {}", tail.join(" | ")));
        }
        serde_json::from_str(&line).map_err(|e| format!("bad line from PyTorch {line:?}: {e}"))
    }

    fn step(&mut self) -> std::result::Result<[f64; 3], String> {
        writeln!(self.stdin, "step")
            .and_then(|_| self.stdin.flush())
            .map_err(|e| format!("writing to PyTorch: {e}"))?;
        let v = self.read_json()?;
        let f = |k: &str| v[k].as_f64().ok_or(format!("PyTorch reply lacks {k}: {v}"));
        self.reserved = v["reserved"].as_f64();
        Ok([f("fwd")?, f("bwd")?, f("opt")?])
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

/// Runs the benchmark; `log` receives one progress line per phase.
pub fn run(opts: &TrainBenchOptions, mut log: impl FnMut(&str)) -> Result<TrainBenchTable> {
    opts.validate()?;
    crate::ops::tune_allocator();
    let threads = crate::ops::num_threads();
    let device = crate::config::parse_device(&opts.device)?.device()?;
    let script = match &opts.python {
        Some(_) => {
            let p = std::env::temp_dir()
                .join(format!("noisycxr_torch_train_{}.py", std::process::id()));
            std::fs::write(&p, TORCH_SCRIPT).map_err(|e| Error::io(&p, e))?;
            Some(p)
        }
        None => None,
    };
    let mut table = TrainBenchTable {
        rows: Vec::new(),
        batch_size: opts.batch_size,
        threads,
        setup: apply_matmul_precision(opts),
        pytorch_version: None,
    };
    for preset in &opts.models {
        let info = crate::model::presets::info(preset)?;
        let size = opts.image_size.unwrap_or(info.default_size);
        let chans = opts.in_chans.unwrap_or(info.default_in_chans);
        log(&format!(
            "{preset}: building ({size}², {chans} channels, batch {})",
            opts.batch_size
        ));
        let mut ours = Ours::new(
            preset,
            opts.batch_size,
            size,
            chans,
            opts.num_classes,
            &device,
            opts.precision.dtype(),
        )?;
        let mut note = None;
        let mut torch = match (&opts.python, &script) {
            (Some(py), Some(sc)) => {
                match Torch::spawn(
                    py,
                    sc,
                    preset,
                    opts.batch_size,
                    size,
                    chans,
                    opts.num_classes,
                    threads,
                    &opts.device,
                    opts.precision,
                ) {
                    Ok(t) => {
                        table.pytorch_version = Some(t.version.clone());
                        Some(t)
                    }
                    Err(e) => {
                        note = Some(e);
                        None
                    }
                }
            }
            _ => None,
        };
        let (mut ours_steps, mut torch_steps) = (Vec::new(), Vec::new());
        for i in 0..opts.warmup + opts.steps {
            let s = ours.step()?;
            let t = match torch.as_mut().map(|t| t.step()) {
                Some(Ok(t)) => Some(t),
                Some(Err(e)) => {
                    note = Some(e);
                    torch = None;
                    None
                }
                None => None,
            };
            let phase = if i < opts.warmup { "warm-up" } else { "timed" };
            log(&format!(
                "{preset}: {phase} step {}: ours {:.2} s{}{}",
                i + 1,
                s.iter().sum::<f64>(),
                t.map(|t| format!(", PyTorch {:.2} s", t.iter().sum::<f64>()))
                    .unwrap_or_default(),
                crate::config::device_memory(&device)
                    .map(|(used, total)| format!(
                        " (GPU memory in use, all processes: {:.1} of {:.1} GiB{})",
                        used as f64 / GIB,
                        total as f64 / GIB,
                        torch
                            .as_ref()
                            .and_then(|t| t.reserved)
                            .map(|r| format!(", PyTorch reserves {:.1}", r / GIB))
                            .unwrap_or_default()
                    ))
                    .unwrap_or_default()
            ));
            if i >= opts.warmup {
                ours_steps.push(s);
                if let Some(t) = t {
                    torch_steps.push(t);
                }
            }
        }
        let pytorch = match &torch {
            Some(t) if torch_steps.len() == opts.steps => {
                Some(StepTiming::from_steps(&torch_steps, t.params))
            }
            _ => None,
        };
        drop(torch);
        table.rows.push(TrainBenchRow {
            model: preset.clone(),
            image_size: size,
            in_chans: chans,
            ours: StepTiming::from_steps(&ours_steps, ours.params),
            pytorch,
            pytorch_note: note,
        });
    }
    if let Some(p) = script {
        let _ = std::fs::remove_file(p);
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_printers() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        let t = |s: f64| StepTiming {
            fwd_s: s / 4.0,
            bwd_s: s / 2.0,
            opt_s: s / 4.0,
            step_s: s,
            params: 10,
        };
        let table = TrainBenchTable {
            rows: vec![
                TrainBenchRow {
                    model: "resnet_tiny".into(),
                    image_size: 64,
                    in_chans: 1,
                    ours: t(0.5),
                    pytorch: Some(t(1.0)),
                    pytorch_note: None,
                },
                TrainBenchRow {
                    model: "vit_tiny".into(),
                    image_size: 64,
                    in_chans: 1,
                    ours: t(0.5),
                    pytorch: None,
                    pytorch_note: Some("PyTorch exited: no module named timm".into()),
                },
            ],
            batch_size: 4,
            threads: 2,
            setup: "cpu f32".into(),
            pytorch_version: None,
        };
        let csv = table.to_csv();
        let mut lines = csv.lines();
        assert!(lines
            .next()
            .unwrap()
            .starts_with("model,ours_img_s,pytorch_img_s,ratio,"));
        // 4 images / 0.5 s = 8 img/s; PyTorch 4 / 1.0 = 4 img/s; ratio 2.
        assert!(lines
            .next()
            .unwrap()
            .starts_with("resnet_tiny,8.000,4.000,2.000,125.0,250.0,125.0,"));
        assert!(lines.next().unwrap().starts_with("vit_tiny,8.000,,,"));
        let md = table.to_markdown();
        assert!(
            md.contains("| resnet_tiny | 64² | 8.00 | 4.00 | 2.00 |"),
            "{md}"
        );
        assert!(md.contains("vit_tiny: PyTorch exited"));
    }

    #[test]
    fn tiny_bench_runs_ours_only() {
        let opts = TrainBenchOptions {
            models: vec!["resnet_tiny".into()],
            batch_size: 2,
            image_size: Some(32),
            warmup: 2,
            steps: 5,
            ..TrainBenchOptions::default()
        };
        let table = run(&opts, |_| {}).unwrap();
        assert_eq!(table.rows.len(), 1);
        let r = &table.rows[0];
        assert!(r.ours.step_s > 0.0 && r.ours.params > 0 && r.pytorch.is_none());
        let bad = TrainBenchOptions { steps: 4, ..opts };
        assert!(bad.validate().is_err());
    }
}
