//! Seeded weight initialisation (timm / torchvision schemes) from our own RNG; candle's CPU
//! generator cannot be seeded.

use candle_core::{Device, Tensor};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::Result;
use crate::rng::{hash_str, keyed, Stream};

/// How a new variable is filled. Fans follow PyTorch: for a weight `[O, I, kh, kw]`,
/// fan-in = `I·kh·kw`, fan-out = `O·kh·kw`; for `[O, I]`, `I` and `O`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Every element equal.
    Const(f32),
    /// N(0, std²).
    Normal { std: f32 },
    /// N(0, std²) redrawn outside `[-2, 2]` (absolute bounds, as timm's `trunc_normal_`).
    TruncNormal { std: f32 },
    /// `kaiming_normal_(mode='fan_out', nonlinearity='relu')`: std = √2 / √fan_out (ResNet convs).
    KaimingNormalFanOut,
    /// `kaiming_normal_()` default (fan-in, relu gain): std = √2 / √fan_in (DenseNet convs).
    KaimingNormalFanIn,
    /// U(-bound, bound).
    Uniform { bound: f32 },
    /// PyTorch's default for `nn.Linear` / `nn.Conv2d` weights (`kaiming_uniform_(a=√5)`):
    /// U(±1/√fan_in).
    TorchDefault,
}

fn fans(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (*n, *n),
        [o, i, rest @ ..] => {
            let r: usize = rest.iter().product();
            (i * r, o * r)
        }
    }
}

impl Init {
    /// A `F32` tensor of `shape` for the variable called `key`, drawn from
    /// `keyed(seed, Stream::Init, hash_str(key), 0)`.
    pub fn tensor(&self, shape: &[usize], key: &str, seed: u64, device: &Device) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let mut rng = keyed(seed, Stream::Init, hash_str(key), 0);
        let (fan_in, fan_out) = fans(shape);
        let normal = |rng: &mut rand_chacha::ChaCha8Rng, std: f32| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    let z: f32 = StandardNormal.sample(rng);
                    z * std
                })
                .collect()
        };
        let data: Vec<f32> = match *self {
            Init::Const(v) => vec![v; n],
            Init::Normal { std } => normal(&mut rng, std),
            Init::TruncNormal { std } => (0..n)
                .map(|_| loop {
                    let z: f32 = StandardNormal.sample(&mut rng);
                    let v = z * std;
                    if (-2.0..=2.0).contains(&v) {
                        break v;
                    }
                })
                .collect(),
            Init::KaimingNormalFanOut => normal(&mut rng, (2.0 / fan_out.max(1) as f32).sqrt()),
            Init::KaimingNormalFanIn => normal(&mut rng, (2.0 / fan_in.max(1) as f32).sqrt()),
            Init::Uniform { bound } => (0..n)
                .map(|_| rng.random_range(-1.0..1.0f32) * bound)
                .collect(),
            Init::TorchDefault => {
                let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
                (0..n)
                    .map(|_| rng.random_range(-1.0..1.0f32) * bound)
                    .collect()
            }
        };
        Ok(Tensor::from_vec(data, shape, device)?)
    }
}

/// PyTorch's default bias init for a layer with `fan_in` inputs: U(±1/√fan_in).
pub fn torch_bias(fan_in: usize) -> Init {
    Init::Uniform {
        bound: 1.0 / (fan_in.max(1) as f32).sqrt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_keyed_by_seed_and_name_and_has_the_requested_spread() -> Result<()> {
        let d = Device::Cpu;
        let a = Init::KaimingNormalFanOut.tensor(&[64, 32, 3, 3], "w", 1, &d)?;
        let b = Init::KaimingNormalFanOut.tensor(&[64, 32, 3, 3], "w", 1, &d)?;
        let c = Init::KaimingNormalFanOut.tensor(&[64, 32, 3, 3], "v", 1, &d)?;
        let (a, b, c) = (
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?,
            c.flatten_all()?.to_vec1::<f32>()?,
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        // std = sqrt(2 / (64*9)) = 0.0589
        let var = a.iter().map(|x| x * x).sum::<f32>() / a.len() as f32;
        assert!((var.sqrt() - 0.0589).abs() < 0.003, "std {}", var.sqrt());
        let t = Init::TruncNormal { std: 3.0 }
            .tensor(&[1000], "t", 0, &d)?
            .to_vec1::<f32>()?;
        assert!(t.iter().all(|x| x.abs() <= 2.0));
        let u = Init::TorchDefault
            .tensor(&[10, 100], "u", 0, &d)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert!(u.iter().all(|x| x.abs() <= 0.1) && u.iter().any(|x| x.abs() > 0.09));
        Ok(())
    }
}
