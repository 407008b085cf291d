"""Shared by the benchmarks: thread limits, wall time and peak memory of a stage, percentiles, the machine,
the photographs the real galleries are made of, and the JSON writer.

Every library runs one thread (torch, FAISS/OpenMP, each BLAS) unless L2G_BENCH_THREADS says otherwise: on
a shared 2-core machine, 2 threads against other jobs made SMACOF (k=700) 16x, Flat search 3.5x and SIFT
extraction 2-20x slower, and noisy.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from PIL import Image
from threadpoolctl import threadpool_limits

from l2g.demo import DISTRACTOR_SOURCES, GROUP_SOURCES, _photo, skimage_data_dir


def n_threads() -> int:
    return int(os.environ.get("L2G_BENCH_THREADS", "1"))


@contextlib.contextmanager
def threads(n: int):
    """Run torch, FAISS (OpenMP) and every loaded BLAS / OpenMP runtime (threadpoolctl) on n threads."""
    prev = torch.get_num_threads(), faiss.omp_get_max_threads()
    limits = threadpool_limits(limits=n)
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        limits.restore_original_limits()
        torch.set_num_threads(prev[0])
        faiss.omp_set_num_threads(prev[1])


def _mem() -> dict:
    """VmRSS, VmHWM (peak), RssFile of this process, in bytes."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for ln in f:
                key, _, val = ln.partition(":")
                if key in ("VmRSS", "VmHWM", "RssFile"):
                    out[key] = int(val.split()[0]) * 1024
    except OSError:
        pass
    if "VmHWM" not in out:
        import resource
        out["VmHWM"] = out["VmRSS"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


class Stage:
    """``with Stage(d):`` adds wall_s and peak_rss_delta_bytes (peak RSS above the RSS at entry) to d."""

    def __init__(self, out: dict):
        self.out = out

    def __enter__(self) -> dict:
        try:  # Linux >= 4.0: reset the peak to the current RSS
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.m0, self.t0 = _mem(), time.perf_counter()
        return self.out

    def __exit__(self, *exc) -> None:
        m = _mem()
        base = self.m0["VmRSS"] if self.reset else self.m0["VmHWM"]
        self.out["wall_s"] = round(time.perf_counter() - self.t0, 3)
        self.out["peak_rss_delta_bytes"] = int(max(0, m["VmHWM"] - base))
        self.out["rss_file_bytes"] = int(m.get("RssFile", 0))  # file-backed pages mapped (shared libraries)


def pct(ts) -> dict:
    """Times (s) -> {p50_s, p95_s, n}."""
    return {"p50_s": float(np.percentile(ts, 50)), "p95_s": float(np.percentile(ts, 95)), "n": len(ts)}


def machine(threads: int) -> dict:
    import kornia

    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    return {"cores": os.cpu_count(), "cpu": cpu, "threads": threads, "python": platform.python_version(),
            "torch": torch.__version__, "faiss": faiss.__version__, "kornia": kornia.__version__,
            "numpy": np.__version__, "loadavg_start": list(os.getloadavg())}


def write_json(path, out: dict) -> Path:
    """Write a report (numpy scalars as numbers, anything else unknown as a string); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    return path


def parser(description: str, out: str, sizes: list | None = None) -> argparse.ArgumentParser:
    """The options every script takes: --out, --quick (a smoke run) and, for per-size questions, --sizes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default=out, help=f"output JSON (default {out})")
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats (smoke run)")
    if sizes is not None:
        p.add_argument("--sizes", type=int, nargs="+", default=sizes, help="gallery sizes (images)")
    return p


# ----------------------------------------------------------------------------- photographs

def photos() -> list:
    """(H, W, 3) uint8 photographs shipped in scikit-image (the demo's sources)."""
    names = [f for fs in GROUP_SOURCES.values() for f in fs] + list(DISTRACTOR_SOURCES)
    data = skimage_data_dir()
    out = [p for p in (_photo(data, f) for f in names) if p is not None]
    if not out:
        raise RuntimeError("the benchmark needs scikit-image's sample photographs (pip install scikit-image)")
    return out


def resize(rgb: np.ndarray, side: int) -> np.ndarray:
    """(H, W, 3) uint8 -> longest side = side (up- or down-scaled)."""
    h, w = rgb.shape[:2]
    s = side / max(h, w)
    return np.asarray(Image.fromarray(rgb).resize((max(1, round(w * s)), max(1, round(h * s))),
                                                  Image.Resampling.LANCZOS))


def view(rgb: np.ndarray, rng: np.random.Generator, side: int) -> np.ndarray:
    """A random crop (55-100 % of each side) rotated by up to 25 degrees; longest side = side."""
    h, w = rgb.shape[:2]
    cw, ch = int(rng.uniform(0.55, 1.0) * w), int(rng.uniform(0.55, 1.0) * h)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = Image.fromarray(rgb).crop((x0, y0, x0 + cw, y0 + ch))
    return resize(np.asarray(im.rotate(float(rng.uniform(-25, 25)), Image.Resampling.BICUBIC)), side)
