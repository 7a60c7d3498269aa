//! The model zoo: trainable ResNet, ViT, hybrid ResNet-stem + ViT and DenseNet, written on
//! candle ops that all have a backward pass.
//!
//! Every model implements [`Classifier`]: `features(x, train)` gives pooled features `[N, F]`
//! and `head(f)` the multi-label logits `[N, K]`. Variables live in a [`ModelVars`] store with
//! two maps: trainable `params` (what the optimizer updates) and `buffers` (BatchNorm running
//! statistics, updated in training mode, never given to the optimizer). Names follow timm /
//! torchvision checkpoints so that [`weights::import`] can load them by key.
//!
//! Build a model with [`presets::build`]; get its input specification with
//! [`presets::preprocess`].

pub mod cast;
pub mod checkpoint;
pub mod densenet;
pub mod drop;
pub mod hybrid;
pub mod init;
pub mod interp;
pub mod layers;
pub mod norm;
pub mod pool;
pub mod predict;
pub mod standardize;

#[cfg(test)]
mod parity;
pub mod presets;
pub mod resnet;
pub mod resnetv2;
pub mod vars;
pub mod vit;
pub mod weights;

use candle_core::Tensor;

use crate::error::Result;

pub use presets::{build, preprocess, ModelConfig, PRESETS};
pub use vars::{ModelVars, Vb};

/// A multi-label image classifier.
///
/// # Shapes
/// - input `x`: `[N, C, H, W]`, normalised as the preset's [`crate::data::preprocess::Preprocess`] says
/// - [`Classifier::features`]: `[N, F]` pooled features (`F` = [`Classifier::num_features`])
/// - [`Classifier::head`]: `[N, F]` → `[N, K]` logits (`K` = [`Classifier::num_classes`])
pub trait Classifier: Send + Sync {
    /// Pooled features before the head. `train` switches BatchNorm to batch statistics (and
    /// updates its running statistics) and turns dropout / drop-path on.
    fn features(&self, x: &Tensor, train: bool) -> Result<Tensor>;
    /// The multi-label head: logits, one per output.
    fn head(&self, features: &Tensor) -> Result<Tensor>;
    /// Logits `[N, K]` = `head(features(x, train))`.
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let f = self.features(x, train)?;
        self.head(&f)
    }
    /// Width `F` of the pooled features.
    fn num_features(&self) -> usize;
    /// Number of outputs `K`.
    fn num_classes(&self) -> usize;
    /// Key prefix of the head's variables (`fc`, `head` or `classifier`), e.g. for head-only
    /// retraining or a learning-rate scope.
    fn head_prefix(&self) -> &'static str;
    /// Sets the counter that keys dropout / drop-path draws (it advances by one per training
    /// forward); set it to the global step when resuming so draws repeat exactly.
    fn set_rng_step(&self, step: u64);
}
