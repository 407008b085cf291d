"""l2g.graph: the gallery similarity graph, built once and extended when images are added."""
from __future__ import annotations

import numpy as np

from l2g.graph import load_graph
from l2g.pipeline import open_engine


def test_graph_is_extended_when_images_are_added(small_gallery, small_cfg, tmp_path):
    """open_engine on a grown gallery keeps the old graph rows and searches only the new images."""
    root, keep = small_gallery
    first = [p for p in keep if "coffee" not in p]
    assert len(keep) < small_cfg.graph.rebuild_growth * len(first)      # an addition that extends the graph
    eng1 = open_engine(root, tmp_path / "ix", small_cfg, paths=first, with_global=False)
    g1 = eng1.graph
    assert g1.G.shape == (len(first), len(first)) and g1.G.diagonal().sum() == 0
    eng2 = open_engine(root, tmp_path / "ix", small_cfg, paths=keep, with_global=False)
    g2 = eng2.graph
    n = len(keep)
    assert g2.G.shape == (n, n) and g2.paths == eng2.li.paths and g2.params.get("updated") == n - len(first)
    # old rows keep their neighbours; the new images have rows of their own
    np.testing.assert_allclose(g2.G[: len(first), : len(first)].toarray(), g1.G.toarray())
    new = [eng2.li.id_of(p) for p in keep if p not in first]
    assert all(g2.G[j].nnz > 0 for j in new)
    # a coffee view's strongest neighbour in the graph is another coffee view
    j = eng2.li.id_of("groups/coffee/coffee_orig.jpg")
    best = int(g2.G[j].toarray().ravel().argmax())
    assert eng2.li.paths[best].startswith("groups/coffee/")
    assert load_graph(tmp_path / "ix", eng2.li) is not None


def test_a_graph_outgrown_by_added_images_is_built_afresh(small_gallery, small_cfg, tmp_path):
    """Once the gallery reaches GraphConfig.rebuild_growth times the graph's images, the old rows are searched
    again too: an index built in steps (the app's first start) then has the graph of one built at once."""
    from l2g.graph import build_graph

    root, keep = small_gallery
    first = keep[:3]
    assert len(keep) >= small_cfg.graph.rebuild_growth * len(first)
    open_engine(root, tmp_path / "ix", small_cfg, paths=first, with_global=False)
    eng = open_engine(root, tmp_path / "ix", small_cfg, paths=keep, with_global=False)
    assert "updated" not in eng.graph.params
    fresh = build_graph(eng.li, small_cfg.graph, small_cfg.search)
    assert (abs(eng.graph.G - fresh.G) > 1e-6).nnz == 0 and eng.graph.G.nnz == fresh.G.nnz


# ----------------------------------------------------------------------------- batched build

import dataclasses  # noqa: E402

import faiss  # noqa: E402
import pytest  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from l2g import config as C  # noqa: E402
from l2g.graph import batch_votes, build_graph, rows_one_at_a_time, update_graph  # noqa: E402
from l2g.index import LocalIndex, build_index, make_faiss, train_and_add  # noqa: E402

SCFG = C.SearchConfig()


@pytest.fixture(scope="module")
def small_index(small_gallery, small_cfg, tmp_path_factory):
    """The 20-image small gallery indexed with Flat (exact) search."""
    root, keep = small_gallery
    li, _ = build_index(root, tmp_path_factory.mktemp("gix"), small_cfg, paths=keep)
    assert li.kind == "flat" and li.n_images == len(keep)
    return li


def _with_index(li: LocalIndex, images: list, ix, kind: str) -> LocalIndex:
    """A LocalIndex over li's first len(images) images (their rows, same feature files) searching ``ix``."""
    out = LocalIndex(li.root, li.folder, li.cfg, images, ix, kind, fstore=li.fstore)
    out.files = li.files
    return out


@pytest.fixture(scope="module")
def ivf_index(small_index):
    """The same gallery behind an IVF index probing 2 of its lists: approximate, unlike Flat."""
    xb = small_index.ix.reconstruct_n(0, small_index.ntotal)
    ix, kind = make_faiss(len(xb), C.IndexConfig(kind="ivf", nprobe=2))
    train_and_add(ix, [xb], len(xb), C.IndexConfig(), sample=xb)
    return _with_index(small_index, small_index.images, ix, kind)


@pytest.fixture(scope="module")
def pq_index(small_index):
    """The same gallery behind the compact kind (fast-scan PQ, 4 of its lists probed), its candidates
    re-scored from the feature store."""
    xb = small_index.ix.reconstruct_n(0, small_index.ntotal)
    cfg = C.IndexConfig(kind="ivfpq128_rs", rescore_nprobe=4)
    ix, kind = make_faiss(len(xb), cfg)
    train_and_add(ix, [xb], len(xb), cfg, sample=xb)
    return _with_index(small_index, small_index.images, ix, kind)


@pytest.fixture
def direct_distances():
    """FAISS computes every distance directly (never by BLAS): then a descriptor's neighbours do not depend on
    which other descriptors share its FAISS call. With BLAS, ||x||^2 + ||y||^2 - 2 x.y rounds differently
    per batch (about 1e-6 in squared distance), which the kernel magnifies near distance 0."""
    old = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = 2**30
    yield
    faiss.cvar.distance_compute_blas_threshold = old


