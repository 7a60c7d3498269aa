//! Training-step throughput of a preset (`noisycxr bench train`): forward + backward +
//! AdamW step on random inputs, timed per phase. `tools/bench_torch.py` measures the same
//! step for the timm / torchvision reference so the two can be compared in one run.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::Rng;
use serde::Serialize;

use super::presets::{build, ModelConfig};
use super::vars::ModelVars;
use crate::error::{Error, Result};
use crate::rng::{keyed, Stream};

/// Timings of [`bench_train`] (medians over the timed steps).
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub preset: String,
    pub batch: usize,
    pub size: usize,
    pub in_chans: usize,
    pub params: usize,
    pub steps: usize,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
    pub step_ms: f64,
    pub img_per_s: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// Runs `warmup + steps` training steps of `cfg` at `batch` × `in_chans` × `size²` (random
/// inputs and targets, BCE-with-logits loss, AdamW lr 1e-4) and reports median phase times.
pub fn bench_train(
    cfg: &ModelConfig,
    batch: usize,
    steps: usize,
    warmup: usize,
    dtype: DType,
    device: &Device,
) -> Result<BenchResult> {
    if batch < 2 || steps == 0 {
        return Err(Error::Usage(
            "bench: need --batch >= 2 and --steps >= 1".into(),
        ));
    }
    let vars = ModelVars::new(0, dtype, device);
    let model = build(cfg, &vars)?;
    let size = cfg.img_size()?;
    let c = cfg.in_chans()?;
    let mut rng = keyed(0, Stream::Synth, 0, 0);
    let xs: Vec<f32> = (0..batch * c * size * size)
        .map(|_| rng.random_range(-1.0..1.0f32))
        .collect();
    let x = Tensor::from_vec(xs, (batch, c, size, size), device)?.to_dtype(dtype)?;
    let ys: Vec<f32> = (0..batch * cfg.num_classes)
        .map(|_| if rng.random::<f32>() < 0.3 { 1.0 } else { 0.0 })
        .collect();
    let y = Tensor::from_vec(ys, (batch, cfg.num_classes), device)?;
    let mut opt = AdamW::new(
        vars.params.all_vars(),
        ParamsAdamW {
            lr: 1e-4,
            ..Default::default()
        },
    )?;
    let (mut f, mut b, mut o, mut s) = (vec![], vec![], vec![], vec![]);
    for i in 0..warmup + steps {
        let t0 = Instant::now();
        let logits = model.forward(&x, true)?.to_dtype(DType::F32)?;
        // Stable BCE with logits: max(z, 0) - z·y + log(1 + exp(-|z|)).
        let loss = ((logits.relu()? - (&logits * &y)?)?
            + logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?
        .mean_all()?;
        let _ = loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        if device.is_cuda() {
            device.synchronize()?;
        }
        let t2 = Instant::now();
        opt.step(&grads)?;
        device.synchronize()?;
        let t3 = Instant::now();
        if i >= warmup {
            f.push((t1 - t0).as_secs_f64() * 1e3);
            b.push((t2 - t1).as_secs_f64() * 1e3);
            o.push((t3 - t2).as_secs_f64() * 1e3);
            s.push((t3 - t0).as_secs_f64() * 1e3);
        }
    }
    let step_ms = median(&mut s);
    Ok(BenchResult {
        preset: cfg.preset.clone(),
        batch,
        size,
        in_chans: c,
        params: vars.num_params(),
        steps,
        forward_ms: median(&mut f),
        backward_ms: median(&mut b),
        optimizer_ms: median(&mut o),
        step_ms,
        img_per_s: batch as f64 * 1e3 / step_ms,
    })
}

/// Runs `tools/bench_torch.py` (the PyTorch reference of [`bench_train`]) with `python` and
/// returns its JSON line. `threads` should match candle's (`CANDLE_NUM_THREADS`, default: the
/// physical cores).
pub fn torch_reference(
    python: &std::path::Path,
    script: &std::path::Path,
    cfg: &ModelConfig,
    batch: usize,
    steps: usize,
    threads: usize,
) -> Result<serde_json::Value> {
    let out = std::process::Command::new(python)
        .arg(script)
        .args(["--model", &cfg.preset])
        .args(["--batch", &batch.to_string()])
        .args(["--size", &cfg.img_size()?.to_string()])
        .args(["--in-chans", &cfg.in_chans()?.to_string()])
        .args(["--num-classes", &cfg.num_classes.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["--steps", &steps.to_string()])
        .output()
        .map_err(|e| Error::io(python, e))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "{} {} failed: {}",
            python.display(),
            script.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line)
        .map_err(|e| Error::Other(format!("bench_torch.py printed {line:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_runs_a_tiny_preset() -> Result<()> {
        let mut cfg = ModelConfig::new("resnet_tiny", 3);
        cfg.img_size = Some(32);
        let r = bench_train(&cfg, 2, 1, 0, DType::F32, &Device::Cpu)?;
        assert!(r.img_per_s > 0.0 && r.step_ms >= r.forward_ms);
        assert!(bench_train(&cfg, 1, 1, 0, DType::F32, &Device::Cpu).is_err());
        Ok(())
    }

    /// `cargo test --release --lib tiny_step_timing -- --ignored --nocapture`: the noise lab's
    /// setting (batch 32, 64², one channel) for each tiny preset.
    #[test]
    #[ignore = "timing report, not a check"]
    fn tiny_step_timing() -> Result<()> {
        let only = std::env::var("NOISYCXR_BENCH_PRESET").ok();
        for p in ["resnet_tiny", "vit_tiny", "hybrid_tiny"] {
            if only.as_deref().is_some_and(|o| o != p) {
                continue;
            }
            let r = bench_train(&ModelConfig::new(p, 14), 32, 5, 1, DType::F32, &Device::Cpu)?;
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        }
        Ok(())
    }

    /// `NOISYCXR_PYTHON=/root/venvs/torch/bin/python cargo test --release --lib
    /// full_step_vs_pytorch -- --ignored --nocapture`: resnet50, vit_b16 and the hybrid at
    /// 224², batch 8, ours then PyTorch's (same threads), interleaved.
    #[test]
    #[ignore = "slow benchmark (minutes), needs PyTorch + timm"]
    fn full_step_vs_pytorch() -> Result<()> {
        let python = std::env::var("NOISYCXR_PYTHON").unwrap_or_else(|_| "python3".into());
        let script =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/bench_torch.py");
        let threads = candle_core::utils::get_num_threads();
        let steps: usize = std::env::var("NOISYCXR_BENCH_STEPS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3);
        let only = std::env::var("NOISYCXR_BENCH_PRESET").ok();
        for p in ["resnet50", "vit_b16", "hybrid_r50_vit_b16"] {
            if only.as_deref().is_some_and(|o| o != p) {
                continue;
            }
            let cfg = ModelConfig::new(p, 14);
            let ours = bench_train(&cfg, 8, steps, 1, DType::F32, &Device::Cpu)?;
            let theirs = torch_reference(
                std::path::Path::new(&python),
                &script,
                &cfg,
                8,
                steps,
                threads,
            )?;
            let t = theirs["img_per_s"].as_f64().unwrap_or(f64::NAN);
            println!("ours  {}", serde_json::to_string(&ours).unwrap_or_default());
            println!("torch {theirs}");
            println!("{p}: candle {:.2} img/s, PyTorch {:.2} img/s, ratio (torch / candle) {:.2}x, threads {threads}", ours.img_per_s, t, t / ours.img_per_s);
        }
        Ok(())
    }
}
