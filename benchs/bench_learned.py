"""What does a learned extractor (ALIKED) cost on the CPU against the default SIFT, per image and side?

``python -m benchs.bench_learned [--quick] [--n 8] [--out learned.json]``: seconds per image (wall and this
process's CPU) of the default SIFT at 1,024 px and of ALIKED (``--extractor aliked``) at 512 and 1,024 px on
the same realbench-dev photographs (scikit-image's where realbench-dev is absent), the extractors alternating
image by image so a burst of load hits all alike, on L2G_BENCH_THREADS threads (default 1). ALIKED needs
its weights (l2g.features.find_weights); without them the report says so and times SIFT only.
"""
from __future__ import annotations

import os
import time

import numpy as np

from benchs.bench_extract import realbench_photos
from benchs.common import Stage, machine, n_threads, parser, pct, photos, resize, threads, write_json
from l2g import config as C
from l2g.features import Extractor, ExtractorUnavailable

RUNS = (("sift", 1024), ("aliked", 512), ("aliked", 1024))     # (extractor, longest side); --quick: side / 4


def run(pics: list, quick: bool) -> dict:
    """{'EXTRACTOR-SIDE': {s_per_image, cpu_s_per_image, keypoints_mean, p50_s, p95_s, n, over_sift}}, the
    first run SIFT (+ 'missing': the runs without weights, and why)."""
    runs, out = {}, {}
    for ext, side in RUNS:
        side = side // 4 if quick else side
        name = f"{ext}-{side}"
        try:
            runs[name] = (Extractor(C.FeatureConfig(extractor=ext, max_side=side), device="cpu"), side)
        except ExtractorUnavailable as e:
            out.setdefault("missing", {})[name] = str(e)
    t = {k: ([], [], []) for k in runs}
    for ex, side in runs.values():
        ex(resize(pics[0], side // 4))        # warm-up
    for im in pics:
        for name, (ex, side) in runs.items():
            x = resize(im, side)
            w0, c0 = time.perf_counter(), time.process_time()
            n = len(ex(x))
            for lst, v in zip(t[name], (time.perf_counter() - w0, time.process_time() - c0, n)):
                lst.append(v)
    for name, (ts, cs, nk) in t.items():
        out[name] = {"s_per_image": float(np.mean(ts)), "cpu_s_per_image": float(np.mean(cs)),
                     "keypoints_mean": float(np.mean(nk)), **pct(ts)}
    sift = out[next(iter(t))]["s_per_image"]
    for name in t:
        out[name]["over_sift"] = out[name]["s_per_image"] / sift
    return out


def main(argv=None) -> int:
    p = parser(__doc__.splitlines()[0], "learned.json")
    p.add_argument("--n", type=int, default=8, help="photographs (default 8; --quick: 1)")
    args = p.parse_args(argv)
    n = 1 if args.quick else args.n
    files = realbench_photos(n)
    from l2g.images import load_image

    pics = [load_image(f).rgb for f in files] or photos()[:n]
    out = {"machine": machine(n_threads()), "photos": [f.name for f in files] or "scikit-image"}
    with threads(n_threads()), Stage(out):
        out["extraction"] = run(pics, args.quick)
    out["machine"]["loadavg_end"] = list(os.getloadavg())
    for name, r in out["extraction"].items():
        if name != "missing":
            print(f"{name:12s} {r['s_per_image']:.3f} s/img (CPU {r['cpu_s_per_image']:.3f}) "
                  f"{r['keypoints_mean']:5.0f} kp  {r['over_sift']:.2f}x SIFT")
    for name, why in out["extraction"].get("missing", {}).items():
        print(f"{name}: not timed ({why.splitlines()[0]})")
    print(f"load average {out['machine']['loadavg_start']} -> {out['machine']['loadavg_end']}; "
          f"written: {write_json(args.out, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
