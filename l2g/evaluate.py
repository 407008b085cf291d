"""Evaluate every method on a dataset (revisitop protocol) and write results.json.

    python -m l2g eval DATASET --methods local l2g --out results.json

DATASET is a groups.json folder (every group image queries all the others,
itself left out) or a Revisited Oxford / Paris folder (jpg/ + gnd_*.pkl; the
query is its bounding-box crop). mAP and mP@k are percentages (0-100). For
revisitop sets, 'map' is the Medium setup and 'map_easy/medium/hard' are given.
"""
from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from . import config as C
from .datasets import EvalDataset, load_eval_dataset
from .metrics import average_precision, precision_at_k, revisited_setups, summarise
from .pipeline import METHODS, Engine, make_query, open_engine, run_query
from .search import rank_images

STAGES = {  # the stages whose time a method pays, per query
    "local": ("extract", "search"),
    "local_qe": ("extract", "search", "l2g"),
    "l2g": ("extract", "search", "l2g"),
    "l2g_blend": ("extract", "search", "global", "l2g"),
    "global": ("extract", "global"),
    "g2l": ("extract", "global", "g2l"),
}
TOP_SAVED = 100


def full_ranking(run, method: str, li, exclude: int | None) -> np.ndarray:
    """The whole gallery ranked by a method: its list, then the rest by local score."""
    ranked = run.rankings()[method]
    if method in ("global", "g2l"):
        rest = run.global_ids
    else:
        rest = rank_images(run.local.all_scores, li)
    seen = set(int(j) for j in ranked)
    tail = [int(j) for j in rest if int(j) not in seen and int(j) != exclude]
    return np.concatenate([np.asarray(ranked, np.int64), np.asarray(tail, np.int64)])


def score_query(ranking_paths: list, q) -> dict:
    """AP (per setup for revisitop queries) and precision@k of one ranked list of paths."""
    out = {}
    if q.hard or q.junk:
        for setup, (pos, junk) in revisited_setups(q.easy, q.hard, q.junk).items():
            out[f"ap_{setup}"] = average_precision(ranking_paths, pos, junk)
        pos, junk = revisited_setups(q.easy, q.hard, q.junk)["medium"]
    else:
        pos, junk = q.easy, []
    out["ap"] = average_precision(ranking_paths, pos, junk)
    for k in (1, 5, 10):
        out[f"p@{k}"] = precision_at_k(ranking_paths, pos, junk, k)
    return out


def evaluate(dataset, methods=METHODS, cfg: C.L2GConfig = C.DEFAULT, engine: Engine | None = None,
             progress=None, max_queries: int | None = None, index_dir: Path | None = None) -> dict:
    """Run ``methods`` for every query of ``dataset``; returns the results.json dict."""
    ds: EvalDataset = dataset if isinstance(dataset, EvalDataset) else load_eval_dataset(dataset)
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {list(METHODS)}")
    t0 = time.perf_counter()
    if engine is None:
        engine = open_engine(ds.root, index_dir, cfg, progress=progress, paths=ds.images,
                             with_global=bool({"global", "g2l", "l2g_blend"} & set(methods)))
    li = engine.li
    queries = ds.queries[:max_queries] if max_queries else ds.queries
    per = {m: [] for m in methods}
    stage_t = defaultdict(list)
    for n, q in enumerate(queries):
        if progress:
            progress(n, len(queries), f"query {q.path}")
        gid = li.id_of(q.path) if q.exclude_self else None
        if q.exclude_self and gid is None:
            continue  # the query image could not be indexed (reported at build time)
        try:
            query = (make_query(engine, gallery_id=gid) if gid is not None else
                     make_query(engine, source=ds.query_root / q.path, bbox=_scaled_bbox(q.bbox, ds, q, engine.cfg.features.max_side),
                                name=q.path))
        except ValueError as e:  # unreadable or featureless query: AP 0, recorded
            for m in methods:
                per[m].append({"query": q.path, "ap": 0.0, "error": str(e), "ranking": []})
            continue
        run = run_query(engine, query, engine.cfg, methods)
        for k, v in run.timings.items():
            stage_t[k].append(v)
        for m in methods:
            ranking = [li.paths[j] for j in full_ranking(run, m, li, gid)]
            per[m].append({"query": q.path, **score_query(ranking, q), "ranking": ranking[:TOP_SAVED]})
    if progress:
        progress(len(queries), len(queries), "done")
    mean_t = {k: float(np.mean(v)) for k, v in stage_t.items()}
    out = {"dataset": ds.name, "root": str(ds.root), "n_images": li.n_images, "n_queries": len(queries),
           "config": {"features": C.asdict(engine.cfg.features), "search": C.asdict(engine.cfg.search),
                      "rerank": C.asdict(engine.cfg.rerank), "index": li.kind},
           "methods": {}, "timings": {"total": time.perf_counter() - t0, **engine.timings}}
    for m in methods:
        rows = per[m]
        s = summarise([r["ap"] for r in rows], {k: [r.get(f"p@{k}", np.nan) for r in rows] for k in (1, 5, 10)})
        res = {"map": s["mAP"], "mp@1": s["mP@1"], "mp@5": s["mP@5"], "mp@10": s["mP@10"],
               "timings": {k: mean_t.get(k, 0.0) for k in STAGES[m]}, "queries": rows}
        if ds.kind == "revisitop":
            for setup in ("easy", "medium", "hard"):
                res[f"map_{setup}"] = summarise([r.get(f"ap_{setup}", np.nan) for r in rows])["mAP"]
        res["timings"]["per_query"] = float(sum(res["timings"].values()))
        out["methods"][m] = res
    return out


def _scaled_bbox(bbox, ds: EvalDataset, q, max_side: int):
    """Ground-truth boxes are in original pixels; queries are loaded capped at max_side."""
    if bbox is None:
        return None
    from PIL import Image

    with Image.open(ds.query_root / q.path) as im:
        w, h = im.size
    s = min(1.0, max_side / max(w, h))
    return tuple(v * s for v in bbox)


def compare(results: dict, base: str = "local", new: str = "l2g") -> dict:
    """Per-query AP change of ``new`` over ``base``: counts of improved / hurt / equal queries."""
    a = {r["query"]: r["ap"] for r in results["methods"][base]["queries"]}
    b = {r["query"]: r["ap"] for r in results["methods"][new]["queries"]}
    d = np.array([b[k] - a[k] for k in a if k in b and np.isfinite(a[k]) and np.isfinite(b[k])])
    return {"improved": int((d > 1e-9).sum()), "hurt": int((d < -1e-9).sum()), "equal": int((abs(d) <= 1e-9).sum())}


def table(results: dict) -> str:
    """A Markdown table of a results dict."""
    rows = ["| method | mAP | mP@1 | mP@5 | mP@10 | s / query |", "|---|---|---|---|---|---|"]
    for m, r in results["methods"].items():
        extra = ""
        if "map_medium" in r:
            extra = f" (E {r['map_easy']:.1f} / M {r['map_medium']:.1f} / H {r['map_hard']:.1f})"
        rows.append(f"| {m} | {r['map']:.1f}{extra} | {r['mp@1']:.1f} | {r['mp@5']:.1f} | {r['mp@10']:.1f} | "
                    f"{r['timings']['per_query']:.3f} |")
    return "\n".join(rows)


def write_results(results: dict, path: Path) -> None:
    """Write the results JSON atomically (l2g.store: unique temporary file, then rename)."""
    from .store import write_text

    write_text(Path(path), json.dumps(results, indent=1, default=float))
