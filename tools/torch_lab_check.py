"""PyTorch/timm cross-check: tiny models on the noise-lab CheXpert data, same recipe as noisycxr.

Preprocessing: frontal only, grayscale, resize short side to 64 (PIL BILINEAR) + center crop 64x64,
[0,1], (x-0.5)/0.5, 1 channel. Labels U-Zeros. AdamW lr 2e-3 wd 0.05 (no wd on ndim<=1 params and
model.no_weight_decay()), batch 32, warm-up 0.5 epoch then cosine to 0, BCE-with-logits mean.
usage: NOISE_LAB=data/noiselab python tools/torch_lab_check.py [epochs] [models...]
(cross-check for issue 4: the tiny ViT family underfits the noise lab in PyTorch too)
"""
import csv, math, os, sys, time
import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from sklearn.metrics import roc_auc_score

ROOT = os.environ.get("NOISE_LAB", "data/noiselab").rstrip("/") + "/"  # the lab's root folder
CSVD = ROOT + "CheXpert-v1.0-small/"
SIZE = 64

def _bench_module():
    """benches/torch_train.py, whose `tiny()` rebuilds our tiny presets from timm classes."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benches", "torch_train.py")
    spec = importlib.util.spec_from_file_location("torch_train", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


tiny = _bench_module().tiny


def load(csvname):
    xs, ys = [], []
    with open(CSVD + csvname) as f:
        r = csv.reader(f)
        head = next(r)
        fi = head.index("No Finding")
        for row in r:
            if row[head.index("Frontal/Lateral")] != "Frontal":
                continue
            im = Image.open(ROOT + row[0]).convert("L")
            w, h = im.size
            s = SIZE / min(w, h)
            nw, nh = max(SIZE, round(w * s)), max(SIZE, round(h * s))
            im = im.resize((nw, nh), Image.BILINEAR)
            l, t = (nw - SIZE) // 2, (nh - SIZE) // 2
            im = im.crop((l, t, l + SIZE, t + SIZE))
            xs.append(np.asarray(im, dtype=np.uint8))
            ys.append([1.0 if c.strip() != "" and float(c) == 1.0 else 0.0 for c in row[fi:fi + 14]])
    x = torch.from_numpy(np.stack(xs)).float().div_(255.0).sub_(0.5).div_(0.5).unsqueeze(1)
    return x, torch.tensor(ys)


def param_groups(model, wd):
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    dec, nodec = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (nodec if p.ndim <= 1 or n in skip or n.endswith(".bias") else dec).append(p)
    return [{"params": dec, "weight_decay": wd}, {"params": nodec, "weight_decay": 0.0}]


def evaluate(model, x, y):
    model.eval()
    with torch.no_grad():
        p = torch.cat([torch.sigmoid(model(x[i:i + 128])) for i in range(0, len(x), 128)]).numpy()
    model.train()
    yn = y.numpy()
    aucs = [roc_auc_score(yn[:, k], p[:, k]) for k in range(14) if 0 < yn[:, k].sum() < len(yn)]
    return float(np.mean(aucs)), len(aucs)


def run(preset, epochs, xtr, ytr, xva, yva, bs=32, lr=2e-3, wd=0.05, seed=0):
    torch.manual_seed(seed)
    model = tiny(preset, 1, SIZE, 14)
    model.train()
    opt = torch.optim.AdamW(param_groups(model, wd), lr=lr)
    n = len(xtr)
    spe = math.ceil(n / bs)
    total, warm = spe * epochs, max(1, round(spe * 0.5))

    def lr_at(step):  # step is 0-based; value used for that step
        if step < warm:
            return lr * (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return lr * 0.5 * (1 + math.cos(math.pi * t))

    g = torch.Generator().manual_seed(seed)
    step = 0
    params = sum(p.numel() for p in model.parameters())
    print(f"== {preset} params={params} steps/epoch={spe} warmup={warm}", flush=True)
    res = []
    for ep in range(1, epochs + 1):
        perm = torch.randperm(n, generator=g)
        tl, nb, t0 = 0.0, 0, time.time()
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            for grp in opt.param_groups:
                grp["lr"] = lr_at(step)
            loss = nn.functional.binary_cross_entropy_with_logits(model(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tl += loss.item(); nb += 1; step += 1
        auc, nd = evaluate(model, xva, yva)
        print(f"{preset} epoch {ep} train_loss {tl / nb:.4f} tune_mean_auroc {auc:.4f} "
              f"(over {nd} findings) time {time.time() - t0:.1f}s", flush=True)
        res.append((preset, ep, tl / nb, auc))
    return res


def main():
    torch.set_num_threads(2)
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    models = sys.argv[2:] or ["resnet_tiny", "vit_tiny", "hybrid_tiny"]
    t0 = time.time()
    xtr, ytr = load("train.csv")
    xva, yva = load("valid.csv")
    print(f"loaded train {tuple(xtr.shape)} pos-rate {ytr.mean(0).numpy().round(3).tolist()}")
    print(f"loaded valid {tuple(xva.shape)} in {time.time() - t0:.1f}s", flush=True)
    allres = []
    for m in models:
        allres += run(m, epochs, xtr, ytr, xva, yva)
    print("\nmodel,epoch,train_loss,tune_mean_auroc")
    for r in allres:
        print(f"{r[0]},{r[1]},{r[2]:.4f},{r[3]:.4f}")


if __name__ == "__main__":
    main()
