"""Two-fold tuning of local-to-global re-ranking on realbench-dev (issue 12).

    python benchs/quality_twofold.py cache     # index + graph + VLAD, local results (from the graph)
    python benchs/quality_twofold.py g2l       # RANSAC of every query's global top 50, once (slow)
    python benchs/quality_twofold.py vgraph    # verified graph edges (l2g.vgraph), once
    python benchs/quality_twofold.py table     # every idea: tune on A, score B and the reverse
    python benchs/quality_twofold.py combos    # the joint grid of the ideas that won
    ... --extractor aliked --side 512          # the same on another feature preset

realbench-dev's groups are split into halves A and B by a seeded shuffle of the
group names. Each idea is a grid of RerankConfig values: the value with the
best mAP on A is scored on B and vice versa; "x-fold" is the mAP over every
query, each scored with the value tuned on the other half (nothing is tuned and
scored on the same images); "2-img" is the same over the queries of 2-image
groups. Everything expensive is cached under data/quality/, so each re-ranking
variant costs seconds. Set OMP_NUM_THREADS=1 on a shared machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from l2g import config as C
from l2g.datasets import load_eval_dataset
from l2g.globaldesc import global_similarities
from l2g.metrics import average_precision
from l2g.pipeline import open_engine
from l2g.rerank import rerank
from l2g.search import SearchResult, local_search, rank_images
from l2g.verify import g2l_rerank
from l2g.vgraph import ensure_vgraph

CACHE = C.DATA_DIR / "quality"
INDEX = CACHE / "realbench"
CFG = C.DEFAULT
SEED = 12
LOCAL = "local.pkl"           # local results (and the graph's) of the search settings in use
GRAPH_P0 = (0.35, 0.42, 0.6, 0.7, 0.85)   # graph kernels of its own (narrower and wider than the search p0)
G2L_TOP = (5, 10, 20, 50)


def _load(path: Path):
    with open(path, "rb") as f:
        return pickle.load(f)


def _dump(obj, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def engine():
    ds = load_eval_dataset(C.REALBENCH_DIR)
    eng = open_engine(ds.root, INDEX, CFG, paths=ds.images,  # built once by "cache"
                      sync=not (INDEX / "manifest.json").is_file())
    return ds, eng


def from_graph(eng, i: int) -> SearchResult:
    """Gallery image i's local search, read from graph row i (the graph is every image's
    local search with itself excluded, top_n >= gallery size keeps every positive score)."""
    li, scfg = eng.li, eng.cfg.search
    row = np.zeros(li.n_images, np.float32)
    G = eng.graph.G
    a, b = G.indptr[i], G.indptr[i + 1]
    row[G.indices[a:b]] = G.data[a:b]
    row[i] = -1.0
    ids = rank_images(row, li, scfg.shortlist)
    ids = ids[ids != i]
    return SearchResult(ids, row[ids], [li.paths[j] for j in ids], row, 0)


def cache():
    ds, eng = engine()
    li = eng.li
    if eng.graph.params.get("top_n", 0) < li.n_images - 1:
        raise SystemExit("graph top_n is below the gallery size: local results cannot be read from it")
    queries = []
    for q in ds.queries:
        i = li.id_of(q.path)
        if i is not None:
            queries.append({"path": q.path, "id": i, "positives": list(q.easy), "group": group_of(ds, q.path)})
    # the graph rows are the local searches: check it on two queries
    for qq in queries[:2]:
        ref = local_search(li, li.features(qq["id"]), eng.cfg.search, exclude=qq["id"], with_matches=False)
        got = from_graph(eng, qq["id"])
        assert np.array_equal(ref.ids, got.ids) and np.allclose(ref.scores, got.scores), "graph != local search"
    local = {qq["id"]: from_graph(eng, qq["id"]) for qq in queries}
    gsim = {}
    for qq in queries:
        s = global_similarities(eng.gi, eng.gi.xb[qq["id"]])
        s[qq["id"]] = -np.inf
        gsim[qq["id"]] = s
    with open(INDEX / LOCAL, "wb") as f:
        pickle.dump({"queries": queries, "local": local, "gsim": gsim, "paths": list(li.paths)}, f)
    print(f"cached {len(queries)} queries, {li.n_images} images")


def group_of(ds, path: str) -> str:
    return Path(path).parent.name


def g2l():
    _, eng = engine()
    c = _load(INDEX / LOCAL)
    out_path = INDEX / "g2l.pkl"
    done = _load(out_path) if out_path.is_file() else {}
    vcfg = dataclasses.replace(eng.cfg.verify, top=max(G2L_TOP))
    t0 = time.perf_counter()
    for n, qq in enumerate(c["queries"]):
        i = qq["id"]
        if i in done:
            continue
        gids = rank_images(c["gsim"][i], eng.li)
        gids = gids[gids != i]
        r = g2l_rerank(eng.li, eng.li.features(i), gids, vcfg, exclude=i)
        done[i] = {"global": gids, "inliers": {j: v.n_inliers for j, v in r.verified.items()}}
        if n % 10 == 0:
            _dump(done, out_path)
            print(f"g2l {n}/{len(c['queries'])} {time.perf_counter() - t0:.0f}s", flush=True)
    _dump(done, out_path)
    print(f"g2l done {time.perf_counter() - t0:.0f}s")


def graphs():
    """Graphs built with a narrower kernel than the search's (the query row keeps the search's)."""
    from l2g.graph import build_graph

    _, eng = engine()
    for p0 in GRAPH_P0:
        path = INDEX / f"graph_p0_{p0}.pkl"
        if path.is_file():
            continue
        t0 = time.perf_counter()
        g = build_graph(eng.li, eng.cfg.graph, dataclasses.replace(eng.cfg.search, p0=p0))
        _dump(g, path)
        print(f"graph p0={p0}: {time.perf_counter() - t0:.0f}s", flush=True)


def vgraph():
    _, eng = engine()
    t0 = time.perf_counter()
    vg = ensure_vgraph(INDEX, eng.li, eng.graph, eng.cfg.graph, eng.cfg.verify)
    print(f"vgraph: {vg.I.nnz // 2} verified edges with inliers, {time.perf_counter() - t0:.0f}s", vg.timings)


# ----------------------------------------------------------------------------- scoring

def full_ranking(ids, all_scores, li_paths_rank, exclude) -> list:
    """A method's list, then the rest of the gallery by local score (as l2g.evaluate)."""
    rest = np.lexsort((li_paths_rank, -np.asarray(all_scores, np.float64)))
    seen = {int(j) for j in ids}
    return [int(j) for j in ids] + [int(j) for j in rest if int(j) not in seen and int(j) != exclude]


