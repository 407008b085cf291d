"""How long does an index take to open, and how many bytes per descriptor does its feature store take?

``python -m benchs.bench_store [--quick] [--sizes 1000 10000] [--per-image 2000] [--old] [--out store.json]``

Per gallery size, a synthetic gallery (RootSIFT-like descriptors: non-negative, unit L2 norm;
``--per-image`` per image) is written straight into an index folder in the current format: the
feature-store shards (l2g.featstore) and a placeholder ``faiss.index`` of 1 byte per vector
(IndexLSH over zero vectors), so that ``load_index`` runs end to end without a large FAISS build;
reading a real faiss.index is the same in both formats and is not what this measures. With
``--old``, the same features are also written as format 2 did (one float32
``features/<sha1>.npz`` per image). Then, warm (files in the page cache) and cold (every file of
the folder dropped from the page cache with ``posix_fadvise(DONTNEED)`` first):

- ``new``: ``load_index`` (manifest, faiss.index, every shard checked against the manifest: full
  hash up to StoreConfig.full_hash_max, size + sampled hash above; then memory-mapped);
- ``old``: what format 2's open did beyond faiss.index: every features file read, hashed in full
  and decoded, the keypoints concatenated.

Reported: wall time and peak RSS over the RSS before (``benchs.common.Stage``), and the feature
store's bytes on disk per descriptor.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import faiss
import numpy as np

from benchs.common import Stage, machine, n_threads, parser, threads, write_json
from l2g import config as C
from l2g import featstore, store
from l2g.features import DESC_DIM, Features, load_features, save_features
from l2g.index import load_index
from l2g.manifest import ImageEntry, feature_name, write_manifest

SIZES = [1000, 10_000]


def synthetic(i: int, n: int) -> Features:
    """Image i's n RootSIFT-like descriptors (sparse, non-negative, unit norm) and keypoints, fixed seed."""
    rng = np.random.default_rng(i)
    x = rng.random((n, DESC_DIM), np.float32) ** 4
    desc = np.sqrt(x / x.sum(1, keepdims=True)).astype(np.float32)
    kpts = np.column_stack([rng.random((n, 2), np.float32) * 1024, rng.random((n, 3), np.float32)])
    return Features(kpts.astype(np.float32), desc, (1024, 768), {"extractor": C.FeatureConfig().name})


def write_gallery(folder: Path, size: int, per_img: int, old: bool, cfg: C.L2GConfig = C.DEFAULT) -> dict:
    """An index folder of ``size`` synthetic images in the current format (and format 2's files beside
    it in ``folder / 'v2'`` when ``old``); returns the image entries' count and the bytes written."""
    (folder / "features").mkdir(parents=True, exist_ok=True)
    images = [ImageEntry(f"img{i:06d}.jpg", f"{i:040x}", per_img, (1024, 768)) for i in range(size)]
    src = {e.sha1: (lambda i=i: synthetic(i, per_img)) for i, e in enumerate(images)}
    files = featstore.pack(folder, images, src, {}, cfg.store)
    ix = faiss.IndexLSH(DESC_DIM, 8)                        # placeholder: 1 byte per vector
    zeros = np.zeros((min(size * per_img, 1 << 20), DESC_DIM), np.float32)
    for a in range(0, size * per_img, len(zeros)):
        ix.add(zeros[: min(len(zeros), size * per_img - a)])
    with store.atomic_path(folder / "faiss.index") as tmp:
        faiss.write_index(ix, tmp)
    frec = {**store.record(folder / "faiss.index", cfg.store), "images": store.order_hash(images)}
    write_manifest(folder, cfg, folder, "lsh-placeholder", images, [], {**files, "faiss.index": frec})
    out = {"store_bytes": sum(r["size"] for r in files.values()), "shards": len(files)}
    if old:
        v2 = folder / "v2"
        (v2 / "features").mkdir(parents=True, exist_ok=True)
        recs = {feature_name(e.sha1): save_features(v2 / feature_name(e.sha1), src[e.sha1]()) for e in images}
        store.write_json(v2 / store.MANIFEST, {"format_version": 2, "images": [
            {"path": e.path, "sha1": e.sha1, "n": e.n} for e in images], "files": recs})
        out["old_store_bytes"] = sum(r["size"] for r in recs.values())
    return out


