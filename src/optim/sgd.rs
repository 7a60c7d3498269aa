//! SGD with momentum, dampening and Nesterov, matching `torch.optim.SGD` update for update.
//! Weight decay is PyTorch's coupled L2 (`g ← g + wd · p`), off for the no-decay group.
//!
//! ```text
//! g ← g + wd · p
//! b ← g                          (first step)
//! b ← μ · b + (1 − dampening) · g (later steps)
//! g ← g + μ · b  (Nesterov)   or   g ← b
//! p ← p − lr · g
//! ```
//! With `momentum = 0` there is no buffer and `p ← p − lr · g`.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::Tensor;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::inplace::{host_f32, update_host, Buf, CHUNK};
use super::{check_unknown_keys, state_entry, step_from_tensor, step_tensor, Optimizer, Param};
use crate::error::{Error, Result};

/// SGD hyper-parameters. The learning rate comes from the schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SgdConfig {
    /// Momentum factor μ in `[0, 1)`; 0 turns momentum off. Default 0.9.
    pub momentum: f64,
    /// Nesterov momentum (needs `momentum > 0` and `dampening = 0`).
    pub nesterov: bool,
    /// Dampening of the gradient added to the momentum buffer, in `[0, 1]`.
    pub dampening: f64,
    /// Coupled L2 weight decay for the decay group, ≥ 0.
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            momentum: 0.9,
            nesterov: false,
            dampening: 0.0,
            weight_decay: 1e-4,
        }
    }
}

