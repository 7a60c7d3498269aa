//! `f32` GEMM through the system's OpenBLAS, loaded at run time when one is installed, for
//! CPUs where it beats the `gemm` crate.
//!
//! On this project's AVX2 machine (Zen 3, 2 cores) ViT-B/16's training step is ~85 % GEMM
//! microkernel, and with OpenBLAS (its Zen kernels) whole steps ran 10–20 % faster than with the
//! `gemm` crate (README, "Performance"); in isolation, single-threaded, the two differ by only
//! ~5 % (OpenBLAS 84–89 GFLOP/s, `gemm` 75–88, an FMA loop 92–95 on ViT-B's shapes).
//!
//! Which library runs is chosen once per process from [`BLAS_VAR`] (`NOISYCXR_BLAS`):
//! - unset or `auto`: the system's `libopenblas.so.0` (Debian / Ubuntu: `apt install
//!   libopenblas0`) when it loads, else the `gemm` crate;
//! - `gemm` (or `off`): always the `gemm` crate;
//! - `openblas`, or a file name or path of an OpenBLAS shared library: that one, and an error
//!   at start-up ([`init`]) when it cannot be loaded.
//!
//! The library is opened with `dlopen` rather than linked, so one binary runs on machines with
//! and without it (the GPU machines this project's binaries are copied to, CI). Only the LP64
//! interface (`blasint` = `int`, what distributions ship as `libopenblas`) is accepted: a build
//! whose configuration says `USE64BITINT` is refused.
//!
//! OpenBLAS runs single-threaded here: [`super::sgemm`] already splits a product into one part
//! per thread, and OpenBLAS's own pool on top of rayon's would oversubscribe the cores (its
//! threads spin for a while after each call). Handing the large products to OpenBLAS's threads
//! instead was tried twice. Whole ViT-B/16 steps: 1.12, 1.29, 1.28 img/s against 1.05, 1.04,
//! 1.16 with the split (ours only, alternating), but one `hybrid_tiny` run fell to 364 img/s
//! against 583–633 and a hybrid run with PyTorch gave 1.05×. ViT-B/16's twelve linear-layer
//! products alone, in C on this library (best of 5, 2 threads): 466 / 509 ms with the split,
//! 501 / 504 with OpenBLAS's threads. So the split stays. Operands whose strides BLAS cannot
//! express (neither stride 1) stay on the `gemm` crate.

use std::ffi::{c_char, c_int, CStr, OsStr, OsString};
use std::sync::OnceLock;

use libloading::Library;

use super::sgemm::{MatRef, StridedDst};

/// Environment variable choosing the CPU `f32` GEMM library (see the module docs).
pub const BLAS_VAR: &str = "NOISYCXR_BLAS";

const ROW_MAJOR: c_int = 101;
const COL_MAJOR: c_int = 102;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

/// `cblas_sgemm` of the LP64 interface.
type SgemmFn = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    f32,
    *const f32,
    c_int,
    *const f32,
    c_int,
    f32,
    *mut f32,
    c_int,
);
type SetThreadsFn = unsafe extern "C" fn(c_int);
type TextFn = unsafe extern "C" fn() -> *const c_char;

/// A loaded OpenBLAS: its `cblas_sgemm` and what it reports about itself.
pub(crate) struct OpenBlas {
    sgemm: SgemmFn,
    describe: String,
    /// Keeps the library mapped while `sgemm` may be called (for the life of the process).
    _lib: Library,
}

/// What [`BLAS_VAR`] asks for.
#[derive(Debug, PartialEq)]
enum Request {
    /// The system's OpenBLAS if it loads, else the `gemm` crate.
    Auto,
    /// The `gemm` crate.
    Off,
    /// The first of these libraries that loads, or an error.
    Required(Vec<OsString>),
}

fn parse_request(value: Option<&OsStr>) -> Request {
    match value.map(|v| (v, v.to_str())) {
        None | Some((_, Some("" | "auto"))) => Request::Auto,
        Some((_, Some("gemm" | "off"))) => Request::Off,
        Some((_, Some("openblas"))) => Request::Required(system_names()),
        Some((v, _)) => Request::Required(vec![v.to_owned()]),
    }
}

