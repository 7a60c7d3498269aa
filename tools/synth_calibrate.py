#!/usr/bin/env python3
"""Calibration proxy for the noise lab (`noisycxr synth`): trains a tiny CNN in PyTorch on a
generated dataset, once on the clean truth (`train_clean.csv`) and once per naive policy on the
noisy labels (`train.csv`), and reports test AUROC per finding and the means.

It stands in for the Rust tiny presets (`resnet_tiny` & co.) while those are being written: the
issue asks that a tiny model trained on the clean truth reaches a test mean AUROC of about
0.80-0.93 and that the same model on the noisy labels, with no technique, scores >= 0.03 lower.

    python tools/synth_calibrate.py DATA_ROOT [--size 64] [--epochs 15] [--seed 0]

DATA_ROOT is the folder holding CheXpert-v1.0-small/. Needs torch, numpy and pillow.
"""
import argparse, csv, json, os, sys, time

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

FINDINGS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity",
            "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
            "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"]
TASKS5 = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
CELL = {"1.0": 1.0, "0.0": 0.0, "-1.0": -1.0, "": float("nan")}


def read(root, name, size, frontal_only):
    rows = list(csv.DictReader(open(os.path.join(root, "CheXpert-v1.0-small", name))))
    if frontal_only:
        rows = [r for r in rows if r["Frontal/Lateral"] == "Frontal"]
    cache = os.path.join(root, f".proxy_{name}_{size}_{int(frontal_only)}.npy")
    if os.path.exists(cache):
        x = np.load(cache)
    else:
        x = np.stack([np.asarray(Image.open(os.path.join(root, r["Path"])).convert("L")
                                 .resize((size, size), Image.BILINEAR)) for r in rows])
        np.save(cache, x)
    y = np.array([[CELL[r[f]] for f in FINDINGS] for r in rows], dtype=np.float32)
    study = [r["Path"].rsplit("/", 1)[0] for r in rows]
    return x, y, study


def roc_auc_score(y, s):
    """AUROC as the Mann-Whitney U statistic with average ranks for ties."""
    y = np.asarray(y) > 0.5
    s = np.asarray(s, dtype=np.float64)
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    ss = s[order]
    i = 0
    while i < len(ss):
        j = i
        while j + 1 < len(ss) and ss[j + 1] == ss[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    npos, nneg = y.sum(), (~y).sum()
    return (ranks[y].sum() - npos * (npos + 1) / 2.0) / (npos * nneg)


def net():
    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(),
                             nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(),
                             nn.MaxPool2d(2))
    return nn.Sequential(block(1, 24), block(24, 48), block(48, 96), block(96, 128),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 14))


def targets(y, policy):
    """Targets and mask from raw cells under a policy (blank -> 0 in every naive policy)."""
    t = np.nan_to_num(y.copy(), nan=0.0)
    m = np.ones_like(t)
    if policy == "zeros":
        t[t < 0] = 0.0
    elif policy == "ones":
        t[t < 0] = 1.0
    elif policy == "ignore":
        m[t < 0] = 0.0
        t[t < 0] = 0.0
    return t, m


def train_eval(xtr, t, m, xte, yte, epochs, seed, bs=64):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = net()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * ((len(xtr) + bs - 1) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    X = torch.from_numpy(xtr).float().div(255).sub(0.5).div(0.5).unsqueeze(1)
    T, M = torch.from_numpy(t), torch.from_numpy(m)
    for ep in range(epochs):
        model.train()
        perm = rng.permutation(len(X))
        for i in range(0, len(X), bs):
            b = perm[i:i + bs]
            logit = model(X[b])
            loss = nn.functional.binary_cross_entropy_with_logits(logit, T[b], reduction="none")
            loss = (loss * M[b]).sum() / M[b].sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        Xt = torch.from_numpy(xte).float().div(255).sub(0.5).div(0.5).unsqueeze(1)
        p = torch.cat([torch.sigmoid(model(Xt[i:i + 512])) for i in range(0, len(Xt), 512)]).numpy()
    auc = {}
    for k, f in enumerate(FINDINGS):
        yk = yte[:, k]
        if len(set(yk.tolist())) == 2:
            auc[f] = float(roc_auc_score(yk, p[:, k]))
    return auc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policies", default="clean,zeros,ignore,ones")
    ap.add_argument("--frontal-only", action="store_true")
    ap.add_argument("--json", help="write results here")
    a = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    xtr, ynoisy, _ = read(a.root, "train.csv", a.size, a.frontal_only)
    _, yclean, _ = read(a.root, "train_clean.csv", a.size, a.frontal_only)
    xte, yte, _ = read(a.root, "test.csv", a.size, a.frontal_only)
    out = {}
    for pol in a.policies.split(","):
        t0 = time.time()
        t, m = targets(yclean, "zeros") if pol == "clean" else targets(ynoisy, pol)
        auc = train_eval(xtr, t, m, xte, yte, a.epochs, a.seed)
        mean = float(np.mean(list(auc.values())))
        mean5 = float(np.mean([auc[f] for f in TASKS5]))
        out[pol] = {"auc": auc, "mean": mean, "mean5": mean5, "n_defined": len(auc)}
        print(f"{pol:7s} mean AUROC {mean:.4f} over {len(auc)} findings, 5-task {mean5:.4f} "
              f"({time.time() - t0:.0f}s)", flush=True)
    print("finding".ljust(28) + "".join(p.rjust(9) for p in out))
    for f in FINDINGS:
        print(f.ljust(28) + "".join(f"{out[p]['auc'].get(f, float('nan')):9.3f}" for p in out))
    if a.json:
        json.dump(out, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
