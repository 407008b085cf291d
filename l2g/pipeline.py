"""Run the retrieval methods end to end on one query and time each stage.

``open_engine`` turns a gallery folder into a ready Engine (index, graph,
global descriptors; each built once and cached in the index folder).
``make_query`` + ``run_query`` answer one query with the methods of the
registry (``l2g.methods``): the shared stages (search, global) run once, then
each method's ``run``. ``rerank_run`` redoes only the methods that depend on
the re-ranking settings (the app's sliders).
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import config as C
from . import methods as M
from . import paths, store
from .datasets import GroundTruth, load_groups
from .errors import DatasetError, QueryError
from .features import Extractor, Features, NoKeypointsError
from .globaldesc import GlobalIndex, ensure_global, global_similarities, vlad
from .graph import Graph, ensure_graph
from .images import LoadedImage, load_image
from .index import LocalIndex, Progress, build_index, load_index
from .methods import Ranking  # noqa: F401 (re-exported: a method's answer)
from .scan import require_readable
from .search import SearchResult, local_search, rank_images

METHODS = tuple(M.METHODS)      # every registered method name, in display order


def index_dir_for(gallery: Path, cfg: C.L2GConfig = C.DEFAULT, data_dir: Path | None = None) -> Path:
    """<data folder>/index/<gallery tag>/<preset> (l2g.paths.index_dir: one rule for the CLI and the app)."""
    return paths.index_dir(gallery, cfg, data_dir)


@dataclass
class Engine:
    """Everything loaded for one gallery (the app caches this)."""

    li: LocalIndex
    graph: Graph
    gi: GlobalIndex | None
    extractor: Extractor
    cfg: C.L2GConfig
    gt: GroundTruth | None = None
    report: object = None
    timings: dict = field(default_factory=dict)


def open_engine(gallery: Path, index_dir: Path | None = None, cfg: C.L2GConfig = C.DEFAULT,
                progress: Progress = None, extractor: Extractor | None = None, sync: bool = True,
                with_global: bool = True, paths: list[str] | None = None, data_dir: Path | None = None) -> Engine:
    """Build (or resume, update, repair) the index, graph and global descriptors of a gallery.

    Each stage owns its cache (``ensure``: load if its fingerprint matches, else build or
    extend, save atomically, record in the manifest). sync=True holds the folder's lock,
    re-hashes the gallery and repairs damaged files (listed in ``engine.report.repaired``);
    sync=False opens an existing index as it is and raises IndexFormatError on damage.
    paths (relative to gallery) restricts the gallery to those images.
    """
    t0 = time.perf_counter()
    gallery = Path(gallery)
    index_dir = Path(index_dir) if index_dir else index_dir_for(gallery, cfg, data_dir)
    extractor = extractor or Extractor(cfg.features, device=cfg.build.device)
    if sync:        # a build under this lock, which makes the folder: refused before it (build_index checks its own)
        require_readable(gallery, paths, cfg.features.max_side)
    lock = store.folder_lock(index_dir, cfg.store.lock_timeout, cfg.store) if sync else contextlib.nullcontext()
    with lock:
        report = None
        if not sync and (index_dir / "manifest.json").is_file():
            li = load_index(index_dir, gallery, cfg)
        else:
            li, report = build_index(gallery, index_dir, cfg, paths=paths, extractor=extractor, progress=progress,
                                     readable_checked=sync)
        if li.n_images and not li.ntotal:      # saved as it is (nothing lost), but nothing can be searched
            raise NoDescriptorsError(_no_descriptors(gallery, li, report))
        li.cfg = li.cfg.replace(search=cfg.search, graph=cfg.graph, rerank=cfg.rerank, verify=cfg.verify,
                                globaldesc=cfg.globaldesc, store=cfg.store)
        stages = [ensure_graph(index_dir, li, cfg.graph, cfg.search, progress, repair=sync)]
        if with_global and li.n_images:
            stages.append(ensure_global(index_dir, li, cfg.globaldesc, progress, repair=sync))
    if report is not None:
        report.stages = {s.name: s.action for s in stages}
        report.repaired += [(s.name, s.reason) for s in stages if s.action == "rebuilt"]
    gt = None
    if (gallery / "groups.json").is_file():
        try:
            gt = load_groups(gallery, check_files=False)
        except DatasetError:
            gt = None
    t = {s.name: s.timings for s in stages}
    return Engine(li, stages[0].result, stages[1].result if len(stages) > 1 else None, extractor, li.cfg, gt,
                  report, {"index": time.perf_counter() - t0 - sum(sum(v.values()) for v in t.values()),
                           "graph": sum(t["graph.npz"].values()),
                           "global": sum(t.get("global.npz", {}).values())})


class NoDescriptorsError(DatasetError):
    """Every image of the gallery was read, but none has a keypoint: nothing to search or train on."""


def _no_descriptors(gallery: Path, li: LocalIndex, report) -> str:
    empty = list(getattr(report, "empty", None) or li.paths)
    names = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
    return (f"no keypoints in any image of {gallery} ({li.n_images} image(s): {names}); blank, flat or tiny "
            "images cannot be searched. Add photos with texture and run the same command again.")


@dataclass
class Query:
    """A query: its features, and where it came from."""

    feats: Features
    name: str
    image: LoadedImage | None = None     # None for a gallery image used as is
    gallery_id: int | None = None        # excluded from its own ranking (kept, a positive, when a box is drawn)
    bbox: tuple | None = None            # (x0, y0, x1, y1) in loaded-image pixels
    timings: dict = field(default_factory=dict)


def crop(rgb: np.ndarray, bbox) -> np.ndarray:
    """(H, W, 3) -> the bbox (x0, y0, x1, y1) region, clamped to the image; refuses empty boxes."""
    h, w = rgb.shape[:2]
    if len(bbox) != 4 or not all(np.isfinite(float(v)) for v in bbox):
        raise QueryError(f"the query rectangle {tuple(bbox)} must be 4 finite numbers (x0, y0, x1, y1) of pixels")
    x0, y0, x1, y1 = (int(round(v)) for v in bbox)
    x0, x1 = max(0, min(x0, x1)), min(w, max(x0, x1))
    y0, y1 = max(0, min(y0, y1)), min(h, max(y0, y1))
    if x1 <= x0 or y1 <= y0:
        raise QueryError(f"the query rectangle {bbox} lies outside the image ({w} x {h} pixels)")
    if x1 - x0 < 16 or y1 - y0 < 16:
        raise QueryError(f"the query rectangle {bbox} is too small (at least 16 x 16 pixels)")
    return rgb[y0:y1, x0:x1]


def make_query(engine: Engine, source=None, gallery_id: int | None = None, bbox=None, name: str = "query") -> Query:
    """A query from an upload / path / bytes / an already decoded LoadedImage (``source``), or a
    gallery image (``gallery_id``).

    A LoadedImage is used as is (no second decode); it must have been loaded at most at the
    index's ``features.max_side``. bbox crops the query first (the Revisited Oxford protocol).
    Raises ImageError for unreadable input and NoKeypointsError for a featureless query.
    """
    t0 = time.perf_counter()
    li = engine.li
    if gallery_id is not None and bbox is None:
        f = li.features(gallery_id)
        q = Query(f, li.paths[gallery_id], None, gallery_id)
    else:
        src = li.image_path(gallery_id) if gallery_id is not None else source
        max_side = engine.cfg.features.max_side
        if isinstance(src, LoadedImage):
            if max(src.rgb.shape[:2]) > max_side:
                raise QueryError(f"{src.name}: loaded at {max(src.rgb.shape[:2])} px, more than the index's "
                                 f"max_side {max_side}; load it with load_image(..., max_side={max_side})")
            img = src
        else:
            img = load_image(src, max_side=max_side)
        if gallery_id is not None:
            name = li.paths[gallery_id]
        if bbox is not None:
            img = dataclasses.replace(img, rgb=np.ascontiguousarray(crop(img.rgb, bbox)))
        q = Query(engine.extractor(img.rgb), name or img.name, img, gallery_id, bbox)
    if len(q.feats) == 0:
        raise NoKeypointsError(f"{q.name}: no keypoints found (a blank, flat or tiny "
                               + ("region?); try a larger query rectangle" if bbox is not None else
                                  "image?); try another image"))
    q.timings["extract"] = time.perf_counter() - t0
    return q


@dataclass
class QueryRun:
    """Every requested method's answer to one query, with per-stage timings (seconds).

    ``results``: method name -> Ranking, in registry order. ``run.<method name>`` (e.g. ``run.l2g``)
    is that method's stage object (``Ranking.extras['result']``, else the Ranking), None when absent.
    """

    query: Query
    local: SearchResult
    results: dict = field(default_factory=dict)
    global_sims: np.ndarray | None = None   # (n_images,)
    global_ids: np.ndarray | None = None
    timings: dict = field(default_factory=dict)
    ctx: M.Context | None = None

    def __getattr__(self, name):
        if name.startswith("__") or name not in M.METHODS:
            raise AttributeError(name)
        r = self.__dict__.get("results", {}).get(name)
        return None if r is None else r.extras.get("result", r)

    def rankings(self) -> dict:
        """method -> ranked gallery ids (the query itself excluded)."""
        return {m: r.ids for m, r in self.results.items()}

    def full_ranking(self, method: str) -> np.ndarray:
        """The whole gallery by a method (its list, then the rest by its tail rule; methods.full_ranking)."""
        return M.full_ranking(method, self.results[method], self.ctx)

    def method_timings(self, method: str) -> dict:
        """The stages one query of ``method`` pays, in seconds (its own stage as it would cost alone)."""
        m, r = M.get(method), self.results[method]
        return {s: float(r.timings.get(s, self.timings.get(s, 0.0))) for s in m.stages}


def add_methods(run: QueryRun, methods) -> QueryRun:
    """Run more methods on a run's shared stages (in place); needs_global methods are skipped when
    there are no global descriptors. ``run.timings[own stage]`` grows by the wall time spent."""
    ctx = run.ctx
    for m in M.resolve(methods):
        if m.needs_global and ctx.global_ids is None:
            continue
        ctx.charged = ctx.fresh = 0.0
        t = time.perf_counter()
        r = m.run(ctx)
        wall = time.perf_counter() - t
        if m.own:
            r.timings[m.own] = wall - ctx.fresh + ctx.charged
            run.timings[m.own] = run.timings.get(m.own, 0.0) + wall
        run.results[m.name] = r
    run.results = {k: run.results[k] for k in M.METHODS if k in run.results}
    run.timings["total"] = sum(v for k, v in run.timings.items() if k != "total")
    return run


def rerank_run(engine: Engine, run: QueryRun, rcfg: C.RerankConfig | None = None) -> QueryRun:
    """Redo only the re-ranking methods (no extraction, no search): for tuning sliders.
    The memo (verified inliers) is shared with ``run``; the other methods' Rankings are reused."""
    rcfg = rcfg or engine.cfg.rerank
    ctx = dataclasses.replace(run.ctx, cfg=run.ctx.cfg.replace(rerank=rcfg))
    redo = [m for m in M.resolve(run.results) if m.rerank]
    timings = {k: v for k, v in run.timings.items() if k not in {m.own for m in redo}}
    new = dataclasses.replace(run, results=dict(run.results), timings=timings, ctx=ctx)
    return add_methods(new, redo)


