"""Local search: every query descriptor votes for gallery images (CANN-style).

For query descriptor i and gallery image j, let r_ij be the L2 distance from
i to j's nearest descriptor among i's ``knn`` nearest neighbours in the whole
gallery (absent if none of them is in j). Then

    score_j = (1 / n_query) * sum_i f(r_ij),   f decreasing, f(0) = 1, f(r >= p0) = 0

so score_j lies in [0, 1]. Each image counts only its first (nearest) hit per
query descriptor. Rows are vectors: xq is (nq, 128); FAISS returns D, I (nq, k).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import ann
from .config import SearchConfig
from .errors import IndexFormatError
from .features import Features, NoKeypointsError
from .index import LocalIndex
from .scan import path_order


def kernel(r: np.ndarray, cfg: SearchConfig = SearchConfig()) -> np.ndarray:
    """Vote weight of a descriptor distance. r: any shape, L2 distances >= 0."""
    x = np.asarray(r, np.float32) / np.float32(cfg.p0)
    if cfg.kernel == "cann":
        return np.maximum(0.0, 1.0 - np.power(x, cfg.alpha)) ** (1.0 / cfg.alpha)
    if cfg.kernel == "gauss":
        return np.exp(-x * x)
    if cfg.kernel == "count":  # plain voting: every neighbour within p0 counts 1
        return (x < 1.0).astype(np.float32)
    raise ValueError(f"unknown kernel {cfg.kernel!r}")


def knn(li: LocalIndex, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k nearest gallery descriptors of each query row.

    xq: (nq, 128) float32 -> D (nq, k) float32 L2 distances (not squared),
    I (nq, k) int64 gallery rows, -1 where fewer than k were found.
    """
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    if xq.ndim != 2 or xq.shape[1] != li.ix.d:
        raise ValueError(f"xq must be (nq, {li.ix.d}), got {xq.shape}")
    k = int(min(k, max(li.ntotal, 1)))
    if xq.shape[0] == 0 or li.ntotal == 0:
        return np.zeros((xq.shape[0], 0), np.float32), np.zeros((xq.shape[0], 0), np.int64)
    rows = li.descriptors if li.fstore is not None else None
    D, I = ann.search(li.ix, li.kind, xq, k, li.cfg.index, rows)   # a re-scored kind: exact from the store
    return np.sqrt(np.maximum(D, 0)), I


@dataclass
class Votes:
    """First hit of each query descriptor in each image: parallel arrays of length H."""

    q: np.ndarray      # (H,) query keypoint index
    img: np.ndarray    # (H,) gallery image id
    row: np.ndarray    # (H,) gallery row (global descriptor id)
    dist: np.ndarray   # (H,) L2 distance


def first_hits(D: np.ndarray, I: np.ndarray, img_of: np.ndarray, n_images: int,
               exclude: int | None = None) -> Votes:
    """Reduce kNN lists (nq, k) to one hit per (query descriptor, image), the nearest."""
    nq, k = I.shape
    valid = I >= 0
    img = np.where(valid, img_of[np.where(valid, I, 0)], -1)
    if exclude is not None:
        valid &= img != exclude
    qi = np.broadcast_to(np.arange(nq)[:, None], (nq, k))
    key = qi[valid].astype(np.int64) * n_images + img[valid]   # row-major: nearest first within a row
    _, first = np.unique(key, return_index=True)
    return Votes(qi[valid][first], img[valid][first], I[valid][first], D[valid][first])


@dataclass
class SearchResult:
    """Ranked shortlist of a local search.

    ids, scores: (M,) ranked gallery image ids and their scores in [0, 1]
    all_scores: (n_images,) score of every gallery image
    matches[j]: (m, 2) int32 (query keypoint, gallery keypoint of image j), nearest first
    match_dist[j]: (m,) float32 their descriptor distances
    """

    ids: np.ndarray
    scores: np.ndarray
    paths: list
    all_scores: np.ndarray
    n_query: int
    matches: dict = field(default_factory=dict)
    match_dist: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def n_matches(self, j: int) -> int:
        return int(len(self.match_dist.get(int(j), ())))


