"""Spatial verification: tentative matches, a robust geometric model, inlier counts.

Used by the global-to-local baseline (a global shortlist re-ranked by the
number of RANSAC inliers) and by the match view. Keypoint coordinates are in
the pixel frame the features were computed in (longest side at most the
extractor's ``max_side``), so ``VerifyConfig.ransac_thresh`` is in those pixels.

Rows are vectors: descriptors (N, D), keypoint centres (N, 2); a match is a
row (query keypoint index, gallery keypoint index).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from .config import VerifyConfig
from .features import Features

RANSAC_SEED = 0            # OpenCV RNG seed set before every robust fit (deterministic results)
RANSAC_CONFIDENCE = 0.999
MODELS = {"fundamental": 8, "homography": 4}    # model -> matches needed to try a fit
_METHOD = getattr(cv2, "USAC_MAGSAC", cv2.RANSAC)
_METHOD_NAME = "USAC_MAGSAC" if hasattr(cv2, "USAC_MAGSAC") else "RANSAC"


def _empty_matches() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 2), np.int32), np.zeros(0, np.float32)


def mutual_nn(desc1: np.ndarray, desc2: np.ndarray, ratio: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours by L2 distance.

    desc1: (N1, D), desc2: (N2, D) -> matches (M, 2) int32 (row in desc1, row in desc2),
    sorted by the first column, and their L2 distances dist (M,) float32.
    With ``ratio`` > 0, a pair is also kept only if its distance is below
    ``ratio`` times the distance to desc1's second nearest row of desc2
    (Lowe's test; it passes trivially when desc2 has a single row).
    """
    a = np.asarray(desc1)
    b = np.asarray(desc2)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"desc1 and desc2 must be (N1, D) and (N2, D), got {a.shape} and {b.shape}")
    if len(a) == 0 or len(b) == 0:
        return _empty_matches()
    a = np.ascontiguousarray(a, np.float32)
    b = np.ascontiguousarray(b, np.float32)
    # squared L2 = |a|^2 + |b|^2 - 2 a.b ; one (N1, N2) matmul
    d2 = a @ b.T
    d2 *= -2.0
    d2 += (b * b).sum(1)[None, :]
    d2 += (a * a).sum(1)[:, None]
    np.maximum(d2, 0.0, out=d2)
    nn12 = d2.argmin(1)                        # (N1,)
    nn21 = d2.argmin(0)                        # (N2,)
    i = np.nonzero(nn21[nn12] == np.arange(len(a)))[0]
    j = nn12[i]
    dist = np.sqrt(d2[i, j])
    if ratio > 0 and len(b) > 1:
        second = np.sqrt(np.partition(d2[i], 1, axis=1)[:, 1])
        keep = dist < ratio * second
        i, j, dist = i[keep], j[keep], dist[keep]
    return np.stack([i, j], 1).astype(np.int32), dist.astype(np.float32)