def run_query(engine: Engine, q: Query, cfg: C.L2GConfig | None = None, methods=METHODS) -> QueryRun:
    """Answer one query with the requested methods (UnknownMethod for a bad name); timings per
    stage in seconds."""
    cfg = cfg or engine.cfg
    wanted = M.resolve(methods)
    li, ex = engine.li, q.gallery_id if q.bbox is None else None
    timings = {"extract": q.timings.get("extract", 0.0)}
    t = time.perf_counter()
    res = local_search(li, q.feats, cfg.search, exclude=ex)
    timings["search"] = time.perf_counter() - t
    ctx = M.Context(li, engine.graph, engine.gi, cfg, q.feats, ex, res)
    if engine.gi is not None and any(m.needs_global for m in wanted):
        t = time.perf_counter()
        v = engine.gi.xb[q.gallery_id] if ex is not None else vlad(q.feats.desc, engine.gi.model)
        sims = global_similarities(engine.gi, v)
        if ex is not None:
            sims[ex] = -np.inf
        gids = rank_images(sims, li)
        ctx.global_sims, ctx.global_ids = sims, (gids[gids != ex] if ex is not None else gids)
        timings["global"] = time.perf_counter() - t
    run = QueryRun(q, res, {}, ctx.global_sims, ctx.global_ids, timings, ctx)
    return add_methods(run, wanted)
