#!/usr/bin/env bash
# Runs the GPU checks of issue 8 on a machine with an NVIDIA GPU, CUDA 13 and PyTorch but no
# Rust toolchain: the CUDA binary is built elsewhere (README, "Building for CUDA") and brought
# along gzipped, since a stripped one is ~90 MB:
#
#   strip -o dist/noisycxr-cuda target-cuda/release/noisycxr && gzip -f dist/noisycxr-cuda
#   # on the GPU machine, from the repository root:
#   tools/gpu_run.sh [OUT_DIR]
#
# What it runs, writing logs and tables into OUT_DIR (default $OUT or ./gpu-out):
#   1. bench train, bf16 and f16, ours against PyTorch autocast on the same GPU (tiny and full
#      presets);
#   2. a short noise-lab training on the GPU in bf16 (the main job's config, 2 epochs).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu-out}}"
mkdir -p "$out"
bin=dist/noisycxr-cuda
if [ ! -x "$bin" ]; then
    gunzip -kf "$bin.gz"
    chmod +x "$bin"
fi
py="${PYTHON:-python3}"
# cuBLAS, cuRAND, NVRTC and the CUDA runtime from PyTorch's CUDA 13 wheels; libcuda from the driver.
nv="$("$py" -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))')/nvidia"
# A system toolkit (/usr/local/cuda*) is the other place to find them.
libs="$(find "$nv" -maxdepth 3 -type d -name lib | tr '\n' ':')"
libs="$libs$(ls -d /usr/local/cuda*/lib64 2>/dev/null | tr '\n' ':')"
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
for p in bf16 f16; do
    "$bin" bench train --device cuda --precision "$p" --python "$py" \
        --models resnet_tiny,vit_tiny,hybrid_tiny --batch-size 32 \
        >"$out/bench_tiny_$p.md" 2>"$out/bench_tiny_$p.log" || true
    "$bin" bench train --device cuda --precision "$p" --python "$py" \
        --models resnet50,vit_b16,hybrid_r50_vit_b16 --batch-size 32 --image-size 224 \
        >"$out/bench_full_$p.md" 2>"$out/bench_full_$p.log" || true
done
"$bin" train --device cuda --precision bf16 --epochs 2 --out "$out/train_bf16" \
    >"$out/train_bf16.txt" 2>"$out/train_bf16.log" || true
tail -n 5 "$out"/*.md "$out/train_bf16.txt"
