"""PyTorch side of `noisycxr bench train`: the same timm model, stepped on request.

    python benches/torch_train.py --preset resnet50 --batch-size 8 --image-size 224 --threads 2

Builds the timm model that our preset mirrors (the tiny presets are built from timm classes
with the same widths and depths), AdamW (fused CPU kernel when this torch has one, else the
default), BCE-with-logits against fixed 0/1 targets over 14 outputs, and a fixed random batch.
`--device cuda:0 --amp bf16|f16` runs the step under torch.autocast (and a GradScaler for f16),
synchronising the GPU before each timestamp.
Prints one JSON line {"ready": true, "params": N, ...}, then for each line "step" on stdin runs
one training step and prints {"fwd": s, "bwd": s, "opt": s}; "quit" (or end of input) exits.
The Rust side alternates its own steps with these, so both see the same machine load.
"""

import argparse
import json
import sys
import time
from functools import partial

import torch
import torch.nn as nn
import timm

TIMM = {
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "vit_ti16": "vit_tiny_patch16_224",
    "vit_s16": "vit_small_patch16_224",
    "vit_b16": "vit_base_patch16_224",
    "vit_b32": "vit_base_patch32_224",
    "hybrid_r50_vit_b16": "vit_base_r50_s16_224",
    "hybrid_r26_vit_s32": "vit_small_r26_s32_224",
    "densenet121": "densenet121",
}


def tiny(preset, in_chans, size, num_classes):
    """Our tiny presets (src/model/presets.rs) rebuilt from timm classes."""
    if preset == "resnet_tiny":
        from timm.models.resnet import BasicBlock

        def down(cin, cout, stride):
            if stride == 1 and cin == cout:
                return None
            return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                 nn.BatchNorm2d(cout))

        widths, layers, cin = (24, 48, 96, 160), [], 24
        for i, w in enumerate(widths):  # one BasicBlock per stage, stride 2 from stage 2
            s = 1 if i == 0 else 2
            layers.append(BasicBlock(cin, w, stride=s, downsample=down(cin, w, s)))
            cin = w
        return nn.Sequential(
            nn.Conv2d(in_chans, 24, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(24),
            nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1), *layers,
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))
    if preset == "vit_tiny":
        from timm.models.vision_transformer import VisionTransformer

        return VisionTransformer(img_size=size, patch_size=8, embed_dim=96, depth=4, num_heads=3,
                                 in_chans=in_chans, num_classes=num_classes)
    if preset == "hybrid_tiny":
        # resnet_tiny's stem and first three stages (stride 16) -> 16 tokens at 64², then four
        # ViT blocks with LayerScale 1e-4 and average pooling (src/model/presets.rs).
        from timm.models.vision_transformer import VisionTransformer
        from timm.models.vision_transformer_hybrid import HybridEmbed

        class Backbone(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(*list(tiny("resnet_tiny", in_chans, size, 1))[:7])

            def forward(self, x):
                return self.body(x)

        embed = partial(HybridEmbed, backbone=Backbone())
        return VisionTransformer(img_size=size, patch_size=1, embed_dim=96, depth=4, num_heads=3,
                                 in_chans=in_chans, num_classes=num_classes, embed_layer=embed,
                                 init_values=1e-4, class_token=False, global_pool="avg")
    raise SystemExit(f"unknown preset {preset}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", required=True)
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--image-size", type=int, required=True)
    ap.add_argument("--in-chans", type=int, default=3)
    ap.add_argument("--num-classes", type=int, default=14)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", choices=["none", "bf16", "f16"], default="none")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    # Flush denormals to zero: without it, freshly initialised tiny CNNs hit denormal arithmetic
    # and PyTorch's step is ~6x slower (measured: resnet_tiny 64² b32, 36 vs 208 img/s), which
    # would flatter our ratio. The baseline we compare against is PyTorch at its best.
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    if a.preset in TIMM:
        name = TIMM[a.preset]
        kw = dict(pretrained=False, num_classes=a.num_classes, in_chans=a.in_chans)
        if "vit" in name:
            kw["img_size"] = a.image_size
        model = timm.create_model(name, **kw)
    else:
        model = tiny(a.preset, a.in_chans, a.image_size, a.num_classes)
    dev = torch.device(a.device)
    model = model.to(dev).train()
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        opt_kind = "fused"
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        opt_kind = "default"
    x = torch.randn(a.batch_size, a.in_chans, a.image_size, a.image_size).to(dev)
    y = (torch.rand(a.batch_size, a.num_classes) > 0.5).float().to(dev)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # Mixed precision as PyTorch users run it: autocast for forward + loss, GradScaler for f16.
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "f16": torch.float16}[a.amp]
    scaler = torch.amp.GradScaler(dev.type, enabled=a.amp == "f16")

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    print(json.dumps({"ready": True, "params": params, "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "timm": timm.__version__, "optimizer": opt_kind,
                      "device": str(dev), "amp": a.amp}),
          flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        sync()
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
        loss.item()
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        sync()
        t2 = time.perf_counter()
        scaler.step(opt)
        scaler.update()
        sync()
        t3 = time.perf_counter()
        reply = {"fwd": t1 - t0, "bwd": t2 - t1, "opt": t3 - t2}
        if dev.type == "cuda":
            reply["reserved"] = torch.cuda.memory_reserved(dev)
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
