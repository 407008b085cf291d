"""How fast is an index built, and how many bytes does it take per descriptor?

``python -m benchs.bench_index [--quick] [--sizes 100 1000] [--out index.json]``: per gallery size and index
kind (Flat, IVF-Flat, IVF-SQ8, ..., each l2g.ann's ``index_factory`` string with its nlist rule), the train and
add time, images per second and the serialised bytes per descriptor (keypoints and row map included).
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import faiss

from benchs.common import Stage, parser, write_json
from benchs.galleries import gallery, plan, sized_runs
from l2g import ann
from l2g import config as C
from l2g.index import train_and_add


def factory_key(kind: str, n_total: int, icfg: C.IndexConfig) -> str:
    """The index_factory string of an index kind over n_total rows: l2g.ann's (with its nlist rule)."""
    return ann.factory_key(kind, n_total, icfg)


def build(kind: str, raw, icfg: C.IndexConfig) -> tuple[faiss.Index, dict]:
    """ann.make_faiss + train (IVF: ann.train_rows of raw) + add chunk by chunk; timings in the dict."""
    ix, _ = ann.make_faiss(len(raw), dataclasses.replace(icfg, kind=kind))
    t0 = time.perf_counter()
    if not ix.is_trained:
        train_and_add(ix, [], len(raw), icfg, raw.take(ann.train_rows(len(raw), icfg)))
    t1 = time.perf_counter()
    train_and_add(ix, raw.chunks(icfg.add_chunk), len(raw), icfg)
    return ix, {"factory": ann.factory_key(kind, len(raw), icfg), "nlist": int(getattr(ix, "nlist", 0)),
                "train_s": t1 - t0, "add_s": time.perf_counter() - t1}


def index_bytes(ix: faiss.Index, n: int, tmp: Path) -> dict:
    """LocalIndex.memory_bytes() style: FAISS serialised bytes + kpts (n, 5) float32 + img_of (n,) int32."""
    path = tmp / "size.index"
    faiss.write_index(ix, str(path))
    fb = path.stat().st_size
    path.unlink()
    return {"faiss": fb, "kpts": n * 20, "img_of": n * 4, "per_descriptor": (fb + n * 24) / n,
            "faiss_and_row_map_per_descriptor": (fb + n * 4) / n}   # keypoints live in the feature store


def index_config(p: dict) -> C.IndexConfig:
    """The default IndexConfig with a size's nlist and training sample (benchs/galleries.plan)."""
    return dataclasses.replace(C.IndexConfig(), nlist=p["nlist"], train_sample=p["train_sample"])


def build_entry(kind: str, raw, n_images: int, icfg: C.IndexConfig, tmp: Path) -> tuple[faiss.Index, dict]:
    """Build one kind -> (index, {"build": time, rate and peak memory, "bytes": size})."""
    b = {}
    with Stage(b):
        ix, info = build(kind, raw, icfg)
    b.update(info, s_per_image=(info["train_s"] + info["add_s"]) / n_images)
    b["images_per_s"] = 1.0 / max(b["s_per_image"], 1e-12)
    return ix, {"build": b, "bytes": index_bytes(ix, len(raw), tmp)}


def main(argv=None) -> int:
    args = parser(__doc__.splitlines()[0], "index.json", sizes=[100, 1000]).parse_args(argv)
    with sized_runs("index", args.quick) as (tmp, out, pics, words):
        for size in args.sizes:
            p, d = plan(size, args.quick), tmp / str(size)
            d.mkdir()
            raw, counts = gallery(size, p, pics, words, d)[:2]
            s = out["sizes"][str(size)] = {"images": len(counts), "descriptors": len(raw), "kinds": {}}
            for kind in p["kinds"]:
                ix, s["kinds"][kind] = build_entry(kind, raw, len(counts), index_config(p), d)
                b = s["kinds"][kind]
                print(f"{size} images, {b['build']['factory']}: {b['build']['images_per_s']:.1f} images/s, "
                      f"{b['bytes']['per_descriptor']:.0f} B/descriptor")
                del ix
            shutil.rmtree(d, ignore_errors=True)
    print(f"wrote {write_json(args.out, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
