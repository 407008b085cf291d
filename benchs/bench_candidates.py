"""Nearest-neighbour index candidates side by side on one gallery (issue 8: search <= 0.3 s per query at
2M descriptors, shortlist recall@100 >= 0.95, <= 150 B per descriptor).

Run by benchs/bench_search.py for synthetic sizes (``python -m benchs.bench_search --sizes 1000``). Each
candidate is an ``index_factory`` string; IVF ones with the same number of lists share one k-means (its
centroids go into a flat or an HNSW quantizer), so later ones' build times are the code training and the
adds (``coarse_train_s`` where the k-means ran). Every search setting (a FAISS ParameterSpace string,
optionally a cap on the query descriptors, SearchConfig.max_query) runs the whole local search (kNN +
voting); settings alternate query by query, so a burst of load hits them alike.

Per setting: p50/p95 seconds per query, query descriptors per second, shortlist recall@100 against the
exact kNN's shortlist (the same voting) and the kNN's own recall (share of the exact 20 neighbours found).
Per candidate: build seconds, bytes per descriptor (FAISS file + 24 B keypoints and row map). Also: the
shipped kind opened memory-mapped (same setting), and all queries batched into one FAISS call.
``python -m benchs.bench_candidates --sizes ...``: how query time grows with the gallery (log-log slope).
"""
from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import faiss
import numpy as np

from benchs.bench_index import index_bytes
from benchs.common import pct
from l2g import ann
from l2g import config as C
from l2g.features import DESC_DIM
from l2g.search import knn as knn_rows
from l2g.search import local_search


def plan(n_total: int, quick: bool, big: bool = False) -> list:
    """[(name, factory, [(setting label, ParameterSpace string, query cap, rescore factor)])] at n_total
    vectors. A name in l2g.ann.RESCORED re-scores rescore-factor x knn candidates from the feature store.
    big (>= 10k images): the compact candidates only, over the shipped kinds' lists (one k-means)."""
    icfg, q = C.IndexConfig(), ("quantizer_efSearch", C.IndexConfig().hnsw_ef)
    lf, lh = ann.nlist_for(n_total, "ivf", icfg), ann.nlist_for(n_total, "ivfhnsw", icfg)

    def ivf(ps, hnsw=False, caps=(0,), factors=(0,)):
        return [(f"nprobe={p}" + (f",cap={c}" if c else "") + (f",rescore={f}x" if f else ""),
                 f"nprobe={p}" + (f",{q[0]}={max(q[1], p)}" if hnsw else ""), c, f)
                for p in ps for c in caps for f in factors]
    auto = ann.index_kind(n_total, icfg)
    dflt = ivf([icfg.rescore_nprobe], True, factors=(icfg.rescore_factor,))   # first: the shipped setting
    pq = [("ivfpq128_rs", ann.factory_key("ivfpq128_rs", n_total, icfg),
           dflt + [s for s in ivf([16, 32], True, factors=(2, 4)) if s[0] != dflt[0][0]]),
          ("ivfpq64_rs", ann.factory_key("ivfpq64_rs", n_total, icfg), ivf([32], True, factors=(4, 8)))]
    if quick:
        out = [("ivf", f"IVF{lf},Flat", ivf([16]))]
        if auto != "ivf":
            out.append((auto, ann.factory_key(auto, n_total, icfg), ivf([16], True, (0, 100), (icfg.rescore_factor,))))
        return out
    if big:
        return pq
    more = min(icfg.max_nlist, 4 * lh)
    out = [("ivf", f"IVF{lf},Flat", ivf([8, 16])),
           ("ivfhnsw", f"IVF{lh}_HNSW32,Flat", ivf([16, 24], True)),
           (f"ivfhnsw{more}", f"IVF{more}_HNSW32,Flat", ivf([16, 32, 48], True)),
           ("ivfsq8", f"IVF{lf},SQ8", ivf([16, 32])),
           ("ivfhnsw_sq6", f"IVF{lh}_HNSW32,SQ6", ivf([16], True)),
           ("ivf_pq32fs_rflat", f"IVF{lf},PQ32x4fs,RFlat",
            [(f"nprobe=16,k_factor={k}", f"nprobe=16,k_factor_rf={k}", 0, 0) for k in (2, 4)]),
           *pq,
           ("hnsw32", "HNSW32", [(f"efSearch={e}", f"efSearch={e}", 0, 0) for e in (16, 32, 64)])]
    for name, _, settings in out:   # the shipped kind: also with the query capped at 500 / 1000 descriptors
        if name == auto:
            settings += [(f"{lab},cap={c}", ps, c, f) for lab, ps, _, f in settings[:1] for c in (500, 1000)]
    return out