class Bench:
    def __init__(self):
        c = _load(INDEX / LOCAL)
        self.q, self.local, self.gsim, self.paths = c["queries"], c["local"], c["gsim"], c["paths"]
        self.prank = np.argsort(np.argsort(np.array(self.paths, dtype=object)))
        self.g2l = _load(INDEX / "g2l.pkl") if (INDEX / "g2l.pkl").is_file() else None
        _, eng = engine()
        self.graph, self.li, self.graphs = eng.graph, eng.li, {}
        from l2g.vgraph import load_vgraph, vgraph_params
        self.vg = load_vgraph(INDEX, eng.li, vgraph_params(eng.cfg.graph, eng.cfg.verify))
        groups = sorted({qq["group"] for qq in self.q})
        rng = np.random.default_rng(SEED)
        a = set(rng.permutation(groups)[: len(groups) // 2].tolist())
        self.fold = np.array([qq["group"] in a for qq in self.q])           # True = half A
        size = {g: sum(qq["group"] == g for qq in self.q) for g in groups}
        self.pair = np.array([size[qq["group"]] == 2 for qq in self.q])

    def ap(self, ranking_ids, qq) -> float:
        return average_precision([self.paths[j] for j in ranking_ids], qq["positives"])

    def local_aps(self) -> np.ndarray:
        return np.array([self.ap(full_ranking(self.local[qq["id"]].ids, self.local[qq["id"]].all_scores,
                                              self.prank, qq["id"]), qq) for qq in self.q])

    def l2g_aps(self, rcfg: C.RerankConfig, sat: float | None = None, graph_p0: float | None = None) -> np.ndarray:
        vg = self.vg
        graph = self.graph
        if graph_p0 is not None:
            if graph_p0 not in self.graphs:
                self.graphs[graph_p0] = _load(INDEX / f"graph_p0_{graph_p0}.pkl")
            graph = self.graphs[graph_p0]
        if vg is not None and sat is not None:
            vg = dataclasses.replace(vg, params={**vg.params, "verify_sat": sat})
        out = []
        for qq in self.q:
            res = self.local[qq["id"]]
            rr = rerank(res, graph, rcfg, vgraph=vg, exclude=qq["id"])
            out.append(self.ap(full_ranking(rr.ids, res.all_scores, self.prank, qq["id"]), qq))
        return np.array(out)

    def g2l_aps(self, n: int) -> np.ndarray:
        out = []
        for qq in self.q:
            d = self.g2l[qq["id"]]
            gids = d["global"]
            head, rest = gids[:n], gids[n:]
            cnt = np.array([d["inliers"].get(int(j), 0) for j in head])
            ids = np.concatenate([head[np.argsort(-cnt, kind="stable")], rest])
            out.append(self.ap(ids, qq))
        return np.array(out)


def mean(x, m=None) -> float:
    x = np.asarray(x) if m is None else np.asarray(x)[m]
    return 100.0 * float(np.mean(x)) if len(x) else float("nan")


# every idea is measured alone against the pre-issue-12 re-ranking; SHIPPED are the fields changed since
OLD = C.RerankConfig(symmetric="mean", local_w=0.0, diffuse_a=0.0, hub_n=0)
SHIPPED = ("symmetric", "local_w", "diffuse_a", "hub_n", "hub_beta")
SHIPPED_VALUES = {f: getattr(C.RerankConfig(), f) for f in SHIPPED}

IDEAS = {  # idea -> list of (label, RerankConfig overrides, verify_sat or None)
    "l2g (old default)": [("", {}, None)],
    "l2g (shipped default)": [("", SHIPPED_VALUES, None)],
    "guard: local_w": [(f"local_w={w}", {"local_w": w}, None) for w in (0.1, 0.2, 0.3, 0.4, 0.5, 0.7)],
    "guard: keep_head": [(f"keep_head={h}", {"keep_head": h}, None) for h in (1.2, 1.5, 2.0, 3.0)],
    "max-symmetrised block": [("symmetric=max", {"symmetric": "max"}, None)],
    "max-sym + local_w": [(f"max, local_w={w}", {"symmetric": "max", "local_w": w}, None)
                          for w in (0.1, 0.2, 0.3, 0.4, 0.5)],
    "reciprocal weighting": [(f"mutual_k={k}, w={w}", {"mutual_k": k, "mutual_w": w}, None)
                             for k in (5, 10, 20, 40) for w in (0.0, 0.5)],
    "k, dim": [(f"k={k}, dim={d}", {"k": k, "dim": d}, None) for k in (25, 50, 100, 150) for d in (8, 16, 32)],
    "normalise, transform": [(f"{nm}, {tr}", {"normalise": nm, "transform": tr}, None)
                             for nm in ("p99", "max", "rank") for tr in ("1-s", "sqrt(1-s)", "-log(s)")],
    "narrower graph kernel": [(f"graph p0={p}", {"graph_p0": p}, None) for p in GRAPH_P0[:2]],
    "narrower graph kernel + max-sym + local_w": [(f"graph p0={p}, max, local_w={w}",
                                                   {"graph_p0": p, "symmetric": "max", "local_w": w}, None)
                                                  for p in GRAPH_P0[:2] + (None,) for w in (0.2, 0.3, 0.4)],
    "smacof (unweighted)": [("smacof", {"method": "smacof"}, None)],
    "weighted smacof": [("smacof weighted", {"method": "smacof", "weighted": True}, None)],
    "verified edges": [(f"verified_w={v}, sat={s}", {"verified_w": v}, s)
                       for v in (0.5, 1.0, 2.0, 4.0) for s in (15, 30, 60)],
    # round 3: the shipped rule with verified edges, and with a graph kernel of its own (None: the search's)
    "shipped + verified edges": [(f"verified_w={v}, sat={s}", {**SHIPPED_VALUES, "verified_w": v}, s)
                                 for v in (0.0, 0.25, 0.5, 1.0, 2.0) for s in (15, 30, 60)],
    "shipped + graph kernel p0": [(f"graph p0={p}", {**SHIPPED_VALUES, "graph_p0": p}, None)
                                  for p in (None, 0.6, 0.7, 0.85)],
    "shipped + graph expansion of the head": [(f"expand_m={m}, gamma={g}",
                                               {**SHIPPED_VALUES, "expand_m": m, "expand_gamma": g}, None)
                                              for m in (1, 3, 5) for g in (0.0, 0.1, 0.25, 0.5, 1.0)],
}


def combos():
    out = []
    for sym, lw, k, dim in itertools.product(("mean", "max"), (0.0, 0.2, 0.3, 0.4, 0.5), (50, 100, 150), (16, 32)):
        over = {"symmetric": sym, "local_w": lw, "k": k, "dim": dim}
        out.append((f"{sym}, local_w={lw}, k={k}, dim={dim}", over, None))
    return out


def table(ideas: dict, out_json: Path):
    b = Bench()
    A, B = b.fold, ~b.fold
    base = OLD
    rows, detail = [], {}
    local = b.local_aps()
    rows.append(("local", "", mean(local, B), "", mean(local, A), mean(local), mean(local, b.pair)))
    if b.g2l is not None:
        for n in G2L_TOP:
            g = b.g2l_aps(n)
            rows.append((f"g2l@{n}", f"{100 * n / len(b.paths):.0f}% of gallery", mean(g, B), "", mean(g, A),
                         mean(g), mean(g, b.pair)))
    for idea, grid in ideas.items():
        if any(s is not None or o.get("verified_w") for _, o, s in grid) and b.vg is None:
            continue
        t0 = time.perf_counter()
        aps = {lab: b.l2g_aps(dataclasses.replace(base, **{k: v for k, v in o.items() if k != "graph_p0"}), s,
                              o.get("graph_p0")) for lab, o, s in grid}
        best_a = max(aps, key=lambda k: mean(aps[k], A))
        best_b = max(aps, key=lambda k: mean(aps[k], B))
        xf = np.where(A, aps[best_b], aps[best_a])       # each query scored by the other half's choice
        rows.append((idea, best_a, mean(aps[best_a], B), best_b, mean(aps[best_b], A), mean(xf), mean(xf, b.pair)))
        detail[idea] = {lab: {"A": mean(v, A), "B": mean(v, B), "full": mean(v), "2img": mean(v, b.pair)}
                        for lab, v in aps.items()}
        print(f"{idea}: {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    lines = ["| method / idea | tuned on A | -> mAP on B | tuned on B | -> mAP on A | x-fold (all) | x-fold 2-img |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in r) + " |")
    print(f"\nrealbench-dev: {len(b.q)} queries, half A {int(A.sum())}, half B {int(B.sum())}, "
          f"2-image-group queries {int(b.pair.sum())}\n")
    print("\n".join(lines))
    if "l2g (shipped default)" in ideas and b.g2l is not None:
        targets(b, b.l2g_aps(dataclasses.replace(base, **ideas["l2g (shipped default)"][0][1])), local)
    out_json.write_text(json.dumps({"rows": rows, "detail": detail}, indent=1))


def targets(b: Bench, l2g: np.ndarray, local: np.ndarray) -> None:
    """Issue 12's targets for the shipped l2g, on the full set and on each half."""
    g = {n: b.g2l_aps(n) for n in G2L_TOP}
    print("\n| set | l2g | local + 5 | g2l@50 + 1 | max g2l@N, N <= 20 | met |\n|---|---|---|---|---|---|")
    for name, m in (("full", np.ones(len(b.q), bool)), ("half A", b.fold), ("half B", ~b.fold),
                    ("2-image groups", b.pair)):
        v, lo, g50 = mean(l2g, m), mean(local, m) + 5, mean(g[50], m) + 1
        g20 = max(mean(g[n], m) for n in G2L_TOP if n <= 20)
        met = ", ".join(f"{t}: {'yes' if ok else 'no'}" for t, ok in
                        (("local+5", v >= lo), ("g2l@50+1", v >= g50), ("g2l@N<=20", v > g20)))
        print(f"| {name} | {v:.1f} | {lo:.1f} | {g50:.1f} | {g20:.1f} | {met} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=("cache", "g2l", "vgraph", "graphs", "table", "combos"))
    ap.add_argument("--only", nargs="*", help="ideas to run (default: all)")
    ap.add_argument("--extractor", default=C.DEFAULT.features.extractor, help="features of the index (sift, aliked)")
    ap.add_argument("--side", type=int, default=C.DEFAULT.features.max_side, help="longest image side (px)")
    ap.add_argument("--p0", type=float, default=C.DEFAULT.search.p0, help="search kernel bandwidth")
    a = ap.parse_args(argv)
    global CFG, INDEX, LOCAL
    if a.p0 != CFG.search.p0:
        CFG = CFG.replace(search__p0=a.p0)
        LOCAL = f"local-p0_{a.p0}.pkl"
    if (a.extractor, a.side) != (CFG.features.extractor, CFG.features.max_side):
        CFG = CFG.replace(features__extractor=a.extractor, features__max_side=a.side)
        INDEX = CACHE / f"realbench-{CFG.features.name}"
    CACHE.mkdir(parents=True, exist_ok=True)
    if a.step == "cache":
        cache()
    elif a.step == "g2l":
        g2l()
    elif a.step == "vgraph":
        vgraph()
    elif a.step == "graphs":
        graphs()
    elif a.step == "table":
        ideas = {k: v for k, v in IDEAS.items() if not a.only or k in a.only}
        table(ideas, INDEX / "table.json")
    else:
        table({k: IDEAS[k] for k in ("l2g (old default)", "l2g (shipped default)")} | {"combined": combos()},
              INDEX / "combos.json")


if __name__ == "__main__":
    main()
