//! [`ModelVars`]: where a model's variables live, and [`Vb`], the path builder models use to
//! create them under their checkpoint key names.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use super::init::Init;
use crate::error::{Error, Result};

/// The variables of one model.
///
/// - `params`: trainable tensors (weights, biases, tokens, position embeddings), in the model's
///   dtype; give `params.all_vars()` to the optimizer.
/// - `buffers`: BatchNorm running statistics (`running_mean`, `running_var`), always `F32`;
///   updated by training-mode forwards, saved in checkpoints, never trained.
///
/// Initial values come from our seeded RNG: each variable draws from
/// `rng::keyed(seed, Stream::Init, hash_str(full_name), 0)`, so a value depends only on the seed
/// and its name, not on construction order.
#[derive(Clone)]
pub struct ModelVars {
    pub params: VarMap,
    pub buffers: VarMap,
    seed: u64,
    dtype: DType,
    device: Device,
}

impl ModelVars {
    /// An empty store; models built on it create their variables in `dtype` on `device`.
    pub fn new(seed: u64, dtype: DType, device: &Device) -> Self {
        ModelVars {
            params: VarMap::new(),
            buffers: VarMap::new(),
            seed,
            dtype,
            device: device.clone(),
        }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A builder at the root of the key namespace.
    pub fn root(&self) -> Vb<'_> {
        Vb {
            vars: self,
            prefix: String::new(),
        }
    }

    /// Trainable variables, sorted by name (stable order for optimizers and tests).
    pub fn trainable(&self) -> Vec<(String, Var)> {
        sorted(&self.params)
    }

    /// Trainable variables whose name starts with `prefix` (e.g. the head for head-only
    /// retraining), sorted by name.
    pub fn trainable_under(&self, prefix: &str) -> Vec<(String, Var)> {
        sorted(&self.params)
            .into_iter()
            .filter(|(k, _)| k == prefix || k.starts_with(&format!("{prefix}.")))
            .collect()
    }

    /// Buffers, sorted by name.
    pub fn buffers(&self) -> Vec<(String, Var)> {
        sorted(&self.buffers)
    }

    /// Every variable (params then buffers) by name, e.g. to save.
    pub fn named_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (k, v) in self.trainable().into_iter().chain(self.buffers()) {
            out.insert(k, v.as_tensor().clone());
        }
        out
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.trainable().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The variable called `name` in either map.
    pub fn get(&self, name: &str) -> Option<Var> {
        let p = lock(&self.params).get(name).cloned();
        p.or_else(|| lock(&self.buffers).get(name).cloned())
    }

    /// Whether `name` is a buffer (not trainable).
    pub fn is_buffer(&self, name: &str) -> bool {
        lock(&self.buffers).contains_key(name)
    }
}

fn lock(m: &VarMap) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Var>> {
    // A poisoned lock only means another thread panicked mid-update; the map is still usable.
    m.data().lock().unwrap_or_else(|e| e.into_inner())
}

fn sorted(m: &VarMap) -> Vec<(String, Var)> {
    let mut v: Vec<(String, Var)> = lock(m)
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Creates variables under a key prefix (`vb.pp("layer1").pp("0")` → `layer1.0.*`).
#[derive(Clone)]
pub struct Vb<'a> {
    vars: &'a ModelVars,
    prefix: String,
}

impl<'a> Vb<'a> {
    /// A child builder: `prefix.name`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Vb<'a> {
        Vb {
            vars: self.vars,
            prefix: self.path(&name.to_string()),
        }
    }

    /// Full key of `name` under this prefix.
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn dtype(&self) -> DType {
        self.vars.dtype
    }

    pub fn device(&self) -> &Device {
        &self.vars.device
    }

    pub fn seed(&self) -> u64 {
        self.vars.seed
    }

    /// A trainable variable of `shape` in the store's dtype, created with `init` unless the
    /// store already holds one of that name (then its shape must match).
    pub fn param(&self, shape: &[usize], name: &str, init: Init) -> Result<Tensor> {
        let key = self.path(name);
        let mut map = lock(&self.vars.params);
        if let Some(v) = map.get(&key) {
            check_shape(&key, v, shape)?;
            return Ok(v.as_tensor().clone());
        }
        let t = init.tensor(shape, &key, self.vars.seed, &self.vars.device)?;
        let var = Var::from_tensor(&t.to_dtype(self.vars.dtype)?)?;
        let out = var.as_tensor().clone();
        map.insert(key, var);
        Ok(out)
    }

    /// A non-trainable `F32` buffer filled with `value` (or the existing one of that name).
    pub fn buffer(&self, shape: &[usize], name: &str, value: f32) -> Result<Var> {
        let key = self.path(name);
        let mut map = lock(&self.vars.buffers);
        if let Some(v) = map.get(&key) {
            check_shape(&key, v, shape)?;
            return Ok(v.clone());
        }
        let t = Tensor::full(value, shape, &self.vars.device)?;
        let var = Var::from_tensor(&t)?;
        map.insert(key, var.clone());
        Ok(var)
    }
}

fn check_shape(key: &str, v: &Var, shape: &[usize]) -> Result<()> {
    if v.dims() != shape {
        return Err(Error::Other(format!(
            "variable {key} already exists with shape {:?}, the model needs {shape:?}",
            v.dims()
        )));
    }
    Ok(())
}