def _build(factory: str, raw, icfg: C.IndexConfig, coarse: dict) -> tuple[faiss.Index, dict]:
    """index_factory + train (coarse centroids reused from ``coarse``, {nlist: (nlist, d)}) + chunked adds."""
    ix = faiss.index_factory(DESC_DIM, factory, faiss.METRIC_L2)
    ivf = faiss.try_extract_index_ivf(ix)
    info, t0 = {"factory": factory}, time.perf_counter()
    if ivf is not None and ivf.nlist in coarse:
        ivf.quantizer.add(coarse[ivf.nlist])
    if not ix.is_trained:
        ix.train(raw.take(ann.train_rows(len(raw), icfg)))
    info["train_s"] = time.perf_counter() - t0
    if ivf is not None and ivf.nlist not in coarse:
        q = faiss.downcast_index(ivf.quantizer)
        coarse[ivf.nlist] = (q.storage if isinstance(q, faiss.IndexHNSW) else q).reconstruct_n(0, ivf.nlist)
        info["coarse_train_s"] = info["train_s"]
    t1 = time.perf_counter()
    ann.set_search_params(ix, icfg)          # the HNSW quantizer assigns the adds at the shipped efSearch
    ann.train_and_add(ix, raw.chunks(icfg.add_chunk), len(raw), icfg)
    info["add_s"] = time.perf_counter() - t1
    info["nlist"] = int(ivf.nlist) if ivf is not None else 0
    return ix, info


def _time(runs: list, queries: list, truth: list, exact: list, scfg: C.SearchConfig) -> list:
    """runs: [(li, ParameterSpace string, cap)] -> one summary per run; runs alternate query by query.
    (li's kind and cfg.index.rescore_factor say whether and how its candidates are re-scored.)"""
    ps, ts, knn, rec, drec = faiss.ParameterSpace(), [[] for _ in runs], [[] for _ in runs], \
        [[] for _ in runs], [[] for _ in runs]
    for qi, q in enumerate(queries):
        for i, (li, params, cap) in enumerate(runs):
            ps.set_index_parameters(li.ix, params)
            cfg = dataclasses.replace(scfg, max_query=cap)
            t = time.perf_counter()
            r = local_search(li, q, cfg, with_matches=False)
            ts[i].append(time.perf_counter() - t)
            knn[i].append(r.timings["knn"])
            if qi < len(truth):
                top = {int(j) for j in truth[qi].ids[:100] if truth[qi].all_scores[j] > 0}
                rec[i].append(len(top & set(r.ids[:100].tolist())) / max(len(top), 1))
                if not cap:
                    _, I = knn_rows(li, q.desc, scfg.knn)
                    drec[i].append(np.mean([len(set(a) & set(b)) / scfg.knn for a, b in
                                            zip(exact[qi][1].tolist(), I.tolist())]))
    nq = [min(cap or len(q), len(q)) for q in queries]
    return [{**pct(t), "knn_p50_s": float(np.median(k)), "query_descriptors_mean": float(np.mean(nq)),
             "query_descriptors_per_s": float(np.mean(nq) / np.median(t)), "recall@100": float(np.mean(r)),
             **({"knn_recall@20": float(np.mean(d))} if d else {})} for t, k, r, d in zip(ts, knn, rec, drec)]


def _batched(li, params: str, queries: list, k: int) -> dict:
    """Every query's descriptors in one kNN call (re-scoring included): kNN seconds per query (voting excluded)."""
    faiss.ParameterSpace().set_index_parameters(li.ix, params)
    xq = np.ascontiguousarray(np.concatenate([q.desc for q in queries]), np.float32)
    t = time.perf_counter()
    knn_rows(li, xq, k)
    return {"queries": len(queries), "setting": params, "knn_s_per_query": (time.perf_counter() - t) / len(queries)}


