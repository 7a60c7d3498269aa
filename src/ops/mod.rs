//! Fast CPU kernels for the training hot path, as candle custom ops.
//!
//! Each kernel has a CPU `f32` path of our own (multi-threaded on rayon's global pool) and falls
//! back to candle's own tensor ops on every other device and dtype, so CUDA keeps working
//! through candle; softmax, LayerNorm and the AdamW update also have CUDA kernels of our own
//! ([`cuda`], `--features cuda`). Each is checked against the plain candle ops on random inputs, gradients
//! included (relative error < 1e-4).

pub mod add_relu;
pub mod alloc;
#[cfg(target_arch = "x86_64")]
pub mod amx;
pub mod attention;
pub(crate) mod avx2;
pub(crate) mod avx512;
pub mod batch_norm;
mod blocks;
mod candle_patches;
pub mod conv2d;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "cudnn")]
pub mod cudnn;
pub mod fastmath;
pub mod gelu;
pub mod group_norm;
pub(crate) mod host;
pub mod layer_norm;
pub mod linear;
mod norm_kernels;
pub mod openblas;
pub mod sgemm;
pub(crate) mod simd;
#[cfg(test)]
mod simd_checks;
pub mod softmax;
#[cfg(test)]
pub(crate) mod testutil;
pub(crate) mod winograd;

pub use add_relu::add_relu;
pub use alloc::tune_allocator;
pub use attention::attention;
pub use batch_norm::{batch_norm2d_train, BatchNormOut};
pub use conv2d::{conv2d, conv2d_backward, conv2d_with, Conv2dParams};
pub use gelu::gelu_erf;
pub use group_norm::group_norm;
pub use layer_norm::layer_norm;
pub use linear::linear_bias;
pub use softmax::softmax_last_dim;

/// Whether our CUDA kernels ([`cuda`]) take `t`: on a CUDA device in `f32`, `bf16` or `f16`.
/// Always false without `--features cuda`.
pub(crate) fn cuda_kernels(t: &candle_core::Tensor) -> bool {
    #[cfg(feature = "cuda")]
    return cuda::supported(t);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = t;
        false
    }
}

/// Threads our kernels split work over: the size of rayon's global pool (`RAYON_NUM_THREADS`).
pub fn num_threads() -> usize {
    rayon::current_num_threads().max(1)
}
