//! Optimizers, learning-rate schedules and gradient clipping for the trainer.
//!
//! Optimizers update the [`candle_core::Var`]s of a [`candle_nn::VarMap`] from a
//! [`candle_core::backprop::GradStore`]. On CPU `f32` each parameter is updated by one fused,
//! in-place, multi-threaded pass over its memory; other devices and dtypes use plain candle ops.
//!
//! **Weight-decay groups.** Decay is applied to a parameter unless [`decays`] says otherwise:
//! no decay for tensors of rank ≤ 1 (biases, norm scales and shifts), for any parameter whose
//! name ends in `bias` or has a dotted component containing `norm` (`bn1`, `norm1`, `gn` are
//! rank 1 anyway), and for position embeddings and special tokens (`pos_embed`,
//! `position_embeddings`, `cls_token`, `dist_token`, `reg_token`) — timm's `no_weight_decay`.
//!
//! **State.** [`Optimizer::state`] exports every moment buffer and step counter as named
//! tensors (`<kind>.<param>.<buffer>`) that go into the checkpoint; [`Optimizer::load_state`]
//! puts them back so a resumed run continues bit for bit.

pub mod adamw;
pub mod clip;
pub mod schedule;
pub mod sgd;

#[cfg(test)]
mod fixtures;
mod inplace;
pub mod mixed;

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use adamw::{AdamW, AdamWConfig};
pub use clip::{clip_factor, clip_grad_norm, global_grad_norm};
pub use mixed::MixedPrecision;
pub use schedule::Schedule;
pub use sgd::{Sgd, SgdConfig};

/// One trainable parameter: its checkpoint name, the variable, and whether weight decay applies.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
    pub decay: bool,
    /// A lower-precision copy that every update writes with the parameter's new value: under
    /// mixed precision, the model's own `bf16`/`f16` variable of this `f32` master (whose
    /// gradient, in that dtype, is what `step` receives for the master).
    pub mirror: Option<Var>,
}

impl Param {
    /// This parameter's gradient in `grads`, cast to the parameter's dtype: `None` when it has
    /// none (skipped, like PyTorch's `grad is None`), an error naming `optimizer` and the
    /// parameter when its shape differs.
    pub fn grad(&self, grads: &GradStore, optimizer: &str) -> Result<Option<Tensor>> {
        Ok(match self.grad_raw(grads, optimizer)? {
            Some(g) if g.dtype() != self.var.dtype() => Some(g.to_dtype(self.var.dtype())?),
            Some(g) => Some(g.clone()),
            None => None,
        })
    }

    /// [`Param::grad`] in the dtype it was stored in (a mirror's, under mixed precision).
    pub fn grad_raw<'a>(
        &self,
        grads: &'a GradStore,
        optimizer: &str,
    ) -> Result<Option<&'a Tensor>> {
        let Some(g) = grads.get(self.var.as_tensor()) else {
            return Ok(None);
        };
        if g.dims() != self.var.dims() {
            return Err(Error::Other(format!(
                "{optimizer}: gradient of {} has shape {:?}, the parameter {:?}",
                self.name,
                g.dims(),
                self.var.dims()
            )));
        }
        Ok(Some(g))
    }

    /// Writes the parameter's value into its [`Param::mirror`], if it has one.
    pub(crate) fn sync_mirror(&self) -> Result<()> {
        if let Some(m) = &self.mirror {
            m.set(&self.var.to_dtype(m.dtype())?)?;
        }
        Ok(())
    }
}

/// An optimizer over a fixed list of [`Param`]s.
pub trait Optimizer: Send {
    /// One update with learning rate `lr`. Parameters without a gradient in `grads` are skipped
    /// (their state does not advance), like PyTorch's `grad is None`.
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step_scaled(grads, lr, 1.0)
    }

    /// [`Optimizer::step`] with every gradient multiplied by `grad_scale` first, fused into the
    /// same pass (global-norm clipping via [`clip_factor`], or un-scaling an `f16` loss scale).
    fn step_scaled(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()>;

    /// The factor the loss is multiplied by before `backward` (`f16` mixed precision's dynamic
    /// loss scale, [`MixedPrecision`]); the gradients `step` receives carry it. 1 otherwise.
    fn loss_scale(&self) -> f64 {
        1.0
    }

    /// The gradients of `loss`, multiplied by [`Optimizer::loss_scale`] (for `step`).
    fn backward(&self, loss: &Tensor) -> Result<GradStore> {
        let scale = self.loss_scale();
        Ok(if scale == 1.0 {
            loss.backward()?
        } else {
            loss.affine(scale, 0.0)?.backward()?
        })
    }

    /// All state as named tensors, for the checkpoint.
    fn state(&self) -> Result<Vec<(String, Tensor)>>;

    /// Restores state exported by [`Optimizer::state`]. Parameters with no entry start fresh;
    /// an entry for an unknown parameter or of the wrong shape is an error.
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()>;

    /// The parameters this optimizer updates.
    fn params(&self) -> &[Param];
}

/// Which optimizer to build, as written in a config file: `kind = "adamw"` or `kind = "sgd"`
/// plus that optimizer's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerConfig {
    Adamw(AdamWConfig),
    Sgd(SgdConfig),
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::Adamw(AdamWConfig::default())
    }
}

impl OptimizerConfig {
    /// Checks every field; errors name the field.
    pub fn validate(&self) -> Result<()> {
        match self {
            OptimizerConfig::Adamw(c) => c.validate(),
            OptimizerConfig::Sgd(c) => c.validate(),
        }
    }

