//! AdamW (Loshchilov & Hutter), matching `torch.optim.AdamW` update for update, with weight
//! decay per parameter group and a fused, in-place, multi-threaded CPU `f32` kernel.
//!
//! Per parameter `p` with gradient `g`, at step `t` (counted per parameter):
//! ```text
//! p ← p · (1 − lr · wd)                      (wd = 0 for the no-decay group)
//! m ← lerp(m, g, 1 − β1);  v ← β2 · v + (1 − β2) · g²
//! p ← p − lr / (1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)
//! ```
//! On CPU `f32` this is one pass over `p, g, m, v` split over rayon's threads; candle's own
//! `AdamW` needs about a dozen separate tensor ops (≈ 1 s per step for 86 M parameters). On
//! CUDA (`--features cuda`) it is one kernel launch per parameter, which under mixed precision
//! also reads the `bf16`/`f16` gradient and writes the model's variable ([`Param::mirror`]).

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::Tensor;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::inplace::{host_f32, update_host, Buf, CHUNK};
use super::{check_unknown_keys, state_entry, step_from_tensor, step_tensor, Optimizer, Param};
use crate::error::{Error, Result};

/// AdamW hyper-parameters (PyTorch's defaults). The learning rate comes from the schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    /// Decay of the first moment, in `[0, 1)`.
    pub beta1: f64,
    /// Decay of the second moment, in `[0, 1)`.
    pub beta2: f64,
    /// Added to the denominator, > 0.
    pub eps: f64,
    /// Decoupled weight decay for the decay group, ≥ 0 (per unit learning rate).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

