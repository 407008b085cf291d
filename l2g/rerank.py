"""Local-to-global re-ranking with similarity embeddings (Aiger et al., 2025).

For a query and the top k of its local-search shortlist:

1. S, (k+1, k+1): row/column 0 is the query's own local-search scores, the
   candidate block comes from the gallery graph (symmetrised by the mean);
   missing pairs are 0.
2. Normalise: s = min(S / scale, 1) with scale the 99th percentile of the
   positive off-diagonal entries ('p99'), their maximum ('max'), or replace S
   by its within-row rank ('rank'); the diagonal is 1.
3. Dissimilarity: delta = 1 - s ('1-s', default), sqrt(1 - s), or -log(s)
   (clipped at s = 1e-3).
   Before that, optionally one diffusion step (diffuse_a = a): s <- (1 - a) s + a T,
   T a cosine-normalised one-step random walk on s (``diffuse``).
4. Embed delta with MDS in d dimensions (classical, then SMACOF).
5. Score candidates by cosine to the query in that space, optionally blended:
   (1 - w) cos_mds + w cos_global. Re-order the top k; the rest keeps its order.

Options of RerankConfig (all off by default unless the README's two-fold table
says otherwise): the block's symmetrisation ('mean' | 'max'); reciprocal-
neighbour weighting (mutual_k, mutual_w); verified graph edges from l2g.vgraph
(verified_w); SMACOF weights 0 for pairs with no local similarity (weighted);
and a guard for isolated true matches: a share local_w of the normalised local
score in the final score, and keep_head, which keeps the local top-1 first when
its local score dominates the second's. With hub_n > 0 the guard's local score is
hubness-normalised (contextual dissimilarity, Jegou et al. 2007): q_j / mu_j ** hub_beta,
mu_j the mean of candidate j's hub_n strongest gallery-graph similarities, divided
by its maximum over the head; images similar to everything (hubs) lose weight (l2g.graphctx).
With expand_gamma > 0 the head is drawn from the shortlist re-ordered by graph expansion
(l2g.graphctx.expand_order): a candidate the query's top expand_m see strongly in the graph moves up.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import ThreadpoolController

from .config import RerankConfig
from .graph import Graph
from .graphctx import expand_order, hub_local, hub_means
from .mds import embed
from .search import SearchResult

_BLAS = ThreadpoolController()


def normalise(S: np.ndarray, mode: str = "p99") -> np.ndarray:
    """(n, n) raw similarities >= 0 -> (n, n) in [0, 1] with unit diagonal."""
    S = np.asarray(S, np.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"S must be square, got {S.shape}")
    n = S.shape[0]
    off = S[~np.eye(n, dtype=bool)]
    if mode == "rank":
        # each row's entries replaced by 1 - rank/(n-1), then symmetrised
        R = np.argsort(np.argsort(-S, axis=1), axis=1).astype(np.float64)
        s = 1.0 - R / max(n - 1, 1)
        s = 0.5 * (s + s.T)
        s[S <= 0] = 0.0
    else:
        pos = off[off > 0]
        if pos.size == 0:
            s = np.zeros_like(S)
        else:
            scale = np.percentile(pos, 99) if mode == "p99" else pos.max() if mode == "max" else None
            if scale is None:
                raise ValueError(f"unknown normalisation {mode!r}")
            s = np.minimum(S / max(scale, 1e-12), 1.0)
    s = np.clip(s, 0.0, 1.0)
    np.fill_diagonal(s, 1.0)
    return s


def dissimilarity(s: np.ndarray, transform: str = "1-s") -> np.ndarray:
    """(n, n) similarities in [0, 1] -> (n, n) symmetric dissimilarities, zero diagonal."""
    if transform == "1-s":
        d = 1.0 - s
    elif transform == "sqrt(1-s)":
        d = np.sqrt(np.maximum(1.0 - s, 0.0))
    elif transform == "-log(s)":
        d = -np.log(np.clip(s, 1e-3, 1.0))
    else:
        raise ValueError(f"unknown transform {transform!r}")
    d = 0.5 * (d + d.T)
    np.fill_diagonal(d, 0.0)
    return np.maximum(d, 0.0)


def cosine_to_first(X: np.ndarray) -> np.ndarray:
    """X: (n, d) -> (n-1,) cosine of rows 1.. to row 0 (0 where a row is zero)."""
    nrm = np.linalg.norm(X, axis=1)
    nrm[nrm == 0] = np.inf
    return (X[1:] @ X[0]) / (nrm[1:] * nrm[0])


def reciprocal_weights(S: np.ndarray, k: int, w: float) -> np.ndarray:
    """(n, n) similarities -> (n, n) factors: 1 where i and j are among each other's top k
    (by S, diagonal excluded), w elsewhere; k < 1 gives all ones."""
    n = S.shape[0]
    if k < 1 or n < 2:
        return np.ones_like(S)
    A = np.where(np.eye(n, dtype=bool), -np.inf, S)
    top = np.argsort(-A, axis=1, kind="stable")[:, :min(k, n - 1)]
    M = np.zeros((n, n), bool)
    M[np.repeat(np.arange(n), top.shape[1]), top.ravel()] = True
    return np.where(M & M.T, 1.0, w).astype(S.dtype)


def similarity_block(res: SearchResult, graph: Graph, k: int, cfg: RerankConfig = RerankConfig(),
                     vgraph=None) -> tuple[np.ndarray, np.ndarray]:
    """(k+1, k+1) raw local similarities of the query (row 0) and its top-k candidates.

    vgraph: optional verified graph (l2g.vgraph.VGraph); with cfg.verified_w = v > 0 the
    candidate block becomes S * (1 + v * g), g in [0, 1] the verification score: verified
    edges are strengthened, the others kept (shrinking them lost 1-9 mAP on realbench-dev).
    """
    ids = np.asarray(res.ids[:k], np.int64)
    S = np.zeros((len(ids) + 1, len(ids) + 1), np.float32)
    B = graph.block(ids, cfg.symmetric)
    if vgraph is not None and cfg.verified_w > 0:
        B = B * (1.0 + cfg.verified_w * vgraph.block(ids))
    S[1:, 1:] = B
    q = np.maximum(res.all_scores[ids], 0)
    S[0, 1:] = S[1:, 0] = q
    if cfg.mutual_k > 0:
        S = S * reciprocal_weights(S, cfg.mutual_k, cfg.mutual_w)
    return S, ids


def diffuse(s: np.ndarray, a: float) -> np.ndarray:
    """(n, n) normalised similarities -> (1 - a) s + a T, T_ij = sum_k s_ik s_jk / d_j (d the row
    sums) over sqrt(T_ii T_jj); unit diagonal, not symmetric (MDS symmetrises 1 - s). a = 0: s."""
    if not 0 <= a <= 1:
        raise ValueError(f"diffuse_a must be in [0, 1], got {a}")
    if a == 0:
        return s
    T = s @ (s / np.maximum(s.sum(1, keepdims=True), 1e-12)).T
    dg = np.sqrt(np.maximum(np.diag(T), 1e-12))
    out = (1.0 - a) * s + a * T / np.outer(dg, dg)
    np.fill_diagonal(out, 1.0)
    return out


def guard(cos_mds: np.ndarray, s_query: np.ndarray, local: np.ndarray,
          cfg: RerankConfig) -> tuple[np.ndarray, np.ndarray]:
    """Final scores and order of the head, guarded for isolated true matches.

    cos_mds: (k,) MDS cosines; s_query: (k,) normalised local similarity to the query in
    [0, 1]; local: (k,) raw local scores in head order. Returns (final (k,) in head
    order, order (k,) positions of the head, best first).
    """
    final = (1.0 - cfg.local_w) * cos_mds + cfg.local_w * s_query
    order = np.argsort(-final, kind="stable")  # stable: ties keep the local-search order
    top = int(np.argmax(local)) if len(local) else 0   # 0 in local-search order (a graph-expanded head: anywhere)
    if cfg.keep_head > 0 and len(local) > 1 and local[top] >= cfg.keep_head * max(np.delete(local, top).max(), 1e-12):
        order = np.concatenate([[top], order[order != top]])
    return final, order


@dataclass
class RerankResult:
    """ids: (M,) re-ranked shortlist; X: (k+1, d) embedding, row 0 = query."""

    ids: np.ndarray
    scores: np.ndarray            # (k,) final scores of the re-ranked head, in new order
    head: np.ndarray              # (k,) candidate ids, rows 1.. of X: in local-search order (graph-expanded order
    #                               when expand_gamma > 0; local_ids has the local order)
    X: np.ndarray
    S: np.ndarray                 # (k+1, k+1) normalised similarities (before the diffusion step)
    cos_mds: np.ndarray           # (k,) in head order
    cos_global: np.ndarray | None
    stress1: float
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    local_term: np.ndarray | None = None   # (k,) the guard's local score in head order (None: S[0, 1:])
    local_ids: np.ndarray | None = None    # (M,) the shortlist in local-search order (None: head is in it)

    def rank_change(self) -> dict:
        """candidate id -> local-search rank minus new rank (positive = moved up), for the head's candidates
        and the local top k (with expansion, some of those left the head)."""
        new = {int(j): r for r, j in enumerate(self.ids)}
        old = self.head if self.local_ids is None else self.local_ids
        keep = {int(j) for j in self.head} | {int(j) for j in old[:len(self.head)]}
        return {int(j): r - new[int(j)] for r, j in enumerate(old) if int(j) in keep}


def rerank(res: SearchResult, graph: Graph, cfg: RerankConfig = RerankConfig(),
           global_sim: np.ndarray | None = None, vgraph=None, exclude: int | None = None) -> RerankResult:
    """Re-rank the head of a local-search shortlist by MDS similarity embeddings.

    global_sim: optional (n_images,) cosine of the query's global descriptor to
    every gallery image, used when cfg.w > 0.
    vgraph: optional verified graph (l2g.vgraph.VGraph), used when cfg.verified_w > 0.
    exclude: the query's own gallery id, if any, left out of the hub means (cfg.hub_n > 0).
    """
    t0 = time.perf_counter()
    if cfg.symmetric not in ("mean", "max"):
        raise ValueError(f"symmetric must be 'mean' or 'max', got {cfg.symmetric!r}")
    if cfg.weighted and cfg.method != "smacof":
        raise ValueError("weighted=True needs method='smacof' (classical MDS takes no weights)")
    params = {"k": cfg.k, "dim": cfg.dim, "method": cfg.method, "transform": cfg.transform,
              "normalise": cfg.normalise, "w": cfg.w, "symmetric": cfg.symmetric, "local_w": cfg.local_w,
              "keep_head": cfg.keep_head, "mutual_k": cfg.mutual_k, "mutual_w": cfg.mutual_w,
              "weighted": cfg.weighted, "verified_w": cfg.verified_w if vgraph is not None else 0.0,
              "diffuse_a": cfg.diffuse_a, "hub_n": cfg.hub_n, "hub_beta": cfg.hub_beta,
              "expand_m": cfg.expand_m, "expand_gamma": cfg.expand_gamma}
    if cfg.hub_n < 0 or cfg.hub_beta < 0 or not 0 <= cfg.diffuse_a <= 1:
        raise ValueError(f"hub_n and hub_beta must be >= 0 and diffuse_a in [0, 1], got {cfg.hub_n}, "
                         f"{cfg.hub_beta} and {cfg.diffuse_a}")
    if cfg.expand_m < 0 or cfg.expand_gamma < 0:
        raise ValueError(f"expand_m and expand_gamma must be >= 0, got {cfg.expand_m} and {cfg.expand_gamma}")
    k = min(cfg.k, len(res.ids))
    local_ids = res.ids
    if cfg.expand_gamma > 0 and cfg.expand_m > 0 and k >= 3:   # the head drawn from the graph-expanded order
        res = dataclasses.replace(res, ids=expand_order(res, graph, cfg.expand_m, cfg.expand_gamma))
        res = dataclasses.replace(res, scores=np.asarray(res.all_scores)[res.ids])
    if k < 3:  # nothing to embed: keep the local order
        X = np.zeros((k + 1, cfg.dim))
        return RerankResult(res.ids.copy(), res.scores[:k].copy(), res.ids[:k].copy(), X,
                            np.eye(k + 1), np.zeros(k), None, 0.0, {**params, "skipped": "k < 3"}, {})
    S_raw, head = similarity_block(res, graph, k, cfg, vgraph)
    s = normalise(S_raw, cfg.normalise)
    sd = diffuse(s, cfg.diffuse_a)
    delta = dissimilarity(sd, cfg.transform)
    local = sd[0, 1:] if cfg.hub_n == 0 else hub_local(S_raw[0, 1:], hub_means(graph, head, cfg.hub_n, exclude),
                                                         cfg.hub_beta)
    W = None
    if cfg.weighted:  # absent pairs carry no information: drop them from the stress
        W = ((S_raw + S_raw.T) > 0).astype(np.float64)
        np.fill_diagonal(W, 0.0)
    t1 = time.perf_counter()
    with _BLAS.limit(limits=1, user_api="blas"):  # (k+1)^2 matrices: threads only add contention
        m = embed(delta, cfg.dim, method=cfg.method, max_iter=cfg.smacof_max_iter, eps=cfg.smacof_eps,
                  weights=W)
    t2 = time.perf_counter()
    cos_mds = cosine_to_first(m.X)
    final, order = guard(cos_mds, local, res.scores[:k], cfg)
    ids = np.concatenate([head[order], res.ids[k:]])
    rr = RerankResult(ids, final[order], head, m.X, s, cos_mds, None, float(m.stress1), params,
                      {"similarity": t1 - t0, "mds": t2 - t1, "rerank": time.perf_counter() - t0}, local,
                      np.asarray(local_ids))
    return rr if global_sim is None else blend(rr, res, global_sim, cfg.w)


def blend(rr: RerankResult, res: SearchResult, global_sim: np.ndarray, w: float) -> RerankResult:
    """Re-order a re-ranked head by (1 - w) cos_mds + w cos_global, reusing its embedding.

    global_sim: (n_images,) cosine of the query's global descriptor to every gallery image.
    """
    params = {**rr.params, "w": w}
    if "skipped" in rr.params:  # nothing was embedded: the local order stays
        return dataclasses.replace(rr, params=params)
    cos_g = np.asarray(global_sim, np.float64)[rr.head]
    gcfg = RerankConfig(local_w=rr.params.get("local_w", 0.0), keep_head=rr.params.get("keep_head", 0.0))
    local = rr.S[0, 1:] if rr.local_term is None else rr.local_term
    raw = np.asarray(res.all_scores)[rr.head]   # in head order, also when graph expansion re-ordered it
    final, order = guard((1.0 - w) * rr.cos_mds + w * cos_g, local, raw, gcfg)
    ids = np.concatenate([rr.head[order], rr.ids[len(rr.head):]])   # the tail as rerank left it
    return dataclasses.replace(rr, ids=ids, scores=final[order], cos_global=cos_g, params=params)
