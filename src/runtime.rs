//! Process-wide CPU threading defaults, applied once by the binary before any tensor work.
//!
//! candle 0.11 runs its element-wise CPU kernels on a *spin-waiting* barrier pool
//! (`candle_core::utils::BarrierPool`, sized by `CANDLE_NUM_THREADS`, default = cores) while its
//! matmuls use rayon (`RAYON_NUM_THREADS`), which parks idle threads. On a machine whose cores are
//! shared with other work (a CI runner, a `cargo test` running tests in parallel, several
//! trainings at once) a spinning thread waits for a peer that the kernel has descheduled: measured
//! here with `noisycxr bench train --models hybrid_tiny --batch-size 32` on 2 cores at load 8,
//! 10.9 img/s with the pool against 69.9 img/s without it (same binary, same run). The
//! element-wise kernels are memory-bound at our tensor sizes, so the pool buys little even on idle
//! cores; we therefore default `CANDLE_NUM_THREADS` to 1 and leave the matmul threads to rayon.
//! A user who sets `CANDLE_NUM_THREADS` keeps their value.

/// Environment variable read by candle for its element-wise barrier pool.
pub const CANDLE_THREADS_VAR: &str = "CANDLE_NUM_THREADS";

/// Sets `CANDLE_NUM_THREADS=1` unless the user set it. Call first thing in `main`, before any
/// other thread exists (candle reads the variable once, on its first CPU kernel).
pub fn init_threads() {
    if std::env::var_os(CANDLE_THREADS_VAR).is_none() {
        // Called at the start of `main`, before the process spawns any thread, so no other
        // thread can be reading the environment concurrently.
        std::env::set_var(CANDLE_THREADS_VAR, "1");
    }
}
