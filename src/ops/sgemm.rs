//! A small safe wrapper over the `gemm` crate (the same version candle uses), or the system's
//! OpenBLAS where it loads ([`super::openblas`]), for `f32` matrices described by a slice, a row
//! stride and a column stride.

use gemm::Parallelism;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};

use super::openblas::OpenBlas;

/// How `f32` matrix products run on the CPU, named as PyTorch's
/// `torch.set_float32_matmul_precision` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatmulPrecision {
    /// `f32` throughout (the system's OpenBLAS where it loads, else the `gemm` crate; see
    /// [`super::openblas`]).
    #[default]
    Highest,
    /// `bf16×3` on Intel AMX where the CPU has it (about 10⁻⁵ relative error, see
    /// [`super::amx`]); `f32` elsewhere. Like PyTorch's setting, a permission, not a demand.
    High,
}

static HIGH: AtomicBool = AtomicBool::new(false);

/// Sets the precision of every later CPU matrix product in this process. Returns what `High`
/// means on this CPU, for the caller to report (`None` for `Highest`).
pub fn set_matmul_precision(p: MatmulPrecision) -> Option<&'static str> {
    HIGH.store(p == MatmulPrecision::High, Ordering::Relaxed);
    (p == MatmulPrecision::High).then(|| {
        if bf16x3_in_effect() {
            "CPU matrix products run in bf16x3 on AMX (about 1e-5 relative error instead of \
             f32's 1e-7)"
        } else {
            "this CPU (or OS) offers no AMX bf16: matrix products stay f32"
        }
    })
}

/// The library running this process's CPU `f32` matrix products, for benchmark headers and
/// run provenance.
pub fn cpu_gemm() -> String {
    super::openblas::describe()
}

/// Whether CPU matrix products currently run in `bf16×3` on AMX.
pub fn bf16x3_in_effect() -> bool {
    HIGH.load(Ordering::Relaxed) && amx_available()
}

#[cfg(target_arch = "x86_64")]
fn amx_available() -> bool {
    super::amx::available()
}

#[cfg(not(target_arch = "x86_64"))]
fn amx_available() -> bool {
    false
}

/// Below this many multiply-adds, or with any side shorter than `AMX_MIN_SIDE`, a product stays
/// in `f32` even at `High`: packing costs more than AMX saves. Measured here (best of 20, AMX
/// over `f32` time, 1 / 2 threads): attention's `197×64 @ 64×197` 1.11 / 0.89 and `197×197 @
/// 197×64` 0.83 / 0.72 (kept in `f32`); `vit_tiny`'s `544×192 @ 192×576` 2.23 / 1.59; `128³`
/// 1.47 / 0.86; ViT-B/16's `1576×768 @ 768×2304` 1.49 / 1.51.
const AMX_MIN_MACS: usize = 1 << 21;
const AMX_MIN_SIDE: usize = 128;

/// Whether a product of `m x k @ k x n` with column strides `a_cs`, `b_cs` runs on AMX at
/// precision `high` (the packing gathers 16 elements with 32-bit offsets `15·cs`).
fn use_amx(high: bool, m: usize, n: usize, k: usize, a_cs: usize, b_cs: usize) -> bool {
    high && m.min(n).min(k) >= AMX_MIN_SIDE
        && m * n * k >= AMX_MIN_MACS
        && a_cs.max(b_cs) < (1 << 26)
}

/// A read-only strided `f32` matrix view: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows x cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose view (no copy).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    fn span(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.rs + (self.cols - 1) * self.cs + 1
        }
    }
}

