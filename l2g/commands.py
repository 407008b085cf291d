"""What each command of ``python -m l2g`` does (``l2g.cli`` parses the options and calls these).

Every command takes the parsed options and returns the exit status; its progress goes to a ``Bar``
on stderr. The engine is imported inside each command, so ``python -m l2g --help`` stays fast.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from . import config as C
from . import featkey, options, paths
from . import methods as M


class Bar:
    """A one-line progress bar on stderr: the callback (done, total, message) every stage takes."""

    def __init__(self, label: str = "", stream=sys.stderr):
        self.label, self.stream, self.t0, self.last = label, stream, time.perf_counter(), 0.0

    def __call__(self, done: int, total: int, message: str = "") -> None:
        now = time.perf_counter()
        if done < total and now - self.last < 0.1:
            return
        self.last = now
        frac = done / total if total else 1.0
        bar = "#" * int(30 * frac)
        msg = (message[:40] + "...") if len(message) > 43 else message
        self.stream.write(f"\r{self.label} [{bar:<30}] {done}/{total} {now - self.t0:6.1f}s {msg:<44}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _cfg(args) -> C.L2GConfig:
    """The one option -> config mapper (l2g.options), shared with the app; plus the build lock's wait."""
    cfg = options.config_from_args(args)
    if getattr(args, "wait", None) is not None:
        cfg = cfg.replace(store__lock_timeout=args.wait)
    return cfg


def _data(args) -> Path:
    return paths.data_dir(getattr(args, "data_dir", None))


def print_repairs(report) -> None:
    """The files a build found damaged or missing and rebuilt."""
    for name, why in getattr(report, "repaired", []):
        print(f"  repaired {name}: {why}")


def cmd_demo(args) -> int:
    from .datasets import build_demo
    from .pipeline import open_engine

    out = build_demo(Path(args.out) if args.out else _data(args) / "demo", progress=Bar("demo images"),
                     force=args.force)
    print(f"demo gallery: {out}")
    if not args.no_index:
        eng = open_engine(out, cfg=_cfg(args), progress=Bar("indexing"), data_dir=_data(args))
        print(f"index: {eng.li.folder} ({eng.li.n_images} images, {eng.li.ntotal} descriptors, {eng.li.kind})")
    return 0


def cmd_index(args) -> int:
    from .pipeline import open_engine

    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"error: {folder} is not a folder", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        print(f"error: --out {out} is a file; give a folder for the index (made if missing)", file=sys.stderr)
        return 2
    if out is not None and out.resolve().is_relative_to(folder.resolve()):
        print(f"error: --out {out} is inside the gallery {folder}: the index files would be scanned with the "
              "photos; give a folder outside it (or leave --out out: <data dir>/index/...)", file=sys.stderr)
        return 2
    eng = open_engine(folder, out, _cfg(args), progress=Bar("indexing"),
                      with_global=not args.no_global, data_dir=_data(args))
    r = eng.report
    print(f"index: {eng.li.folder}\n  images: {eng.li.n_images} ({len(r.added)} extracted, {len(r.reused)} resumed, "
          f"{len(r.skipped)} unchanged), descriptors: {eng.li.ntotal}, kind: {eng.li.kind}")
    print_repairs(r)
    for rel, why in r.failed:
        print(f"  skipped {rel}: {why}")
    for rel, why in r.ignored:     # archives, other files, folder symlinks (found by the build's scan)
        print(f"  skipped {rel}: {why}")
    for rel in r.empty:
        print(f"  no keypoints: {rel}")
    if eng.li.n_images == 0:     # the one image the build found readable (scan.require_readable) went meanwhile
        print(f"error: no readable images in {folder} (extensions: {', '.join(C.IMAGE_EXTENSIONS)})",
              file=sys.stderr)
        return 2
    return 0


