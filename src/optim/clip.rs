//! Global-norm gradient clipping (PyTorch's `clip_grad_norm_`).
//!
//! The cheap way to clip is [`global_grad_norm`] + [`clip_factor`] + the optimizer's
//! [`super::Optimizer::step_scaled`], which folds the factor into its single pass over each
//! parameter. [`clip_grad_norm`] rewrites the gradients instead, for code that needs them.

use candle_core::backprop::GradStore;
use candle_core::{DType, Var};
use rayon::prelude::*;

use crate::error::Result;

/// `sqrt(Σ_params Σ g²)` over the gradients of `vars` present in `grads`, accumulated in `f64`.
pub fn global_grad_norm(grads: &GradStore, vars: &[&Var]) -> Result<f64> {
    let mut sum = 0f64;
    for var in vars {
        let Some(g) = grads.get(var.as_tensor()) else {
            continue;
        };
        sum += if g.device().is_cpu() && g.dtype() == DType::F32 {
            let g = g.contiguous()?;
            let (storage, layout) = g.storage_and_layout();
            let data = match &*storage {
                candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)) => {
                    match layout.contiguous_offsets() {
                        Some((a, b)) => &v[a..b],
                        None => &v[..0],
                    }
                }
                _ => &[][..],
            };
            data.par_chunks(1 << 14)
                .map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
                .sum::<f64>()
        } else {
            g.to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?
        };
    }
    Ok(sum.sqrt())
}

/// The factor PyTorch multiplies gradients by: `min(1, max_norm / (norm + 1e-6))`.
pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    (max_norm / (norm + 1e-6)).min(1.0)
}

/// Scales the gradients of `vars` so their global norm is at most `max_norm`; returns the norm
/// before clipping. Gradients are replaced by scaled copies (a gradient tensor may be shared by
/// several graph nodes, so it is never scaled in place).
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[&Var], max_norm: f64) -> Result<f64> {
    let norm = global_grad_norm(grads, vars)?;
    let f = clip_factor(norm, max_norm);
    if f < 1.0 {
        for var in vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                let scaled = g.affine(f, 0.0)?;
                grads.insert(var.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::fixtures::Fixture;
    use candle_core::Device;

    #[test]
    fn matches_torch_clip_grad_norm() {
        let fx = Fixture::load();
        let params = fx.params(&Device::Cpu);
        let mut grads = fx.grad_store(&params, 0);
        let vars: Vec<&Var> = params.iter().map(|p| &p.var).collect();
        let want = fx.clip["total_norm"].as_f64().unwrap();
        let norm =
            clip_grad_norm(&mut grads, &vars, fx.clip["max_norm"].as_f64().unwrap()).unwrap();
        assert!((norm - want).abs() < 1e-5 * want, "{norm} vs torch {want}");
        for p in &params {
            let got: Vec<f32> = grads
                .get(p.var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let exp = Fixture::f32s(&fx.clip["clipped"][&p.name]);
            for (g, w) in got.iter().zip(&exp) {
                assert!((g - w).abs() < 1e-6, "{}: {g} vs {w}", p.name);
            }
        }
        assert_eq!(clip_factor(0.5, 1.0), 1.0);
    }
}