impl SgdConfig {
    /// Checks every field; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::Config(format!(
                "optimizer.momentum = {}: must be in [0, 1), e.g. 0.9",
                self.momentum
            )));
        }
        if !(0.0..=1.0).contains(&self.dampening) {
            return Err(Error::Config(format!(
                "optimizer.dampening = {}: must be in [0, 1]",
                self.dampening
            )));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(Error::Config(format!(
                "optimizer.weight_decay = {}: must be ≥ 0",
                self.weight_decay
            )));
        }
        if self.nesterov && (self.momentum == 0.0 || self.dampening != 0.0) {
            return Err(Error::Config(format!(
                "optimizer.nesterov = true needs momentum > 0 and dampening = 0 \
                 (got momentum {}, dampening {})",
                self.momentum, self.dampening
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct State {
    step: u64,
    buf: Option<Buf>,
}

/// SGD over a list of parameters.
pub struct Sgd {
    cfg: SgdConfig,
    params: Vec<Param>,
    state: Vec<Option<State>>,
}

const PREFIX: &str = "sgd";

#[derive(Debug, Clone, Copy)]
struct Scalars {
    gscale: f32,
    wd: f32,
    mu: f32,
    keep: f32,
    nesterov: bool,
    neg_lr: f32,
}

/// One pass; `buf` is `None` without momentum, and `first` makes the buffer a copy of `g`.
fn kernel(p: &mut [f32], g: &[f32], buf: Option<&mut [f32]>, first: bool, k: Scalars) {
    let grad = |p: f32, g: f32| {
        let g = g * k.gscale;
        if k.wd != 0.0 {
            g + k.wd * p
        } else {
            g
        }
    };
    match buf {
        None => {
            for (p, &g) in p.iter_mut().zip(g) {
                *p += k.neg_lr * grad(*p, g);
            }
        }
        Some(b) => {
            for ((p, &g), b) in p.iter_mut().zip(g).zip(b.iter_mut()) {
                let d = grad(*p, g);
                *b = if first { d } else { *b * k.mu + k.keep * d };
                let d = if k.nesterov { d + k.mu * *b } else { *b };
                *p += k.neg_lr * d;
            }
        }
    }
}

impl Sgd {
    /// An optimizer over `params` (see [`super::params_from_varmap`]).
    pub fn new(params: Vec<Param>, cfg: SgdConfig) -> Result<Self> {
        cfg.validate()?;
        let state = vec![None; params.len()];
        Ok(Sgd { cfg, params, state })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &SgdConfig {
        &self.cfg
    }
}

impl Optimizer for Sgd {
    fn step_scaled(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        let c = &self.cfg;
        for (param, state) in self.params.iter().zip(self.state.iter_mut()) {
            let Some(g) = param.grad(grads, "sgd")? else {
                continue;
            };
            let st = state.get_or_insert(State { step: 0, buf: None });
            st.step += 1;
            let wd = if param.decay { c.weight_decay } else { 0.0 };
            let first = st.buf.is_none();
            if host_f32(&param.var) {
                let k = Scalars {
                    gscale: grad_scale as f32,
                    wd: wd as f32,
                    mu: c.momentum as f32,
                    keep: (1.0 - c.dampening) as f32,
                    nesterov: c.nesterov,
                    neg_lr: -lr as f32,
                };
                let buf = if c.momentum != 0.0 {
                    if first {
                        st.buf = Some(Buf::Host(vec![0.0; param.var.elem_count()]));
                    }
                    match st.buf.as_mut() {
                        Some(b) => Some(b.host_mut("sgd momentum_buffer")?),
                        None => None,
                    }
                } else {
                    None
                };
                update_host(&param.var, &g, |p, g| {
                    match buf {
                        Some(b) => p
                            .par_chunks_mut(CHUNK)
                            .zip(g.par_chunks(CHUNK))
                            .zip(b.par_chunks_mut(CHUNK))
                            .for_each(|((p, g), b)| kernel(p, g, Some(b), first, k)),
                        None => p
                            .par_chunks_mut(CHUNK)
                            .zip(g.par_chunks(CHUNK))
                            .for_each(|(p, g)| kernel(p, g, None, first, k)),
                    }
                    Ok(())
                })?;
            } else {
                let p = param.var.as_tensor();
                let mut d = if grad_scale != 1.0 {
                    g.affine(grad_scale, 0.0)?
                } else {
                    g.clone()
                };
                if wd != 0.0 {
                    d = (d + p.affine(wd, 0.0)?)?;
                }
                if c.momentum != 0.0 {
                    let b = match &st.buf {
                        None => d.copy()?,
                        Some(b) => {
                            (b.dev(&param.var)?.affine(c.momentum, 0.0)?
                                + d.affine(1.0 - c.dampening, 0.0)?)?
                        }
                    };
                    d = if c.nesterov {
                        (d + b.affine(c.momentum, 0.0)?)?
                    } else {
                        b.clone()
                    };
                    st.buf = Some(Buf::Dev(b));
                }
                let next = (p + d.affine(-lr, 0.0)?)?;
                param.var.set(&next)?;
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
                if let Some(b) = &st.buf {
                    out.push((
                        format!("{PREFIX}.{n}.momentum_buffer"),
                        b.to_tensor(&param.var)?,
                    ));
                }
            }
        }
        Ok(out)
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        check_unknown_keys(state, PREFIX, &self.params, &["step", "momentum_buffer"])?;
        for (param, st) in self.params.iter().zip(self.state.iter_mut()) {
            let step = state_entry(state, PREFIX, param, "step")?;
            let buf = state_entry(state, PREFIX, param, "momentum_buffer")?;
            *st = match (step, buf) {
                (None, None) => None,
                (Some(s), b) => Some(State {
                    step: step_from_tensor(&format!("{PREFIX}.{}.step", param.name), s)?,
                    buf: b.map(|b| Buf::copy_of(&param.var, b)).transpose()?,
                }),
                (None, Some(_)) => {
                    return Err(Error::Other(format!(
                        "optimizer state for {} has a momentum buffer but no step",
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

    /// Five steps against `torch.optim.SGD` (fixture made by make_fixtures.py).
    fn run_case(case: &str, dtype: Option<DType>) {
        let fx = Fixture::load();
        let mut params = fx.params(&Device::Cpu);
        if let Some(dt) = dtype {
            for p in params.iter_mut() {
                p.var = Var::from_tensor(&p.var.as_tensor().to_dtype(dt).unwrap()).unwrap();
            }
        }
        let c: SgdConfig = serde_json::from_value(fx.cases[case]["cfg"].clone()).unwrap();
        let mut opt = Sgd::new(params.clone(), c).unwrap();
        for t in 0..fx.lrs.len() {
            opt.step(&fx.grad_store(&params, t), fx.lrs[t]).unwrap();
            for p in &params {
                let want = fx.after(case, t, &p.name);
                for (i, (g, w)) in values(p).iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 2e-6 * w.abs().max(1.0),
                        "{case} step {t} {}[{i}]: {g} vs {w}",
                        p.name
                    );
                }
            }
        }
    }

    #[test]
    fn fused_cpu_path_matches_torch_sgd() {
        run_case("sgd_momentum", None);
        run_case("sgd_nesterov", None);
        run_case("sgd_dampening", None);
    }

    #[test]
    fn candle_ops_path_matches_torch_sgd() {
        run_case("sgd_nesterov", Some(DType::F64));
        run_case("sgd_dampening", Some(DType::F64));
    }

    #[test]
    fn state_round_trip_and_validation() {
        let fx = Fixture::load();
        let c: SgdConfig = serde_json::from_value(fx.cases["sgd_nesterov"]["cfg"].clone()).unwrap();
        let a = fx.params(&Device::Cpu);
        let mut oa = Sgd::new(a.clone(), c.clone()).unwrap();
        oa.step(&fx.grad_store(&a, 0), fx.lrs[0]).unwrap();
        let state: HashMap<String, Tensor> = oa.state().unwrap().into_iter().collect();
        let b = fx.params(&Device::Cpu);
        for (pa, pb) in a.iter().zip(&b) {
            pb.var.set(pa.var.as_tensor()).unwrap();
        }
        let mut ob = Sgd::new(b.clone(), c).unwrap();
        ob.load_state(&state).unwrap();
        for t in 1..fx.lrs.len() {
            oa.step(&fx.grad_store(&a, t), fx.lrs[t]).unwrap();
            ob.step(&fx.grad_store(&b, t), fx.lrs[t]).unwrap();
        }
        for (pa, pb) in a.iter().zip(&b) {
            assert_eq!(values(pa), values(pb), "{}", pa.name);
        }
        let bad = SgdConfig {
            nesterov: true,
            dampening: 0.1,
            ..SgdConfig::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("nesterov"));
    }
}
