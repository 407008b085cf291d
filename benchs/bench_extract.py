"""How fast is Kornia SIFT extraction: its settings, OpenCV SIFT as the reference line, indexing, a GPU?

``python -m benchs.bench_extract [--quick] [--out extract.json] [--photos realbench|skimage] [--index N]``:

- seconds per image and keypoints per image of Kornia SIFT (pyramid backend, patch backend, and the
  variants of ``VARIANTS``: the features of before, every level blurred, Kornia's grids and fits, upright, no doubled
  first octave; and Kornia's own SIFTFeatureScaleSpace) and of OpenCV SIFT (``cv2.SIFT_create``, the same
  number of features) on the same photographs at each longest side, with the same thread
  count (L2G_BENCH_THREADS, default 1). The extractors alternate image by image, so a burst of load on
  the machine hits them alike. OpenCV is the reference line only; l2g's extractor is Kornia's.
- real-image indexing throughput: ``N`` realbench-dev photographs (extraction + index + similarity graph)
  built into a temporary folder at ``--workers 1`` and at every core, in images per second (from
  BuildReport.timings and the graph's own time);
- on a CUDA GPU, images per second of batched extraction (patch and pyramid backends, batch 1 and 32;
  target 50 img/s); ``{"cuda": false}`` where torch sees none.

The pyramid descriptors are kept as "visual words" for the synthetic galleries (benchs/galleries.py).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchs.common import Stage, machine, n_threads, parser, pct, photos, resize, threads, write_json
from l2g import config as C
from l2g.features import Extractor

KORNIAS = {"desc_grid": 41, "orient_grid": 19, "refine": 0.0, "resample": False, "min_contrast": 0.0}
VARIANTS = {   # name -> FeatureConfig changes from the default (each gets its own index folder: FeatureConfig.name)
    "classic": {k.split("__")[1]: v for k, v in C.PRESETS["classic"].items()},   # the default before issue 8's
    #                                                                             cheaper stages (preset 'classic')
    "blurred": {"resample": False, "min_contrast": 0.0},   # every level blurred at full size
    "grid41": {"desc_grid": 41, "orient_grid": 19},        # Kornia's descriptor and orientation grids
    "refine2": {"refine": 2.0},                            # 2N extrema fitted
    "refine0": {**KORNIAS},                                # every extremum fitted, Kornia's grids: Kornia's features
    "grid25": {"desc_grid": 25},                           # a coarser descriptor grid still
    "upright": {"upright": True},
    "no_double": {"backend": "pyramid-nd"},                # the 'draft' preset
    "no_double_upright": {"backend": "pyramid-nd", "upright": True},
}
GPU_TARGET_IMAGES_PER_S = 50.0


def sides_and_photos(quick: bool) -> tuple[list, int]:
    """Longest sides (px) and number of photographs measured."""
    return ([192, 384], 1) if quick else ([512, 1024], 3)


def realbench_photos(n: int) -> list[Path]:
    """Every ``k``-th realbench-dev group photograph, n of them (sorted, so the same ones every run)."""
    files = sorted(p for p in (C.REALBENCH_DIR / "groups").rglob("*") if p.suffix.lower() in C.IMAGE_EXTENSIONS)
    return files[:: max(1, len(files) // n)][:n] if files else []


def _opencv(num_features: int, n_threads_: int):
    """OpenCV SIFT on an RGB image -> keypoint count, or None when cv2 is missing."""
    try:
        import cv2
    except ImportError:
        return None
    cv2.setNumThreads(n_threads_)
    sift = cv2.SIFT_create(num_features)
    return lambda rgb: len(sift.detectAndCompute(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), None)[0])


def _kornia_as_is(num_features: int):
    """Kornia's SIFTFeatureScaleSpace (pyramid backend) itself, as l2g ran it before issue 8 (the features
    of ``refine0``): RGB image -> keypoint count."""
    import kornia.feature as KF
    import torch

    from l2g.sift import gray_batch

    model = KF.SIFTFeatureScaleSpace(num_features=num_features, rootsift=False, descriptor_backend="pyramid").eval()

    def run(rgb):
        with torch.inference_mode():
            return int(KF.laf_is_filled(model(gray_batch([rgb]))[0]).sum())
    return run


def bench_extraction(pics: list, sides: list, n: int, variants: dict | None = None) -> tuple[dict, np.ndarray]:
    """Seconds per image of both SIFT backends, the variants and OpenCV on the same n photos at each side
    -> (report, words (M, 128))."""
    out, words = {}, []
    for side in sides:
        cfgs = {b: C.FeatureConfig(backend=b, max_side=side) for b in ("pyramid", "patch")}
        cfgs.update({k: C.FeatureConfig(max_side=side, **v) for k, v in (variants or {}).items()})
        runs = {k: Extractor(c, device="cpu") for k, c in cfgs.items()}
        if variants:
            runs["kornia_as_is"] = _kornia_as_is(C.FeatureConfig().num_features)
        cv = _opencv(C.FeatureConfig().num_features, n_threads())
        if cv is not None:
            runs["opencv"] = cv
        ts, cs, nk = {b: [] for b in runs}, {b: [] for b in runs}, {b: [] for b in runs}
        for i, im in enumerate(resize(p, side) for p in pics[:n]):
            for b, ex in runs.items():
                if i == 0:
                    ex(im[:128, :128])  # warm-up
                t, c = time.perf_counter(), time.process_time()
                f = ex(im)
                ts[b].append(time.perf_counter() - t)
                cs[b].append(time.process_time() - c)
                nk[b].append(f if isinstance(f, int) else len(f))
                words += [f.desc] if b == "pyramid" else []
        # CPU seconds (this process's) beside wall seconds: on a shared machine under load the wall time
        # also counts the time other jobs held the core; at one thread CPU time is the work itself
        row = {b: {"s_per_image": float(np.mean(ts[b])), "images_per_s": 1.0 / float(np.mean(ts[b])), **pct(ts[b]),
                   "cpu_s_per_image": float(np.mean(cs[b])), "keypoints_mean": float(np.mean(nk[b]))} for b in runs}
        for b in cfgs:
            row[b]["preset"] = cfgs[b].name
        row["patch_over_pyramid"] = row["patch"]["s_per_image"] / row["pyramid"]["s_per_image"]
        if "opencv" in row:
            timed = [b for b in runs if b != "opencv"]
            row["over_opencv"] = {b: row[b]["s_per_image"] / row["opencv"]["s_per_image"] for b in timed}
            row["over_opencv_cpu"] = {b: row[b]["cpu_s_per_image"] / row["opencv"]["cpu_s_per_image"] for b in timed}
        out[str(side)] = row
    return out, np.concatenate(words)


def run(quick: bool, pics: list | None = None, variants: dict | None = None) -> tuple[dict, np.ndarray]:
    """The report's "extraction" entry (with wall time and peak memory) and the words."""
    sides, n = sides_and_photos(quick)
    out = {}
    with Stage(out) as e:
        rep, words = bench_extraction(pics if pics is not None else photos(), sides, n, variants)
        e.update(photos=n, sides=sides, **rep)
    return out, words