    /// Builds the optimizer over `params`; over `bf16`/`f16` parameters, wrapped in
    /// [`MixedPrecision`] (it keeps `f32` masters and builds this optimizer over them).
    pub fn build(&self, params: Vec<Param>) -> Result<Box<dyn Optimizer>> {
        let half = params
            .first()
            .is_some_and(|p| matches!(p.var.dtype(), DType::BF16 | DType::F16));
        if half {
            return Ok(Box::new(MixedPrecision::new(params, self)?));
        }
        Ok(match self {
            OptimizerConfig::Adamw(c) => Box::new(AdamW::new(params, c.clone())?),
            OptimizerConfig::Sgd(c) => Box::new(Sgd::new(params, c.clone())?),
        })
    }
}

/// Whether weight decay applies to a parameter of this name and rank (see the module docs).
pub fn decays(name: &str, rank: usize) -> bool {
    if rank <= 1 || name.ends_with("bias") {
        return false;
    }
    const NO_DECAY: [&str; 5] = [
        "pos_embed",
        "position_embeddings",
        "cls_token",
        "dist_token",
        "reg_token",
    ];
    let last = name.rsplit('.').next().unwrap_or(name);
    if NO_DECAY
        .iter()
        .any(|k| last.contains(k) || name.contains(k))
    {
        return false;
    }
    !name.split('.').any(|part| part.contains("norm"))
}

/// Every variable of `varmap` as a [`Param`] (decay per [`decays`]), sorted by name so the
/// order — and hence the state — is reproducible. `keep` selects which to train (e.g. only the
/// head for a head-only retrain); pass `|_| true` for all.
pub fn params_from_varmap(varmap: &VarMap, keep: impl Fn(&str) -> bool) -> Result<Vec<Param>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Other("optimizer: the VarMap lock is poisoned".into()))?;
    let mut out: Vec<Param> = data
        .iter()
        .filter(|(name, _)| keep(name))
        .map(|(name, var)| Param {
            name: name.clone(),
            var: var.clone(),
            decay: decays(name, var.rank()),
            mirror: None,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Looks up `<prefix>.<param>.<buffer>` in `state`, checking the shape.
fn state_entry<'a>(
    state: &'a HashMap<String, Tensor>,
    prefix: &str,
    param: &Param,
    buffer: &str,
) -> Result<Option<&'a Tensor>> {
    let key = format!("{prefix}.{}.{buffer}", param.name);
    match state.get(&key) {
        None => Ok(None),
        Some(t) if buffer != "step" && t.dims() != param.var.dims() => Err(Error::Other(format!(
            "optimizer state {key}: shape {:?} does not match the parameter's {:?}; \
             the checkpoint belongs to another model",
            t.dims(),
            param.var.dims()
        ))),
        Some(t) => Ok(Some(t)),
    }
}

/// Errors on keys with our prefix that name no parameter (a checkpoint of another model).
fn check_unknown_keys(
    state: &HashMap<String, Tensor>,
    prefix: &str,
    params: &[Param],
    buffers: &[&str],
) -> Result<()> {
    let known: std::collections::HashSet<String> = params
        .iter()
        .flat_map(|p| {
            buffers
                .iter()
                .map(move |b| format!("{prefix}.{}.{b}", p.name))
        })
        .collect();
    let dot = format!("{prefix}.");
    let mut unknown: Vec<&String> = state
        .keys()
        .filter(|k| k.starts_with(&dot) && !known.contains(*k))
        .collect();
    unknown.sort();
    if let Some(k) = unknown.first() {
        return Err(Error::Other(format!(
            "optimizer state has {} entries for parameters this model lacks (first: {k}); \
             was it saved from another model or with other frozen layers?",
            unknown.len()
        )));
    }
    Ok(())
}

/// A step counter as a one-element `i64` tensor.
fn step_tensor(step: u64) -> Result<Tensor> {
    Ok(Tensor::new(&[step as i64], &candle_core::Device::Cpu)?)
}

fn step_from_tensor(key: &str, t: &Tensor) -> Result<u64> {
    let v = t
        .flatten_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_vec1::<f64>()?;
    match v.as_slice() {
        [s] if *s >= 0.0 && s.fract() == 0.0 => Ok(*s as u64),
        _ => Err(Error::Other(format!(
            "optimizer state {key}: expected one non-negative integer step, got {v:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_rule_follows_timm() {
        assert!(decays("layer1.0.conv1.weight", 4));
        assert!(decays("blocks.0.attn.qkv.weight", 2));
        assert!(decays("head.fc.weight", 2));
        assert!(!decays("head.fc.bias", 1));
        assert!(!decays("layer1.0.bn1.weight", 1));
        assert!(!decays("blocks.0.norm1.weight", 1));
        assert!(!decays("pos_embed", 3));
        assert!(!decays("cls_token", 3));
        assert!(!decays("embeddings.position_embeddings", 3));
        assert!(!decays("encoder.layernorm.weight", 2)); // a norm, whatever its rank
    }

    #[test]
    fn optimizer_config_is_tagged_and_strict() {
        let c: OptimizerConfig = toml::from_str("kind = \"sgd\"\nmomentum = 0.8").unwrap();
        assert!(matches!(c, OptimizerConfig::Sgd(ref s) if s.momentum == 0.8 && !s.nesterov));
        c.validate().unwrap();
        let c: OptimizerConfig = toml::from_str("kind = \"adamw\"").unwrap();
        assert_eq!(c, OptimizerConfig::default());
        assert!(toml::from_str::<OptimizerConfig>("kind = \"adamw\"\nbeta3 = 1").is_err());
        let c: OptimizerConfig = toml::from_str("kind = \"adamw\"\nbeta1 = 1.5").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("beta1"));
    }
}
