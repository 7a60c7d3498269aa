#!/usr/bin/env python3
"""scikit-learn side of `noisycxr bench eval` (src/eval/bench.rs runs it on the same data).

    python sklearn_eval.py DIR RESAMPLES SEED

DIR holds what bench.rs wrote:
  meta.json   {"rows": N, "findings": K, "studies": S}
  probs.f32   N*K little-endian float32, row-major
  targets.i8  N*K int8: 1 positive, 0 negative, -1 no label
  study.u32   N little-endian uint32 study index (0..S-1)

Times (1) roc_auc_score per finding on the labelled rows and (2) RESAMPLES study-level
bootstrap resamples (draw S studies with replacement, take their rows as often as drawn,
roc_auc_score per finding, skipping findings with one class), the usual numpy/sklearn recipe.
Prints one JSON object: {"point_s", "boot_s", "resamples", "point_auroc": [K]}.
"""

import json
import os
import sys
import time

import numpy as np
from sklearn.metrics import roc_auc_score


def main():
    d, resamples, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    meta = json.load(open(os.path.join(d, "meta.json")))
    n, k, s = meta["rows"], meta["findings"], meta["studies"]
    probs = np.fromfile(os.path.join(d, "probs.f32"), dtype="<f4").reshape(n, k).astype(np.float64)
    targets = np.fromfile(os.path.join(d, "targets.i8"), dtype=np.int8).reshape(n, k)
    study = np.fromfile(os.path.join(d, "study.u32"), dtype="<u4").astype(np.int64)

    t0 = time.perf_counter()
    point = []
    for j in range(k):
        m = targets[:, j] >= 0
        y = targets[m, j] == 1
        point.append(float(roc_auc_score(y, probs[m, j])) if y.any() and (~y).any() else None)
    point_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    order = np.argsort(study, kind="stable")
    starts = np.searchsorted(study[order], np.arange(s + 1))
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        drawn = rng.integers(0, s, s)
        rows = np.concatenate([order[starts[i]:starts[i + 1]] for i in drawn])
        for j in range(k):
            t = targets[rows, j]
            m = t >= 0
            y = t[m] == 1
            if y.any() and (~y).any():
                roc_auc_score(y, probs[rows[m], j])
    boot_s = time.perf_counter() - t0
    print(json.dumps({"point_s": point_s, "boot_s": boot_s, "resamples": resamples, "point_auroc": point}))


if __name__ == "__main__":
    main()