/// How many threads one GEMM may use: 1 (`None`) when the caller already parallelises.
pub fn parallelism(threads: usize) -> Parallelism {
    if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// `dst = a @ b` (or `dst += a @ b` when `accumulate`), with `dst` row-major `a.rows x b.cols`.
///
/// # Panics
/// Never on user data: shapes are checked and a mismatch returns an error string for the
/// caller to wrap.
pub fn sgemm(
    dst: &mut [f32],
    a: MatRef<'_>,
    b: MatRef<'_>,
    accumulate: bool,
    threads: usize,
) -> std::result::Result<(), String> {
    sgemm_strided(dst, b.cols, 1, a, b, accumulate, threads)
}

/// [`sgemm`] into a strided destination: element `(r, c)` of `a @ b` goes to
/// `dst[r * dst_rs + c * dst_cs]` (e.g. `dst_rs = 1, dst_cs = rows` writes the transpose).
pub fn sgemm_strided(
    dst: &mut [f32],
    dst_rs: usize,
    dst_cs: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    accumulate: bool,
    threads: usize,
) -> std::result::Result<(), String> {
    let blas = super::openblas::active();
    sgemm_on(blas, dst, dst_rs, dst_cs, a, b, accumulate, threads)
}

/// [`sgemm_strided`] on OpenBLAS (`Some`, where BLAS can express the layouts) or the `gemm`
/// crate (`None`).
#[allow(clippy::too_many_arguments)]
fn sgemm_on(
    blas: Option<&OpenBlas>,
    dst: &mut [f32],
    dst_rs: usize,
    dst_cs: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    accumulate: bool,
    threads: usize,
) -> std::result::Result<(), String> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k {
        return Err(format!(
            "sgemm: inner dimensions differ ({m}x{k} @ {}x{n})",
            b.rows
        ));
    }
    let dst_span = if m == 0 || n == 0 {
        0
    } else {
        (m - 1) * dst_rs + (n - 1) * dst_cs + 1
    };
    if dst.len() < dst_span || a.data.len() < a.span() || b.data.len() < b.span() {
        return Err(format!(
            "sgemm: buffers too small for {m}x{k} @ {k}x{n} (dst {}, a {}, b {})",
            dst.len(),
            a.data.len(),
            b.data.len()
        ));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for c in 0..n {
                    dst[r * dst_rs + c * dst_cs] = 0.0;
                }
            }
        }
        return Ok(());
    }
    let dst = StridedDst {
        ptr: dst.as_mut_ptr(),
        rs: dst_rs,
        cs: dst_cs,
    };
    #[cfg(target_arch = "x86_64")]
    if use_amx(bf16x3_in_effect(), m, n, k, a.cs, b.cs) {
        // SAFETY: AMX is available (`bf16x3_in_effect`); the spans were checked above and
        // `dst` is exclusively borrowed.
        unsafe { super::amx::gemm_bf16x3(dst, a, b, accumulate, threads) };
        return Ok(());
    }
    let raw = Raw {
        dst,
        a,
        b,
        accumulate,
        blas,
    };
    match split(m, n, k, threads) {
        // SAFETY: every index the kernel touches lies inside the spans checked above; `dst` is
        // exclusively borrowed, so it aliases neither input.
        None => unsafe { raw.run(0..m, 0..n, parallelism(threads)) },
        Some((rows, chunk)) => {
            let len = if rows { m } else { n };
            let raw = &raw;
            (0..len.div_ceil(chunk)).into_par_iter().for_each(|i| {
                let part = i * chunk..((i + 1) * chunk).min(len);
                let (r, c) = if rows { (part, 0..n) } else { (0..m, part) };
                // SAFETY: as above; the parts are disjoint blocks of rows (or columns) of
                // `dst`, so no two threads write the same element.
                unsafe { raw.run(r, c, Parallelism::None) }
            });
        }
    }
    Ok(())
}

/// Below this many multiply-adds a GEMM is not split over threads (about 50 µs on one core).
const SPLIT_MIN_MACS: usize = 1 << 22;

/// How a GEMM of `m x k @ k x n` is shared among `threads`: `None` for one thread or a small
/// product, else `(rows, chunk)`, the larger of the output's rows or columns cut into runs of
/// `chunk`, one single-threaded GEMM per run.
///
/// The gemm crate's own threading splits the work inside its blocking loops and synchronises
/// the threads at every block. Measured here at 2 threads on ViT-B/16's twelve linear-layer
/// GEMMs (1576 rows, 768 to 3072 wide, forward and both gradients), five runs of the whole
/// set: 3.0, 4.6, 6.9 and 11.5 % less time, and once 0.8 % more.
fn split(m: usize, n: usize, k: usize, threads: usize) -> Option<(bool, usize)> {
    if threads < 2 || m * n * k < SPLIT_MIN_MACS {
        return None;
    }
    let rows = m >= n;
    let len = if rows { m } else { n };
    // Parts rounded up to 16 rows or 8 columns. Not tuned, and not the microkernel's tile: the
    // gemm crate's AVX-512 tile is 64 x 6, and whether our rows are its rows depends on the
    // destination's strides (it transposes a row-major product).
    let unit = if rows { 16 } else { 8 };
    let chunk = len.div_ceil(threads).div_ceil(unit) * unit;
    (chunk < len).then_some((rows, chunk))
}