def _factor(li, f: int):
    """li with rescore_factor f (0: li itself)."""
    if not f:
        return li
    li = copy.copy(li)
    li.cfg = li.cfg.replace(index__rescore_factor=f)
    return li


def graph_timing(li, params: str, n_images: int, n_check: int = 3) -> dict:
    """Batched graph rows (l2g.graph.graph_rows, default GraphConfig) of two consecutive runs of n_images
    gallery images on 2 FAISS threads (the first maps the store's pages: cold), wall and CPU seconds per
    image with the load; and rows_one_at_a_time on n_check images against the batched rows."""
    import os

    import scipy.sparse as sp

    from benchs.common import threads
    from l2g.graph import graph_rows, rows_one_at_a_time

    faiss.ParameterSpace().set_index_parameters(li.ix, params)
    scfg, gcfg, out, n = C.SearchConfig(), C.GraphConfig(), {"setting": params}, li.n_images
    for name, ids in (("cold", range(n_images)), ("warm", range(n_images, 2 * n_images))):
        with threads(2):
            load, c, t = os.getloadavg()[0], time.process_time(), time.perf_counter()
            rcv = graph_rows(li, ids, scfg, gcfg)
            dt, dc = time.perf_counter() - t, time.process_time() - c
        out[name] = {"images": n_images, "threads": 2, "wall_s_per_image": dt / n_images,
                     "cpu_s_per_image": dc / n_images, "loadavg_1min": [load, os.getloadavg()[0]]}
    one = rows_one_at_a_time(li, range(n_images, n_images + n_check), scfg, gcfg)
    A, B = (sp.csr_matrix((v, (r, c)), shape=(n, n)).tocsr()[n_images:n_images + n_check] for r, c, v in (rcv, one))
    out["batched_vs_one_at_a_time"] = {"rows": n_check, "max_abs_score_diff": float(abs(A - B).max()),
                                       "same_neighbours": bool(all(set(A[i].indices) == set(B[i].indices)
                                                                   for i in range(n_check)))}
    return out


def run(raw, base, queries: list, truth: list, exact: list, p: dict, tmp: Path) -> dict:
    """The report's "candidates" entry: {name: {build, bytes, search: {setting: summary}}, ...}."""
    from benchs.bench_search import _with

    scfg, icfg, N = C.SearchConfig(), dataclasses.replace(C.IndexConfig(), train_sample=p["train_sample"]), len(raw)
    auto, out, coarse = ann.index_kind(N, C.IndexConfig()), {"auto_kind": ann.index_kind(N, C.IndexConfig())}, {}
    if base.fstore is not None:
        out["store_bytes_per_descriptor"] = base.fstore.nbytes / N
    for name, factory, settings in plan(N, p.get("quick", False), p.get("big", False)):
        ix, info = _build(factory, raw, icfg, coarse)
        li = _with(base, ix, name)
        runs = [(_factor(li, f), ps, cap) for _, ps, cap, f in settings]
        if name == auto:          # the same index memory-mapped from its file, at the first setting
            ann.write_faiss(ix, tmp / "mmap.index")
            mapped = _with(base, ann.read_faiss(tmp / "mmap.index", mmap=True), name)
            runs.append((_factor(mapped, settings[0][3]), settings[0][1], 0))
        stats = _time(runs, queries, truth, exact, scfg)
        e = out[name] = {"build": info, "bytes": index_bytes(ix, N, tmp), "rescored": name in ann.RESCORED,
                         "search": {lab: st for (lab, _, _, _), st in zip(settings, stats)}}
        if name == auto:
            e["mmap"] = {settings[0][0]: stats[-1]}
            e["batched"] = _batched(runs[0][0], settings[0][1], queries, scfg.knn)
            (tmp / "mmap.index").unlink()
            if p.get("graph_images"):
                e["graph"] = g = graph_timing(runs[0][0], settings[0][1], p["graph_images"])
                print(f"    graph rows ({settings[0][0]}): {g['warm']['wall_s_per_image']:.3f} s/image wall warm, "
                      f"{g['cold']['wall_s_per_image']:.3f} cold, {g['warm']['cpu_s_per_image']:.3f} CPU s/image, "
                      f"load {g['warm']['loadavg_1min'][0]:.1f}; = one at a time: {g['batched_vs_one_at_a_time']}",
                      flush=True)
        print(f"  {name:18s} {factory:28s} build {info['train_s'] + info['add_s']:.0f} s, "
              f"{e['bytes']['per_descriptor']:.0f} B/desc with kpts (FAISS + row map "
              f"{e['bytes']['faiss_and_row_map_per_descriptor']:.0f} B)", flush=True)
        for lab, st in e["search"].items():
            print(f"    {lab:34s} p50 {st['p50_s']:.3f} s p95 {st['p95_s']:.3f} s "
                  f"{st['query_descriptors_per_s']:.0f} qdesc/s recall@100 {st['recall@100']:.3f} "
                  f"knn recall@20 {st.get('knn_recall@20', float('nan')):.3f}", flush=True)
        del ix, li, runs
    return out


