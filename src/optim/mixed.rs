//! Mixed-precision training with `f32` master weights (PyTorch AMP's recipe).
//!
//! The model's variables hold `bf16` or `f16` copies that the forward and backward passes run
//! in; [`MixedPrecision`] keeps an `f32` master of every trainable variable and an inner
//! optimizer over the masters. One step:
//!
//! 1. with `f16`, a step whose gradients hold an inf or NaN is skipped and the loss scale halved
//!    (`torch.amp.GradScaler`'s defaults: initial scale 2¹⁶, backoff 0.5, growth ×2 after 2000
//!    clean steps); otherwise the gradients are un-scaled inside the inner optimizer's single
//!    pass ([`Optimizer::step_scaled`]);
//! 2. the inner optimizer reads the half-precision gradients as `f32`, updates the masters and
//!    writes each into the model's variable, its [`Param::mirror`] — on CUDA with AdamW, all in
//!    one kernel per parameter.
//!
//! `bf16` has `f32`'s exponent range, so it needs no loss scale (scale 1, never skips).
//!
//! **State.** [`Optimizer::state`] holds the inner optimizer's state, every master
//! (`amp.master.<param>`) and the scaler (`amp.scaler` = `[scale, clean steps, skipped steps]`),
//! so a resumed run continues from the full-precision weights.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use super::{Optimizer, OptimizerConfig, Param};
use crate::error::{Error, Result};

/// `torch.amp.GradScaler(init_scale=2**16)`.
const INIT_SCALE: f64 = 65536.0;
/// `growth_interval=2000`.
const GROWTH_INTERVAL: u64 = 2000;
const MASTER_PREFIX: &str = "amp.master.";
const SCALER_KEY: &str = "amp.scaler";

/// Dynamic loss scale for `f16` (`torch.amp.GradScaler`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct LossScaler {
    scale: f64,
    /// Clean steps since the scale last changed.
    clean: u64,
    /// Steps skipped for an overflow, over the whole run.
    skipped: u64,
}

impl LossScaler {
    fn new() -> Self {
        LossScaler {
            scale: INIT_SCALE,
            clean: 0,
            skipped: 0,
        }
    }

    /// Records one step's outcome: halves the scale after an overflow, doubles it after
    /// [`GROWTH_INTERVAL`] clean steps in a row.
    fn update(&mut self, overflow: bool) {
        if overflow {
            self.scale *= 0.5;
            self.clean = 0;
            self.skipped += 1;
        } else {
            self.clean += 1;
            if self.clean == GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.clean = 0;
            }
        }
    }
}

/// An optimizer that updates `f32` masters of a half-precision model (see the module docs).
pub struct MixedPrecision {
    inner: Box<dyn Optimizer>,
    /// The model's half-precision parameters, in the order of `inner.params()`.
    model: Vec<Param>,
    /// `Some` for `f16` only.
    scaler: Option<LossScaler>,
}

impl MixedPrecision {
    /// Wraps `cfg`'s optimizer around `f32` copies of `params` (the model's `bf16`/`f16`
    /// variables; every one must have that dtype).
    pub fn new(params: Vec<Param>, cfg: &OptimizerConfig) -> Result<Self> {
        let half = match params.first().map(|p| p.var.dtype()) {
            Some(d @ (DType::BF16 | DType::F16)) => d,
            Some(d) => {
                return Err(Error::Other(format!(
                    "mixed precision: the model's parameters are {d:?}, not bf16 or f16"
                )))
            }
            None => DType::BF16,
        };
        let mut masters = Vec::with_capacity(params.len());
        for p in &params {
            if p.var.dtype() != half {
                return Err(Error::Other(format!(
                    "mixed precision: parameter {} is {:?}, the others {half:?}",
                    p.name,
                    p.var.dtype()
                )));
            }
            masters.push(Param {
                name: p.name.clone(),
                var: Var::from_tensor(&p.var.to_dtype(DType::F32)?)?,
                decay: p.decay,
                mirror: Some(p.var.clone()),
            });
        }
        Ok(MixedPrecision {
            inner: cfg.build(masters)?,
            model: params,
            scaler: (half == DType::F16).then(LossScaler::new),
        })
    }

