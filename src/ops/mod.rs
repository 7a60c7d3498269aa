//! Fast CPU kernels for the training hot path, as candle custom ops.
//!
//! Each kernel has a CPU `f32` path of our own (multi-threaded on rayon's global pool, the same
//! pool candle uses) and falls back to candle's own tensor ops on every other device and dtype,
//! so CUDA keeps working through candle. Each is checked against the plain candle op on random
//! inputs, gradients included.

pub mod conv2d;
pub mod sgemm;

pub use conv2d::{conv2d, conv2d_backward, conv2d_with, Conv2dParams};

/// Threads our kernels split work over: the size of rayon's global pool (`RAYON_NUM_THREADS`).
pub fn num_threads() -> usize {
    rayon::current_num_threads().max(1)
}