def cmd_check(args) -> int:
    from .check import check_index, repair_index

    folder = Path(args.dir)
    problems = check_index(folder)
    for p in problems:
        print(f"problem: {p}")
    if problems and args.repair:
        report = repair_index(folder, Path(args.gallery) if args.gallery else None, _cfg(args),
                              progress=Bar("repairing"))
        print_repairs(report)
        problems = check_index(folder)
        for p in problems:
            print(f"still a problem: {p}")
    print(f"{folder}: " + ("intact" if not problems else f"{len(problems)} problem(s)"
                           + ("" if args.repair else "; run with --repair to fix them")))
    return 1 if problems else 0


def cmd_search(args) -> int:
    from .manifest import read_manifest, stored_config
    from .pipeline import make_query, open_engine, run_query

    m = read_manifest(Path(args.index))
    method = M.get(args.method)
    # the query is extracted with the index's own feature settings, not the defaults; the options
    # (--device, $L2G_DEVICE) only say where
    device = options.check_device(getattr(args, "device", None) or os.environ.get("L2G_DEVICE") or "auto")
    cfg = featkey.for_extractor(stored_config(m, C.DEFAULT.replace(build__device=device)))
    before = m["files"].get("global.npz")
    eng = open_engine(Path(m["root"]), Path(args.index), cfg, sync=False, with_global=method.needs_global)
    if method.needs_global and eng.gi is None:      # open_engine builds them for any index that holds images
        print(f"error: {args.method} ranks by global descriptors, and the index at {args.index} holds no images "
              f"(none of {m['root']} could be indexed when it was built): there is nothing to describe. Add photos "
              f"to the gallery and run `python -m l2g index {m['root']} --out {args.index}`", file=sys.stderr)
        return 2
    if method.needs_global and read_manifest(Path(args.index))["files"].get("global.npz") != before:
        why = "the index was built with --no-global" if before is None else "the index's images changed since"
        print(f"note: global descriptors built now ({why}; {eng.timings['global']:.1f} s); kept in "
              f"{Path(args.index) / 'global.npz'} for the next searches", file=sys.stderr)
    cfg = eng.cfg.replace(search__shortlist=max(args.top, eng.cfg.search.shortlist))
    q = make_query(eng, source=Path(args.image), name=str(args.image),
                   bbox=tuple(args.bbox) if args.bbox else None)
    run = run_query(eng, q, cfg, methods=(args.method,))
    ids = run.results[args.method].ids[: args.top]
    results = [{"rank": r + 1, "path": eng.li.paths[j], "score": round(float(run.local.all_scores[j]), 6),
                "matches": run.local.n_matches(j)} for r, j in enumerate(ids)]
    if args.json:
        print(json.dumps({"query": str(args.image), "method": args.method, "keypoints": len(q.feats),
                          "results": results,
                          "timings": {k: round(v, 4) for k, v in run.timings.items()}}, indent=1))
    else:
        print(f"{args.method} ranking for {args.image} ({len(q.feats)} keypoints, "
              f"{run.timings['total']:.2f} s)")
        for r in results:
            print(f"{r['rank']:4d}  {r['score']:.4f}  {r['matches']:5d}  {r['path']}")
    return 0


def cmd_eval(args) -> int:
    from .evaluate import evaluate, table, write_results

    out = Path(args.out)       # checked before any work: a bad --out would lose the whole evaluation at its end
    if out.is_dir():
        print(f"error: --out {args.out} is a folder; give the results file's name", file=sys.stderr)
        return 2
    if not out.absolute().parent.is_dir():
        print(f"error: --out {args.out}: its folder {out.absolute().parent} does not exist", file=sys.stderr)
        return 2
    ds = paths.resolve_dataset(args.dataset, _data(args))
    if str(args.dataset) == "demo" and not ds.is_dir():          # generated, never downloaded: make it
        from .datasets import build_demo

        ds = build_demo(paths.dataset_dir("demo", _data(args)), progress=Bar("demo images"))
    cfg = _cfg(args)
    res = evaluate(ds, tuple(args.methods), cfg, progress=Bar("eval"), max_queries=args.max_queries,
                   index_dir=paths.index_dir(ds, cfg, _data(args)) if ds.is_dir() else None)
    write_results(res, Path(args.out))
    for s in res["skipped"]:
        print(f"  skipped {s['path']}: {s['reason']} (left out of the queries and the positives)")
    print(table(res))
    for pair, c in res["wins"].items():
        print(f"{pair}, queries: improved {c['improved']}, hurt {c['hurt']}, equal {c['equal']}")
    print(f"written: {args.out}")
    return 0


