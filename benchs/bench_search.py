"""How fast is local search, and how much of the exact shortlist does an approximate index keep?

``python -m benchs.bench_search [--quick] [--sizes 100 1000] [--out search.json]``: per gallery size and index
kind, the local-search latency (p50/p95 per query, l2g's voting on top of the kNN), hit@1 and recall@k of
the ranked images against exact search (brute-force kNN by ``faiss.contrib.exhaustive_search``, the same
voting). IVF-SQ8 is also measured with exact re-scoring of 2x the candidates on the raw rows. FAISS returns
D, I (nq, k).
"""
from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.exhaustive_search import knn_ground_truth

from benchs import bench_candidates
from benchs.bench_index import build_entry, index_config
from benchs.common import Stage, parser, pct, write_json
from benchs.galleries import RawStore, gallery, plan, sized_runs
from l2g import ann
from l2g import config as C
from l2g.features import DESC_DIM
from l2g.index import ImageEntry, LocalIndex, index_kind, make_faiss
from l2g.search import SearchResult, local_search


class Rescored:
    """FAISS-like index: factor * k candidates from a compressed index, re-scored exactly on raw rows."""

    def __init__(self, ix: faiss.Index, raw: RawStore, factor: int = 2):
        self.ix, self.raw, self.factor, self.d, self.ntotal = ix, raw, factor, ix.d, ix.ntotal

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """xq (nq, d) -> D (nq, k) squared L2, I (nq, k) int64 (-1 where missing): l2g.ann.rescore, the
        product's re-scorer, over rows read from disk once each."""
        _, I = self.ix.search(xq, self.factor * k)

        def rows(ids: np.ndarray) -> np.ndarray:
            u, inv = np.unique(ids, return_inverse=True)
            return self.raw.rows(u)[inv]

        D, I = ann.rescore(xq, I, rows, k)
        return np.minimum(D, np.finfo(np.float32).max).astype(np.float32), I


class _Known:
    """FAISS-like index that answers with precomputed D, I (nq, k): exact kNN lists scored by local_search."""

    def __init__(self, D: np.ndarray, I: np.ndarray, ntotal: int):
        self.D, self.I, self.d, self.ntotal = D, I, DESC_DIM, ntotal

    def search(self, xq: np.ndarray, k: int):
        return self.D[:, :k], self.I[:, :k]