    /// Steps skipped because an `f16` gradient overflowed.
    pub fn skipped_steps(&self) -> u64 {
        self.scaler.map_or(0, |s| s.skipped)
    }

    /// The `f32` masters, in parameter order.
    pub fn masters(&self) -> &[Param] {
        self.inner.params()
    }
}

impl Optimizer for MixedPrecision {
    fn step_scaled(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        // The half-precision gradients go to the inner optimizer as they are, keyed by the
        // masters: it casts them (or reads them in its fused CUDA kernel) and writes the new
        // masters back into the model's variables, the masters' mirrors.
        let mut gm = GradStore::default();
        let mut present = Vec::new();
        for (p, m) in self.model.iter().zip(self.inner.params()) {
            let Some(g) = p.grad_raw(grads, "mixed precision")? else {
                continue;
            };
            gm.insert(m.var.as_tensor(), g.clone());
            present.push(g.clone());
        }
        if let Some(scaler) = self.scaler.as_mut() {
            let overflow = any_nonfinite(&present)?;
            let scale = scaler.scale;
            scaler.update(overflow);
            if overflow {
                return Ok(());
            }
            self.inner.step_scaled(&gm, lr, grad_scale / scale)
        } else {
            self.inner.step_scaled(&gm, lr, grad_scale)
        }
    }

    fn loss_scale(&self) -> f64 {
        self.scaler.map_or(1.0, |s| s.scale)
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = self.inner.state()?;
        for m in self.inner.params() {
            out.push((
                format!("{MASTER_PREFIX}{}", m.name),
                m.var.as_tensor().copy()?,
            ));
        }
        if let Some(s) = self.scaler {
            let v = [s.scale, s.clean as f64, s.skipped as f64];
            out.push((
                SCALER_KEY.into(),
                Tensor::new(&v[..], &candle_core::Device::Cpu)?,
            ));
        }
        Ok(out)
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let mut inner = HashMap::new();
        for (k, t) in state {
            if let Some(name) = k.strip_prefix(MASTER_PREFIX) {
                let Some(i) = self.inner.params().iter().position(|m| m.name == name) else {
                    return Err(Error::Other(format!(
                        "optimizer state: master weight for unknown parameter {name}"
                    )));
                };
                let m = &self.inner.params()[i];
                if t.dims() != m.var.dims() {
                    return Err(Error::Other(format!(
                        "optimizer state: master {name} has shape {:?}, the parameter {:?}",
                        t.dims(),
                        m.var.dims()
                    )));
                }
                m.var
                    .set(&t.to_dtype(DType::F32)?.to_device(m.var.device())?)?;
                let p = &self.model[i].var;
                p.set(&m.var.to_dtype(p.dtype())?)?;
            } else if k == SCALER_KEY {
                let v = t.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                match (self.scaler.as_mut(), v.as_slice()) {
                    (Some(s), [scale, clean, skipped]) => {
                        *s = LossScaler {
                            scale: *scale,
                            clean: *clean as u64,
                            skipped: *skipped as u64,
                        }
                    }
                    (Some(_), _) => {
                        return Err(Error::Other(format!(
                            "optimizer state: {SCALER_KEY} has {} values, expected 3",
                            v.len()
                        )))
                    }
                    // A bf16 run resumed from an f16 one keeps no scaler.
                    (None, _) => {}
                }
            } else {
                inner.insert(k.clone(), t.clone());
            }
        }
        self.inner.load_state(&inner)
    }

    fn params(&self) -> &[Param] {
        &self.model
    }
}