def cmd_calibrate(args) -> int:
    from . import confidence as CF
    from .confidence_rates import error_rates
    from .pipeline import open_engine

    ds = paths.resolve_dataset(args.dataset, _data(args))
    if not ds.is_dir():
        print(f"error: {ds} is not a folder", file=sys.stderr)
        return 2
    cfg = _cfg(args)
    if args.folds < 1:
        print(f"error: --folds must be at least 1, got {args.folds}", file=sys.stderr)
        return 2
    if args.fa_target is not None:
        if not 0 < args.fa_target < 1:
            print(f"error: --fa-target must lie in (0, 1), got {args.fa_target}", file=sys.stderr)
            return 2
        cfg = cfg.replace(confidence__fa_target=args.fa_target)
    eng = open_engine(ds, cfg=cfg, progress=Bar("indexing"), data_dir=_data(args))
    st = CF.ensure_calibration(eng.li.folder, eng.li, eng.graph, eng.gt, cfg.confidence, cfg.verify,
                               progress=Bar("calibrating"))
    cal = st.result
    if cal.calibrated:
        print(f"calibration ({st.action}, null from {cal.source}, {len(cal.null_scores)} samples): "
              f"match when top local score >= {cal.score_threshold:.4f} (with >= {cfg.verify.min_inliers} inliers) "
              f"or verified inliers >= {cal.inlier_threshold}")
    else:       # its thresholds (0) mean nothing: the verdict accepts every query
        print(f"not calibrated: too few samples ({len(cal.null_scores)}; at least {cfg.confidence.min_null} "
              "needed, one per gallery image); the app keeps its defaults: every query is shown "
              "as a match, never 'no confident match'. Calibrate again once the gallery is larger.")
    print(f"  saved: {eng.li.folder / CF.FILE}")
    if eng.gt is not None and not args.no_rates:
        r = error_rates(eng.li, eng.graph, eng.gt, cfg.confidence, cfg.verify, args.folds, Bar("rates"))
        c = r["counts"]
        print(f"{args.folds}-fold by group (fa_target {cfg.confidence.fa_target}):\n"
              f"| queries | n | rate |\n|---|---|---|\n"
              f"| group image, its group in the gallery: rejected (false reject) | {c['match']} | "
              f"{r['false_reject']} |\n"
              f"| group image, its group in the gallery: accepted, top-1 wrong | {c['match']} | "
              f"{r['accepted_top1_wrong']} |\n"
              f"| group image, its group left out: accepted (false accept) | {c['group_out']} | "
              f"{r['false_accept_group_out']} |\n"
              f"| distractor: accepted (false accept) | {c['distractor']} | {r['false_accept_distractor']} |")
        # a fold calibrated on too few samples accepts every query (its false-accept rates are 1 by
        # construction, not a measurement)
        bad = [t["fold"] for t in r["thresholds"] if not t["calibrated"]]
        print("thresholds per fold: " + json.dumps(r["thresholds"]))
        if bad:
            print(f"  not calibrated: fold(s) {', '.join(str(f) for f in bad)} (too few samples in the other folds; "
                  "every query accepted): the false-accept rates above measure nothing for them")
    return 0


def cmd_download(args) -> int:
    from .datasets import download

    path = download(args.name, Path(args.root) if args.root else _data(args), progress=Bar(args.name))
    print(f"{args.name}: {path}")
    return 0


def cmd_bench(args) -> int:
    from .bench import main as bench_main

    return bench_main(args)
