"""How fast is Kornia SIFT extraction, pyramid backend against patch backend?

``python -m benchs.bench_extract [--quick] [--out extract.json]``: seconds per image and keypoints per image
of both backends on the same photographs at each longest side. The backends alternate image by image, so a
burst of load on the machine hits both alike. The pyramid descriptors are kept as "visual words" for the
synthetic galleries (benchs/galleries.py).
"""
from __future__ import annotations

import time

import numpy as np

from benchs.common import Stage, machine, n_threads, parser, pct, photos, resize, threads, write_json
from l2g import config as C
from l2g.features import Extractor


def sides_and_photos(quick: bool) -> tuple[list, int]:
    """Longest sides (px) and number of photographs measured."""
    return ([192, 384], 1) if quick else ([512, 1024], 3)


def bench_extraction(pics: list, sides: list, n: int) -> tuple[dict, np.ndarray]:
    """Seconds per image of both SIFT backends on the same n photos at each side -> (report, words (M, 128))."""
    out, words = {}, []
    for side in sides:
        exs = {b: Extractor(C.FeatureConfig(backend=b, max_side=side)) for b in ("pyramid", "patch")}
        ts, nk = {b: [] for b in exs}, {b: [] for b in exs}
        for i, im in enumerate(resize(p, side) for p in pics[:n]):
            for b, ex in exs.items():
                if i == 0:
                    ex(im[:128, :128])  # warm-up
                t = time.perf_counter()
                f = ex(im)
                ts[b].append(time.perf_counter() - t)
                nk[b].append(len(f))
                words += [f.desc] if b == "pyramid" else []
        row = {b: {"s_per_image": float(np.mean(ts[b])), "images_per_s": 1.0 / float(np.mean(ts[b])), **pct(ts[b]),
                   "keypoints_mean": float(np.mean(nk[b]))} for b in exs}
        row["patch_over_pyramid"] = row["patch"]["s_per_image"] / row["pyramid"]["s_per_image"]
        out[str(side)] = row
    return out, np.concatenate(words)


def run(quick: bool, pics: list | None = None) -> tuple[dict, np.ndarray]:
    """The report's "extraction" entry (with wall time and peak memory) and the words."""
    sides, n = sides_and_photos(quick)
    out = {}
    with Stage(out) as e:
        rep, words = bench_extraction(pics if pics is not None else photos(), sides, n)
        e.update(photos=n, sides=sides, **rep)
    return out, words


def main(argv=None) -> int:
    args = parser(__doc__.splitlines()[0], "extract.json").parse_args(argv)
    with threads(n_threads()):
        out = {"machine": machine(n_threads()), "extraction": run(args.quick)[0]}
    for side in out["extraction"]["sides"]:
        r = out["extraction"][str(side)]
        print(f"{side}px: pyramid {r['pyramid']['s_per_image']:.2f} s/img, patch {r['patch']['s_per_image']:.2f} "
              f"s/img ({r['patch_over_pyramid']:.1f}x)")
    print(f"wrote {write_json(args.out, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
