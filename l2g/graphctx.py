"""A shortlist's context in the gallery graph, for l2g.rerank (issue 12).

Hubness (contextual dissimilarity, Jegou et al. 2007): an image's mean similarity to its n strongest
graph neighbours, computed once per graph (Graph.derived); the guard divides the local score by it.
Graph expansion: the shortlist re-ordered by its local score plus one graph step from the query's
strongest matches, so that a true match local search ranks deep can enter the re-ranked head.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .graph import Graph
from .search import SearchResult


def _hub_table(graph: Graph, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every gallery image's n + 1 strongest similarities in max(G, G^T), itself left out, strongest
    first (0-padded, column -1), computed once per graph and n (kept in graph.derived): one query
    may be one of them."""
    hit = graph.derived.get(("hub", n))
    if hit is None:
        hit = graph.derived[("hub", n)] = _strongest(graph.G, n + 1)
    return hit


def _strongest(G: sp.csr_matrix, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, m) strongest similarities of each row of max(G, G^T) without its diagonal, and their columns."""
    M = G.maximum(G.T.tocsr()).tocsr()    # (G is read, never changed, once a query has used it)
    N = M.shape[0]
    rows = np.repeat(np.arange(N), np.diff(M.indptr))
    data = np.where(M.indices == rows, -1.0, M.data)       # itself last among its row's entries
    o = np.lexsort((-data, rows))         # by row, strongest first; ties keep the stored order (stable)
    rank = np.arange(len(o)) - M.indptr[rows[o]]
    keep = o[rank < m]                    # memory grows with the edges, not with the widest row
    at = (rows[keep], rank[rank < m])
    vals, cols = np.zeros((N, m)), np.full((N, m), -1, np.int64)
    vals[at], cols[at] = np.maximum(data[keep], 0), M.indices[keep]
    return vals, cols


def hub_means(graph: Graph, ids: np.ndarray, n: int, exclude: int | None = None) -> np.ndarray:
    """(m,) mean of each gallery id's n strongest graph similarities, max(S, S^T), itself and
    the gallery id exclude (the query, when it is a gallery image) left out; 0 with no edges."""
    if n < 1:
        raise ValueError(f"hub_means needs n >= 1, got {n}")
    vals, cols = _hub_table(graph, n)
    v, c = vals[np.asarray(ids, np.int64)], cols[np.asarray(ids, np.int64)]
    if exclude is not None:   # drop the query's entry; the (n+1)-th takes its place
        v = np.where(c == int(exclude), -1.0, v)
        v = -np.sort(-v, axis=1)
    return np.maximum(v[:, :n], 0).sum(1) / n


def hub_local(local: np.ndarray, mu: np.ndarray, beta: float) -> np.ndarray:
    """(k,) local scores >= 0 and their candidates' hub means -> q / mu ** beta over its maximum,
    in [0, 1]. A candidate without graph edges (mu 0) takes the smallest positive mu of the head."""
    local, mu = np.maximum(np.asarray(local, np.float64), 0), np.asarray(mu, np.float64)
    pos = mu[mu > 0]
    h = local if pos.size == 0 else local / np.maximum(mu, pos.min()) ** beta
    top = h.max(initial=0.0)
    return h / top if top > 0 else h


def expand_order(res: SearchResult, graph: Graph, m: int, gamma: float) -> np.ndarray:
    """(M,) the shortlist res.ids re-ordered by x_j = q_j / q_1 + gamma e_j / p99, e_j = max over the local
    top m of (q_i / q_1) max(G_ij, G_ji), p99 the 99th percentile of the shortlist's positive max-symmetrised
    graph block (one graph step from the query's strongest matches); the top m share their best x (they stay
    together, in local order).
    gamma 0 or m 0: the local order."""
    ids = np.asarray(res.ids, np.int64)
    if m < 0 or gamma < 0:
        raise ValueError(f"expand_m and expand_gamma must be >= 0, got {m} and {gamma}")
    q = np.maximum(np.asarray(res.all_scores, np.float64)[ids], 0)
    if m == 0 or gamma == 0 or len(ids) < 2 or q[0] <= 0:
        return ids
    m = min(m, len(ids))
    B = graph.block(ids, "max").astype(np.float64)          # (M, M), zero diagonal
    pos = B[B > 0]
    if pos.size == 0:
        return ids
    e = (B[:m] * (q[:m] / q[0])[:, None]).max(0)
    x = q / q[0] + gamma * e / np.percentile(pos, 99)
    x[:m] = x[:m].max()
    return ids[np.argsort(-x, kind="stable")]
