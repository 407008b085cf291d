"""Run the retrieval methods end to end on one query and time each stage.

``open_engine`` turns a gallery folder into a ready Engine (index, graph,
global descriptors; each built once and cached in the index folder).
``make_query`` + ``run_query`` answer one query with every method:

    local      local-search shortlist (CANN voting)
    local_qe   local + alpha query expansion on the local similarities
    l2g        local-to-global: MDS similarity-embedding re-ranking
    l2g_blend  l2g blended with the global descriptor (weight w)
    global     global descriptor (VLAD) ranking
    g2l        global-to-local: global shortlist re-ranked by spatial verification
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import config as C
from .datasets import GroundTruth, load_groups
from .features import Extractor, Features, NoKeypointsError
from . import store
from .globaldesc import GlobalIndex, ensure_global, global_similarities, vlad
from .graph import Graph, ensure_graph
from .images import LoadedImage, load_image
from .index import LocalIndex, Progress, build_index, load_index
from .rerank import RerankResult, blend, rerank
from .search import SearchResult, local_search, rank_images
from .verify import G2LResult, g2l_rerank

METHODS = C.METHODS


def slug(path: Path) -> str:
    """A folder-name-safe tag of a gallery path."""
    p = Path(path).resolve()
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", p.name or "root")


def index_dir_for(gallery: Path, cfg: C.L2GConfig = C.DEFAULT) -> Path:
    """data/index/<gallery>/<preset>: the preset name encodes the feature parameters."""
    return C.DATA_DIR / "index" / slug(gallery) / cfg.features.name


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
                with_global: bool = True, paths: list[str] | None = None) -> Engine:
    """Build (or resume, update, repair) the index, graph and global descriptors of a gallery.

    Each stage owns its cache (``ensure``: load if its fingerprint matches, else build or
    extend, save atomically, record in the manifest). sync=True holds the folder's lock,
    re-hashes the gallery and repairs damaged files (listed in ``engine.report.repaired``);
    sync=False opens an existing index as it is and raises IndexFormatError on damage.
    paths (relative to gallery) restricts the gallery to those images.
    """
    t0 = time.perf_counter()
    gallery = Path(gallery)
    index_dir = Path(index_dir) if index_dir else index_dir_for(gallery, cfg)
    extractor = extractor or Extractor(cfg.features)
    lock = store.folder_lock(index_dir, cfg.store.lock_timeout, cfg.store) if sync else contextlib.nullcontext()
    with lock:
        report = None
        if not sync and (index_dir / "manifest.json").is_file():
            li = load_index(index_dir, gallery, cfg)
        else:
            li, report = build_index(gallery, index_dir, cfg, paths=paths, extractor=extractor, progress=progress)
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
        except ValueError:
            gt = None
    t = {s.name: s.timings for s in stages}
    return Engine(li, stages[0].result, stages[1].result if len(stages) > 1 else None, extractor, li.cfg, gt,
                  report, {"index": time.perf_counter() - t0 - sum(sum(v.values()) for v in t.values()),
                           "graph": sum(t["graph.npz"].values()),
                           "global": sum(t.get("global.npz", {}).values())})


@dataclass
class Query:
    """A query: its features, and where it came from."""

    feats: Features
    name: str
    image: LoadedImage | None = None     # None for a gallery image used as is
    gallery_id: int | None = None        # excluded from its own ranking
    bbox: tuple | None = None            # (x0, y0, x1, y1) in loaded-image pixels
    timings: dict = field(default_factory=dict)


def crop(rgb: np.ndarray, bbox) -> np.ndarray:
    """(H, W, 3) -> the bbox (x0, y0, x1, y1) region, clamped to the image; refuses empty boxes."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in bbox)
    x0, x1 = max(0, min(x0, x1)), min(w, max(x0, x1))
    y0, y1 = max(0, min(y0, y1)), min(h, max(y0, y1))
    if x1 - x0 < 16 or y1 - y0 < 16:
        raise ValueError(f"the query rectangle {bbox} is too small (at least 16 x 16 pixels)")
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
                raise ValueError(f"{src.name}: loaded at {max(src.rgb.shape[:2])} px, more than the index's "
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
        raise NoKeypointsError(f"{q.name}: no keypoints found (a blank, flat or tiny image?); "
                               "try another image or a larger query rectangle")
    q.timings["extract"] = time.perf_counter() - t0
    return q


@dataclass
class QueryRun:
    """Every method's answer to one query, with per-stage timings (seconds)."""

    query: Query
    local: SearchResult
    l2g: RerankResult
    l2g_blend: RerankResult | None = None
    local_qe: np.ndarray | None = None
    global_sims: np.ndarray | None = None   # (n_images,)
    global_ids: np.ndarray | None = None
    g2l: G2LResult | None = None
    timings: dict = field(default_factory=dict)

    def rankings(self) -> dict:
        """method -> ranked gallery ids (the query itself excluded)."""
        out = {"local": self.local.ids, "l2g": self.l2g.ids}
        if self.local_qe is not None:
            out["local_qe"] = self.local_qe
        if self.l2g_blend is not None:
            out["l2g_blend"] = self.l2g_blend.ids
        if self.global_ids is not None:
            out["global"] = self.global_ids
        if self.g2l is not None:
            out["g2l"] = self.g2l.ids
        return {m: out[m] for m in METHODS if m in out}


def query_expansion(res: SearchResult, graph: Graph, n: int, alpha: float) -> np.ndarray:
    """alpha-QE on local similarities: the query's score vector plus its top-n's graph rows,
    each weighted by (score / top score)^alpha. Returns the re-ranked shortlist ids."""
    ids = res.ids
    if len(ids) == 0 or res.scores[0] <= 0:
        return ids.copy()
    top = ids[:n]
    wts = np.clip(res.scores[:n] / res.scores[0], 0, 1) ** alpha
    G = graph.G
    rows = np.asarray(G[top].multiply(wts[:, None]).sum(0)).ravel() + np.asarray(
        G[:, top].multiply(wts[None, :]).sum(1)).ravel()
    s = np.maximum(res.all_scores, 0) + 0.5 * rows
    sub = s[ids]
    order = np.lexsort((np.arange(len(ids)), -sub))
    return ids[order]


def rerank_run(engine: Engine, run: QueryRun, rcfg: C.RerankConfig | None = None) -> QueryRun:
    """Redo only the re-ranking stages (no extraction, no search): for tuning sliders."""
    rcfg = rcfg or engine.cfg.rerank
    t0 = time.perf_counter()
    l2g = rerank(run.local, engine.graph, dataclasses.replace(rcfg, w=0.0))
    blended = None
    if run.global_sims is not None:  # same embedding, global cosine blended in
        blended = blend(l2g, run.local, run.global_sims, rcfg.w if rcfg.w > 0 else rcfg.blend_w)
    qe = query_expansion(run.local, engine.graph, rcfg.qe_n, rcfg.qe_alpha)
    return dataclasses.replace(run, l2g=l2g, l2g_blend=blended, local_qe=qe,
                               timings={**run.timings, "l2g": time.perf_counter() - t0})


def run_query(engine: Engine, q: Query, cfg: C.L2GConfig | None = None, methods=METHODS) -> QueryRun:
    """Answer one query with the requested methods; timings per stage in seconds."""
    cfg = cfg or engine.cfg
    li, ex = engine.li, q.gallery_id if q.bbox is None else None
    timings = {"extract": q.timings.get("extract", 0.0)}
    t = time.perf_counter()
    res = local_search(li, q.feats, cfg.search, exclude=ex)
    timings["search"] = time.perf_counter() - t
    run = QueryRun(q, res, None)  # type: ignore[arg-type]
    if engine.gi is not None and {"global", "g2l", "l2g_blend"} & set(methods):
        t = time.perf_counter()
        v = engine.gi.xb[q.gallery_id] if ex is not None else vlad(q.feats.desc, engine.gi.model)
        sims = global_similarities(engine.gi, v)
        if ex is not None:
            sims[ex] = -np.inf
        run.global_sims = sims
        gids = rank_images(sims, li)
        run.global_ids = gids[gids != ex] if ex is not None else gids
        timings["global"] = time.perf_counter() - t
        if "g2l" in methods:
            t = time.perf_counter()
            run.g2l = g2l_rerank(li, q.feats, run.global_ids, cfg.verify, exclude=ex, model=cfg.verify.model)
            timings["g2l"] = time.perf_counter() - t
    run = rerank_run(engine, run, cfg.rerank)
    run.timings = {**timings, "l2g": run.timings["l2g"]}
    run.timings["total"] = sum(run.timings.values())
    return run
