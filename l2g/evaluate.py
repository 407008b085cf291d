"""Evaluate every method on a dataset (revisitop protocol) and write results.json.

    python -m l2g eval DATASET --methods local l2g --out results.json

DATASET is a groups.json folder (every group image queries all the others,
itself left out) or a Revisited Oxford / Paris folder (jpg/ + gnd_*.pkl; the
query is its bounding-box crop). mAP and mP@k are percentages (0-100). For
revisitop sets, 'map' is the Medium setup and 'map_easy/medium/hard' are given.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from . import config as C
from . import methods as M
from .datasets import EvalDataset, load_eval_dataset
from .errors import DatasetError, L2GError
from .metrics import average_precision, precision_at_k, revisited_setups, summarise
from .pipeline import Engine, make_query, open_engine, run_query

DEFAULT_METHODS = M.names(default=True)     # all but g2l@50 (= g2l at the default VerifyConfig.top)
TOP_SAVED = 100
TIE = 1e-9          # an AP change this small is no change (improved / hurt / equal)


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


def evaluate(dataset, methods=DEFAULT_METHODS, cfg: C.L2GConfig = C.DEFAULT, engine: Engine | None = None,
             progress=None, max_queries: int | None = None, index_dir: Path | None = None) -> dict:
    """Run ``methods`` for every query of ``dataset``; returns the results.json dict."""
    ds: EvalDataset = dataset if isinstance(dataset, EvalDataset) else load_eval_dataset(dataset)
    methods = [m.name for m in M.resolve(methods)]      # UnknownMethod for a bad name
    no_queries = f"{ds.root}: no queries: every group needs at least 2 readable images"
    if not ds.queries:
        raise DatasetError(no_queries)
    t0 = time.perf_counter()
    if engine is None:
        engine = open_engine(ds.root, index_dir, cfg, progress=progress, paths=ds.images,
                             with_global=any(M.get(m).needs_global for m in methods))
    li = engine.li
    methods = list(M.available(methods, engine.gi is not None))
    # gallery images the build could not read: neither a query nor a positive of the others (a positive
    # that cannot be ranked would lower every AP), listed with their reason in results["skipped"]
    why = dict(li.failed)
    skipped = [{"path": p, "reason": why.get(p, "not in the index")} for p in ds.images if li.id_of(p) is None]
    gone = {s["path"] for s in skipped}
    queries = []
    for q in ds.queries:
        q = dataclasses.replace(q, easy=[p for p in q.easy if p not in gone], hard=[p for p in q.hard if p not in gone],
                                junk=[p for p in q.junk if p not in gone])
        if (q.exclude_self and q.path in gone) or not (q.easy or q.hard):
            continue  # the query itself unreadable, or none of its positives readable: it cannot be scored
        queries.append(q)
    queries = queries[:max_queries] if max_queries else queries
    if not queries:
        raise DatasetError(no_queries + (f" ({len(skipped)} could not be read: "
                                         + "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:5]) + ")"
                                         if skipped else ""))
    per = {m: [] for m in methods}
    stage_t = {m: defaultdict(list) for m in methods}
    for n, q in enumerate(queries):
        if progress:
            progress(n, len(queries), f"query {q.path}")
        gid = li.id_of(q.path) if q.exclude_self else None
        try:
            query = (make_query(engine, gallery_id=gid) if gid is not None else
                     make_query(engine, source=ds.query_root / q.path, name=q.path,
                                bbox=_scaled_bbox(q.bbox, ds, q, engine.cfg.features.max_side)))
        except L2GError as e:  # unreadable or featureless query: AP 0, recorded (a bug propagates)
            for m in methods:
                per[m].append({"query": q.path, "ap": 0.0, "error": str(e), "ranking": []})
            continue
        run = run_query(engine, query, engine.cfg, methods)
        for m in methods:
            for k, v in run.method_timings(m).items():
                stage_t[m][k].append(v)
            ranking = [li.paths[j] for j in run.full_ranking(m)]
            per[m].append({"query": q.path, **score_query(ranking, q), "ranking": ranking[:TOP_SAVED]})
    if progress:
        progress(len(queries), len(queries), "done")
    out = {"dataset": ds.name, "root": str(ds.root), "n_images": li.n_images, "n_queries": len(queries),
           "skipped": skipped, "skipped_note": "unreadable gallery images: left out of the queries and the positives",
           "config": {"features": C.asdict(engine.cfg.features), "search": C.asdict(engine.cfg.search),
                      "rerank": C.asdict(engine.cfg.rerank), "index": li.kind},
           "methods": {}, "timings": {"total": time.perf_counter() - t0, **engine.timings}}
    for m in methods:
        rows = per[m]
        s = summarise([r["ap"] for r in rows], {k: [r.get(f"p@{k}", np.nan) for r in rows] for k in (1, 5, 10)})
        res = {"map": s["mAP"], "mp@1": s["mP@1"], "mp@5": s["mP@5"], "mp@10": s["mP@10"],
               "timings": {k: float(np.mean(v)) for k, v in stage_t[m].items()}, "queries": rows}
        b = M.budget(M.get(m), engine.cfg)
        if b is not None:   # images spatially verified per query (at most the gallery less the query), and
            n = min(b, max(0, li.n_images - 1))     # the share of the gallery that is
            res["budget"] = {"n": n, "fraction": n / max(1, li.n_images)}
        if ds.kind == "revisitop":
            for setup in ("easy", "medium", "hard"):
                res[f"map_{setup}"] = summarise([r.get(f"ap_{setup}", np.nan) for r in rows])["mAP"]
        res["timings"]["per_query"] = float(sum(res["timings"].values()))
        out["methods"][m] = res
    out["wins"] = wins_losses(out)
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


def per_query_ap(results: dict, base: str, new: str) -> list[dict]:
    """Every query both methods scored, in results order: {'query', 'base', 'new', 'delta'} (AP, delta =
    new - base); queries without positives (AP NaN) left out."""
    a = {r["query"]: r["ap"] for r in results["methods"][base]["queries"]}
    b = {r["query"]: r["ap"] for r in results["methods"][new]["queries"]}
    return [{"query": k, "base": float(a[k]), "new": float(b[k]), "delta": float(b[k] - a[k])}
            for k in a if k in b and np.isfinite(a[k]) and np.isfinite(b[k])]


def hurt_queries(results: dict, base: str = "local", new: str = "l2g") -> list[dict]:
    """The queries whose AP ``new`` lowered against ``base`` (by more than TIE; the rows of
    ``per_query_ap``), most AP lost first. Empty when no query was hurt."""
    return sorted((r for r in per_query_ap(results, base, new) if r["delta"] < -TIE), key=lambda r: r["delta"])


def compare(results: dict, base: str = "local", new: str = "l2g") -> dict:
    """Per-query AP change of ``new`` over ``base``: counts of improved / hurt / equal queries,
    and the per-query deltas {query: AP new - AP base} (queries without positives left out)."""
    delta = {r["query"]: r["delta"] for r in per_query_ap(results, base, new)}
    d = np.array(list(delta.values()))
    return {"improved": int((d > TIE).sum()), "hurt": int((d < -TIE).sum()),
            "equal": int((abs(d) <= TIE).sum()), "delta_ap": delta}


def wins_losses(results: dict, new: str = M.MAIN, baselines=M.BASELINES) -> dict:
    """{'l2g vs local': compare(...), ...} for the baselines present in the results."""
    ms = results["methods"]
    return {f"{new} vs {b}": compare(results, b, new) for b in baselines if b in ms and new in ms}


def table(results: dict) -> str:
    """A Markdown table of a results dict (verified images per query, and their share of the gallery)."""
    rows = ["| method | mAP | mP@1 | mP@5 | mP@10 | verified (share of gallery) | s / query |",
            "|---|---|---|---|---|---|---|"]
    for m, r in results["methods"].items():
        extra = ""
        if "map_medium" in r:
            extra = f" (E {r['map_easy']:.1f} / M {r['map_medium']:.1f} / H {r['map_hard']:.1f})"
        b = r.get("budget")
        ver = f"{b['n']} ({100 * b['fraction']:.1f}%)" if b else "-"
        rows.append(f"| {m} | {r['map']:.1f}{extra} | {r['mp@1']:.1f} | {r['mp@5']:.1f} | {r['mp@10']:.1f} | "
                    f"{ver} | {r['timings']['per_query']:.3f} |")
    return "\n".join(rows)


def write_results(results: dict, path: Path) -> None:
    """Write the results JSON atomically (l2g.store: unique temporary file, then rename)."""
    from .store import write_text

    write_text(Path(path), json.dumps(results, indent=1, default=float))
