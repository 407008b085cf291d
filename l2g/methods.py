"""The retrieval methods: one registry, read by the pipeline, evaluate, the CLI and the app.

In the style of ``features.EXTRACTORS`` and hloc's ``extractors/``: a method is a
``Method`` (name, label, what it needs, what it pays, how its scores read) and a
``run(ctx) -> Ranking`` function. Adding a method is one ``register`` call here.

    local        local-search shortlist (CANN voting)
    local_qe     local + alpha query expansion on the local similarities
    l2g          local-to-global: MDS similarity-embedding re-ranking
    l2g_blend    l2g blended with the global descriptor (weight w)
    global       global descriptor (VLAD) ranking
    g2l          global-to-local: the global top N (VerifyConfig.top) re-ranked by RANSAC inliers
    g2l@N        the same with a fixed verification budget of N images

Stages a query shares (``Context``): extract, search (always), global (when a
method needs it). Work that several methods reuse (the MDS embedding, the
inlier count of a gallery image) is computed once per query and charged to each
method that uses it, so a method's time is what it would cost alone.

The registry imports only config at load time (the CLI builds its --method
choices from it without loading torch / faiss); the stages import lazily.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from . import config as C
from .errors import UnknownMethod

if TYPE_CHECKING:
    from .features import Features
    from .graph import Graph
    from .rerank import RerankResult
    from .search import SearchResult
    from .verify import VerifyResult


@dataclass
class Ranking:
    """One method's answer to one query.

    ids:     (n,) gallery ids, best first; the query itself is never in it
    scores:  (h,) h <= n, the score of ids[:h] in the method's unit (``Method.unit``)
    timings: {stage: seconds} the method's own stage (shared work charged in full)
    extras:  method-specific: 'result' (the stage object, e.g. RerankResult), 'moves', 'n_verified'
    """

    ids: np.ndarray
    scores: np.ndarray
    timings: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)

    def __post_init__(self):
        self.ids = np.asarray(self.ids, np.int64).reshape(-1)
        self.scores = np.asarray(self.scores, np.float64).reshape(-1)
        if len(self.scores) > len(self.ids):
            raise ValueError(f"a Ranking has {len(self.scores)} scores for {len(self.ids)} ids")

    def score_of(self) -> dict:
        """gallery id -> score, for the scored head of the list."""
        return {int(j): float(s) for j, s in zip(self.ids, self.scores)}


@dataclass
class Context:
    """What the methods of one query share: the query, the gallery, the common stages, a memo."""

    li: object                       # LocalIndex
    graph: "Graph"
    gi: object                       # GlobalIndex or None
    cfg: C.L2GConfig
    feats: "Features"
    exclude: int | None              # the query's own gallery id (left out of every ranking)
    local: "SearchResult"
    global_sims: np.ndarray | None = None   # (n_images,) cosine of global descriptors
    global_ids: np.ndarray | None = None    # gallery ids by global cosine, the query left out
    memo: dict = field(default_factory=dict)   # key -> (value, seconds to compute)
    charged: float = 0.0             # memo seconds used by the method running now
    fresh: float = 0.0               # memo seconds computed by the method running now

    def shared(self, key, fn: Callable):
        """fn() computed once per query; its cost is charged to every method that uses it."""
        if key not in self.memo:
            t = time.perf_counter()
            value = fn()
            dt = time.perf_counter() - t
            self.memo[key] = (value, dt)
            self.fresh += dt
        value, dt = self.memo[key]
        self.charged += dt
        return value

    def embedding(self) -> "RerankResult":
        """The l2g MDS embedding of the shortlist head (RerankConfig without the global blend)."""
        from .rerank import rerank

        rcfg = dataclasses.replace(self.cfg.rerank, w=0.0)
        key = ("embedding", rcfg)
        if key not in self.memo:   # keep one embedding: sliders change the config often
            # list(): one atomic copy, the app's background job may add entries meanwhile
            for k in [k for k in list(self.memo) if k[0] == "embedding"]:
                del self.memo[k]
        return self.shared(key, lambda: rerank(self.local, self.graph, rcfg, exclude=self.exclude))

    def _pair_key(self, j: int) -> tuple:
        return ("inliers", int(j), self.cfg.verify)     # the memo entry inliers and verify share per pair

    def inliers(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids),) RANSAC inlier counts of the query against each gallery id (each verified once)."""
        return np.array([self.shared(self._pair_key(j), lambda j=j: self._verify(j).n_inliers) for j in ids],
                        np.int64)

    def verify(self, j: int, feats: "Features | None" = None) -> "VerifyResult":
        """The query's verification with gallery image j, matches and inlier mask included (the app's
        match view): the computation ``inliers`` counts, so its n_inliers is the pair's count there
        (global-to-local, the confidence verdict); recorded in the memo when new. ``feats``: image j's
        features when the caller has them (not loaded again)."""
        t = time.perf_counter()
        r = self._verify(j, feats)
        self.memo.setdefault(self._pair_key(j), (r.n_inliers, time.perf_counter() - t))
        return r

    def _verify(self, j: int, feats: "Features | None" = None) -> "VerifyResult":
        """Mutual nearest-neighbour matches of the query and gallery image j, then RANSAC (VerifyConfig)."""
        from .verify import verify_pair

        vc = self.cfg.verify
        return verify_pair(self.feats, self.li.features(int(j)) if feats is None else feats, vc, model=vc.model)