def indexing(n: int, workers: list[int], fcfg: C.FeatureConfig = C.FeatureConfig()) -> dict:
    """Images per second of a real build (extraction + index + graph, no global descriptors) of n
    realbench-dev photographs at each worker count; {} when realbench-dev is absent."""
    from l2g.graph import ensure_graph
    from l2g.index import build_index

    files = realbench_photos(n)
    if not files:
        return {}
    tmp = Path(tempfile.mkdtemp(prefix="l2g-bench-index-"))
    out = {"images": len(files), "preset": fcfg.name}
    try:
        gallery = tmp / "gallery"
        gallery.mkdir()
        for i, f in enumerate(files):
            shutil.copy(f, gallery / f"{i:03d}{f.suffix.lower()}")
        for w in workers:
            cfg = C.DEFAULT.replace(features=fcfg, build__workers=w, build__device="cpu")
            t0 = time.perf_counter()
            li, rep = build_index(gallery, tmp / f"ix{w}", cfg)
            t1 = time.perf_counter()
            ensure_graph(tmp / f"ix{w}", li, cfg.graph, cfg.search)
            t2 = time.perf_counter()
            out[f"workers_{w}"] = {"extract_s": rep.timings["extract"], "index_s": rep.timings["index"],
                                   "graph_s": t2 - t1, "total_s": t2 - t0, "images_per_s": len(files) / (t2 - t0),
                                   "extract_images_per_s": len(files) / rep.timings["extract"]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def gpu(pics: list, side: int = 1024, n: int = 64, batches=(1, 32)) -> dict:
    """Images per second of batched extraction on CUDA (images of one size: the photos resized to
    ``side`` and cropped to 3:4); {"cuda": False} without a GPU."""
    import torch

    if not torch.cuda.is_available():
        return {"cuda": False}
    h = side * 3 // 4
    imgs = [resize(p, side) for p in pics]
    imgs = [im for im in imgs if im.shape[0] >= h and im.shape[1] >= side] or [resize(pics[0], side)]
    imgs = [imgs[i % len(imgs)][:h, :side].copy() for i in range(n)]
    out = {"cuda": True, "gpu": torch.cuda.get_device_name(0), "images": n, "size": [side, h],
           "target_images_per_s": GPU_TARGET_IMAGES_PER_S}
    for backend in ("patch", "pyramid"):
        ex = Extractor(C.FeatureConfig(backend=backend, max_side=side), device="cuda")
        for b in batches:
            ex.batch(imgs[:b], b)                      # warm-up (kernels, allocator)
            torch.cuda.synchronize()
            t = time.perf_counter()
            feats = ex.batch(imgs, b)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t
            out[f"{backend}_batch{b}"] = {"images_per_s": n / dt, "s_per_image": dt / n,
                                          "keypoints_mean": float(np.mean([len(f) for f in feats]))}
    out["best_images_per_s"] = max(v["images_per_s"] for v in out.values() if isinstance(v, dict))
    out["met"] = out["best_images_per_s"] >= GPU_TARGET_IMAGES_PER_S
    return out


def main(argv=None) -> int:
    p = parser(__doc__.splitlines()[0], "extract.json")
    p.add_argument("--photos", choices=["realbench", "skimage"], default="realbench",
                   help="photographs to time extraction on (realbench-dev when present, else scikit-image's)")
    p.add_argument("--n", type=int, default=8, help="photographs per side (default 8; --quick: 1)")
    p.add_argument("--index", type=int, default=24, help="realbench-dev images of the indexing run (0: skip)")
    args = p.parse_args(argv)
    from l2g.images import load_image
    from l2g.sift import keep_freed_memory

    keep_freed_memory()     # as the command line and the build's workers run (l2g.sift; OpenCV's line too)

    files = realbench_photos(args.n) if args.photos == "realbench" else []
    pics = [load_image(f).rgb for f in files] or photos()
    sides, n = ([192, 384], 1) if args.quick else ([1024], min(args.n, len(pics)))
    out = {"machine": machine(n_threads()), "photos": [f.name for f in files] or "scikit-image"}
    with threads(n_threads()):
        out["extraction"] = {}
        with Stage(out["extraction"]) as e:
            rep, _ = bench_extraction(pics, sides, n, None if args.quick else VARIANTS)
            e.update(photos=n, sides=sides, **rep)
    if args.index and not args.quick:
        out["indexing"] = indexing(args.index, sorted({1, os.cpu_count() or 1}))
    out["gpu"] = gpu(pics)
    out["machine"]["loadavg_end"] = list(os.getloadavg())
    m = out["machine"]
    print(f"load average (1, 5, 15 min): {m['loadavg_start']} at the start, {m['loadavg_end']} at the end")
    for side in out["extraction"]["sides"]:
        r = out["extraction"][str(side)]
        for k, v in r.items():
            if isinstance(v, dict) and "s_per_image" in v:
                ratio, cpu = r.get("over_opencv", {}).get(k), r.get("over_opencv_cpu", {}).get(k)
                print(f"{side}px {k:18s} {v['s_per_image']:.3f} s/img (CPU {v['cpu_s_per_image']:.3f} s) "
                      f"{v['keypoints_mean']:6.0f} kp" + (f"  {ratio:.2f}x OpenCV (CPU {cpu:.2f}x)" if ratio else ""))
    for k, v in out.get("indexing", {}).items():
        if isinstance(v, dict):
            print(f"indexing {out['indexing']['images']} photos, {k}: {v['images_per_s']:.2f} img/s "
                  f"(extract {v['extract_s']:.1f} s, index {v['index_s']:.1f} s, graph {v['graph_s']:.1f} s)")
    print("gpu:", {k: v for k, v in out["gpu"].items() if not isinstance(v, dict)})
    print(f"wrote {write_json(args.out, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
