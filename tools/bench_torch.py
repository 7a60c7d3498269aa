#!/usr/bin/env python3
"""PyTorch reference for `noisycxr bench train`: the same training step (forward, stable
BCE-with-logits, backward, AdamW lr 1e-4) on the timm / torchvision model a preset matches,
with the same thread count. Prints one JSON line like noisycxr's BenchResult.

    python tools/bench_torch.py --model resnet50 --batch 8 --size 224 --threads 2
"""
import argparse
import json
import statistics
import time

import torch

# noisycxr preset -> timm model name (timm's ResNets / DenseNet have torchvision's key names).
PRESETS = {
    "resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50",
    "vit_ti16": "vit_tiny_patch16_224", "vit_s16": "vit_small_patch16_224",
    "vit_b16": "vit_base_patch16_224", "vit_b32": "vit_base_patch32_224",
    "hybrid_r50_vit_b16": "vit_base_r50_s16_224", "hybrid_r26_vit_s32": "vit_small_r26_s32_224",
    "densenet121": "densenet121",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="noisycxr preset or timm model name")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--in-chans", type=int, default=3)
    ap.add_argument("--num-classes", type=int, default=14)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import timm
    name = PRESETS.get(a.model, a.model)
    kw = {"img_size": a.size} if "vit" in name else {}
    m = timm.create_model(name, pretrained=False, num_classes=a.num_classes, in_chans=a.in_chans, **kw)
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(a.batch, a.in_chans, a.size, a.size, generator=g) * 2 - 1
    y = (torch.rand(a.batch, a.num_classes, generator=g) < 0.3).float()
    f, b, o, s = [], [], [], []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(m(x), y)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if i >= a.warmup:
            f.append((t1 - t0) * 1e3); b.append((t2 - t1) * 1e3); o.append((t3 - t2) * 1e3); s.append((t3 - t0) * 1e3)
    step = statistics.median(s)
    print(json.dumps({
        "preset": a.model, "reference": name, "batch": a.batch, "size": a.size, "in_chans": a.in_chans,
        "params": sum(p.numel() for p in m.parameters()), "steps": a.steps, "threads": a.threads,
        "forward_ms": statistics.median(f), "backward_ms": statistics.median(b),
        "optimizer_ms": statistics.median(o), "step_ms": step, "img_per_s": a.batch * 1e3 / step,
        "torch": torch.__version__, "timm": timm.__version__,
    }))


if __name__ == "__main__":
    main()
