//! Benchmarks behind `noisycxr bench`: `train` (training-step throughput against PyTorch).

pub mod train;

pub use train::{run as run_train, StepTiming, TrainBenchOptions, TrainBenchRow, TrainBenchTable};
