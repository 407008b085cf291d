"""How many seconds per gallery image does the similarity graph take, one image per FAISS call or batched?

``python -m benchs.bench_graph [--quick] [--sizes 1000 10000] [--out graph.json]``: per gallery size, a synthetic
gallery (benchs/galleries.Synth: real RootSIFT "visual words" plus noise, regenerated per image instead of
read from a feature file) behind the index l2g builds at that size (IVF-Flat by l2g's rule at 1k; at 10k
IVF-SQ8 with nlist 4096 and 1,000 rows per image, as benchs/galleries.plan, to fit a shared 24 GiB machine).
Graph rows are timed for a subset of the gallery images (the first ``single`` one at a time with
``l2g.graph.rows_one_at_a_time``, the first ``batched`` with ``l2g.graph.build``'s batched path), on 1 FAISS
thread and batched on 2, and with a cap on query descriptors (GraphConfig.query_max); the graph time of the
whole gallery is extrapolated as s/image x images (every row costs the same: same index, same query size).
"""
from __future__ import annotations

import dataclasses
import os
import resource
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import scipy.sparse as sp

from benchs.common import Stage, n_threads, parser, threads, write_json
from benchs.galleries import StoreRows, Synth, plan, sized_runs
from l2g import config as C
from l2g.graph import graph_rows, rows_one_at_a_time
from l2g.index import ImageEntry, LocalIndex, index_kind, make_faiss, train_and_add, train_rows

SIZES = [1000, 10_000]
TARGET_S_PER_IMAGE = 0.18       # issue 8: a 10,000-image graph in <= 30 min on 2 cores


def gplan(size: int, quick: bool) -> dict:
    """Work done at one size: rows per image, index kind and nlist, images timed per mode, caps measured."""
    big, p = size >= 10_000, plan(size, quick)
    per_img = 100 if quick else 1000 if big else 2000
    return dict(per_img=per_img, kind=index_kind(size * per_img, C.IndexConfig()),   # what l2g builds
                nlist=0, train_sample=p["train_sample"], single=10 if quick else 4 if big else 20,
                batched=min(size, 200 if quick else 8 if big else 100), caps=[50] if quick else [500, 250],
                two_threads=not quick and not big)


class SynthIndex(LocalIndex):
    """A LocalIndex over a Synth gallery held as l2g's feature store (benchs.galleries.StoreRows, uint8
    rows, zero keypoints): features(i) and the re-scored kinds' candidates come from the store."""

    def __init__(self, rows: StoreRows, ix: faiss.Index, kind: str):
        images = [ImageEntry(f"{j:05d}.jpg", "", int(c), (0, 0)) for j, c in enumerate(rows.counts)]
        super().__init__(Path("."), Path("."), C.DEFAULT, images, ix, kind, fstore=rows.fstore)
        self.rows = rows


def build(syn: Synth, g: dict, tmp: Path) -> tuple[SynthIndex, dict]:
    """The index over every row of syn, written to a store in tmp: make_faiss + train on ann.train_rows + add."""
    n_total = syn.n_images * syn.per_img
    icfg = dataclasses.replace(C.IndexConfig(), kind=g["kind"], nlist=g["nlist"], train_sample=g["train_sample"])
    rows = StoreRows.write(tmp / "graph-store.npy", (syn.image(j) for j in range(syn.n_images)),
                           np.full(syn.n_images, syn.per_img))
    ix, kind = make_faiss(n_total, icfg)
    t0 = time.perf_counter()
    if not ix.is_trained:
        train_and_add(ix, [], n_total, icfg, rows.take(train_rows(n_total, icfg)))
    t1 = time.perf_counter()
    train_and_add(ix, rows.chunks(icfg.add_chunk), n_total, icfg)
    return SynthIndex(rows, ix, kind), {"kind": kind, "nlist": int(getattr(ix, "nlist", 0)),
                                        "nprobe": int(getattr(ix, "nprobe", 0)), "train_s": t1 - t0,
                                        "add_s": time.perf_counter() - t1}


_LI = None   # the index a forked worker searches (inherited, not pickled)


def _half(args):
    ids, scfg, gcfg = args
    faiss.omp_set_num_threads(1)
    return graph_rows(_LI, ids, scfg, gcfg)


def rows_in_processes(li: LocalIndex, ids, scfg: C.SearchConfig, gcfg: C.GraphConfig, workers: int = 2) -> tuple:
    """Batched graph rows computed by ``workers`` forked processes (one FAISS thread each) over interleaved
    slices of ids: what worker processes would add over FAISS's own threads. COO triplets."""
    import multiprocessing as mp

    global _LI
    _LI, ids = li, list(ids)
    with mp.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_half, [(ids[w::workers], scfg, gcfg) for w in range(workers)])
    _LI = None
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (forked workers)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def _timed(fn, n_images: int, n_threads: int) -> tuple[dict, tuple]:
    """Wall and CPU seconds of fn() on n_threads. On a shared machine CPU seconds are the steadier figure:
    wall time counts the other jobs' share of the cores (loadavg_1min is recorded)."""
    with threads(n_threads):
        load, c, t = os.getloadavg()[0], _cpu(), time.perf_counter()
        rcv = fn()
        dt, dc = time.perf_counter() - t, _cpu() - c
    return {"images": n_images, "threads": n_threads, "wall_s": dt, "s_per_image": dt / n_images,
            "cpu_s": dc, "cpu_s_per_image": dc / n_images, "loadavg_1min": [load, os.getloadavg()[0]]}, rcv


