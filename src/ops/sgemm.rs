//! A small safe wrapper over the `gemm` crate (the same version candle uses) for `f32`
//! matrices described by a slice, a row stride and a column stride.

use gemm::Parallelism;

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
    // SAFETY: every index the kernel touches lies inside the spans checked above; `dst` is
    // exclusively borrowed, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
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
            parallelism(threads),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