@dataclass(frozen=True)
class Method:
    """A retrieval method. ``stages``: what one query costs it (shared stages, then its own)."""

    name: str
    label: str                       # shown in the app and tables
    run: Callable[[Context], Ranking]
    needs_global: bool = False       # absent when the gallery has no global descriptors
    stages: tuple = ("extract", "search")
    own: str | None = None           # key of its own stage in QueryRun.timings
    rerank: bool = False             # depends only on RerankConfig after the search: sliders redo it
    tail: str = "local"              # the rest of the gallery after its list: 'local' | 'global' score order
    unit: str = "local score in [0, 1]"
    fmt: str = "%.3f"                # display format of a score
    deferred: bool = False           # slow: the app shows it after the rest of the page
    shown: bool = True               # offered on the app's query page
    default: bool = True             # in the default method list of ``eval``
    budget: int | None = None        # images spatially verified (None: not a verifying method)


METHODS: dict[str, Method] = {}


def register(m: Method) -> Method:
    if m.name in METHODS:
        raise ValueError(f"method {m.name!r} is registered twice")
    METHODS[m.name] = m
    return m


def get(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise UnknownMethod(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None


def resolve(names) -> list[Method]:
    """Method objects for names (or Methods), in registry order; UnknownMethod for a bad name."""
    want = {n.name if isinstance(n, Method) else get(n).name for n in names}
    return [m for m in METHODS.values() if m.name in want]


def names(*, default: bool | None = None, shown: bool | None = None, deferred: bool | None = None,
          needs_global: bool | None = None) -> tuple[str, ...]:
    """Registered names filtered by flags (None: either)."""
    flt = {"default": default, "shown": shown, "deferred": deferred, "needs_global": needs_global}
    return tuple(m.name for m in METHODS.values()
                 if all(v is None or getattr(m, k) == v for k, v in flt.items()))


def available(names_, has_global: bool) -> tuple[str, ...]:
    """The names that can run on a gallery with / without global descriptors."""
    return tuple(m.name for m in resolve(names_) if has_global or not m.needs_global)


def budget(m: Method, cfg: C.L2GConfig) -> int | None:
    """Images a verifying method verifies per query (``g2l`` follows VerifyConfig.top)."""
    if m.budget is None:
        return None
    return cfg.verify.top if m.budget == 0 else m.budget


def budget_methods(cfg: C.L2GConfig) -> dict[int, str]:
    """Verification budget N -> the registered method that verifies N images, by N (for an N two
    methods share, the one shown on the query page: ``g2l`` at VerifyConfig.top, not ``g2l@50``)."""
    out: dict[int, str] = {}
    for m in sorted(METHODS.values(), key=lambda m: not m.shown):
        b = budget(m, cfg)
        if b is not None:
            out.setdefault(b, m.name)
    return dict(sorted(out.items()))


def full_ranking(m: Method | str, r: Ranking, ctx: Context) -> np.ndarray:
    """The whole gallery by a method: its list, then the rest by its tail score (ties by path);
    the query itself left out. The one tie-break rule of evaluate and the app."""
    from .search import rank_images

    m = m if isinstance(m, Method) else get(m)
    rest = ctx.global_sims if m.tail == "global" and ctx.global_sims is not None else ctx.local.all_scores
    seen = set(int(j) for j in r.ids)
    if ctx.exclude is not None:
        seen.add(int(ctx.exclude))
    tail = [int(j) for j in rank_images(rest, ctx.li) if int(j) not in seen]
    return np.concatenate([r.ids, np.asarray(tail, np.int64)])


# ---- the methods --------------------------------------------------------------------------

def _local(ctx: Context) -> Ranking:
    res = ctx.local
    return Ranking(res.ids, res.scores, {}, {"result": res})


def query_expansion(res: "SearchResult", graph: "Graph", n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """alpha-QE on local similarities: the query's score vector plus its top-n's graph rows,
    each weighted by (score / top score)^alpha. Returns the re-ranked shortlist ids and scores."""
    ids = res.ids
    if len(ids) == 0 or res.scores[0] <= 0:
        return ids.copy(), res.scores.copy()
    top = ids[:n]
    wts = np.clip(res.scores[:n] / res.scores[0], 0, 1) ** alpha
    G = graph.G
    rows = np.asarray(G[top].multiply(wts[:, None]).sum(0)).ravel() + np.asarray(
        G[:, top].multiply(wts[None, :]).sum(1)).ravel()
    s = np.maximum(res.all_scores, 0) + 0.5 * rows
    sub = s[ids]
    order = np.lexsort((np.arange(len(ids)), -sub))
    return ids[order], sub[order]


def _local_qe(ctx: Context) -> Ranking:
    ids, scores = query_expansion(ctx.local, ctx.graph, ctx.cfg.rerank.qe_n, ctx.cfg.rerank.qe_alpha)
    return Ranking(ids, scores)


def _l2g(ctx: Context) -> Ranking:
    rr = ctx.embedding()
    return Ranking(rr.ids, rr.scores, {}, {"result": rr, "moves": rr.rank_change()})


def _l2g_blend(ctx: Context) -> Ranking:
    from .rerank import blend

    rc = ctx.cfg.rerank
    rr = blend(ctx.embedding(), ctx.local, ctx.global_sims, rc.w if rc.w > 0 else rc.blend_w)
    return Ranking(rr.ids, rr.scores, {}, {"result": rr, "moves": rr.rank_change()})


def _global(ctx: Context) -> Ranking:
    return Ranking(ctx.global_ids, ctx.global_sims[ctx.global_ids])


def _g2l(n: int) -> Callable[[Context], Ranking]:
    def run(ctx: Context) -> Ranking:
        """The global list's first N re-ordered by inlier count (ties keep the global order)."""
        top = n or ctx.cfg.verify.top
        head, rest = ctx.global_ids[:top], ctx.global_ids[top:]
        counts = ctx.inliers(head)
        order = np.argsort(-counts, kind="stable")
        return Ranking(np.concatenate([head[order], rest]), counts[order], {},
                       {"n_verified": int(len(head)), "budget": int(top)})
    return run


_L2G = dict(stages=("extract", "search", "l2g"), own="l2g", rerank=True)
_G2L = dict(needs_global=True, stages=("extract", "global", "g2l"), own="g2l", tail="global",
            unit="RANSAC inliers", fmt="%d")
register(Method("global", "global only", _global, needs_global=True, stages=("extract", "global"),
                tail="global", unit="global cosine"))
register(Method("g2l", "global-to-local", _g2l(0), deferred=True, budget=0, **_G2L))
for _n in C.G2L_BUDGETS:
    register(Method(f"g2l@{_n}", f"global-to-local, {_n} verified", _g2l(_n), shown=False, budget=_n,
                    default=_n != C.DEFAULT.verify.top, **_G2L))
register(Method("local", "local only", _local))
register(Method("local_qe", "local + QE", _local_qe, unit="QE score", **_L2G))
register(Method("l2g", "local-to-global", _l2g, unit="MDS cosine", **_L2G))
register(Method("l2g_blend", "l2g + global blend", _l2g_blend, needs_global=True, unit="blended cosine",
                **{**_L2G, "stages": ("extract", "search", "global", "l2g")}))

# The app's query page: the lists shown side by side, and the method shown in place of one of
# them while the global blend weight w > 0.
SIDE_BY_SIDE = ("local", "l2g", "g2l")
# evaluate reports the per-query wins / losses of MAIN against each of BASELINES.
MAIN, BASELINES = "l2g", ("local", "g2l")
WITH_BLEND = {"l2g": "l2g_blend"}