def _agreement(a: tuple, b: tuple, rows: int, n: int) -> dict:
    """How far two sets of COO rows (r, c, v) are apart: max score difference, rows with equal neighbour sets."""
    A, B = (sp.csr_matrix((v, (r, c)), shape=(n, n)).tocsr()[:rows] for r, c, v in (a, b))
    same = [set(A[i].indices) == set(B[i].indices) for i in range(rows)]
    return {"rows": rows, "max_abs_score_diff": float(abs(A - B).max()) if A.nnz or B.nnz else 0.0,
            "rows_same_neighbours": float(np.mean(same)), "neighbours_per_row": A.nnz / max(rows, 1)}


def run_size(size: int, quick: bool, words: np.ndarray, base_threads: int, tmp: Path) -> dict:
    """One gallery size: build, then time graph rows per mode on the first images; extrapolate to the gallery."""
    g, scfg, gcfg = gplan(size, quick), C.SearchConfig(), C.GraphConfig()
    syn, out = Synth(words, size, g["per_img"]), {"plan": g}
    with Stage(out.setdefault("build", {})) as b:
        li, info = build(syn, g, tmp)
    b.update(info)
    single, batched = range(g["single"]), range(g["batched"])
    modes = {"one_at_a_time": (lambda: rows_one_at_a_time(li, single, scfg, gcfg), g["single"], base_threads),
             "batched": (lambda: graph_rows(li, batched, scfg, gcfg), g["batched"], base_threads)}
    if g["two_threads"]:
        modes["batched_2_threads"] = (modes["batched"][0], g["batched"], 2)
        modes["batched_2_processes"] = (lambda: rows_in_processes(li, batched, scfg, gcfg), g["batched"], 1)
    for m in g["caps"]:
        capped = dataclasses.replace(gcfg, query_max=m)
        modes[f"batched_query_max_{m}"] = (lambda c=capped: graph_rows(li, batched, scfg, c), g["batched"],
                                           base_threads)
    rows, out["modes"] = {}, {}
    for name, (fn, n_img, nt) in modes.items():
        out["modes"][name], rows[name] = _timed(fn, n_img, nt)
        s = out["modes"][name]["s_per_image"]
        out["modes"][name].update(graph_min_extrapolated=s * size / 60, meets_target=s <= TARGET_S_PER_IMAGE,
                                  graph_cpu_min_extrapolated=out["modes"][name]["cpu_s_per_image"] * size / 60)
    out["agreement_batched_vs_one_at_a_time"] = _agreement(rows["one_at_a_time"], rows["batched"], g["single"], size)
    one = out["modes"]["one_at_a_time"]["s_per_image"]
    out["speedup_over_one_at_a_time"] = {k: one / v["s_per_image"] for k, v in out["modes"].items()}
    out.update(images=size, descriptors=li.ntotal, rows_per_image=g["per_img"], query_rows_per_image=g["per_img"],
               batch_rows=gcfg.batch_rows, index=info)
    return out


def run(quick: bool, words: np.ndarray, sizes=None, base_threads: int = 1, tmp: Path | None = None) -> dict:
    """The report's 'graph' entry: {sizes: {size: run_size}, target_s_per_image}."""
    sizes = ([500] if quick else SIZES) if sizes is None else sizes
    res = {"target_s_per_image": TARGET_S_PER_IMAGE, "sizes": {}}
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="l2g-bench-graph-", dir=tmp) as d:   # the store: 1.5 GB at 10k
            res["sizes"][str(size)] = run_size(int(size), quick, words, base_threads, Path(d))
    return res


def measured(res: dict, size: int) -> float | None:
    """s/image of the default graph build at ``size`` on 2 threads (1 when not measured), None if not run."""
    modes = res.get("sizes", {}).get(str(size), {}).get("modes", {})
    m = modes.get("batched_2_threads", modes.get("batched"))
    return None if m is None else m["s_per_image"]


def summary(res: dict) -> list:
    lines = []
    for size, s in res["sizes"].items():
        b = s["index"]
        lines.append(f"graph at {size} images x {s['rows_per_image']} rows ({b['kind']}, nlist {b['nlist']}, "
                     f"nprobe {b['nprobe']}; build {b['train_s'] + b['add_s']:.0f} s)")
        for name, m in s["modes"].items():
            lines.append(f"  {name:26s} {m['s_per_image']:.3f} s/image ({m['cpu_s_per_image']:.3f} CPU s/image, load "
                         f"{m['loadavg_1min'][0]:.0f}) on {m['threads']} thread(s) "
                         f"({m['images']} images timed) -> {m['graph_min_extrapolated']:.1f} min for the gallery, "
                         f"{s['speedup_over_one_at_a_time'][name]:.2f}x")
        a = s["agreement_batched_vs_one_at_a_time"]
        lines.append(f"  batched vs one at a time on {a['rows']} rows: same neighbours {a['rows_same_neighbours']:.2f}"
                     f", max score diff {a['max_abs_score_diff']:.1e}")
    return lines


def main(argv=None) -> int:
    args = parser(__doc__.splitlines()[0], "graph.json", sizes=SIZES).parse_args(argv)
    sizes = None if args.quick and args.sizes == SIZES else args.sizes
    with sized_runs("graph", args.quick) as (tmp, out, _, words):
        out.update(run(args.quick, words, sizes, n_threads(), tmp))
    print("\n".join(summary(out)))
    print(f"wrote {write_json(args.out, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
