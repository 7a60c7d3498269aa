//! `f32` GEMM through the system's OpenBLAS (`--features openblas`), for CPUs where it beats
//! the `gemm` crate.
//!
//! On this project's AVX2 machine (Zen 3, 2 cores) ViT-B/16's training step is ~85 % GEMM
//! microkernel, and with OpenBLAS (its Zen kernels) whole steps ran 10–20 % faster than with the
//! `gemm` crate (README, "Performance"); in isolation, single-threaded, the two differ by only
//! ~5 % (OpenBLAS 84–89 GFLOP/s, `gemm` 75–88, an FMA loop 92–95 on ViT-B's shapes).
//!
//! OpenBLAS runs single-threaded here: [`super::sgemm`] already splits a product into one part
//! per thread, and OpenBLAS's own pool on top of rayon's would oversubscribe the cores (its
//! threads spin for a while after each call). Handing the large products to OpenBLAS's threads
//! instead was tried: ViT-B/16 steps 1.12, 1.29, 1.28 img/s against 1.05, 1.04, 1.16 with the
//! split (ours only, alternating), but one `hybrid_tiny` run fell to 364 img/s against 583–633
//! and a hybrid run with PyTorch gave 1.05×, so the split stays until that is understood.
//! Operands whose strides BLAS cannot express (neither stride 1) stay on the `gemm` crate.

use std::ffi::{c_char, c_int, CStr};
use std::sync::Once;

use super::sgemm::{MatRef, StridedDst};

const ROW_MAJOR: c_int = 101;
const COL_MAJOR: c_int = 102;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

// The LP64 interface (`blasint` = `int`) that Debian's and most distributions' libopenblas
// export; `build.rs` links it.
unsafe extern "C" {
    fn cblas_sgemm(
        order: c_int,
        trans_a: c_int,
        trans_b: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f32,
        a: *const f32,
        lda: c_int,
        b: *const f32,
        ldb: c_int,
        beta: f32,
        c: *mut f32,
        ldc: c_int,
    );
    fn openblas_set_num_threads(n: c_int);
    fn openblas_get_config() -> *const c_char;
    fn openblas_get_corename() -> *const c_char;
}

static SINGLE_THREADED: Once = Once::new();

/// The library and kernels in use, e.g. (Debian's, on Zen 3) `OpenBLAS 0.3.21 NO_LAPACKE
/// DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64 (Zen kernels)`.
pub fn describe() -> String {
    // SAFETY: both return pointers to static NUL-terminated strings (or null).
    let (config, core) = unsafe { (openblas_get_config(), openblas_get_corename()) };
    let text = |p: *const c_char| {
        if p.is_null() {
            "?".to_string()
        } else {
            // SAFETY: non-null, static and NUL-terminated (see above).
            unsafe { CStr::from_ptr(p) }
                .to_string_lossy()
                .trim()
                .to_string()
        }
    };
    format!("{} ({} kernels)", text(config), text(core))
}

/// How BLAS sees a strided matrix in a given storage order: `(transposed, leading dimension)`,
/// or `None` when neither stride is 1 (or the leading dimension does not fit a C `int`).
///
/// In row-major order element `(r, c)` of an untransposed operand is at `r * ld + c`, of a
/// transposed one at `c * ld + r`; column-major swaps the two.
fn operand(
    rs: usize,
    cs: usize,
    rows: usize,
    cols: usize,
    row_major: bool,
) -> Option<(bool, c_int)> {
    let (major, minor, along_major, along_minor) = if row_major {
        (rs, cs, cols, rows)
    } else {
        (cs, rs, rows, cols)
    };
    let (transposed, ld) = if minor == 1 && major >= along_major.max(1) {
        (false, major)
    } else if major == 1 && minor >= along_minor.max(1) {
        (true, minor)
    } else {
        return None;
    };
    Some((transposed, c_int::try_from(ld).ok()?))
}

/// `dst (+)= a @ b` on OpenBLAS when BLAS can express the three layouts; returns `false`
/// (and does nothing) otherwise, for the caller to use the `gemm` crate.
///
/// # Safety
/// As [`super::sgemm`]'s `Raw::run`: `dst`, `a` and `b` describe one part of a product whose
/// spans were checked, and no other thread writes this part of `dst`.
pub(crate) unsafe fn gemm(dst: StridedDst, a: MatRef<'_>, b: MatRef<'_>, accumulate: bool) -> bool {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let row_major = dst.cs == 1 && dst.rs >= n.max(1);
    let col_major = dst.rs == 1 && dst.cs >= m.max(1);
    if !(row_major || col_major) || k == 0 {
        return false;
    }
    let ldc = if row_major { dst.rs } else { dst.cs };
    let (Some((ta, lda)), Some((tb, ldb)), Ok(m), Ok(n), Ok(k), Ok(ldc)) = (
        operand(a.rs, a.cs, a.rows, a.cols, row_major),
        operand(b.rs, b.cs, b.rows, b.cols, row_major),
        c_int::try_from(m),
        c_int::try_from(n),
        c_int::try_from(k),
        c_int::try_from(ldc),
    ) else {
        return false;
    };
    SINGLE_THREADED.call_once(|| {
        // SAFETY: plain setter of OpenBLAS's thread count.
        unsafe { openblas_set_num_threads(1) }
    });
    let flag = |t: bool| if t { TRANS } else { NO_TRANS };
    // SAFETY: the layouts above describe exactly the elements `gemm::gemm` would touch, inside
    // the spans the caller checked; `beta = 0` overwrites `dst` without reading it.
    unsafe {
        cblas_sgemm(
            if row_major { ROW_MAJOR } else { COL_MAJOR },
            flag(ta),
            flag(tb),
            m,
            n,
            k,
            1.0,
            a.data.as_ptr(),
            lda,
            b.data.as_ptr(),
            ldb,
            if accumulate { 1.0 } else { 0.0 },
            dst.ptr,
            ldc,
        );
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operand_layouts() {
        // Row-major 3x4 with padding (ld 5), and its transpose view.
        assert_eq!(operand(5, 1, 3, 4, true), Some((false, 5)));
        assert_eq!(operand(1, 5, 4, 3, true), Some((true, 5)));
        assert_eq!(operand(1, 5, 4, 3, false), Some((false, 5)));
        assert_eq!(operand(5, 1, 3, 4, false), Some((true, 5)));
        // A leading dimension shorter than a row, or no unit stride: not BLAS.
        assert_eq!(operand(3, 1, 3, 4, true), None);
        assert_eq!(operand(8, 2, 3, 4, true), None);
    }

    #[test]
    fn reports_its_kernels() {
        assert!(describe().contains("OpenBLAS"), "{}", describe());
    }
}