def _csr(rcv, n: int) -> sp.csr_matrix:
    r, c, v = rcv
    assert len(set(zip(r.tolist(), c.tolist()))) == len(r), "a pair appears twice"
    return sp.csr_matrix((v, (r, c)), shape=(n, n), dtype=np.float32)


def _assert_same_rows(A: sp.csr_matrix, B: sp.csr_matrix):
    """Equal neighbours per row, scores equal to float32 tolerance."""
    assert A.shape == B.shape
    for i in range(A.shape[0]):
        a, b = A[i], B[i]
        assert sorted(a.indices.tolist()) == sorted(b.indices.tolist()), f"row {i}: neighbours differ"
    np.testing.assert_allclose(A.toarray(), B.toarray(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("which", ["flat", "ivf", "ivfpq128_rs"])
@pytest.mark.parametrize("top_n,batch_rows,query_max", [(200, 50_000, 0), (4, 700, 0), (6, 1, 150)])
def test_batched_graph_equals_one_at_a_time(small_index, ivf_index, pq_index, which, top_n, batch_rows, query_max,
                                            direct_distances):
    """Batched rows (one FAISS call for the whole gallery, for a few images, or per image) equal one
    local_search per image, with the top_n cut and the query cap applied the same way."""
    li = {"flat": small_index, "ivf": ivf_index, "ivfpq128_rs": pq_index}[which]
    n = li.n_images
    cfg = C.GraphConfig(top_n=top_n, batch_rows=batch_rows, query_max=query_max)
    ref = _csr(rows_one_at_a_time(li, range(n), SCFG, cfg), n)
    calls = []
    g = build_graph(li, cfg, SCFG, progress=lambda i, t, msg: calls.append((i, t, msg)))
    _assert_same_rows(g.G, ref)
    assert g.G.diagonal().sum() == 0 and g.G.nnz > 0
    assert max(np.diff(g.G.indptr)) <= top_n and (top_n < n - 1) == (max(np.diff(g.G.indptr)) == top_n)
    assert all(msg.startswith("similarity graph") for _, _, msg in calls) and calls[-1][:2] == (n, n)
    assert [i for i, _, _ in calls] == sorted(i for i, _, _ in calls)
    if query_max:
        assert g.params["query_max"] == query_max
        full = build_graph(li, dataclasses.replace(cfg, query_max=0), SCFG)
        assert abs(full.G - g.G).max() > 1e-3          # the cap changes the scores
    else:
        assert "query_max" not in g.params


def test_batched_graph_with_blas_distances(small_index):
    """With FAISS's default (BLAS) distances the batched graph still matches one-at-a-time to within the
    rounding of a distance computed in another batch: every score within 5e-3, the same strong neighbours.
    (BLAS rounds a squared distance by ~1e-6, so r = 0 can come out as ~1e-3, and the kernel's slope at 0
    turns that into (1e-3 / p0) ** alpha ~ 3e-3: near-duplicate descriptors, which uint8 storage makes
    more common, sit there.)"""
    n = small_index.n_images
    ref = _csr(rows_one_at_a_time(small_index, range(n), SCFG, C.GraphConfig()), n).toarray()
    got = build_graph(small_index).G.toarray()
    np.testing.assert_allclose(got, ref, rtol=0, atol=5e-3)
    assert ((got > 5e-3) == (ref > 5e-3)).mean() > 0.99 and (ref > 0.05).sum() > n


def test_ivf_graph_is_not_the_flat_graph(small_index, ivf_index):
    """The IVF comparison above is not the Flat one in disguise: probing 2 lists changes scores."""
    a, b = build_graph(small_index).G, build_graph(ivf_index).G
    assert abs(a - b).max() > 1e-3


@pytest.mark.parametrize("which", ["flat", "ivf"])
def test_update_graph_batched_equals_one_at_a_time(small_index, ivf_index, which, direct_distances):
    """After images are appended, update_graph's new rows are their one-at-a-time rows; old rows are kept and
    gain the new images as columns with the mirrored score."""
    li = small_index if which == "flat" else ivf_index
    n, k = li.n_images, 12
    xb = li.ix.reconstruct_n(0, li.ntotal)
    ix_old = faiss.IndexFlatL2(xb.shape[1])
    ix_old.add(xb[: li.offsets[k]])
    old = _with_index(li, li.images[:k], ix_old, "flat")
    g_old = build_graph(old, C.GraphConfig(batch_rows=900))
    g = update_graph(li, g_old, C.GraphConfig(batch_rows=900), SCFG)
    assert g.params["updated"] == n - k and g.paths == li.paths
    new = _csr(rows_one_at_a_time(li, range(k, n), SCFG, C.GraphConfig()), n)
    _assert_same_rows(g.G[k:], new[k:])
    np.testing.assert_allclose(g.G[:k, :k].toarray(), g_old.G.toarray())
    back = new[k:, :k].T.toarray()                   # old row i, new column j: score of j -> i
    np.testing.assert_allclose(g.G[:k, k:].toarray(), back, rtol=1e-6)
    assert (back > 0).any()


def test_bad_graph_settings_are_refused(small_index):
    for bad in (dict(batch_rows=0), dict(top_n=0), dict(query_max=-1)):
        with pytest.raises(ValueError, match="GraphConfig needs"):
            build_graph(small_index, C.GraphConfig(**bad))
    f = small_index.features(0)
    with pytest.raises(ValueError, match="desc must be"):
        batch_votes(small_index, np.array([0]), f.desc, np.array([len(f) + 1]), SCFG, 5)
