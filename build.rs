//! Records the git commit the binary is built from (for run provenance), if git is available,
//! and, for `--features cuda`, where to find the CUDA runtime to link against.
fn main() {
    cuda_link_search();
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
