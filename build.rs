//! Records the git commit the binary is built from (for run provenance), if git is available;
//! for `--features cuda`, where to find the CUDA runtime to link against and our own kernels
//! compiled to PTX.
fn main() {
    cuda_link_search();
    cuda_kernels();
    for p in [".git/HEAD", ".git/index"] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Ok(out) = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
    {
        if out.status.success() {
            let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !s.is_empty() {
                println!("cargo:rustc-env=NOISYCXR_GIT_COMMIT={s}");
            }
        }
    }
}

/// candle-kernels links its fused kernels against `libcudart`; cudarc loads the other CUDA
/// libraries at run time. Adds `$CUDA_ROOT/lib` and `lib64` (or `$CUDA_PATH`'s) to the link
/// search path, so a toolkit outside the system paths (NVIDIA's PyPI wheels) links.
fn cuda_link_search() {
    println!("cargo:rerun-if-env-changed=CUDA_ROOT");
    println!("cargo:rerun-if-env-changed=CUDA_PATH");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    for var in ["CUDA_ROOT", "CUDA_PATH"] {
        if let Some(root) = std::env::var_os(var) {
            for sub in ["lib", "lib64"] {
                let dir = std::path::Path::new(&root).join(sub);
                if dir.is_dir() {
                    println!("cargo:rustc-link-search=native={}", dir.display());
                }
            }
        }
    }
}

/// Compiles `src/ops/cuda/kernels.cu` to PTX in `OUT_DIR` with `nvcc` (from `$CUDA_ROOT/bin`,
/// `$CUDA_PATH/bin` or `PATH`), for `compute_$CUDA_COMPUTE_CAP` (default 80, the lowest with
/// `bf16`; the driver compiles PTX for the GPU it runs on).
fn cuda_kernels() {
    const SRC: &str = "src/ops/cuda/kernels.cu";
    println!("cargo:rerun-if-changed={SRC}");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let root = std::env::var_os("CUDA_ROOT").or_else(|| std::env::var_os("CUDA_PATH"));
    let nvcc = root
        .as_ref()
        .map(|r| std::path::Path::new(r).join("bin").join("nvcc"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "nvcc".into());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let cap = cap.trim().replace('.', "");
    let out = std::path::Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR"))
        .join("noisycxr_kernels.ptx");
    let mut cmd = std::process::Command::new(&nvcc);
    cmd.args(["--ptx", "-O3", "-std=c++17"])
        .arg(format!("-arch=compute_{cap}"))
        .arg("-o")
        .arg(&out)
        .arg(SRC);
    if let Some(r) = &root {
        cmd.arg(format!(
            "-I{}",
            std::path::Path::new(r).join("include").display()
        ));
    }
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{} failed on {SRC} ({s})", nvcc.display()),
        Err(e) => panic!(
            "cannot run {} to compile {SRC}: {e}; put the CUDA compiler on PATH or set CUDA_ROOT \
             (README, \"Building for CUDA\")",
            nvcc.display()
        ),
    }
}