def exact_knn(raw: RawStore, xq: np.ndarray, k: int, chunk: int = 500_000) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force kNN of xq (nq, d) over raw (N, d), one chunk in memory at a time -> D, I (nq, k)."""
    return knn_ground_truth(np.ascontiguousarray(xq, np.float32), raw.chunks(chunk), k, ngpu=0)


def _gallery(counts: np.ndarray, fstore=None) -> LocalIndex:
    """A LocalIndex shell (no index yet) over images with counts (n,) rows each; kpts (N, 5) zeros, or the
    feature store ``fstore`` (re-scored kinds read their candidates there)."""
    images = [ImageEntry(f"{j:05d}", "", int(c), (0, 0)) for j, c in enumerate(counts)]
    kpts = None if fstore is not None else np.zeros((int(counts.sum()), 5), np.float32)
    return LocalIndex(Path("."), Path("."), C.DEFAULT, images, None, "", kpts, fstore=fstore)


def _with(li: LocalIndex, ix, kind: str) -> LocalIndex:
    li = copy.copy(li)
    li.ix, li.kind = ix, kind
    return li


def _recall(ref: SearchResult, res: SearchResult, k: int) -> float:
    """Fraction of ref's top-k images (score > 0) that res's top-k contains."""
    top = {int(j) for j in ref.ids[:k] if ref.all_scores[j] > 0}
    return len(top & {int(j) for j in res.ids[:k]}) / len(top) if top else 1.0


def _searches(settings: list, queries: list, positives: list, truth, ks: list, scfg: C.SearchConfig):
    """Time local_search (defaults) for every setting (li, ix, nprobe) on every query -> ([summary], [results]).

    Settings alternate query by query (fair under bursts of load); nprobe is set on ix first when given.
    Recall@k is against truth (the first len(truth) queries).
    """
    ts, res = [[] for _ in settings], [[] for _ in settings]
    for q in queries:
        for i, (li, ix, nprobe) in enumerate(settings):
            if nprobe is not None:
                ix.nprobe = nprobe
            t = time.perf_counter()
            res[i].append(local_search(li, q, scfg))
            ts[i].append(time.perf_counter() - t)
    out = []
    for t, rs in zip(ts, res):
        o = {**pct(t), "knn_p50_s": float(np.median([r.timings["knn"] for r in rs])),
             "hit@1": float(np.mean([int(r.ids[0]) in pos for r, pos in zip(rs, positives)]))}
        o.update({f"recall@{k}": float(np.mean([_recall(a, b, k) for a, b in zip(truth, rs)])) for k in ks if truth})
        out.append(o)
    return out, res


def _truth(raw: RawStore, base: LocalIndex, queries: list, scfg: C.SearchConfig, knn: list | None = None) -> list:
    """Exact local-search results of the queries: brute-force kNN (one pass over raw), the same voting.

    knn: a list that receives the exact (D, I) (nq_i, knn) of each query."""
    D, I = exact_knn(raw, np.concatenate([q.desc for q in queries]), scfg.knn)
    out, s = [], 0
    for q in queries:
        out.append(local_search(_with(base, _Known(D[s:s + len(q)], I[s:s + len(q)], len(raw)), "exact"), q, scfg))
        if knn is not None:
            knn.append((D[s:s + len(q)], I[s:s + len(q)]))
        s += len(q)
    return out


def eval_size(raw: RawStore, counts: np.ndarray, queries: list, positives: list, p: dict, tmp: Path) -> dict:
    """Build each of p['kinds'] over raw (N, 128) (counts (n,) rows per image), then time and score the queries."""
    scfg, n_img, N = C.SearchConfig(), len(counts), len(raw)
    icfg = index_config(p)
    ks, base = [k for k in (10, 100) if k < n_img], _gallery(counts, getattr(raw, "fstore", None))
    n_exact = min(p["exact"], len(queries))
    out = {"images": n_img, "descriptors": N, "query_descriptors_mean": float(np.mean([len(q) for q in queries])),
           "queries": len(queries), "exact_queries": n_exact, "auto_kind": index_kind(N, C.IndexConfig()),
           "default_nlist": int(getattr(make_faiss(N, C.IndexConfig(kind="ivf"))[0], "nlist", 0)), "kinds": {}}
    truth, exact = None, []
    # what l2g would build is always measured (at >= 10k images among the candidates)
    for kind in dict.fromkeys(p["kinds"] + ([] if p.get("big") else [out["auto_kind"]])):
        ix, r = build_entry(kind, raw, n_img, icfg, tmp)
        out["kinds"][kind] = r
        if kind == "flat":
            with Stage(r.setdefault("search", {})) as s:
                stats, (truth,) = _searches([(_with(base, ix, kind), ix, None)], queries[:n_exact], positives,
                                            None, ks, scfg)
                s.update(stats[0])
            # an independent exact path (chunked brute force + the same voting) must agree with Flat
            out["exact_check"] = {f"recall@{k}": _recall(_truth(raw, base, queries[:1], scfg)[0], truth[0], k)
                                  for k in ks}
            del ix
            continue
        if truth is None:
            with Stage(out.setdefault("exact_truth", {})) as t:
                truth = _truth(raw, base, queries[:n_exact], scfg, exact)
            t["s_per_query"] = t.get("wall_s", 0) / n_exact
        plain, rescored = _with(base, ix, kind), _with(base, Rescored(ix, raw), kind)
        settings = [("plain", plain, n) for n in (p["plain_nprobes"] if kind == "ivfsq8" else p["nprobes"])]
        settings += [("rescored", rescored, n) for n in p["nprobes"]] if kind == "ivfsq8" else []
        nlist = ix.nlist
        with Stage(r.setdefault("search_stage", {})):
            stats, _ = _searches([(li, ix, n or nlist) for _, li, n in settings], queries, positives, truth, ks, scfg)
        for (name, _, n), st in zip(settings, stats):
            r.setdefault(name, {})[str(n or nlist)] = st
        if kind == "ivfsq8":
            r["rescore"] = {"candidates_per_row": "2 * knn", "raw_on_disk_bytes_per_descriptor": 4 * DESC_DIM}
        del ix, plain, rescored
    if p.get("candidates"):
        if truth is None or not exact:
            with Stage(out.setdefault("exact_truth", {})) as t:
                exact.clear()
                truth = _truth(raw, base, queries[:n_exact], scfg, exact)
            t["s_per_query"] = t.get("wall_s", 0) / n_exact
        out["candidates"] = bench_candidates.run(raw, base, queries, truth, exact, p, tmp)
    return out


def run_size(size: int, quick: bool, pics: list, words: np.ndarray, tmp: Path) -> dict:
    """The report's entry of one gallery size (galleries + eval_size), with wall time and peak memory."""
    p, st = plan(size, quick), {}
    with Stage(st):
        raw, counts, queries, pos, info = gallery(size, p, pics, words, tmp)
        s = eval_size(raw, counts, queries, pos, p, tmp)
    s.update(source="real" if p["real"] else "synthetic", gallery=info, stage=st)
    return s


def main(argv=None) -> int:
    args = parser(__doc__.splitlines()[0], "search.json", sizes=[100, 1000]).parse_args(argv)
    with sized_runs("search", args.quick) as (tmp, out, pics, words):
        for size in args.sizes:
            (tmp / str(size)).mkdir()
            out["sizes"][str(size)] = run_size(size, args.quick, pics, words, tmp / str(size))
            shutil.rmtree(tmp / str(size), ignore_errors=True)
    from benchs.run_all import summary_sizes

    print("\n".join(summary_sizes(out["sizes"])))
    print(f"wrote {write_json(args.out, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
