"""Pillow baseline for `noisycxr bench data`: the same per-image work as our pipeline.

    python benches/data_pillow.py --dir DIR --size 224 --reps 3

For every JPEG in DIR (sorted): open, [draft], convert("L"), BILINEAR resize of the centred
square to size x size (the `crop` fit), a random affine warp (rotation +-10 deg, translation
+-5 %, scale 0.95..1.05; Image.transform AFFINE, BILINEAR), then float32 / 255, (x - 0.5) / 0.5
replicated to 3 channels. One thread (Pillow decodes single-threaded). One warm-up pass, then
`reps` timed passes, timed in process CPU seconds. Prints one JSON object: {"plain": img/s, "draft": img/s, "n": images,
"pillow": version}.
"""

import argparse
import glob
import json
import math
import os
import time

import numpy as np
from PIL import Image


def affine_coeffs(size, rng):
    angle = math.radians(rng.uniform(-10, 10))
    tx, ty = rng.uniform(-0.05, 0.05, 2) * size
    s = rng.uniform(0.95, 1.05)
    c = size / 2.0
    # Output -> input map about the centre (what Image.transform(AFFINE) expects).
    a, b = math.cos(angle) / s, math.sin(angle) / s
    d, e = -math.sin(angle) / s, math.cos(angle) / s
    x0, y0 = -tx, -ty
    return (a, b, c + a * (x0 - c) + b * (y0 - c), d, e, c + d * (x0 - c) + e * (y0 - c))


def one(path, size, draft, rng):
    im = Image.open(path)
    if draft:
        im.draft("L", (size, size))
    im = im.convert("L")
    w, h = im.size
    side = min(w, h)
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    im = im.resize((size, size), Image.BILINEAR, box=box)
    im = im.transform((size, size), Image.AFFINE, affine_coeffs(size, rng), resample=Image.BILINEAR)
    x = (np.asarray(im, dtype=np.float32) / 255.0 - 0.5) / 0.5
    return np.repeat(x[None], 3, axis=0)


def rate(files, size, draft, reps):
    rng = np.random.default_rng(0)
    for f in files:
        one(f, size, draft, rng)
    # Process CPU time, like the Rust side: robust to other load on a shared machine.
    t0 = time.process_time()
    for _ in range(reps):
        for f in files:
            one(f, size, draft, rng)
    return reps * len(files) / (time.process_time() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    files = sorted(glob.glob(os.path.join(a.dir, "*.jpg")))
    if not files:
        raise SystemExit(f"no .jpg files in {a.dir}")
    out = dict(
        plain=rate(files, a.size, False, a.reps),
        draft=rate(files, a.size, True, a.reps),
        n=len(files),
        pillow=Image.__version__,
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
