//! Integration tests: drive the real `noisycxr` binary on tiny data. One test binary for the
//! whole crate (each extra one relinks candle and polars).

mod ablate;
mod cli;
mod eval;
mod pipeline;
mod train;
