"""Issue 12: the guard for isolated true matches, the re-ranking options, verified graph
edges (l2g.vgraph) and the ALIKED extractor."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from l2g import config as C
from l2g.errors import ExtractorUnavailable
from l2g.graph import Graph
from l2g.rerank import diffuse, hub_local, hub_means, normalise, reciprocal_weights, rerank
from l2g.search import SearchResult

# --------------------------------------------------------------------------- guard

def _isolated_match_case(cluster: float = 0.2):
    """c0: the true match, first by local score but similar to no other candidate;
    c1..c8: look-alikes, mutually similar (graph score ``cluster``), a little below c0;
    30 background images."""
    rng = np.random.default_rng(0)
    nc, nb = 8, 30
    n = 1 + nc + nb
    q = np.concatenate([[0.3], np.linspace(0.27, 0.21, nc), np.linspace(0.09, 0.015, nb)]).astype(np.float32)
    G = (rng.random((n, n)) * 0.03).astype(np.float32)
    G[1:1 + nc, 1:1 + nc] = cluster
    G[0, :] = G[:, 0] = 0.0
    np.fill_diagonal(G, 0)
    paths = [f"c{i}.jpg" for i in range(n)]
    ids = np.arange(n)
    return SearchResult(ids, q, paths, q.copy(), 1000), Graph(sp.csr_matrix(G), paths), n


PLAIN = {"diffuse_a": 0.0, "hub_n": 0}    # plain MDS of the block and the plain local share (issue 12, round 1)


def test_isolated_true_match_is_demoted_without_the_guard():
    res, g, n = _isolated_match_case()
    for method in ("classical", "smacof"):
        rr = rerank(res, g, C.RerankConfig(k=n, method=method, local_w=0.0, keep_head=0.0, **PLAIN))
        assert list(rr.ids).index(0) > 0, method   # the failure mode the guard exists for (plain MDS)


@pytest.mark.parametrize("method", ["classical", "smacof"])
def test_keep_head_guard_keeps_the_isolated_match_first(method):
    res, g, n = _isolated_match_case()
    rr = rerank(res, g, C.RerankConfig(k=n, method=method, keep_head=1.05, local_w=0.3, **PLAIN))
    assert rr.ids[0] == 0
    assert sorted(rr.ids.tolist()) == list(range(n))      # a permutation: nothing lost
    # a head that does not dominate (the second is within the ratio) is not protected
    rr = rerank(res, g, C.RerankConfig(k=n, method=method, keep_head=1.2, local_w=0.3, **PLAIN))
    assert rr.ids[0] != 0


def test_local_share_moves_the_order_towards_local_search():
    res, g, n = _isolated_match_case()
    ranks = [list(rerank(res, g, C.RerankConfig(k=n, method="smacof", local_w=w, **PLAIN)).ids).index(0)
             for w in (0.0, 0.5, 1.0)]
    assert ranks[0] > 0 and ranks[2] == 0 and ranks[0] >= ranks[1] >= ranks[2]
    full = rerank(res, g, C.RerankConfig(k=n, local_w=1.0, **PLAIN))
    assert np.array_equal(full.ids, res.ids)             # local_w 1: the local order


def test_shipped_default_keeps_the_isolated_match_first():
    res, g, n = _isolated_match_case(cluster=0.3)
    old = rerank(res, g, C.RerankConfig(k=n, symmetric="mean", local_w=0.0, **PLAIN))   # the pre-issue-12 default
    assert list(old.ids).index(0) > 0
    rr = rerank(res, g, dataclasses.replace(C.RerankConfig(), k=n))
    assert C.RerankConfig().local_w > 0 and rr.ids[0] == 0


# --------------------------------------------------------------------------- other options

def test_reciprocal_weights():
    S = np.array([[0, 5, 4, 1],
                  [5, 0, 1, 3],
                  [4, 1, 0, 2],
                  [1, 3, 2, 0]], np.float32)
    W = reciprocal_weights(S, 1, 0.25)
    # top-1: 0 -> 1, 1 -> 0, 2 -> 0, 3 -> 1: only (0, 1) is reciprocal
    expect = np.full((4, 4), 0.25, np.float32)
    expect[0, 1] = expect[1, 0] = 1.0
    assert np.array_equal(W, expect)
    assert np.array_equal(reciprocal_weights(S, 0, 0.25), np.ones_like(S))
    assert np.array_equal(reciprocal_weights(S, 3, 0.25)[~np.eye(4, dtype=bool)], np.ones(12))


def test_max_symmetrised_block_and_option_errors():
    res, g, n = _isolated_match_case()
    G = g.G.toarray()
    G[1, 2], G[2, 1] = 0.5, 0.1
    g2 = Graph(sp.csr_matrix(G), g.paths)
    rr = rerank(res, g2, C.RerankConfig(k=n, symmetric="max", normalise="max"))
    assert rr.params["symmetric"] == "max"
    assert rr.S[2, 3] == pytest.approx(rr.S[3, 2])          # rows 2, 3 = candidates 1, 2
    assert rr.S[2, 3] == pytest.approx(1.0)                 # max(0.5, 0.1) = the block's maximum
    with pytest.raises(ValueError, match="symmetric"):
        rerank(res, g, C.RerankConfig(symmetric="min"))
    with pytest.raises(ValueError, match="smacof"):
        rerank(res, g, C.RerankConfig(weighted=True, method="classical"))


def test_weighted_smacof_differs_and_keeps_every_candidate():
    res, g, n = _isolated_match_case()
    a = rerank(res, g, C.RerankConfig(k=n, method="smacof"))
    b = rerank(res, g, C.RerankConfig(k=n, method="smacof", weighted=True))
    assert sorted(b.ids.tolist()) == list(range(n))
    assert b.params["weighted"] and not np.allclose(a.cos_mds, b.cos_mds)


# --------------------------------------------------------------------------- verified graph

def test_verified_graph_saved_reloaded_and_extended(demo_gallery, tmp_path):
    from l2g.datasets import load_groups
    from l2g.pipeline import open_engine
    from l2g.vgraph import build_vgraph, ensure_vgraph, load_vgraph, vgraph_params

    cfg = C.DEFAULT.replace(graph__verify_top=2)
    paths = sorted(p for ps in load_groups(demo_gallery).groups.values() for p in ps)[:8]
    folder = tmp_path / "ix"
    eng = open_engine(demo_gallery, folder, cfg, paths=paths[:5], with_global=False)
    vg = ensure_vgraph(folder, eng.li, eng.graph, cfg.graph, cfg.verify)
    assert (folder / "vgraph.npz").is_file() and vg.I.shape == (5, 5)
    assert (vg.I != vg.I.T).nnz == 0 and vg.params["verified_now"] > 0
    again = load_vgraph(folder, eng.li, vgraph_params(cfg.graph, cfg.verify))
    assert again is not None and (again.I != vg.I).nnz == 0
    assert load_vgraph(folder, eng.li, vgraph_params(C.DEFAULT.graph, cfg.verify)) is None  # other settings
    B = vg.block(np.arange(5))
    assert B.shape == (5, 5) and B.min() >= 0 and B.max() <= 1 and np.allclose(np.diag(B), 0)

    eng8 = open_engine(demo_gallery, folder, cfg, paths=paths, with_global=False)   # 3 images added
    assert load_vgraph(folder, eng8.li) is None                                      # stale: other images
    ext = ensure_vgraph(folder, eng8.li, eng8.graph, cfg.graph, cfg.verify)
    fresh = build_vgraph(eng8.li, eng8.graph, cfg.graph, cfg.verify)
    assert ext.I.shape == (8, 8) and (ext.I != fresh.I).nnz == 0
    assert ext.params["verified_now"] < fresh.params["verified_now"]                 # old pairs reused
    res = SearchResult(np.arange(1, 8), np.ones(7, np.float32), [], np.ones(8, np.float32), 10)
    rr = rerank(res, eng8.graph, C.RerankConfig(verified_w=1.0), vgraph=ext)
    assert rr.params["verified_w"] == 1.0 and sorted(rr.ids.tolist()) == list(range(1, 8))


# --------------------------------------------------------------------------- ALIKED

def _no_weights(monkeypatch, tmp_path):
    import l2g.features as F

    monkeypatch.setattr(F, "WEIGHTS_DIR", tmp_path / "a")
    monkeypatch.setattr(F, "DATA_DIR", tmp_path / "b")
    monkeypatch.setattr(F, "SHARED_WEIGHTS_DIR", tmp_path / "c")
    return F


def test_aliked_without_weights_is_a_clear_error(monkeypatch, tmp_path):
    F = _no_weights(monkeypatch, tmp_path)
    with pytest.raises(ExtractorUnavailable, match=r"aliked-n16\.pth.*never downloads"):
        F.Extractor(C.FeatureConfig(extractor="aliked"))
    assert "aliked" not in F.available_extractors() and "sift" in F.available_extractors()


def test_aliked_refuses_a_wrong_checkpoint(monkeypatch, tmp_path):
    F = _no_weights(monkeypatch, tmp_path)
    (tmp_path / "a").mkdir()
    torch.save({"not.a.weight": torch.zeros(1)}, tmp_path / "a" / "aliked-n16.pth")
    with pytest.raises(ExtractorUnavailable, match="not an aliked-n16 checkpoint"):
        F.Extractor(C.FeatureConfig(extractor="aliked"))


def test_aliked_with_weights_gives_unit_128d_descriptors():
    import l2g.features as F

    if F.find_weights("aliked-n16.pth") is None:
        pytest.skip("aliked-n16.pth not found in " + ", ".join(map(str, F.weight_dirs())))
    from skimage import data

    ex = F.Extractor(C.FeatureConfig(extractor="aliked", num_features=300))
    rgb = np.ascontiguousarray(data.astronaut()[::2, ::2])     # (256, 256, 3)
    f = ex(rgb)
    assert 50 <= len(f) <= 300
    assert f.desc.shape == (len(f), 128) and f.desc.dtype == np.float32
    assert np.allclose(np.linalg.norm(f.desc, axis=1), 1.0, atol=1e-3)
    assert (f.xy >= 0).all() and (f.xy[:, 0] <= 255).all() and (f.xy[:, 1] <= 255).all()
    assert np.all(np.diff(f.kpts[:, 4]) <= 0)                  # strongest first


# --------------------------------------------------------------------------- hubness-normalised guard

def _hub_case():
    """t0..t2: the query's true matches (mutual graph score 0.25), t0 second by local score; h: a hub,
    first by local score, as similar to the true matches as they are to each other and similar (0.1)
    to every background image; 30 background images, faint (< 0.04) to each other."""
    rng = np.random.default_rng(1)
    nb = 30
    n = 4 + nb                                   # ids: 0 = hub, 1..3 = true matches, 4.. = background
    G = (rng.random((n, n)) * 0.04).astype(np.float32)
    G[1:4, 1:4] = 0.25
    G[0, 4:] = G[4:, 0] = 0.1
    G[0, 1:4] = G[1:4, 0] = 0.25
    np.fill_diagonal(G, 0)
    q = np.concatenate([[0.3, 0.2, 0.18, 0.16], np.linspace(0.1, 0.02, nb)]).astype(np.float32)
    paths = [f"c{i}.jpg" for i in range(n)]
    return SearchResult(np.arange(n), q, paths, q.copy(), 1000), Graph(sp.csr_matrix(G), paths), n


def test_hub_guard_puts_the_true_match_above_a_hub():
    res, g, n = _hub_case()
    cfg = C.RerankConfig(k=n, diffuse_a=0.25, hub_n=30, hub_beta=1.0, local_w=0.5)   # quality_leads' lead 3
    old = rerank(res, g, dataclasses.replace(cfg, local_w=0.3, **PLAIN))
    assert old.ids[0] == 0                               # round 1's default: the hub first
    plain = rerank(res, g, dataclasses.replace(cfg, hub_n=0))
    assert list(plain.ids).index(0) < list(plain.ids).index(3)    # not normalised: the hub above t2
    rr = rerank(res, g, cfg)
    assert sorted(rr.ids[:3]) == [1, 2, 3]               # normalised: the true matches lead, the hub after
    assert list(rr.ids).index(0) > 2 and sorted(rr.ids.tolist()) == list(range(n))
    assert rr.local_term.shape == (n,) and rr.local_term.max() == pytest.approx(1.0)
    assert rr.local_term[0] < rr.local_term[1]           # head order: the hub's term below t0's


def test_hub_means_leave_out_the_image_itself_and_the_query():
    G = np.array([[0, 4, 3, 0, 0],
                  [1, 0, 0, 2, 0],
                  [0, 0, 0, 0, 5],
                  [0, 0, 0, 0, 0],
                  [0, 0, 0, 0, 0]], np.float32)
    g = Graph(sp.csr_matrix(G), [f"{i}" for i in range(5)])
    # max(G, G^T): 0 -> {1: 4, 2: 3}, 1 -> {0: 4, 3: 2}, 2 -> {0: 3, 4: 5}, 3 -> {1: 2}
    assert np.allclose(hub_means(g, np.array([0, 1, 2, 3]), 2), [3.5, 3.0, 4.0, 1.0])
    assert np.allclose(hub_means(g, np.array([0, 2]), 1), [4.0, 5.0])
    assert np.allclose(hub_means(g, np.array([0, 2]), 2, exclude=4), [3.5, 1.5])    # 4 left out of 2's
    assert np.allclose(hub_means(g, np.array([0]), 1, exclude=1), [3.0])            # the next takes its place
    G2 = G.copy()
    G2[0, 1] = 8                                          # a new graph is not served the old one's table
    assert np.allclose(hub_means(Graph(sp.csr_matrix(G2), g.paths), np.array([0]), 1), [8.0])
    with pytest.raises(ValueError, match="n >= 1"):
        hub_means(g, np.array([0]), 0)


def test_hub_local_and_diffuse_stay_in_range_and_refuse_bad_options():
    h = hub_local(np.array([0.3, 0.2, 0.1]), np.array([0.0, 0.1, 0.2]), 1.0)   # mu 0: the smallest positive mu
    assert np.allclose(h, [1.0, 2 / 3, 1 / 6])
    assert np.allclose(hub_local(np.array([0.3, 0.1]), np.zeros(2), 1.0), [1.0, 1 / 3])
    s = normalise(np.random.default_rng(0).uniform(0, 0.4, (6, 6)) * (1 - np.eye(6)), "p99")
    s = 0.5 * (s + s.T)
    assert diffuse(s, 0.0) is s
    d = diffuse(s, 0.25)            # a walk step from each row: not symmetric (MDS symmetrises 1 - d)
    assert np.allclose(np.diag(d), 1) and not np.allclose(d, s)
    assert np.allclose(diffuse(s, 1.0) * (1 - np.eye(6)), (d - 0.75 * s) / 0.25 * (1 - np.eye(6)))
    assert d.min() >= 0 and d.max() <= 1 + 1e-12
    res, g, n = _hub_case()
    for bad in ({"diffuse_a": 1.5}, {"diffuse_a": -0.1}, {"hub_n": -1}, {"hub_beta": -1.0}):
        with pytest.raises(ValueError, match="hub_n|diffuse_a"):
            rerank(res, g, C.RerankConfig(**bad))
    with pytest.raises(ValueError, match="diffuse_a"):
        diffuse(s, 2.0)


# --------------------------------------------------------------------------- graph expansion of the head

def _deep_match_case(k: int = 10):
    """The query's true matches: t0 (id 0, first by local score) and t1 (id 25, a wide-baseline view local
    search ranks 26th, below the re-ranked head of k) that t0 sees strongly in the graph (0.3); 28
    distractors, faint to each other and to t0 (< 0.05)."""
    rng = np.random.default_rng(3)
    n = 30
    G = (rng.random((n, n)) * 0.05).astype(np.float32)
    G[0, 25] = G[25, 0] = 0.3
    np.fill_diagonal(G, 0)
    q = np.concatenate([[0.3], np.linspace(0.2, 0.05, n - 1)]).astype(np.float32)
    paths = [f"c{i}.jpg" for i in range(n)]
    return SearchResult(np.arange(n), q, paths, q.copy(), 1000), Graph(sp.csr_matrix(G), paths), k


def test_graph_expansion_brings_a_deep_true_match_into_the_head():
    res, g, k = _deep_match_case()
    cfg = dataclasses.replace(C.RerankConfig(), k=k, expand_m=1, expand_gamma=0.5)
    off = rerank(res, g, dataclasses.replace(cfg, expand_gamma=0.0))
    assert list(off.ids).index(25) == 25                 # without it, t1 stays below the head, untouched
    rr = rerank(res, g, cfg)
    assert 25 in rr.head and list(rr.ids).index(25) < k  # with it, t1 is drawn into the re-ranked head
    assert sorted(rr.ids.tolist()) == list(range(30))    # a permutation: nothing lost
    assert rr.rank_change()[25] == 25 - list(rr.ids).index(25) > 15     # moved up from its local-search rank
    assert rr.params["expand_m"] == 1 and rr.params["expand_gamma"] == 0.5


def test_keep_head_keeps_the_local_top_1_first_in_a_graph_expanded_head():
    """With expansion the head is in the expanded order (t1 first with m 3): keep_head must still protect
    the local top-1 (id 0), not whatever the graph put first."""
    res, g, k = _deep_match_case()
    rr = rerank(res, g, dataclasses.replace(C.RerankConfig(), k=k, expand_m=3, expand_gamma=0.5, keep_head=1.0))
    assert rr.head[0] == 25 and rr.ids[0] == res.ids[0] == 0


def test_blend_of_a_graph_expanded_head_keeps_a_permutation_of_the_shortlist():
    """l2g_blend re-orders rerank's head with the local result it was given: with expansion the head holds
    a candidate from past local's top k, so the tail must be rerank's, not local's (else a duplicate and a loss)."""
    from l2g.rerank import blend

    res, g, k = _deep_match_case()
    rr = rerank(res, g, dataclasses.replace(C.RerankConfig(), k=k, expand_m=1, expand_gamma=0.5))
    assert 25 in rr.head
    for w in (0.0, 0.5):
        out = blend(rr, res, np.linspace(1, 0, len(res.all_scores)), w)
        assert sorted(out.ids.tolist()) == sorted(res.ids.tolist()) and list(out.ids[k:]) == list(rr.ids[k:])


def test_expand_order_keeps_the_top_and_refuses_bad_options():
    from l2g.graphctx import expand_order
    res, g, _ = _deep_match_case()
    assert np.array_equal(expand_order(res, g, 1, 0.0), res.ids)          # gamma 0 (or m 0): the local order
    assert np.array_equal(expand_order(res, g, 0, 0.5), res.ids)
    o = expand_order(res, g, 3, 0.5)
    assert o[0] == 25 and list(o[1:4]) == [0, 1, 2]       # t1's graph support lifts it; the top m stay together
    assert sorted(o.tolist()) == list(range(30))
    for m, gamma in ((-1, 0.5), (1, -0.5)):
        with pytest.raises(ValueError, match="expand_m and expand_gamma"):
            rerank(res, g, C.RerankConfig(expand_m=m, expand_gamma=gamma))
