//! Test-only loader of `tests/fixtures/optim/fixtures.json` (made by `make_fixtures.py` there
//! with `torch.optim`), and a helper that turns fixed gradients into a `GradStore`.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use serde_json::Value;

use super::{decays, Param};

pub(crate) struct Fixture {
    pub names: Vec<String>,
    pub shapes: BTreeMap<String, Vec<usize>>,
    pub decay: BTreeMap<String, bool>,
    pub lrs: Vec<f64>,
    pub init: BTreeMap<String, Vec<f32>>,
    /// Per step, per parameter: the gradient or `None` (no gradient that step).
    pub grads: Vec<BTreeMap<String, Option<Vec<f32>>>>,
    pub cases: serde_json::Map<String, Value>,
    pub schedules: serde_json::Map<String, Value>,
    pub clip: Value,
}

impl Fixture {
    pub fn load() -> Fixture {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/optim/fixtures.json"
        );
        let text = std::fs::read_to_string(path).expect("optim fixture");
        let v: Value = serde_json::from_str(&text).expect("optim fixture json");
        let shapes: BTreeMap<String, Vec<usize>> =
            serde_json::from_value(v["shapes"].clone()).unwrap();
        let grads = v["grads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                s.as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, g)| {
                        (
                            k.clone(),
                            if g.is_null() {
                                None
                            } else {
                                Some(Self::f32s(g))
                            },
                        )
                    })
                    .collect()
            })
            .collect();
        Fixture {
            names: shapes.keys().cloned().collect(),
            decay: serde_json::from_value(v["decay"].clone()).unwrap(),
            lrs: Self::f64s(&v["lrs"]),
            init: v["init"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, x)| (k.clone(), Self::f32s(x)))
                .collect(),
            grads,
            cases: v["cases"].as_object().unwrap().clone(),
            schedules: v["schedules"].as_object().unwrap().clone(),
            clip: v["clip"].clone(),
            shapes,
        }
    }

    pub fn f64s(v: &Value) -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    }

    pub fn f32s(v: &Value) -> Vec<f32> {
        Self::f64s(v).into_iter().map(|x| x as f32).collect()
    }

    /// Fresh parameters at the fixture's initial values, with our decay rule (checked against
    /// the groups the fixture gave PyTorch).
    pub fn params(&self, device: &Device) -> Vec<Param> {
        self.names
            .iter()
            .map(|n| {
                let t =
                    Tensor::from_slice(&self.init[n], self.shapes[n].as_slice(), device).unwrap();
                let var = Var::from_tensor(&t).unwrap();
                let decay = decays(n, var.rank());
                assert_eq!(decay, self.decay[n], "decay rule for {n}");
                Param {
                    name: n.clone(),
                    var,
                    decay,
                    mirror: None,
                }
            })
            .collect()
    }

    /// A `GradStore` holding exactly step `t`'s gradients: backward of `Σ_p sum(p ⊙ g_p)`.
    pub fn grad_store(&self, params: &[Param], t: usize) -> GradStore {
        let mut loss: Option<Tensor> = None;
        for p in params {
            let Some(g) = &self.grads[t][&p.name] else {
                continue;
            };
            let g = Tensor::from_slice(g, p.var.shape(), p.var.device())
                .unwrap()
                .to_dtype(p.var.dtype())
                .unwrap();
            let term = (p.var.as_tensor() * g).unwrap().sum_all().unwrap();
            loss = Some(match loss {
                None => term,
                Some(l) => (l + term).unwrap(),
            });
        }
        loss.unwrap().backward().unwrap()
    }

    /// Expected parameter values after step `t` of `case`.
    pub fn after(&self, case: &str, t: usize, name: &str) -> Vec<f32> {
        Self::f32s(&self.cases[case]["after"][t][name])
    }
}
