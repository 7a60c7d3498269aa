#!/usr/bin/env python3
"""Convert timm / torchvision models or any PyTorch checkpoint to .safetensors for noisycxr.

noisycxr reads .safetensors and zip-format torch.save files (PyTorch >= 1.6) directly. Use this
script for everything else: legacy (non-zip) pickles, whole pickled modules
(torch.save(model)), checkpoints with unusual nesting, or to fetch timm / torchvision weights
where Python has network access.

Examples:
    python tools/convert_weights.py --timm vit_base_r50_s16_224.orig_in21k_ft_in1k --pretrained --out hybrid.safetensors
    python tools/convert_weights.py --torchvision densenet121 --weights DEFAULT --out densenet121.safetensors
    python tools/convert_weights.py --pth chexnet.pth.tar --out chexnet.safetensors
    python tools/convert_weights.py --pth ckpt.pt --key model_ema --out ema.safetensors

Needs: torch, safetensors (+ timm / torchvision for --timm / --torchvision).
"""
import argparse
import sys

import torch
from safetensors.torch import save_file

NESTING_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "module", "net")


def find_state_dict(obj, key=None):
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if not isinstance(obj, dict):
        sys.exit(f"error: the file holds a {type(obj).__name__}, not a module or a dict of tensors")
    if key is not None:
        if key not in obj:
            sys.exit(f"error: no entry {key!r}; top-level keys: {list(obj)[:20]}")
        return find_state_dict(obj[key])
    if any(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    for k in NESTING_KEYS:
        if k in obj and isinstance(obj[k], (dict, torch.nn.Module)):
            return find_state_dict(obj[k])
    sys.exit(f"error: no state dict found; top-level keys: {list(obj)[:20]} (use --key)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--timm", metavar="NAME", help="timm model name (e.g. resnet50.a1_in1k)")
    src.add_argument("--torchvision", metavar="NAME", help="torchvision.models builder (e.g. densenet121)")
    src.add_argument("--pth", metavar="FILE", help="any torch.save file (state dict, checkpoint dict or whole module)")
    ap.add_argument("--pretrained", action="store_true", help="--timm: download pretrained weights")
    ap.add_argument("--weights", default=None, help="--torchvision: weights enum name, e.g. DEFAULT")
    ap.add_argument("--key", default=None, help="--pth: entry holding the state dict")
    ap.add_argument("--strip-prefix", default="", help="remove this prefix from every key (e.g. module.)")
    ap.add_argument("--out", required=True, help="output .safetensors")
    a = ap.parse_args()

    if a.timm:
        import timm
        sd = timm.create_model(a.timm, pretrained=a.pretrained).state_dict()
    elif a.torchvision:
        import torchvision
        sd = getattr(torchvision.models, a.torchvision)(weights=a.weights).state_dict()
    else:
        # weights_only=False: whole pickled modules need their classes (trust the file!).
        obj = torch.load(a.pth, map_location="cpu", weights_only=False)
        sd = find_state_dict(obj, a.key)

    out, skipped = {}, []
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            skipped.append(k)
            continue
        if a.strip_prefix and k.startswith(a.strip_prefix):
            k = k[len(a.strip_prefix):]
        out[k] = v.detach().cpu().clone().contiguous()  # clone: safetensors refuses shared storage
    save_file(out, a.out)
    n = sum(t.numel() for t in out.values())
    print(f"wrote {a.out}: {len(out)} tensors, {n} values" + (f"; skipped non-tensors: {skipped}" if skipped else ""))


if __name__ == "__main__":
    main()