/// The names the system's OpenBLAS goes by: the runtime package's versioned file first (Debian's
/// `libopenblas0` ships no unversioned `libopenblas.so`), then the platform's plain name.
fn system_names() -> Vec<OsString> {
    let mut names = Vec::new();
    if cfg!(target_os = "linux") {
        names.push(OsString::from("libopenblas.so.0"));
    }
    names.push(libloading::library_filename("openblas"));
    names
}

/// The process's choice: the library, or why there is none; and whether one was required.
struct State {
    blas: Result<OpenBlas, String>,
    required: bool,
}

static STATE: OnceLock<State> = OnceLock::new();

fn state() -> &'static State {
    STATE.get_or_init(|| resolve(std::env::var_os(BLAS_VAR).as_deref()))
}

fn resolve(value: Option<&OsStr>) -> State {
    let (names, required) = match parse_request(value) {
        Request::Off => {
            return State {
                blas: Err(format!("{BLAS_VAR}=gemm")),
                required: false,
            }
        }
        Request::Auto => (system_names(), false),
        Request::Required(names) => (names, true),
    };
    // Why each name failed; with `auto`, only libraries that opened but were refused are worth
    // reporting (a missing one is the usual case).
    let mut why = Vec::new();
    for name in &names {
        match load(name) {
            Ok(blas) => {
                return State {
                    blas: Ok(blas),
                    required,
                }
            }
            Err((opened, e)) if required || opened => {
                why.push(format!("{}: {e}", name.to_string_lossy()))
            }
            Err(_) => {}
        }
    }
    State {
        blas: Err(if why.is_empty() {
            "no OpenBLAS found".to_string()
        } else {
            why.join("; ")
        }),
        required,
    }
}