/// A GEMM's destination as a raw pointer with its strides (element `(r, c)` at
/// `ptr + r * rs + c * cs`), so that disjoint parts of it can be written from several threads.
#[derive(Clone, Copy)]
pub(crate) struct StridedDst {
    pub ptr: *mut f32,
    pub rs: usize,
    pub cs: usize,
}

// SAFETY: a `StridedDst` is only shared among the threads of one product, which write disjoint
// elements of it.
unsafe impl Sync for StridedDst {}

impl StridedDst {
    /// Pointer to element `(r, c)`.
    ///
    /// # Safety
    /// `(r, c)` must lie inside the destination whose span the caller checked.
    pub unsafe fn at(self, r: usize, c: usize) -> *mut f32 {
        // SAFETY: the contract.
        unsafe { self.ptr.add(r * self.rs + c * self.cs) }
    }
}

/// One GEMM call's operands and destination, shared by the threads of a split product (which
/// only read `a` and `b`).
struct Raw<'a> {
    dst: StridedDst,
    a: MatRef<'a>,
    b: MatRef<'a>,
    accumulate: bool,
    /// Where the parts run, when not on the `gemm` crate.
    blas: Option<&'a OpenBlas>,
}

impl Raw<'_> {
    /// `dst[rows, cols] (+)= a[rows, :] @ b[:, cols]`.
    ///
    /// # Safety
    /// The spans of `dst`, `a` and `b` must have been checked for the whole product, and no
    /// other thread may write the same part of `dst`.
    unsafe fn run(
        &self,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
        par: Parallelism,
    ) {
        // The part as a product of its own (slicing cannot fail: the part starts inside the
        // checked spans).
        let a = MatRef {
            data: &self.a.data[rows.start * self.a.rs..],
            rows: rows.len(),
            ..self.a
        };
        let b = MatRef {
            data: &self.b.data[cols.start * self.b.cs..],
            cols: cols.len(),
            ..self.b
        };
        let dst = StridedDst {
            // SAFETY: `(rows.start, cols.start)` lies inside the checked destination.
            ptr: unsafe { self.dst.at(rows.start, cols.start) },
            ..self.dst
        };
        if let Some(blas) = self.blas {
            // SAFETY: the part lies inside the spans checked for the whole product, and this
            // thread alone writes it.
            if unsafe { blas.gemm(dst, a, b, self.accumulate) } {
                return;
            }
        }
        unsafe {
            gemm::gemm(
                a.rows,
                b.cols,
                a.cols,
                dst.ptr,
                dst.cs as isize,
                dst.rs as isize,
                self.accumulate,
                a.data.as_ptr(),
                a.cs as isize,
                a.rs as isize,
                b.data.as_ptr(),
                b.cs as isize,
                b.rs as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The libraries this machine can run products on: the `gemm` crate, and OpenBLAS where it
    /// loads (printed, so a test log says which ran).
    fn backends() -> Vec<Option<&'static OpenBlas>> {
        let blas = super::super::openblas::active();
        eprintln!("sgemm tests on the gemm crate and {}", cpu_gemm());
        std::iter::once(None).chain(blas.map(Some)).collect()
    }

    #[test]
    fn matches_naive_product_with_transposes_and_accumulation() {
        // a: 3x4, b: 4x5 built as the transpose of a 5x4 row-major buffer.
        let a: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
        let bt: Vec<f32> = (0..20).map(|i| (i as f32 * 0.11).cos()).collect();
        let am = MatRef::row_major(&a, 3, 4);
        let bm = MatRef::row_major(&bt, 5, 4).t();
        let mut want = vec![0f32; 15];
        for i in 0..3 {
            for j in 0..5 {
                for l in 0..4 {
                    want[i * 5 + j] += a[i * 4 + l] * bt[j * 4 + l];
                }
            }
        }
        let mut dst = vec![1f32; 15];
        sgemm(&mut dst, am, bm, true, 1).unwrap();
        for (d, w) in dst.iter().zip(&want) {
            assert!((d - (w + 1.0)).abs() < 1e-5, "{d} vs {}", w + 1.0);
        }
        sgemm(&mut dst, am, bm, false, 2).unwrap();
        for (d, w) in dst.iter().zip(&want) {
            assert!((d - w).abs() < 1e-5);
        }
        assert!(sgemm(&mut dst, am, am, false, 1).is_err());
        // The transpose written through destination strides.
        let mut dt = vec![0f32; 15];
        sgemm_strided(&mut dt, 1, 3, am, bm, false, 1).unwrap();
        for i in 0..3 {
            for j in 0..5 {
                assert!((dt[j * 3 + i] - want[i * 5 + j]).abs() < 1e-5);
            }
        }
    }

    /// Products large enough to be split over threads, by rows and by columns, into plain and
    /// transposed destinations, with and without accumulation, against a naive `f64` product.
    #[test]
    fn split_products_match_naive_product() {
        for (m, k, n) in [(301, 97, 150), (90, 101, 470)] {
            assert!(split(m, n, k, 2).is_some(), "{m}x{k}x{n} is split");
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
                .collect();
            let bt: Vec<f32> = (0..n * k)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
                .collect();
            let (am, bm) = (
                MatRef::row_major(&a, m, k),
                MatRef::row_major(&bt, n, k).t(),
            );
            let want = |r: usize, c: usize| -> f64 {
                (0..k)
                    .map(|l| a[r * k + l] as f64 * bt[c * k + l] as f64)
                    .sum()
            };
            for (blas, transposed, accumulate) in backends().into_iter().flat_map(|blas| {
                [(false, false), (true, false), (false, true)].map(|(t, acc)| (blas, t, acc))
            }) {
                let (rs, cs) = if transposed { (1, m) } else { (n, 1) };
                let mut dst = vec![1f32; m * n];
                sgemm_on(blas, &mut dst, rs, cs, am, bm, accumulate, 2).unwrap();
                for r in 0..m {
                    for c in 0..n {
                        let w = want(r, c) + if accumulate { 1.0 } else { 0.0 };
                        let got = dst[r * rs + c * cs] as f64;
                        assert!(
                            (got - w).abs() < 1e-4,
                            "{m}x{k}x{n} ({r}, {c}): {got} vs {w}"
                        );
                    }
                }
            }
        }
        assert_eq!(split(1000, 1000, 1000, 1), None);
        assert_eq!(split(16, 16, 16, 2), None);
    }

    /// Every operand layout the ops pass (row-major, a transposed view, a padded row stride)
    /// and one no BLAS can take (no unit stride: OpenBLAS falls back to the gemm crate), into
    /// plain and transposed destinations, on each library, against a naive `f64` product.
    #[test]
    fn every_operand_layout_matches_naive_product() {
        let (m, k, n) = (13, 9, 11);
        let backends = backends();
        // A `rows x cols` matrix in layout `l` over a buffer filled from `seed`.
        let make = |rows: usize, cols: usize, l: usize, seed: usize| {
            let (rs, cs, len) = match l {
                0 => (cols, 1, rows * cols),
                1 => (1, rows, rows * cols),
                2 => (cols + 3, 1, rows * (cols + 3)),
                _ => (2 * cols, 2, rows * 2 * cols),
            };
            let data: Vec<f32> = (0..len)
                .map(|i| (((i * seed) % 17) as f32 - 8.0) * 0.1)
                .collect();
            (data, rs, cs)
        };
        for la in 0..4 {
            for lb in 0..4 {
                let (ad, ars, acs) = make(m, k, la, 7);
                let (bd, brs, bcs) = make(k, n, lb, 5);
                let at = |r: usize, c: usize| ad[r * ars + c * acs] as f64;
                let bt = |r: usize, c: usize| bd[r * brs + c * bcs] as f64;
                let am = MatRef {
                    data: &ad,
                    rows: m,
                    cols: k,
                    rs: ars,
                    cs: acs,
                };
                let bm = MatRef {
                    data: &bd,
                    rows: k,
                    cols: n,
                    rs: brs,
                    cs: bcs,
                };
                for (blas, transposed, accumulate) in backends
                    .iter()
                    .copied()
                    .flat_map(|blas| [(false, false), (true, true)].map(|(t, acc)| (blas, t, acc)))
                {
                    let (rs, cs) = if transposed { (1, m) } else { (n, 1) };
                    let mut dst = vec![0.5f32; m * n];
                    sgemm_on(blas, &mut dst, rs, cs, am, bm, accumulate, 1).unwrap();
                    for r in 0..m {
                        for c in 0..n {
                            let w: f64 = (0..k).map(|l| at(r, l) * bt(l, c)).sum::<f64>()
                                + if accumulate { 0.5 } else { 0.0 };
                            let got = dst[r * rs + c * cs] as f64;
                            assert!(
                                (got - w).abs() < 1e-5,
                                "layouts {la}/{lb}, OpenBLAS {} ({r}, {c}): {got} vs {w}",
                                blas.is_some()
                            );
                        }
                    }
                }
            }
        }
    }
}
