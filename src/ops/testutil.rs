//! Helpers shared by the kernels' tests.

use candle_core::{Device, Tensor};
use rand::Rng;

/// Uniform(-1, 1) values from our seeded generator.
pub(crate) fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut r = crate::rng::keyed(seed, crate::rng::Stream::Init, 0, 0);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// `max |a − b| / max |b|`.
pub(crate) fn max_rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let a = a
        .flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = b
        .flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs() / scale))
}

/// CUDA device 0 for the GPU tests, or `None` (the test then skips) when there is no device or
/// no driver: cudarc panics when it cannot load libcuda, which is caught here (its message is
/// still printed).
#[cfg(feature = "cuda")]
pub(crate) fn gpu() -> Option<Device> {
    let d = std::panic::catch_unwind(|| Device::new_cuda(0))
        .ok()
        .and_then(|r| r.ok());
    if d.is_none() {
        eprintln!("skipped: no CUDA device");
    }
    d
}