/// Whether any of `grads` holds an inf or NaN, with one device sync: our CUDA kernel on the
/// GPU, the sum of the squares in `f32` (inf or NaN then) elsewhere.
fn any_nonfinite(grads: &[Tensor]) -> Result<bool> {
    #[cfg(feature = "cuda")]
    if grads.iter().all(crate::ops::cuda::supported) {
        return Ok(crate::ops::cuda::any_nonfinite(grads)?);
    }
    let mut sq: Option<Tensor> = None;
    for g in grads {
        let s = g.to_dtype(DType::F32)?.sqr()?.sum_all()?;
        sq = Some(match sq {
            Some(acc) => (acc + s)?,
            None => s,
        });
    }
    Ok(match sq {
        Some(s) => !s.to_scalar::<f32>()?.is_finite(),
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{AdamWConfig, SgdConfig};
    use candle_core::Device;

    fn params(dtype: DType, values: &[f32]) -> Result<Vec<Param>> {
        let t = Tensor::new(values, &Device::Cpu)?
            .reshape((values.len(), 1))?
            .to_dtype(dtype)?;
        Ok(vec![Param {
            name: "w".into(),
            var: Var::from_tensor(&t)?,
            decay: false,
            mirror: None,
        }])
    }

    fn grads_for(p: &Param, g: &[f32]) -> Result<GradStore> {
        let mut s = GradStore::default();
        let t = Tensor::new(g, &Device::Cpu)?
            .reshape((g.len(), 1))?
            .to_dtype(p.var.dtype())?;
        s.insert(p.var.as_tensor(), t);
        Ok(s)
    }

    /// Updates far below bf16's resolution accumulate in the f32 master and reach the model
    /// once they add up (a bf16-only SGD would never move: 1 + 1e-3 rounds to 1 in bf16).
    #[test]
    fn small_updates_accumulate_in_the_master() -> Result<()> {
        let ps = params(DType::BF16, &[1.0])?;
        let sgd = OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.0,
            ..Default::default()
        });
        let mut opt = MixedPrecision::new(ps.clone(), &sgd)?;
        for _ in 0..100 {
            let g = grads_for(&ps[0], &[-1.0])?;
            opt.step(&g, 1e-3)?;
        }
        // SGD: w = 1 + 100 · 1e-3 = 1.1 in f32; bf16(1.1) = 1.1015625.
        let master = opt.masters()[0].var.to_vec2::<f32>()?[0][0];
        assert!((master - 1.1).abs() < 1e-5, "master {master}");
        let model = ps[0].var.to_dtype(DType::F32)?.to_vec2::<f32>()?[0][0];
        assert_eq!(model, 1.1015625);
        assert_eq!(opt.loss_scale(), 1.0);
        Ok(())
    }

    /// f16: an overflowing gradient skips the step and halves the scale; a finite one is
    /// un-scaled by the current scale before the update.
    #[test]
    fn f16_scaler_skips_overflow_and_unscales() -> Result<()> {
        let ps = params(DType::F16, &[0.5, 0.25])?;
        let sgd = OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.0,
            ..Default::default()
        });
        let mut opt = MixedPrecision::new(ps.clone(), &sgd)?;
        assert_eq!(opt.loss_scale(), 65536.0);
        opt.step(&grads_for(&ps[0], &[f32::INFINITY, 1.0])?, 0.1)?;
        assert_eq!(opt.loss_scale(), 32768.0);
        assert_eq!(opt.skipped_steps(), 1);
        assert_eq!(opt.masters()[0].var.to_vec2::<f32>()?, [[0.5], [0.25]]);
        // Gradients as the scaled loss gives them: 32768 · [0.5, -1] (65536 would overflow f16).
        opt.step(&grads_for(&ps[0], &[16384.0, -32768.0])?, 0.1)?;
        let m = opt.masters()[0].var.to_vec2::<f32>()?;
        assert!(
            (m[0][0] - 0.45).abs() < 1e-6 && (m[1][0] - 0.35).abs() < 1e-6,
            "{m:?}"
        );
        assert_eq!(opt.skipped_steps(), 1);
        Ok(())
    }

    /// On CUDA (GPU machines only: `--features cuda`, skipped without a device), AdamW over
    /// `bf16` and `f16` models runs our fused kernel (half gradients in, model variables out)
    /// and the overflow check runs on the device; both must match the CPU path step for step.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_fused_mixed_adamw_matches_cpu() -> Result<()> {
        let Some(gpu) = crate::ops::testutil::gpu() else {
            return Ok(());
        };
        let cfg = OptimizerConfig::Adamw(AdamWConfig::default());
        let n = 5000;
        let init = crate::ops::testutil::random(&[n, 1], 11);
        for dt in [DType::BF16, DType::F16] {
            let on = |dev: &Device| -> Result<Vec<Param>> {
                Ok(vec![Param {
                    name: "w".into(),
                    var: Var::from_tensor(&init.to_dtype(dt)?.to_device(dev)?)?,
                    decay: true,
                    mirror: None,
                }])
            };
            let (pc, pg) = (on(&Device::Cpu)?, on(&gpu)?);
            let (mut oc, mut og) = (
                MixedPrecision::new(pc.clone(), &cfg)?,
                MixedPrecision::new(pg.clone(), &cfg)?,
            );
            for step in 0..4u64 {
                let mut g = crate::ops::testutil::random(&[n, 1], 20 + step).affine(1000.0, 0.0)?;
                if step == 1 && dt == DType::F16 {
                    // An overflow: both skip the step and halve the scale.
                    g = g.affine(1e9, 0.0)?;
                }
                let (mut sc, mut sg) = (GradStore::default(), GradStore::default());
                sc.insert(pc[0].var.as_tensor(), g.to_dtype(dt)?);
                sg.insert(pg[0].var.as_tensor(), g.to_dtype(dt)?.to_device(&gpu)?);
                oc.step(&sc, 1e-2)?;
                og.step(&sg, 1e-2)?;
                assert_eq!(oc.loss_scale(), og.loss_scale(), "{dt:?} step {step}");
                let e = crate::ops::testutil::max_rel_err(
                    og.masters()[0].var.as_tensor(),
                    oc.masters()[0].var.as_tensor(),
                );
                assert!(e < 1e-5, "{dt:?} step {step}: masters differ by {e}");
                // The model's variables: the masters rounded to the half dtype (one ulp at most
                // where the two masters round differently).
                let e =
                    crate::ops::testutil::max_rel_err(pg[0].var.as_tensor(), pc[0].var.as_tensor());
                assert!(
                    e < 1e-2,
                    "{dt:?} step {step}: model variables differ by {e}"
                );
                let master = og.masters()[0].var.to_dtype(dt)?;
                let e = crate::ops::testutil::max_rel_err(pg[0].var.as_tensor(), &master);
                assert_eq!(
                    e, 0.0,
                    "{dt:?} step {step}: the model is not its master rounded"
                );
            }
            assert_eq!(og.skipped_steps(), oc.skipped_steps());
        }
        Ok(())
    }

    /// The state round-trips masters and scaler; resuming reproduces the next step exactly.
    #[test]
    fn state_round_trips() -> Result<()> {
        let cfg = OptimizerConfig::Adamw(AdamWConfig::default());
        let ps = params(DType::F16, &[0.3, -0.7])?;
        let mut a = MixedPrecision::new(ps.clone(), &cfg)?;
        a.step(&grads_for(&ps[0], &[f32::NAN, 0.0])?, 1e-2)?;
        a.step(&grads_for(&ps[0], &[100.0, -50.0])?, 1e-2)?;
        let saved: HashMap<String, Tensor> = a.state()?.into_iter().collect();
        assert!(saved.contains_key("amp.master.w") && saved.contains_key(SCALER_KEY));

        let ps2 = params(DType::F16, &[0.0, 0.0])?;
        let mut b = MixedPrecision::new(ps2.clone(), &cfg)?;
        b.load_state(&saved)?;
        assert_eq!(b.loss_scale(), a.loss_scale());
        assert_eq!(b.skipped_steps(), 1);
        a.step(&grads_for(&ps[0], &[10.0, 20.0])?, 1e-2)?;
        b.step(&grads_for(&ps2[0], &[10.0, 20.0])?, 1e-2)?;
        assert_eq!(
            a.masters()[0].var.to_vec2::<f32>()?,
            b.masters()[0].var.to_vec2::<f32>()?
        );
        assert_eq!(
            ps[0].var.to_dtype(DType::F32)?.to_vec2::<f32>()?,
            ps2[0].var.to_dtype(DType::F32)?.to_vec2::<f32>()?
        );
        Ok(())
    }
}
