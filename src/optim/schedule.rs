//! Learning-rate schedules, as a function of the optimizer step (0-based: the rate used by the
//! first update is `lr(base, 0)`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A learning-rate schedule, written in a config as `kind = "warmup_cosine"` etc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Linear warm-up from `warmup_start · base` to `base` over `warmup_steps`, then a half
    /// cosine down to `min_lr` at `total_steps`, and `min_lr` after that. Equals PyTorch's
    /// `SequentialLR([LinearLR(start_factor=warmup_start, total_iters=warmup_steps),
    /// CosineAnnealingLR(T_max=total_steps − warmup_steps, eta_min=min_lr)],
    /// milestones=[warmup_steps])` up to `total_steps` (PyTorch's cosine then rises again).
    WarmupCosine {
        warmup_steps: u64,
        #[serde(default)]
        warmup_start: f64,
        total_steps: u64,
        #[serde(default)]
        min_lr: f64,
    },
    /// `base · gammaᵏ` with `k = ⌊step / step_size⌋` (PyTorch's `StepLR`).
    StepDecay { step_size: u64, gamma: f64 },
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::Constant
    }
}

impl Schedule {
    /// Checks every field; errors name the field.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Schedule::Constant => Ok(()),
            Schedule::WarmupCosine {
                warmup_steps,
                warmup_start,
                total_steps,
                min_lr,
            } => {
                if total_steps <= warmup_steps {
                    return Err(Error::Config(format!(
                        "schedule.total_steps = {total_steps} must exceed schedule.warmup_steps = \
                         {warmup_steps}"
                    )));
                }
                if !(0.0..=1.0).contains(&warmup_start) {
                    return Err(Error::Config(format!(
                        "schedule.warmup_start = {warmup_start}: a fraction of the base rate in [0, 1]"
                    )));
                }
                if !(min_lr >= 0.0 && min_lr.is_finite()) {
                    return Err(Error::Config(format!(
                        "schedule.min_lr = {min_lr}: must be ≥ 0"
                    )));
                }
                Ok(())
            }
            Schedule::StepDecay { step_size, gamma } => {
                if step_size == 0 {
                    return Err(Error::Config("schedule.step_size must be ≥ 1".into()));
                }
                if !(gamma > 0.0 && gamma <= 1.0) {
                    return Err(Error::Config(format!(
                        "schedule.gamma = {gamma}: must be in (0, 1], e.g. 0.1"
                    )));
                }
                Ok(())
            }
        }
    }

    /// The learning rate for optimizer step `step` given the base rate.
    pub fn lr(&self, base: f64, step: u64) -> f64 {
        match *self {
            Schedule::Constant => base,
            Schedule::WarmupCosine {
                warmup_steps,
                warmup_start,
                total_steps,
                min_lr,
            } => {
                if step < warmup_steps {
                    let f = warmup_start + (1.0 - warmup_start) * step as f64 / warmup_steps as f64;
                    base * f
                } else if step >= total_steps {
                    min_lr
                } else {
                    let t = (step - warmup_steps) as f64 / (total_steps - warmup_steps) as f64;
                    min_lr + (base - min_lr) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
                }
            }
            Schedule::StepDecay { step_size, gamma } => {
                base * gamma.powi((step / step_size) as i32)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::fixtures::Fixture;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1e-12)
    }

    #[test]
    fn schedules_match_torch_lr_scheduler() {
        let fx = Fixture::load();
        let s = &fx.schedules["warmup_cosine"];
        let sched = Schedule::WarmupCosine {
            warmup_steps: s["warmup_steps"].as_u64().unwrap(),
            warmup_start: s["warmup_start"].as_f64().unwrap(),
            total_steps: s["total_steps"].as_u64().unwrap(),
            min_lr: s["min_lr"].as_f64().unwrap(),
        };
        sched.validate().unwrap();
        let base = s["base_lr"].as_f64().unwrap();
        let want = Fixture::f64s(&s["lrs"]);
        for (t, w) in want.iter().enumerate().take(21) {
            assert!(
                close(sched.lr(base, t as u64), *w),
                "step {t}: {} vs {w}",
                sched.lr(base, t as u64)
            );
        }
        // After total_steps we hold min_lr (PyTorch's cosine climbs back).
        assert_eq!(sched.lr(base, 23), 1e-3);

        let s = &fx.schedules["cosine_no_warmup"];
        let sched = Schedule::WarmupCosine {
            warmup_steps: 0,
            warmup_start: 1.0,
            total_steps: 10,
            min_lr: 0.0,
        };
        for (t, w) in Fixture::f64s(&s["lrs"]).iter().enumerate() {
            assert!(close(sched.lr(0.1, t as u64), *w), "cosine step {t}");
        }

        let s = &fx.schedules["step"];
        let sched = Schedule::StepDecay {
            step_size: 3,
            gamma: 0.5,
        };
        for (t, w) in Fixture::f64s(&s["lrs"]).iter().enumerate() {
            assert!(close(sched.lr(0.1, t as u64), *w), "step decay step {t}");
        }
    }

    #[test]
    fn invalid_schedules_name_the_field() {
        let bad = Schedule::WarmupCosine {
            warmup_steps: 10,
            warmup_start: 0.0,
            total_steps: 10,
            min_lr: 0.0,
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("total_steps"));
        let bad = Schedule::StepDecay {
            step_size: 0,
            gamma: 0.1,
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("step_size"));
        let s: Schedule =
            toml::from_str("kind = \"warmup_cosine\"\nwarmup_steps = 2\ntotal_steps = 9").unwrap();
        assert_eq!(s.lr(1.0, 0), 0.0);
        assert!(toml::from_str::<Schedule>(
            "kind = \"step_decay\"\nstep_size = 2\ngamma = 0.5\nfoo = 1"
        )
        .is_err());
    }
}