def open_old(v2: Path) -> np.ndarray:
    """Format 2's open beyond faiss.index: every features file read, checked in full and decoded."""
    m = store.read_json(v2 / store.MANIFEST)
    feats = [load_features(v2 / feature_name(e["sha1"]), m["files"][feature_name(e["sha1"])]) for e in m["images"]]
    if any(len(f) != e["n"] for f, e in zip(feats, m["images"])):
        raise RuntimeError("a features file does not match its manifest")
    return np.concatenate([f.kpts for f in feats])


def drop_cache(folder: Path) -> None:
    """Drop every file under ``folder`` from the page cache (clean pages; no root needed)."""
    for p in folder.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def measure(folder: Path, old: bool) -> dict:
    out = {}
    for cache in ("cold", "warm"):
        if cache == "cold":
            drop_cache(folder)
        with Stage(out.setdefault(f"new_{cache}", {})):
            li = load_index(folder)
            li.features(li.n_images - 1)                     # one image read through the maps
        del li
        if old:
            if cache == "cold":
                drop_cache(folder / "v2")
            with Stage(out.setdefault(f"old_{cache}", {})):
                kpts = open_old(folder / "v2")
            del kpts
    return out


def run_size(size: int, per_img: int, old: bool, tmp: Path) -> dict:
    folder = tmp / f"ix{size}"
    w = {}
    with Stage(w):
        wrote = write_gallery(folder, size, per_img, old)
    n = size * per_img
    out = {"images": size, "per_image": per_img, "descriptors": n, "write": w, **wrote,
           "store_bytes_per_descriptor": wrote["store_bytes"] / n, "open": measure(folder, old)}
    if old:
        out["old_store_bytes_per_descriptor"] = wrote["old_store_bytes"] / n
    shutil.rmtree(folder, ignore_errors=True)
    return out


def run(quick: bool, sizes=None, per_img: int = 2000, old: bool = False, tmp: Path | None = None) -> dict:
    """{size: run_size(...)}; quick: one 100-image gallery of 200 descriptors per image, both formats."""
    if quick:
        sizes, per_img, old = [100], 200, True
    own = tmp is None
    tmp = Path(tempfile.mkdtemp(prefix="l2g-bench-store-")) if own else Path(tmp)
    try:
        return {str(s): run_size(int(s), per_img, old, tmp) for s in (sizes or SIZES)}
    finally:
        if own:
            shutil.rmtree(tmp, ignore_errors=True)


def summary(res: dict) -> str:
    lines = []
    for size, r in res.items():
        o = r["open"]
        line = (f"{size} images x {r['per_image']} ({r['shards']} shards): store {r['store_bytes_per_descriptor']:.1f} "
                f"B/desc; load_index cold {o['new_cold']['wall_s']:.3f} s warm {o['new_warm']['wall_s']:.3f} s, "
                f"peak +{o['new_cold']['peak_rss_delta_bytes'] / 2**20:.0f} MiB")
        if "old_cold" in o:
            line += (f" | format 2: {r['old_store_bytes_per_descriptor']:.1f} B/desc, open cold "
                     f"{o['old_cold']['wall_s']:.3f} s warm {o['old_warm']['wall_s']:.3f} s, peak "
                     f"+{o['old_cold']['peak_rss_delta_bytes'] / 2**20:.0f} MiB")
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> int:
    p = parser(__doc__.splitlines()[0], "store.json", sizes=SIZES)
    p.add_argument("--per-image", type=int, default=2000, help="descriptors per synthetic image")
    p.add_argument("--old", action="store_true", help="also write and open format 2 (one float32 npz per image)")
    p.add_argument("--tmp", default=None, help="folder for the synthetic index folders (default: a temp folder)")
    args = p.parse_args(argv)
    mach = machine(n_threads())
    with threads(n_threads()):
        res = run(args.quick, args.sizes, args.per_image, args.old, args.tmp)
    path = write_json(args.out, {"machine": {**mach, "loadavg_end": list(os.getloadavg())}, "sizes": res,
                                 "note": "peak RSS: the cold open is the first in the process; the warm one "
                                         "reuses memory the process already holds"})
    print(summary(res))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