impl AdamWConfig {
    /// Checks every field; errors name the field.
    pub fn validate(&self) -> Result<()> {
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::Config(format!(
                    "optimizer.{name} = {b}: must be in [0, 1), e.g. 0.9 / 0.999"
                )));
            }
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return Err(Error::Config(format!(
                "optimizer.eps = {}: must be a positive number such as 1e-8",
                self.eps
            )));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(Error::Config(format!(
                "optimizer.weight_decay = {}: must be ≥ 0",
                self.weight_decay
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct State {
    step: u64,
    m: Buf,
    v: Buf,
}

/// AdamW over a list of parameters.
pub struct AdamW {
    cfg: AdamWConfig,
    params: Vec<Param>,
    state: Vec<Option<State>>,
}

const PREFIX: &str = "adamw";

/// Scalars of one parameter's update, in `f32` as PyTorch applies them to `f32` tensors.
#[derive(Debug, Clone, Copy)]
struct Scalars {
    keep: f32,
    gscale: f32,
    w1: f32,
    b2: f32,
    one_minus_b2: f32,
    neg_step_size: f32,
    bc2_sqrt: f32,
    eps: f32,
}

/// `torch.lerp(a, b, w)`, with its two branches for accuracy.
#[inline(always)]
fn lerp(a: f32, b: f32, w: f32) -> f32 {
    if w.abs() < 0.5 {
        a + w * (b - a)
    } else {
        b - (b - a) * (1.0 - w)
    }
}

crate::ops::simd::vectorised! {
    /// One AdamW update of a slice (PyTorch's `_single_tensor_adamw` order of operations).
    fn kernel(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: Scalars) {
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = g * k.gscale;
            *p *= k.keep;
            *m = lerp(*m, g, k.w1);
            *v = *v * k.b2 + k.one_minus_b2 * g * g;
            let denom = v.sqrt() / k.bc2_sqrt + k.eps;
            *p += k.neg_step_size * (*m / denom);
        }
    }
}

/// Whether our fused CUDA kernel takes this update: an `f32` master on a CUDA device whose
/// gradient is `f32`, `bf16` or `f16` and, if it has a mirror, in the mirror's dtype.
#[cfg(feature = "cuda")]
fn cuda_fused(param: &Param, g: &Tensor) -> bool {
    let p = &param.var;
    p.device().is_cuda()
        && p.dtype() == candle_core::DType::F32
        && p.is_contiguous()
        && crate::ops::cuda::supported(g)
        && param
            .mirror
            .as_ref()
            .is_none_or(|m| m.dtype() == g.dtype() && m.is_contiguous())
}

#[cfg(feature = "cuda")]
impl From<Scalars> for crate::ops::cuda::AdamWScalars {
    fn from(k: Scalars) -> Self {
        crate::ops::cuda::AdamWScalars {
            keep: k.keep,
            gscale: k.gscale,
            w1: k.w1,
            b2: k.b2,
            one_minus_b2: k.one_minus_b2,
            neg_step_size: k.neg_step_size,
            bc2_sqrt: k.bc2_sqrt,
            eps: k.eps,
        }
    }
}

impl AdamW {
    /// An optimizer over `params` (see [`super::params_from_varmap`]).
    pub fn new(params: Vec<Param>, cfg: AdamWConfig) -> Result<Self> {
        cfg.validate()?;
        let state = vec![None; params.len()];
        Ok(AdamW { cfg, params, state })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }
}

impl Optimizer for AdamW {
    fn step_scaled(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        let c = &self.cfg;
        for (param, state) in self.params.iter().zip(self.state.iter_mut()) {
            let Some(g) = param.grad_raw(grads, "adamw")? else {
                continue;
            };
            if state.is_none() {
                *state = Some(State {
                    step: 0,
                    m: Buf::zeros(&param.var)?,
                    v: Buf::zeros(&param.var)?,
                });
            }
            let Some(st) = state.as_mut() else {
                continue;
            };
            st.step += 1;
            let wd = if param.decay { c.weight_decay } else { 0.0 };
            let bc1 = 1.0 - c.beta1.powi(st.step as i32);
            let bc2 = 1.0 - c.beta2.powi(st.step as i32);
            let step_size = lr / bc1;
            let bc2_sqrt = bc2.sqrt();
            let k = Scalars {
                keep: (1.0 - lr * wd) as f32,
                gscale: grad_scale as f32,
                w1: (1.0 - c.beta1) as f32,
                b2: c.beta2 as f32,
                one_minus_b2: (1.0 - c.beta2) as f32,
                neg_step_size: -step_size as f32,
                bc2_sqrt: bc2_sqrt as f32,
                eps: c.eps as f32,
            };
            #[cfg(feature = "cuda")]
            if cuda_fused(param, g) {
                let (m, v) = (st.m.dev(&param.var)?, st.v.dev(&param.var)?);
                let mirror = param.mirror.as_ref().map(|m| m.as_tensor());
                crate::ops::cuda::adamw_update(param.var.as_tensor(), g, &m, &v, mirror, k.into())?;
                continue;
            }
            if host_f32(&param.var) {
                let m = st.m.host_mut("adamw exp_avg")?;
                let v = match &mut st.v {
                    Buf::Host(v) => v.as_mut_slice(),
                    Buf::Dev(_) => {
                        return Err(Error::Other("adamw: exp_avg_sq not on host".into()))
                    }
                };
                update_host(&param.var, g, |p, g| {
                    p.par_chunks_mut(CHUNK)
                        .zip(g.par_chunks(CHUNK))
                        .zip(m.par_chunks_mut(CHUNK))
                        .zip(v.par_chunks_mut(CHUNK))
                        .for_each(|(((p, g), m), v)| kernel(p, g, m, v, k));
                    Ok(())
                })?;
            } else {
                let g = g.to_dtype(param.var.dtype())?;
                let g = if grad_scale != 1.0 {
                    g.affine(grad_scale, 0.0)?
                } else {
                    g.clone()
                };
                let p = param.var.as_tensor();
                let p = if wd != 0.0 {
                    p.affine(1.0 - lr * wd, 0.0)?
                } else {
                    p.copy()?
                };
                let m = (st.m.dev(&param.var)?.affine(c.beta1, 0.0)?
                    + g.affine(1.0 - c.beta1, 0.0)?)?;
                let v = (st.v.dev(&param.var)?.affine(c.beta2, 0.0)?
                    + g.sqr()?.affine(1.0 - c.beta2, 0.0)?)?;
                let denom = v.sqrt()?.affine(1.0 / bc2_sqrt, c.eps)?;
                let next = (p + m.div(&denom)?.affine(-step_size, 0.0)?)?;
                param.var.set(&next)?;
                st.m = Buf::Dev(m);
                st.v = Buf::Dev(v);
            }
            param.sync_mirror()?;
        }
        Ok(())
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (param, st) in self.params.iter().zip(&self.state) {
            if let Some(st) = st {
                let n = &param.name;
                out.push((format!("{PREFIX}.{n}.step"), step_tensor(st.step)?));
                out.push((format!("{PREFIX}.{n}.exp_avg"), st.m.to_tensor(&param.var)?));
                out.push((
                    format!("{PREFIX}.{n}.exp_avg_sq"),
                    st.v.to_tensor(&param.var)?,
                ));
            }
        }
        Ok(out)
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let buffers = ["step", "exp_avg", "exp_avg_sq"];
        check_unknown_keys(state, PREFIX, &self.params, &buffers)?;
        for (param, st) in self.params.iter().zip(self.state.iter_mut()) {
            let step = state_entry(state, PREFIX, param, "step")?;
            let m = state_entry(state, PREFIX, param, "exp_avg")?;
            let v = state_entry(state, PREFIX, param, "exp_avg_sq")?;
            *st = match (step, m, v) {
                (None, None, None) => None,
                (Some(s), Some(m), Some(v)) => Some(State {
                    step: step_from_tensor(&format!("{PREFIX}.{}.step", param.name), s)?,
                    m: Buf::copy_of(&param.var, m)?,
                    v: Buf::copy_of(&param.var, v)?,
                }),
                _ => {
                    return Err(Error::Other(format!(
                        "optimizer state for {} is incomplete: need {PREFIX}.{0}.step, \
                         .exp_avg and .exp_avg_sq together",
                        param.name
                    )))
                }
            };
        }
        Ok(())
    }

    fn params(&self) -> &[Param] {
        &self.params
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::fixtures::Fixture;
    use candle_core::{DType, Device, Var};

    fn cfg(fx: &Fixture, case: &str) -> AdamWConfig {
        serde_json::from_value(fx.cases[case]["cfg"].clone()).unwrap()
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 2e-6 * w.abs().max(1.0),
                "{what}[{i}]: {g} vs torch {w}"
            );
        }
    }

    fn values(p: &Param) -> Vec<f32> {
        p.var
            .as_tensor()
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Five steps with varying learning rates, two decay groups and a parameter that misses a
    /// gradient at step 2, against `torch.optim.AdamW` (fixture made by make_fixtures.py).
    fn run_case(case: &str, device_dtype: Option<DType>) {
        run_case_on(case, device_dtype, &Device::Cpu)
    }

    fn run_case_on(case: &str, device_dtype: Option<DType>, device: &Device) {
        let fx = Fixture::load();
        let mut params = fx.params(device);
        if let Some(dt) = device_dtype {
            // Force the candle-ops path: a non-f32 parameter.
            for p in params.iter_mut() {
                p.var = Var::from_tensor(&p.var.as_tensor().to_dtype(dt).unwrap()).unwrap();
            }
        }
        let mut opt = AdamW::new(params.clone(), cfg(&fx, case)).unwrap();
        for t in 0..fx.lrs.len() {
            let grads = fx.grad_store(&params, t);
            opt.step(&grads, fx.lrs[t]).unwrap();
            for p in &params {
                assert_close(
                    &values(p),
                    &fx.after(case, t, &p.name),
                    &format!("{case} step {t} {}", p.name),
                );
            }
        }
    }

    /// On the candle-ops path (the GPU's) the moments are tensors kept from step to step; made
    /// from a gradient that still tracked its graph, they chained every step's graph to the
    /// next (11 GB more per ResNet-50 step on CUDA). After real backward passes through a
    /// variable input, no state tensor may track an op.
    #[test]
    fn state_from_real_gradients_keeps_no_graph() {
        let x = Var::from_tensor(
            &Tensor::arange(0f64, 6.0, &Device::Cpu)
                .unwrap()
                .reshape((2, 3))
                .unwrap(),
        )
        .unwrap();
        let w = Var::from_tensor(&Tensor::ones((3, 2), DType::F64, &Device::Cpu).unwrap()).unwrap();
        let params = vec![Param {
            name: "w".into(),
            var: w.clone(),
            decay: true,
            mirror: None,
        }];
        let mut opt = AdamW::new(params, AdamWConfig::default()).unwrap();
        for _ in 0..2 {
            let loss = x
                .matmul(w.as_tensor())
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            let grads = loss.backward().unwrap();
            opt.step(&grads, 1e-3).unwrap();
        }
        for (name, t) in opt.state().unwrap() {
            assert!(!t.track_op(), "optimizer state {name} tracks an op graph");
        }
    }

    #[test]
    fn fused_cpu_path_matches_torch_adamw() {
        run_case("adamw", None);
        run_case("adamw_b2", None);
    }

    /// The fused CUDA kernel (GPU machines only: `--features cuda`, skipped without a device).
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_fused_path_matches_torch_adamw() {
        let Some(dev) = crate::ops::testutil::gpu() else {
            return;
        };
        run_case_on("adamw", None, &dev);
        run_case_on("adamw_b2", None, &dev);
    }

    #[test]
    fn candle_ops_path_matches_torch_adamw() {
        run_case("adamw", Some(DType::F64));
    }

    #[test]
    fn state_round_trip_resumes_exactly() {
        let fx = Fixture::load();
        let c = cfg(&fx, "adamw");
        let a = fx.params(&Device::Cpu);
        let mut opt_a = AdamW::new(a.clone(), c.clone()).unwrap();
        for t in 0..2 {
            opt_a.step(&fx.grad_store(&a, t), fx.lrs[t]).unwrap();
        }
        let state: HashMap<String, Tensor> = opt_a.state().unwrap().into_iter().collect();
        assert_eq!(state.len(), 3 * a.len());
        // A second model at the same weights, resumed from the exported state.
        let b = fx.params(&Device::Cpu);
        for (pa, pb) in a.iter().zip(&b) {
            pb.var.set(pa.var.as_tensor()).unwrap();
        }
        let mut opt_b = AdamW::new(b.clone(), c).unwrap();
        opt_b.load_state(&state).unwrap();
        for t in 2..fx.lrs.len() {
            opt_a.step(&fx.grad_store(&a, t), fx.lrs[t]).unwrap();
            opt_b.step(&fx.grad_store(&b, t), fx.lrs[t]).unwrap();
        }
        for (pa, pb) in a.iter().zip(&b) {
            assert_eq!(values(pa), values(pb), "{}", pa.name);
            assert_close(
                &values(pb),
                &fx.after("adamw", fx.lrs.len() - 1, &pb.name),
                &pb.name,
            );
        }
        // A state of another model is refused with the key named.
        let mut bad = state.clone();
        let t = bad.remove("adamw.pos_embed.exp_avg").unwrap();
        bad.insert("adamw.head.weight.exp_avg".into(), t);
        let err = opt_b.load_state(&bad).unwrap_err().to_string();
        assert!(err.contains("adamw.head.weight.exp_avg"), "{err}");
    }

    #[test]
    fn grad_scale_equals_scaled_gradients() {
        // step_scaled(g, s) must equal step(s·g): compare against a run on pre-scaled grads.
        let fx = Fixture::load();
        let c = cfg(&fx, "adamw");
        let a = fx.params(&Device::Cpu);
        let b = fx.params(&Device::Cpu);
        let mut oa = AdamW::new(a.clone(), c.clone()).unwrap();
        let mut ob = AdamW::new(b.clone(), c).unwrap();
        let ga = fx.grad_store(&a, 0);
        let mut gb = fx.grad_store(&b, 0);
        for p in &b {
            let g = gb
                .get(p.var.as_tensor())
                .unwrap()
                .affine(0.25, 0.0)
                .unwrap();
            gb.insert(p.var.as_tensor(), g);
        }
        oa.step_scaled(&ga, 1e-2, 0.25).unwrap();
        ob.step(&gb, 1e-2).unwrap();
        for (pa, pb) in a.iter().zip(&b) {
            assert_eq!(values(pa), values(pb));
        }
    }
}
