"""Every benchmark into one report: ``python -m l2g bench [--quick] [--sizes N ...] [--out bench.json]``
(or ``python -m benchs.run_all`` with the same options).

Per gallery size: index build rate, local-search latency (p50/p95 per query), recall of approximate indexes
against exact search, index bytes per descriptor and peak RSS; also Kornia SIFT extraction speed (pyramid
vs patch backend) and MDS re-ranking time, index open time and feature-store bytes (bench_store), and the
project's targets met or not. The JSON's top-level keys: machine, config, extraction, sizes, rerank, store,
notes, targets, wall_s.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from benchs import bench_extract, bench_graph, bench_rerank, bench_search, bench_store
from benchs.common import machine, n_threads, parser, photos, threads, write_json
from benchs.galleries import plan
from l2g import config as C
from l2g.demo import DEMO_MAX_SIDE
from l2g.features import DESC_DIM

TARGETS = {"search_s_per_query@1000": 0.3, "recall@100_vs_exact@1000": 0.95, "index_bytes_per_descriptor": 600,
           **{f"rerank_{m}_k{k}_s": t for m in ("classical", "smacof") for k, t in ((100, 0.05), (700, 1.0))},
           "graph_s_per_image@10000": bench_graph.TARGET_S_PER_IMAGE}
SIZES = [100, 1000, 10_000]


def targets(out: dict) -> dict:
    """{name: {target, measured, met}}; measured is None (met None) when the size was not run."""
    s = out["sizes"].get("1000", {})
    entry = s.get("kinds", {}).get(s.get("auto_kind"))
    lat = rec = None
    if entry and "search" in entry:            # exact Flat: recall 1 by construction (see exact_check)
        lat, rec = entry["search"]["p50_s"], 1.0
    elif entry:
        at = entry["plain"].get(str(C.IndexConfig().nprobe), {})
        lat, rec = at.get("p50_s"), at.get("recall@100")
    per = [k["bytes"]["per_descriptor"] for v in out["sizes"].values() for k in v["kinds"].values()]
    got = {"search_s_per_query@1000": lat, "recall@100_vs_exact@1000": rec,
           "index_bytes_per_descriptor": max(per) if per else None,
           **{f"rerank_{m}_k{k}_s": out["rerank"].get(m, {}).get(str(k), {}).get("p50_s")
              for m in ("classical", "smacof") for k in (100, 700)},
           "graph_s_per_image@10000": bench_graph.measured(out.get("graph", {}), 10_000)}
    return {k: {"target": t, "measured": got[k],
                "met": None if got[k] is None else bool(got[k] >= t if k.startswith("recall") else got[k] <= t)}
            for k, t in TARGETS.items()}


def notes(size: int, p: dict, s: dict) -> list:
    out = [f"{size}: real views at {p['side']} px" + " (as the demo gallery)" * (p["side"] == DEMO_MAX_SIDE)
           ] if p["real"] else []
    if size <= 100:
        out.append(f"{size}: recall@100 is trivial with {size} images; recall@10 is reported")
    if s["exact_queries"] < s["queries"]:
        out.append(f"{size}: exact truth (recall) on the first {s['exact_queries']} of {s['queries']} queries")
    if not p["real"] and p["per_img"] != 2000:
        out.append(f"{size}: synthetic galleries use {p['per_img']} rows/image (2000 in real use)")
    if p["nlist"]:
        add = s["kinds"].get("ivfsq8", {}).get("build", {}).get("add_s", 0) * s["default_nlist"] / p["nlist"]
        out.append(f"{size}: IVF nlist {p['nlist']} instead of the default {s['default_nlist']} (the "
                   f"{p['train_sample']:,}-row training sample gives >= 39 rows per list); the default's add "
                   f"would take ~{add:.0f} s")
    if s["auto_kind"] not in s["kinds"] and s["auto_kind"] not in s.get("candidates", {}):
        out.append(f"{size}: 'auto' picks {s['auto_kind']!r}, not built here (~{4 * DESC_DIM + 32} B/descriptor "
                   f"in RAM); measured: {', '.join(s['kinds'])}")
    return out


def summary_sizes(sizes: dict) -> list:
    """Lines of text for the per-size part of a report."""
    lines = []
    for size, s in sizes.items():
        lines.append(f"{size} images, {s['descriptors']:,} descriptors ({s['source']}), auto -> {s['auto_kind']}")
        if "exact_truth" in s:
            lines.append(f"  exact brute force (truth): {s['exact_truth']['s_per_query']:.1f} s/query")
        for kind, r in s["kinds"].items():
            b = r["build"]
            lines.append(f"  {kind:7s} build {b['s_per_image'] * 1e3:.1f} ms/img (train {b['train_s']:.1f} s + add "
                         f"{b['add_s']:.1f} s), {r['bytes']['per_descriptor']:.0f} B/desc, "
                         f"peak +{b['peak_rss_delta_bytes'] / 2**20:.0f} MiB")
            rows = [("", r["search"])] if "search" in r else \
                [(f"{v} nprobe={n}", x) for v in ("plain", "rescored") for n, x in r.get(v, {}).items()]
            for name, x in rows:
                rec = " ".join(f"{k}={x[k]:.3f}" for k in x if k.startswith("recall"))
                lines.append(f"    {name:18s} search p50 {x['p50_s']:.3f} s p95 {x['p95_s']:.3f} s "
                             f"hit@1 {x['hit@1']:.2f} {rec}")
        for name, c in {k: v for k, v in s.get("candidates", {}).items() if isinstance(v, dict)}.items():
            lines.append(f"  candidate {name} ({c['build']['factory']}): {c['bytes']['per_descriptor']:.0f} B/desc, "
                         f"build {c['build']['train_s'] + c['build']['add_s']:.0f} s")
            for lab, x in {**c["search"], **{f"{k} (mmap)": v for k, v in c.get("mmap", {}).items()}}.items():
                lines.append(f"    {lab:30s} p50 {x['p50_s']:.3f} s p95 {x['p95_s']:.3f} s "
                             f"{x['query_descriptors_per_s']:.0f} qdesc/s recall@100 {x['recall@100']:.3f}")
    return lines


def summary(out: dict) -> str:
    m = out["machine"]
    lines = [f"l2g bench ({'quick' if out['config']['quick'] else 'full'}): {m['cores']} cores, {m['threads']} "
             f"thread(s), load {m['loadavg_start'][0]:.1f} -> {m['loadavg_end'][0]:.1f}, {out['wall_s']:.0f} s"]
    for side, r in out["extraction"].items():
        if isinstance(r, dict) and "pyramid" in r:
            lines.append(f"extract {side}px: pyramid {r['pyramid']['s_per_image']:.2f} s/img "
                         f"({r['pyramid']['keypoints_mean']:.0f} kp), patch {r['patch']['s_per_image']:.2f} s/img "
                         f"({r['patch']['keypoints_mean']:.0f} kp): patch/pyramid {r['patch_over_pyramid']:.1f}x")
            if "over_opencv" in r:
                lines.append(f"extract {side}px: OpenCV SIFT {r['opencv']['s_per_image']:.2f} s/img; pyramid "
                             f"{r['over_opencv']['pyramid']:.1f}x OpenCV ({r['over_opencv_cpu']['pyramid']:.1f}x "
                             "in CPU time)")
    for k, v in out.get("indexing", {}).items():
        if isinstance(v, dict):
            lines.append(f"indexing {out['indexing']['images']} realbench-dev photos, {k}: "
                         f"{v['images_per_s']:.2f} img/s")
    lines += summary_sizes(out["sizes"])
    for m in ("classical", "smacof"):
        lines += [f"rerank {m} k={k}: p50 {v['p50_s'] * 1e3:.0f} ms" for k, v in out["rerank"].get(m, {}).items()]
    lines += bench_graph.summary(out.get("graph", {"sizes": {}}))
    if out.get("store"):
        lines.append("store: " + bench_store.summary(out["store"]))
    for name, t in out["targets"].items():
        lines.append(f"target {name}: {t['measured']} vs {t['target']} -> {t['met']}")
    return "\n".join(lines + [f"note: {n}" for n in out["notes"]])


def main(args) -> int:
    """Run every benchmark; args.out (JSON path), args.sizes (gallery sizes), args.quick (smoke run)."""
    quick = bool(getattr(args, "quick", False))
    sizes = [int(s) for s in (getattr(args, "sizes", None) or SIZES)]
    if quick and sizes == SIZES:
        sizes = [100, 1000]
    threads_n, t0 = n_threads(), time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="l2g-bench-"))
    out = {"machine": machine(threads_n),
           "config": {"quick": quick, "sizes": sizes, "search": C.asdict(C.SearchConfig()),
                      "index": C.asdict(C.IndexConfig()), "rerank": C.asdict(C.RerankConfig()),
                      "features": C.asdict(C.FeatureConfig()), "plans": {str(s): plan(s, quick) for s in sizes}},
           "extraction": {}, "sizes": {}, "rerank": {}, "notes": []}
    try:
        with threads(threads_n):
            pics = photos()
            out["extraction"], words = bench_extract.run(quick, pics)
            ext_s = out["extraction"][str(out["extraction"]["sides"][-1])]["pyramid"]["s_per_image"]
            for size in sizes:
                d = tmp / str(size)
                d.mkdir()
                s = bench_search.run_size(size, quick, pics, words, d)
                for k in s["kinds"].values():  # as if every image had to be extracted at the largest side first
                    k["build"]["extraction_bound_images_per_s"] = 1.0 / (ext_s + k["build"]["s_per_image"])
                out["sizes"][str(size)] = s
                out["notes"] += notes(size, plan(size, quick), s)
                shutil.rmtree(d, ignore_errors=True)
            out["rerank"] = bench_rerank.run(quick)
            if not quick:   # real-image indexing (extraction + index + graph) at 1 worker and at every core
                out["indexing"] = bench_extract.indexing(24, sorted({1, os.cpu_count() or 1}))
            out["graph"] = bench_graph.run(quick, words, [s for s in sizes if s >= 1000] if not quick else None,
                                           threads_n)
            out["store"] = bench_store.run(quick, [1000], old=True, tmp=tmp)   # 10,000: bench_store --sizes 10000
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["targets"] = targets(out)
    out["machine"]["loadavg_end"] = list(os.getloadavg())
    out["wall_s"] = time.perf_counter() - t0
    path = write_json(args.out, out)
    print(summary(out))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(parser(__doc__.splitlines()[0], "bench.json", sizes=SIZES).parse_args()))
