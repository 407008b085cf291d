"""l2g.rerank, the paper's step: normalisation, dissimilarity, the (k+1, k+1) similarity block, the
global blend, alpha-QE on local similarities, and re-ranking on a hand-made two-cluster graph."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from l2g import config as C
from l2g.graph import Graph
from l2g.methods import query_expansion as _query_expansion
from l2g.rerank import blend, dissimilarity, normalise, rerank, similarity_block
from l2g.search import SearchResult


def query_expansion(res, graph, n, alpha):
    """The alpha-QE method's re-ranked ids (the registry's function also returns their scores)."""
    ids, scores = _query_expansion(res, graph, n, alpha)
    assert len(scores) == len(ids) and np.all(np.diff(scores) <= 1e-12)   # scores sorted, one per id
    return ids

A, B = np.arange(5), np.arange(5, 10)          # two clusters of gallery images; the query belongs to A
QA = [0.30, 0.26, 0.24, 0.22, 0.20]            # the query's local-search scores of A ...
QB = [0.28, 0.25, 0.12, 0.08, 0.05]            # ... and of B: B's two best interleave with A's


def _result(all_scores: np.ndarray) -> SearchResult:
    """A local-search result: every image with a positive score, ranked (ties keep id order)."""
    all_scores = np.asarray(all_scores, np.float32)
    ids = np.argsort(-all_scores, kind="stable")
    ids = ids[all_scores[ids] > 0]
    return SearchResult(ids, all_scores[ids], [f"im{j:02d}" for j in ids], all_scores, 500)


def _graph(G: np.ndarray) -> Graph:
    return Graph(sp.csr_matrix(np.asarray(G, np.float32)), [f"im{j:02d}" for j in range(len(G))])


def _two_clusters(seed: int, n_extra: int = 0) -> tuple[SearchResult, Graph]:
    """A and B mutually similar within (0.25-0.35), nearly unrelated across (< 0.03); n_extra unscored images."""
    rng = np.random.default_rng(seed)
    n = 10 + n_extra
    G = np.zeros((n, n))
    for c in (A, B):
        G[np.ix_(c, c)] = rng.uniform(0.25, 0.35, (5, 5))
    G[np.ix_(A, B)] = rng.uniform(0, 0.03, (5, 5))
    G[np.ix_(B, A)] = rng.uniform(0, 0.03, (5, 5))
    np.fill_diagonal(G, 0)
    scores = np.zeros(n)
    scores[A], scores[B] = QA, QB
    return _result(scores), _graph(G)


def _random_similarities(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    S = rng.uniform(0, 0.4, (n, n)) * (rng.random((n, n)) < 0.7)    # some pairs missing (0)
    return S


# ----------------------------------------------------------------------------- normalise

@pytest.mark.parametrize("mode", ["p99", "max", "rank"])
def test_normalise_has_unit_diagonal_and_values_in_0_1(mode):
    S = _random_similarities(12, 0)
    np.fill_diagonal(S, 0.0)             # the raw block has a zero diagonal; normalise sets it to 1
    s = normalise(S, mode)
    assert s.shape == S.shape
    np.testing.assert_array_equal(np.diag(s), 1.0)
    assert s.min() >= 0.0 and s.max() <= 1.0
    assert (s[(S <= 0) & ~np.eye(12, dtype=bool)] == 0).all()      # a missing pair stays 0


def test_normalise_scales_by_the_largest_or_99th_percentile_entry():
    S = _random_similarities(10, 1)
    np.fill_diagonal(S, 0.0)
    off = S[~np.eye(10, dtype=bool)]
    s = normalise(S, "max")
    np.testing.assert_allclose(s[~np.eye(10, dtype=bool)], off / off.max())
    s99 = normalise(S, "p99")
    scale = np.percentile(off[off > 0], 99)
    np.testing.assert_allclose(s99[~np.eye(10, dtype=bool)], np.minimum(off / scale, 1.0))


def test_normalise_of_an_all_zero_block_is_the_identity():
    np.testing.assert_array_equal(normalise(np.zeros((4, 4))), np.eye(4))


def test_normalise_refuses_bad_input():
    with pytest.raises(ValueError, match="square"):
        normalise(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalise(_random_similarities(5, 0), "median")


# ----------------------------------------------------------------------------- dissimilarity

@pytest.mark.parametrize("transform", ["1-s", "sqrt(1-s)", "-log(s)"])
def test_dissimilarity_is_symmetric_non_negative_with_zero_diagonal(transform):
    s = np.random.default_rng(2).uniform(0, 1, (9, 9))              # not symmetric on purpose
    d = dissimilarity(s, transform)
    np.testing.assert_array_equal(d, d.T)
    np.testing.assert_array_equal(np.diag(d), 0.0)
    assert (d >= 0).all()
    # each transform is decreasing in s: a pair similar both ways is closer than a pair similar neither way
    s2 = np.full((3, 3), 0.1)
    s2[0, 1] = s2[1, 0] = 0.9
    d2 = dissimilarity(s2, transform)
    assert d2[0, 1] < d2[0, 2]


def test_dissimilarity_1_minus_s_values_and_bad_transform():
    s = np.array([[1.0, 0.8, 0.0], [0.6, 1.0, 0.5], [0.0, 0.5, 1.0]])
    d = dissimilarity(s, "1-s")
    np.testing.assert_allclose(d, [[0, 0.3, 1.0], [0.3, 0, 0.5], [1.0, 0.5, 0]])
    with pytest.raises(ValueError, match="unknown transform"):
        dissimilarity(s, "exp")


# ----------------------------------------------------------------------------- similarity_block

def test_similarity_block_row_0_is_the_querys_scores():
    n = 8
    rng = np.random.default_rng(3)
    G = rng.uniform(0, 0.5, (n, n))
    np.fill_diagonal(G, 0)
    scores = rng.uniform(0.01, 0.5, n)
    scores[6] = -0.1                                              # a negative score is read as 0
    res = _result(np.abs(scores))
    res.all_scores[6] = -0.1
    graph = _graph(G)
    k = 5
    S, ids = similarity_block(res, graph, k)
    assert S.shape == (k + 1, k + 1)
    np.testing.assert_array_equal(ids, res.ids[:k])
    np.testing.assert_allclose(S[0, 1:], np.maximum(res.all_scores[res.ids[:k]], 0), rtol=1e-6)
    np.testing.assert_allclose(S[1:, 0], S[0, 1:])
    assert S[0, 0] == 0
    np.testing.assert_allclose(S[1:, 1:], graph.block(res.ids[:k], C.RerankConfig().symmetric), rtol=1e-6)
    np.testing.assert_allclose(S[1:, 1:], S[1:, 1:].T)
    # the negative score, when in the block, is clipped to 0
    S_all, ids_all = similarity_block(res, graph, n)
    assert (S_all[0, 1:] >= 0).all()
    if 6 in ids_all.tolist():
        assert S_all[0, 1 + ids_all.tolist().index(6)] == 0


# ----------------------------------------------------------------------------- blend

def test_blend_at_w0_keeps_the_l2g_order_and_at_w1_orders_by_global_cosine():
    res, graph = _two_clusters(0, n_extra=3)
    rr = rerank(res, graph, C.RerankConfig(k=10, dim=8, local_w=0.0))   # the blend alone, no local-score guard
    g = np.random.default_rng(4).uniform(-1, 1, graph.G.shape[0])   # global cosine of every gallery image
    b0 = blend(rr, res, g, 0.0)
    np.testing.assert_array_equal(b0.ids, rr.ids)
    np.testing.assert_allclose(b0.scores, rr.scores)
    b1 = blend(rr, res, g, 1.0)
    head = rr.head
    np.testing.assert_array_equal(b1.ids[: len(head)], head[np.argsort(-g[head], kind="stable")])
    np.testing.assert_array_equal(b1.ids[len(head):], res.ids[len(head):])       # the tail keeps its order
    np.testing.assert_allclose(b1.cos_global, g[head])
    assert b1.params["w"] == 1.0 and b0.params["w"] == 0.0
    # the blend reuses the embedding: no second MDS
    np.testing.assert_array_equal(b1.X, rr.X)


def test_rerank_with_global_sim_equals_rerank_then_blend():
    res, graph = _two_clusters(1)
    g = np.random.default_rng(5).uniform(-1, 1, 10)
    cfg = C.RerankConfig(k=10, dim=8, w=0.4)
    a = rerank(res, graph, cfg, global_sim=g)
    b = blend(rerank(res, graph, cfg), res, g, 0.4)
    np.testing.assert_array_equal(a.ids, b.ids)


# ----------------------------------------------------------------------------- alpha-QE

def test_query_expansion_lifts_the_neighbours_of_the_top_result():
    # image 3 scores low against the query but is the top result's (image 0's) strongest neighbour
    scores = np.array([0.5, 0.30, 0.25, 0.05, 0.20, 0.0])
    G = np.zeros((6, 6))
    G[0, 3] = G[3, 0] = 0.6
    G[1, 2] = G[2, 1] = 0.01
    res, graph = _result(scores), _graph(G)
    assert res.ids.tolist() == [0, 1, 2, 4, 3]
    ids = query_expansion(res, graph, n=1, alpha=3.0)
    assert sorted(ids.tolist()) == sorted(res.ids.tolist())           # a permutation of the shortlist
    # score + 0.5 * (row + column of the top result in the graph), weight (0.5 / 0.5)^3 = 1:
    # image 3: 0.05 + 0.5 * (0.6 + 0.6) = 0.65 comes first, the others keep their order
    assert ids.tolist() == [3, 0, 1, 2, 4]
    # with all five expanded at alpha = 0 (equal weights), 0 and 3 lift each other: 0 gets 0.5 + 0.6
    assert query_expansion(res, graph, n=5, alpha=0.0).tolist() == [0, 3, 1, 2, 4]
    # an independent reading of alpha-QE agrees on random graphs
    rng = np.random.default_rng(6)
    for _ in range(5):
        G = rng.uniform(0, 0.5, (12, 12)) * (rng.random((12, 12)) < 0.4)
        res, graph = _result(rng.uniform(0.01, 0.6, 12)), _graph(G)
        n, alpha = 4, 2.0
        top, w = res.ids[:n], (res.scores[:n] / res.scores[0]) ** alpha
        want = res.all_scores + 0.5 * (w @ G[top] + G[:, top] @ w)
        got = query_expansion(res, graph, n, alpha)
        np.testing.assert_array_equal(got, res.ids[np.argsort(-want[res.ids], kind="stable")])


def test_query_expansion_without_positive_scores_keeps_the_order():
    res = _result(np.array([0.2, 0.1, 0.05]))
    res.scores[:] = 0.0
    np.testing.assert_array_equal(query_expansion(res, _graph(np.ones((3, 3))), 2, 3.0), res.ids)


# ----------------------------------------------------------------------------- behaviour

@pytest.mark.parametrize("method", ["classical", "smacof"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rerank_puts_the_querys_cluster_first(method, seed):
    """The query scores cluster A a little higher overall, but B's two best images interleave with A's in
    local search. A's images are similar to each other and not to B's: in the embedding the query sits with A,
    so re-ranking puts all five A images first. The embedding alone (local_w 0): a local share
    of 0.5 (with the hub guard) keeps B's best above A's last on seed 2 with classical MDS."""
    res, graph = _two_clusters(seed)
    local_top = set(res.ids[:5].tolist())
    assert local_top != set(A.tolist())                               # local search alone gets it wrong
    rr = rerank(res, graph, C.RerankConfig(k=10, dim=8, method=method, local_w=0.0))
    assert set(rr.ids[:5].tolist()) == set(A.tolist()), rr.ids
    assert sorted(rr.ids.tolist()) == sorted(res.ids.tolist())
    assert rr.X.shape == (11, 8) and rr.S.shape == (11, 11)
    moved = rr.rank_change()
    assert all(moved[int(j)] < 0 for j in B[:2])                      # B's best two went down


def test_rank_change_covers_the_re_ranked_head_only():
    """The moves shown in the app's lists and the MDS plot: one per re-ranked candidate (k of the M);
    candidates past the head were not re-ranked and get no move (the app shows none, not '=')."""
    res, graph = _two_clusters(0)
    rr = rerank(res, graph, C.RerankConfig(k=5, dim=4))
    moved = rr.rank_change()
    assert len(res.ids) == 10 and set(moved) == set(rr.head.tolist()) == set(res.ids[:5].tolist())
    new = rr.ids.tolist()
    assert all(moved[j] == r - new.index(j) for r, j in enumerate(res.ids[:5].tolist()))


def test_rerank_of_a_tiny_shortlist_keeps_the_local_order():
    res = _result(np.array([0.3, 0.2]))
    rr = rerank(res, _graph(np.zeros((2, 2))), C.RerankConfig(k=10))
    np.testing.assert_array_equal(rr.ids, res.ids)
    assert rr.params.get("skipped")
