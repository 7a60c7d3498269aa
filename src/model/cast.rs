//! The boundary of a half-precision model: inputs are cast to the model's dtype on the way in
//! and logits back to `f32` on the way out, so losses, probabilities and metrics stay `f32`
//! (what `torch.autocast` does for a loss). [`super::build`] wraps every `bf16`/`f16` model in it.

use candle_core::{DType, Tensor};

use super::Classifier;
use crate::error::Result;

/// A [`Classifier`] whose variables are `dtype`, seen from outside as an `f32` one.
///
/// # Shapes
/// As the inner model: `features` `[N, C, H, W]` (any float dtype) → `[N, F]` in `dtype`;
/// `head` `[N, F]` (any float dtype) → `[N, K]` `f32`.
pub struct HalfPrecision {
    inner: Box<dyn Classifier>,
    dtype: DType,
}

impl HalfPrecision {
    pub fn new(inner: Box<dyn Classifier>, dtype: DType) -> Self {
        HalfPrecision { inner, dtype }
    }
}

impl Classifier for HalfPrecision {
    fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.inner.features(&x.to_dtype(self.dtype)?, train)
    }
    fn head(&self, features: &Tensor) -> Result<Tensor> {
        Ok(self
            .inner
            .head(&features.to_dtype(self.dtype)?)?
            .to_dtype(DType::F32)?)
    }
    fn num_features(&self) -> usize {
        self.inner.num_features()
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn head_prefix(&self) -> &'static str {
        self.inner.head_prefix()
    }
    fn set_rng_step(&self, step: u64) {
        self.inner.set_rng_step(step)
    }
}