def ransac(xy1: np.ndarray, xy2: np.ndarray, cfg: VerifyConfig = VerifyConfig(),
           model: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Robust fit of a fundamental matrix or homography to point correspondences.

    xy1, xy2: (M, 2) pixel coordinates -> inlier mask (M,) bool and the 3x3
    float64 matrix (maps xy1 to xy2 for a homography), or an all-False mask and
    None when there are too few matches (max(cfg.min_inliers, 8 for F, 4 for H)),
    the fit fails or degenerates, or it keeps fewer than cfg.min_inliers inliers.
    """
    model = model or cfg.model
    if model not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {model!r}")
    p1 = np.asarray(xy1, np.float64)
    p2 = np.asarray(xy2, np.float64)
    if p1.ndim != 2 or p1.shape[1] != 2 or p1.shape != p2.shape:
        raise ValueError(f"xy1 and xy2 must both be (M, 2), got {p1.shape} and {p2.shape}")
    m = len(p1)
    none = np.zeros(m, bool), None
    if m < max(cfg.min_inliers, MODELS[model]) or not (np.isfinite(p1).all() and np.isfinite(p2).all()):
        return none
    p1, p2 = np.ascontiguousarray(p1), np.ascontiguousarray(p2)
    cv2.setRNGSeed(RANSAC_SEED)
    try:
        if model == "fundamental":
            mat, mask = cv2.findFundamentalMat(p1, p2, _METHOD, float(cfg.ransac_thresh),
                                               RANSAC_CONFIDENCE, int(cfg.ransac_iters))
        else:
            mat, mask = cv2.findHomography(p1, p2, _METHOD, float(cfg.ransac_thresh),
                                           maxIters=int(cfg.ransac_iters), confidence=RANSAC_CONFIDENCE)
    except cv2.error:
        return none
    if mat is None or mask is None or mat.size < 9 or not np.isfinite(mat).all():
        return none
    inl = np.asarray(mask).reshape(-1).astype(bool)
    if inl.shape != (m,) or inl.sum() < cfg.min_inliers:
        return none
    return inl, np.asarray(mat, np.float64)[:3, :3].copy()   # a 7-point fit can stack 3 solutions


@dataclass
class VerifyResult:
    """Spatial verification of one (query, gallery) pair.

    matches: (M, 2) int32 tentative matches (query keypoint, gallery keypoint)
    dist:    (M,) float32 their descriptor L2 distances
    inliers: (M,) bool, those consistent with the fitted model
    matrix:  (3, 3) float64 fundamental matrix / homography (query -> gallery), or None
    """

    matches: np.ndarray
    dist: np.ndarray
    inliers: np.ndarray
    n_inliers: int
    model: str
    matrix: np.ndarray | None
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def n_matches(self) -> int:
        return int(len(self.matches))

    def counts_only(self) -> "VerifyResult":
        """A copy without the per-match arrays (for keeping many results around)."""
        return VerifyResult(np.zeros((0, 2), np.int32), np.zeros(0, np.float32), np.zeros(0, bool),
                            self.n_inliers, self.model, self.matrix,
                            {**self.params, "n_matches": self.n_matches}, dict(self.timings))


def verify_pair(q: Features, g: Features, cfg: VerifyConfig = VerifyConfig(), matches: np.ndarray | None = None,
                model: str | None = None) -> VerifyResult:
    """Tentative matches (mutual NN, or the given ``matches`` (M, 2)) then a robust fit.

    An empty side or fewer matches than a fit needs gives 0 inliers, never an error.
    """
    model = model or cfg.model
    if model not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {model!r}")
    t0 = time.perf_counter()
    params = {"model": model, "method": _METHOD_NAME, "ransac_thresh": cfg.ransac_thresh,
              "ransac_iters": cfg.ransac_iters, "ratio": cfg.ratio, "min_inliers": cfg.min_inliers,
              "matches_given": matches is not None}
    if matches is None:
        mt, dist = mutual_nn(q.desc, g.desc, cfg.ratio)
    else:
        mt = np.asarray(matches)
        if mt.ndim != 2 or mt.shape[1] != 2:
            raise ValueError(f"matches must be (M, 2), got {mt.shape}")
        mt = mt.astype(np.int32)
        bad = len(mt) > 0 and (mt.min() < 0 or mt[:, 0].max() >= len(q) or mt[:, 1].max() >= len(g))
        if bad:
            raise ValueError(f"matches index outside the keypoints ({len(q)} query, {len(g)} gallery)")
        dist = np.linalg.norm(q.desc[mt[:, 0]] - g.desc[mt[:, 1]], axis=1).astype(np.float32)
    t1 = time.perf_counter()
    inl, mat = ransac(q.xy[mt[:, 0]], g.xy[mt[:, 1]], cfg, model)
    t2 = time.perf_counter()
    return VerifyResult(mt, dist, inl, int(inl.sum()), model, mat, params,
                        {"match": t1 - t0, "ransac": t2 - t1, "verify": t2 - t0})


@dataclass
class G2LResult:
    """A global shortlist re-ranked by spatial verification.

    ids:      (M,) the shortlist, its first ``top`` entries re-ordered by inlier count
    inliers:  (top,) inlier count of each re-ranked id, same order as ids[:top]
    verified: gallery id -> VerifyResult (counts only: no per-match arrays)
    """

    ids: np.ndarray
    inliers: np.ndarray
    verified: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


def g2l_rerank(li, q: Features, ids: np.ndarray, cfg: VerifyConfig = VerifyConfig(),
               exclude: int | None = None, model: str | None = None) -> G2LResult:
    """Global-to-local baseline: verify the first ``cfg.top`` ids of a global shortlist against
    the query and sort them by inlier count (ties keep the global order); the rest is unchanged.

    li: a LocalIndex (only ``li.features(i)`` is used); ids: (M,) gallery ids, best first.
    ``exclude`` drops one gallery id (a gallery image querying its own gallery).
    """
    model = model or cfg.model
    ids = np.asarray(ids, np.int64).reshape(-1)
    if exclude is not None:
        ids = ids[ids != exclude]
    head, rest = ids[:cfg.top], ids[cfg.top:]
    params = {"top": cfg.top, "model": model, "n_query": len(q), "n_shortlist": int(len(ids))}
    t0 = time.perf_counter()
    if len(head) == 0 or len(q) == 0:
        return G2LResult(ids, np.zeros(len(head), np.int64), {}, params, {"verify": 0.0, "total": 0.0})
    verified: dict = {}
    counts = np.zeros(len(head), np.int64)
    t_load = 0.0
    for pos, j in enumerate(head):
        ta = time.perf_counter()
        g = li.features(int(j))
        t_load += time.perf_counter() - ta
        r = verify_pair(q, g, cfg, model=model)
        verified[int(j)] = r.counts_only()
        counts[pos] = r.n_inliers
    order = np.argsort(-counts, kind="stable")        # stable: ties keep the global order
    t1 = time.perf_counter()
    return G2LResult(np.concatenate([head[order], rest]), counts[order], verified, params,
                     {"load": t_load, "verify": t1 - t0 - t_load, "total": t1 - t0})