def scaling(sizes: list, rows: int, kinds: list, words: np.ndarray, tmp: Path, queries: int = 4,
            n_exact: int = 2) -> dict:
    """Query time, recall@100 and bytes per descriptor of ``kinds`` (l2g.ann, its nlist rule) on synthetic
    galleries of ``sizes`` images x ``rows`` rows, and the log-log slope of query time against size."""
    from benchs.bench_search import _gallery, _truth, _with
    from benchs.galleries import synth_gallery

    scfg, icfg, out = C.SearchConfig(), C.IndexConfig(), {"rows_per_image": rows, "sizes": {}}
    for size in sizes:
        d = tmp / str(size)
        d.mkdir()
        p = {"per_img": rows, "queries": queries, "q_desc": 2000}
        raw, counts, qs, _, info = synth_gallery(size, p, words, d)
        base, exact = _gallery(counts, raw.fstore), []
        t = time.perf_counter()
        truth = _truth(raw, base, qs[:n_exact], scfg, exact)
        s = out["sizes"][str(size)] = {"descriptors": len(raw), "exact_s": time.perf_counter() - t,
                                       "generate_s": info["generate"]["wall_s"], "kinds": {}}
        coarse = {}                       # kinds with the same lists share the k-means
        for kind in kinds:
            ix, b = _build(ann.factory_key(kind, len(raw), icfg), raw, icfg, coarse)
            ann.set_search_params(ix, icfg)
            nprobe = icfg.rescore_nprobe if kind in ann.RESCORED else icfg.nprobe      # the kind's default
            st = _time([(_with(base, ix, kind), f"nprobe={nprobe}", 0)], qs, truth, exact, scfg)[0]
            s["kinds"][kind] = {"build": b, "bytes": index_bytes(ix, len(raw), d), "search": st}
            print(f"{size} images x {rows}: {kind} {b['factory']} p50 {st['p50_s']:.3f} s p95 {st['p95_s']:.3f} s "
                  f"recall@100 {st['recall@100']:.3f} {s['kinds'][kind]['bytes']['per_descriptor']:.0f} B/desc "
                  f"(build {b['train_s'] + b['add_s']:.0f} s)", flush=True)
            del ix
        raw.path.unlink()
    for kind in kinds:
        x = [np.log(int(k)) for k in out["sizes"]]
        y = [np.log(v["kinds"][kind]["search"]["p50_s"]) for v in out["sizes"].values()]
        out.setdefault("loglog_slope", {})[kind] = float(np.polyfit(x, y, 1)[0]) if len(x) > 1 else None
    return out


def main(argv=None) -> int:
    """``python -m benchs.bench_candidates --sizes 1000 2000 5000 10000 --rows 200 [--kinds ...]``: scaling."""
    from benchs.common import n_threads, parser, write_json
    from benchs.galleries import sized_runs

    ap = parser("How query time, recall and bytes grow with the gallery (synthetic)", "scaling.json",
                sizes=[1000, 2000, 5000, 10000])
    ap.add_argument("--rows", type=int, default=200, help="rows per image (2000 in real use)")
    ap.add_argument("--kinds", nargs="+", default=[C.IndexConfig().auto_kind])
    args = ap.parse_args(argv)
    with sized_runs("scaling", args.quick) as (tmp, out, _, words):
        out["scaling"] = scaling(args.sizes, args.rows, args.kinds, words, tmp)
    out["machine"]["threads"] = n_threads()
    print("log-log slope of query time:", out["scaling"]["loglog_slope"])
    print(f"wrote {write_json(args.out, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