def path_rank(li: LocalIndex) -> np.ndarray:
    """(n,) rank of each gallery path in sorted order: the tie-break of rank_images (cached on li)."""
    if not hasattr(li, "_path_rank"):
        li._path_rank = np.argsort(path_order(li.paths))
    return li._path_rank


def rank_images(scores: np.ndarray, li: LocalIndex, top: int | None = None) -> np.ndarray:
    """Image ids by decreasing score; ties broken by path so the order is build-order independent."""
    order = np.lexsort((path_rank(li), -np.asarray(scores, np.float64)))
    return order if top is None else order[:top]


def strongest(q: Features, m: int) -> np.ndarray | None:
    """Rows of q's m strongest keypoints (response, kpts[:, 4]) in their original order; None: all of them."""
    if not m or len(q) <= m:
        return None
    return np.sort(np.argsort(-q.kpts[:, 4], kind="stable")[:m])


def local_search(li: LocalIndex, q: Features, cfg: SearchConfig = SearchConfig(),
                 exclude: int | None = None, with_matches: bool = True) -> SearchResult:
    """Search the gallery with the local features of one query.

    q.desc: (nq, 128); only the cfg.max_query strongest rows vote when it is set (scores are then divided
    by that number; matches keep q's own keypoint indices). ``exclude`` drops one gallery image (a gallery
    image querying its own gallery). Raises NoKeypointsError for a query with no keypoints, since
    nothing can vote.
    """
    if len(q) == 0:
        raise NoKeypointsError("the query has no keypoints (a blank, flat or tiny image): nothing to search with")
    if li.n_images == 0:
        raise IndexFormatError("the gallery index is empty: index some images first")
    t0 = time.perf_counter()
    rows = strongest(q, cfg.max_query)
    n_query = len(q) if rows is None else len(rows)
    D, I = knn(li, q.desc if rows is None else q.desc[rows], cfg.knn)
    t1 = time.perf_counter()
    v = first_hits(D, I, li.img_of, li.n_images, exclude)
    if rows is not None:
        v.q = rows[v.q]
    w = kernel(v.dist, cfg)
    all_scores = (np.bincount(v.img, weights=w, minlength=li.n_images) / n_query).astype(np.float32)
    if exclude is not None:
        all_scores[exclude] = -1.0
    ids = rank_images(all_scores, li, cfg.shortlist)
    if exclude is not None:
        ids = ids[ids != exclude]
    t2 = time.perf_counter()
    matches, mdist = {}, {}
    if with_matches and len(v.img):
        keep = np.isin(v.img, ids) & (w > 0)
        order = np.lexsort((v.dist[keep], v.img[keep]))
        qk, im, rw, dk = v.q[keep][order], v.img[keep][order], v.row[keep][order], v.dist[keep][order]
        bounds = np.searchsorted(im, ids, "left"), np.searchsorted(im, ids, "right")
        for j, a, b in zip(ids, *bounds):
            b = min(b, a + cfg.max_matches)
            matches[int(j)] = np.stack([qk[a:b], rw[a:b] - li.offsets[j]], 1).astype(np.int32)
            mdist[int(j)] = dk[a:b].astype(np.float32)
    t3 = time.perf_counter()
    return SearchResult(ids, all_scores[ids], [li.paths[j] for j in ids], all_scores, n_query, matches, mdist,
                        params={"knn": cfg.knn, "kernel": cfg.kernel, "p0": cfg.p0, "alpha": cfg.alpha,
                                "shortlist": cfg.shortlist, "max_query": cfg.max_query, "index": li.kind},
                        timings={"knn": t1 - t0, "vote": t2 - t1, "matches": t3 - t2, "search": t3 - t0})