/// `libloading`'s error with the loader's own message (`dlerror`), which it keeps as the source.
fn loader_error(e: libloading::Error) -> String {
    match std::error::Error::source(&e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// Opens `name` and checks it is an LP64 OpenBLAS; sets its thread count to 1. The error says
/// whether the library opened (and was refused) and why.
fn load(name: &OsStr) -> Result<OpenBlas, (bool, String)> {
    // SAFETY: loading runs the library's initialisers; OpenBLAS's only read the environment and
    // start its (idle) thread pool.
    let lib = unsafe { Library::new(name) }.map_err(|e| (false, loader_error(e)))?;
    let not_openblas = |e| (true, format!("not OpenBLAS ({})", loader_error(e)));
    // SAFETY: the types are those of OpenBLAS's exported C functions of these names.
    let (sgemm, set_threads, config, core) = unsafe {
        (
            *lib.get::<SgemmFn>(b"cblas_sgemm\0").map_err(not_openblas)?,
            *lib.get::<SetThreadsFn>(b"openblas_set_num_threads\0")
                .map_err(not_openblas)?,
            *lib.get::<TextFn>(b"openblas_get_config\0")
                .map_err(not_openblas)?,
            lib.get::<TextFn>(b"openblas_get_corename\0")
                .ok()
                .map(|s| *s),
        )
    };
    let text = |f: TextFn| {
        // SAFETY: both functions return a pointer to a static NUL-terminated string (or null).
        let p = unsafe { f() };
        if p.is_null() {
            "?".to_string()
        } else {
            // SAFETY: non-null, static and NUL-terminated (see above).
            let s = unsafe { CStr::from_ptr(p) };
            s.to_string_lossy().trim().to_string()
        }
    };
    let config = text(config);
    if config.contains("USE64BITINT") {
        return Err((
            true,
            format!(
                "a 64-bit-integer (ILP64) build ({config}); noisycxr calls the 32-bit-integer \
             (LP64) interface, as distributions' libopenblas has it"
            ),
        ));
    }
    // SAFETY: plain setter of OpenBLAS's process-wide thread count.
    unsafe { set_threads(1) };
    let describe = match core {
        Some(core) => format!("{config} ({} kernels)", text(core)),
        None => config,
    };
    Ok(OpenBlas {
        sgemm,
        describe,
        _lib: lib,
    })
}

/// Resolves [`BLAS_VAR`] now, so that a library it names but that cannot be loaded is an error
/// at start-up rather than a silent fall-back to the `gemm` crate. The binary calls this once.
pub fn init() -> crate::Result<()> {
    let s = state();
    match &s.blas {
        Err(why) if s.required => Err(crate::Error::Config(format!(
            "{BLAS_VAR}={}: cannot use it as the CPU GEMM library: {why}. Install OpenBLAS \
             (Debian / Ubuntu: apt install libopenblas0), give the path of its libopenblas.so, \
             or unset {BLAS_VAR} (OpenBLAS when installed, else the built-in gemm crate)",
            std::env::var_os(BLAS_VAR)
                .unwrap_or_default()
                .to_string_lossy()
        ))),
        _ => Ok(()),
    }
}

/// The OpenBLAS this process's products run on, if any.
pub(crate) fn active() -> Option<&'static OpenBlas> {
    state().blas.as_ref().ok()
}

/// The library running CPU `f32` matrix products, e.g. (Debian's, on Zen 3) `OpenBLAS 0.3.21
/// NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64 (Zen kernels)`, or `the gemm crate
/// (no OpenBLAS found)`.
pub fn describe() -> String {
    match &state().blas {
        Ok(b) => b.describe.clone(),
        Err(why) => format!("the gemm crate ({why})"),
    }
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

impl OpenBlas {
    /// `dst (+)= a @ b` when BLAS can express the three layouts; returns `false` (and does
    /// nothing) otherwise, for the caller to use the `gemm` crate.
    ///
    /// # Safety
    /// As [`super::sgemm`]'s `Raw::run`: `dst`, `a` and `b` describe one part of a product
    /// whose spans were checked, and no other thread writes this part of `dst`.
    pub(crate) unsafe fn gemm(
        &self,
        dst: StridedDst,
        a: MatRef<'_>,
        b: MatRef<'_>,
        accumulate: bool,
    ) -> bool {
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
        let flag = |t: bool| if t { TRANS } else { NO_TRANS };
        // SAFETY: the layouts above describe exactly the elements `gemm::gemm` would touch,
        // inside the spans the caller checked; `beta = 0` overwrites `dst` without reading it.
        unsafe {
            (self.sgemm)(
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
    fn requests() {
        let req = |s: &str| parse_request(Some(OsStr::new(s)));
        assert_eq!(parse_request(None), Request::Auto);
        assert_eq!(req(""), Request::Auto);
        assert_eq!(req("auto"), Request::Auto);
        assert_eq!(req("gemm"), Request::Off);
        assert_eq!(req("off"), Request::Off);
        assert_eq!(req("openblas"), Request::Required(system_names()));
        assert_eq!(
            req("/opt/ob/libopenblas.so"),
            Request::Required(vec!["/opt/ob/libopenblas.so".into()])
        );
    }

    /// A required library that does not load is an error naming it; `gemm` needs none.
    #[test]
    fn a_missing_required_library_is_reported() {
        let s = resolve(Some(OsStr::new("/nonexistent/libopenblas.so")));
        assert!(s.required);
        let why = s.blas.err().expect("a missing file cannot load");
        assert!(why.contains("/nonexistent/libopenblas.so"), "{why}");
        let s = resolve(Some(OsStr::new("gemm")));
        assert!(!s.required);
        assert_eq!(s.blas.err().as_deref(), Some("NOISYCXR_BLAS=gemm"));
        // A library that loads but is not OpenBLAS (the C library has no cblas_sgemm).
        if cfg!(target_os = "linux") {
            let why = resolve(Some(OsStr::new("libc.so.6"))).blas.err().unwrap();
            assert!(why.contains("cblas_sgemm"), "{why}");
        }
    }

    /// Where the system has OpenBLAS, it is what `auto` picks and it names its kernels.
    #[test]
    fn auto_picks_the_system_openblas_when_installed() {
        let s = resolve(None);
        assert!(!s.required);
        match s.blas {
            Ok(b) => assert!(b.describe.contains("OpenBLAS"), "{}", b.describe),
            Err(why) => {
                let errors: Vec<_> = system_names()
                    .iter()
                    .filter_map(|n| load(n).err())
                    .collect();
                assert_eq!(errors.len(), system_names().len(), "one loads: {why}");
                if errors.iter().all(|(opened, _)| !opened) {
                    assert_eq!(why, "no OpenBLAS found");
                } else {
                    assert!(
                        why.contains("not OpenBLAS") || why.contains("ILP64"),
                        "{why}"
                    );
                }
            }
        }
    }
}
