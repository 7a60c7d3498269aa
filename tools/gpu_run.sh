#!/usr/bin/env bash
# Runs the GPU checks of issue 8 on a machine with an NVIDIA GPU, CUDA 13 and PyTorch but no
# Rust toolchain: the CUDA binary is built elsewhere (README, "Building for CUDA") and brought
# along gzipped, since a stripped one is ~90 MB:
#
#   strip -o dist/noisycxr-cuda target-cuda/release/noisycxr && xz -T2 -f dist/noisycxr-cuda
#   # on the GPU machine, from the repository root:
#   tools/gpu_run.sh [OUT_DIR] [STAGES]
#
# The CUDA unit tests come along the same way, as the library's test binary (the file that
#   cargo test --release --features cudnn --no-run
# names under target-cuda/release/deps/noisycxr-*), at dist/noisycxr-cuda-tests.xz.
#
# STAGES (default "tests tiny-bf16 full-bf16 tiny-f16 full-f16 train") picks what runs, each step
# under its own time limit so that one hung step cannot eat a lease; logs and tables go into
# OUT_DIR (default ./gpu-out), and all of them but the checkpoints into OUT_DIR.tgz (the device
# tool brings back only a few files):
#   tests           the CUDA unit tests (our kernels and cuDNN convolutions against the CPU ops);
#   tiny-P, full-P  bench train in precision P (bf16, f16 or f32), ours against PyTorch on the
#                   same GPU (autocast for bf16/f16; PyTorch's defaults for f32, so no TF32 in its
#                   matrix products): tiny presets at batch 32, full presets at 224² batch 32;
#   train           the main job's noise-lab training on the GPU in bf16 (4 epochs, as on the CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-out}"
stages="${2:-tests tiny-bf16 full-bf16 tiny-f16 full-f16 train}"
mkdir -p "$out"
bin=dist/noisycxr-cuda
# Brought along as .gz, or as .xz (a third the size: the device tool carries 64 MiB at most).
if [ ! -x "$bin" ]; then
    if [ -f "$bin.xz" ]; then xz -dkf "$bin.xz"; else gunzip -kf "$bin.gz"; fi
    chmod +x "$bin"
fi
py="${PYTHON:-python3}"
# cuBLAS, cuRAND, NVRTC and the CUDA runtime from PyTorch's CUDA 13 wheels; libcuda from the driver.
nv="$("$py" -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))')/nvidia"
# A system toolkit (/usr/local/cuda*) is the other place to find them.
libs="$(find "$nv" -maxdepth 3 -type d -name lib | tr '\n' ':')"
libs="$libs$(ls -d /usr/local/cuda*/lib64 2>/dev/null | tr '\n' ':')"
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:-}"
export RUST_BACKTRACE=1
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
    "$py" -c 'import torch, timm; print("torch", torch.__version__, "timm", timm.__version__)'
    nproc
} 2>&1 | tee "$out/gpu.txt"
for s in $stages; do
    case "$s" in
    tests)
        t=dist/noisycxr-cuda-tests
        if [ ! -x "$t" ] && [ -f "$t.xz" ]; then xz -dkf "$t.xz" && chmod +x "$t"; fi
        if [ -x "$t" ]; then
            timeout 300 "$t" --test-threads 1 cuda >"$out/tests.txt" 2>&1
            echo "tests: exit $?"
            grep -E '^test result|FAILED|panicked' "$out/tests.txt"
        else
            echo "tests: no $t(.xz), skipped"
        fi
        ;;
    tiny-bf16 | tiny-f16 | tiny-f32)
        p="${s#tiny-}"
        timeout 120 "$bin" bench train --device cuda --precision "$p" --python "$py" \
            --models resnet_tiny,vit_tiny,hybrid_tiny --batch-size 32 \
            >"$out/bench_tiny_$p.md" 2>"$out/bench_tiny_$p.log"
        echo "bench tiny $p: exit $?"
        ;;
    full-bf16 | full-f16 | full-f32)
        # One preset per invocation, so that one failing preset leaves the others' figures.
        p="${s#full-}"
        for m in resnet50 vit_b16 hybrid_r50_vit_b16; do
            timeout 120 "$bin" bench train --device cuda --precision "$p" --python "$py" \
                --models "$m" --batch-size 32 --image-size 224 \
                >"$out/bench_${m}_$p.md" 2>"$out/bench_${m}_$p.log"
            echo "bench $m $p: exit $?"
        done
        ;;
    train)
        timeout 180 "$bin" train --device cuda --precision bf16 --out "$out/train_bf16" \
            >"$out/train_bf16.txt" 2>"$out/train_bf16.log"
        echo "train bf16: exit $?"
        ;;
    *) echo "unknown stage $s" ;;
    esac
done
# A short summary last (the device tool shows the end of the output): the table rows, the
# training's test means, and any error.
grep -H '^| [a-z]' "$out"/*.md
grep -h 'MEAN' "$out"/train_*.txt 2>/dev/null | tail -n 2
grep -H -m1 '^error' "$out"/*.log
tar czf "$out.tgz" --exclude='*.safetensors' -C "$(dirname "$out")" "$(basename "$out")"
