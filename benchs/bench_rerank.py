"""How long does MDS re-ranking take, classical against SMACOF, as the shortlist head k grows?

``python -m benchs.bench_rerank [--quick] [--out rerank.json]``: ``rerank()`` time (default RerankConfig,
k varied) on a random shortlist and a random sparse (n, n) gallery graph. The methods alternate repeat by
repeat, so a burst of load hits both alike (faiss.contrib.evaluation.RepeatTimer repeats one operation back
to back, so it is not used here). "classical+hub" is classical MDS with the opt-in hub guard and diffusion
step (HUB); its per-graph table of strongest similarities is built once, timed apart (hub_table_s).
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import scipy.sparse as sp

from benchs.common import Stage, machine, n_threads, parser, pct, threads, write_json
from l2g import config as C
from l2g.graph import Graph
from l2g.rerank import hub_means, rerank
from l2g.search import SearchResult

HUB = {"diffuse_a": 0.25, "hub_n": 30, "hub_beta": 1.0, "local_w": 0.5}   # quality_leads' lead 3
VARIANTS = {"classical": {"method": "classical"}, "smacof": {"method": "smacof"},
            "classical+hub": {"method": "classical", **HUB}}
METHODS = tuple(VARIANTS)


def plan(quick: bool) -> tuple[list, list]:
    """Shortlist heads k and repeats at each."""
    return [100, 700], [3, 1] if quick else [20, 5]


def bench_rerank(ks: list, repeats: list, n_images: int = 10_000, top_n: int = 200, seed: int = 0) -> dict:
    """{method: {k: {p50_s, p95_s, n, mds_p50_s}}} plus the graph's size and the default RerankConfig."""
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_images), top_n)
    G = sp.csr_matrix((rng.uniform(0, 0.3, rows.size).astype(np.float32), (rows, rng.integers(0, n_images, rows.size))),
                      shape=(n_images, n_images))
    graph = Graph(G, [f"{j:05d}" for j in range(n_images)])
    out = {"graph_images": n_images, "graph_top_n": top_n, "default": C.asdict(C.RerankConfig())}
    t = time.perf_counter()
    hub_means(graph, np.arange(1), HUB["hub_n"])
    out["hub_table_s"] = time.perf_counter() - t
    for k, rep in zip(ks, repeats):
        ids = rng.choice(n_images, k, replace=False)
        scores = np.zeros(n_images, np.float32)
        scores[ids] = np.sort(rng.uniform(0.01, 0.5, k))[::-1]
        res = SearchResult(ids, scores[ids], [graph.paths[j] for j in ids], scores, 2000)
        ts, mds = {m: [] for m in METHODS}, {m: [] for m in METHODS}
        for _ in range(rep):
            for m in METHODS:
                t = time.perf_counter()
                rr = rerank(res, graph, dataclasses.replace(C.RerankConfig(), k=k, **VARIANTS[m]))
                ts[m].append(time.perf_counter() - t)
                mds[m].append(rr.timings["mds"])
        for m in METHODS:
            out.setdefault(m, {})[str(k)] = {**pct(ts[m]), "mds_p50_s": float(np.median(mds[m]))}
    return out


def run(quick: bool) -> dict:
    """The report's "rerank" entry, with wall time and peak memory."""
    out = {}
    with Stage(out) as r:
        r.update(bench_rerank(*plan(quick)))
    return out


def main(argv=None) -> int:
    args = parser(__doc__.splitlines()[0], "rerank.json").parse_args(argv)
    with threads(n_threads()):
        out = {"machine": machine(n_threads()), "rerank": run(args.quick)}
    for m in METHODS:
        for k, v in out["rerank"][m].items():
            print(f"rerank {m} k={k}: p50 {v['p50_s'] * 1e3:.1f} ms, p95 {v['p95_s'] * 1e3:.1f} ms")
    print(f"hub table (once per graph): {out['rerank']['hub_table_s'] * 1e3:.0f} ms")
    print(f"wrote {write_json(args.out, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
