"""Tests for l2g.globaldesc: VLAD encoding, whitening, gallery build, persistence, search.

Everything runs on synthetic RootSIFT-like descriptors and a stand-in for
LocalIndex (only .n_images, .paths, .images[i].n/.sha1 and .features(i) are used);
the real LocalIndex path is exercised in tests/test_verify.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import pytest

from l2g.config import GlobalConfig
from l2g.features import Features
from l2g.globaldesc import (
    GLOBAL_FILE,
    build_global,
    global_search,
    global_similarities,
    load_global,
    save_global,
    train_vlad,
    vlad,
    vlad_raw,
)

CFG = GlobalConfig(words=16, pca_dim=32, train_sample=5_000, seed=0)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _protos(seed: int = 0, k: int = 40) -> np.ndarray:
    """(k, 128) non-negative unit 'visual words' shared by every synthetic image."""
    return _unit(np.abs(np.random.default_rng(seed).standard_normal((k, 128))) ** 2)


def _image(rng: np.random.Generator, protos: np.ndarray, n: int = 200) -> np.ndarray:
    """(n, 128) descriptors: noisy copies of random prototypes (non-negative, unit rows)."""
    pick = rng.integers(0, len(protos), n)
    return _unit(np.abs(protos[pick] + 0.08 * rng.standard_normal((n, 128))))


@dataclass
class _Entry:
    n: int
    sha1: str


class FakeIndex:
    """Just enough of l2g.index.LocalIndex for build_global."""

    def __init__(self, descs: list[np.ndarray], names: list[str] | None = None):
        self.descs = descs
        self.names = names or [f"img{i:03d}.jpg" for i in range(len(descs))]
        self.images = [_Entry(len(d), f"sha{i:03d}") for i, d in enumerate(descs)]

    @property
    def n_images(self) -> int:
        return len(self.descs)

    @property
    def paths(self) -> list[str]:
        return self.names

    def features(self, i: int) -> Features:
        d = self.descs[i]
        return Features(np.zeros((len(d), 5), np.float32), d, (100, 100))


@pytest.fixture(scope="module", autouse=True)
def _one_faiss_thread():
    """Tiny k-means: on a shared 2-core box OpenMP threads only add contention (~3x slower)."""
    n = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(n)


@pytest.fixture(scope="module")
def gallery() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    protos = _protos()
    return [_image(rng, protos) for _ in range(12)]


@pytest.fixture(scope="module")
def gi(gallery):
    return build_global(FakeIndex(gallery), CFG)


def test_train_vlad_is_deterministic_and_checks_input(gallery):
    x = np.concatenate(gallery)
    a, b = train_vlad(x, CFG), train_vlad(x, CFG)
    assert a.centroids.shape == (16, 128) and a.centroids.dtype == np.float32
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert not a.whitened and a.dim == 16 * 128
    with pytest.raises(ValueError, match=r"\(N, 128\)"):
        train_vlad(x[:, :64], CFG)
    with pytest.raises(ValueError, match="at least 16"):
        train_vlad(x[:10], CFG)


def test_train_vlad_with_images_fits_whitening(gallery):
    m = train_vlad(np.concatenate(gallery), CFG, images=gallery)
    assert m.whitened and m.dim == min(CFG.pca_dim, len(gallery) - 1)
    assert m.pca_proj.shape == (m.dim, 16 * 128) and m.pca_eig.shape == (m.dim,)
    assert np.all(np.diff(m.pca_eig) <= 1e-9)               # eigenvalues sorted, largest first


def test_vlad_is_orderless_unit_norm_and_repeatable(gi, gallery):
    d = gallery[0]
    v = vlad(d, gi.model)
    assert v.shape == (gi.model.dim,) and v.dtype == np.float32
    np.testing.assert_array_equal(v, vlad(d.copy(), gi.model))
    np.testing.assert_allclose(np.linalg.norm(v), 1.0, atol=1e-5)
    perm = np.random.default_rng(0).permutation(len(d))
    np.testing.assert_allclose(vlad(d[perm], gi.model), v, atol=1e-5)
    r = vlad_raw(d, gi.model.centroids)
    np.testing.assert_allclose(np.linalg.norm(r), 1.0, atol=1e-5)
    c = gi.model.centroids
    word = np.argmin(((d[:, None, :] - c[None]) ** 2).sum(-1), 1)
    blocks = r.reshape(16, 128)                              # words no descriptor falls in stay zero
    np.testing.assert_array_equal(np.linalg.norm(blocks, axis=1) > 0, np.isin(np.arange(16), word))


def test_vlad_of_no_descriptors_is_zero_and_scores_zero(gi):
    v = vlad(np.zeros((0, 128), np.float32), gi.model)
    assert v.shape == (gi.model.dim,) and not v.any()
    sims = global_similarities(gi, v)
    assert sims.shape == (gi.n_images,) and not sims.any()
    with pytest.raises(ValueError, match=r"\(N, 128\)"):
        vlad(np.zeros((5, 64), np.float32), gi.model)


def test_subsampled_copy_is_nearest(gi, gallery):
    rng = np.random.default_rng(7)
    for j in (0, 5, 11):
        d = gallery[j]
        part = d[rng.choice(len(d), int(0.6 * len(d)), replace=False)]
        part = _unit(part + 0.02 * np.abs(rng.standard_normal(part.shape)))
        ids, sims = global_search(gi, vlad(part, gi.model))
        assert ids[0] == j
        assert sims[0] > sims[1] + 0.1


def test_build_global_shapes_params_and_self_similarity(gi, gallery):
    assert gi.xb.shape == (12, min(CFG.pca_dim, 11)) and gi.xb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(gi.xb, axis=1), 1.0, atol=1e-5)
    assert gi.params["whitened"] and gi.params["words"] == 16
    assert {"kmeans", "vlad", "pca", "total"} <= set(gi.timings)
    for j in range(12):                                     # each gallery image finds itself first
        ids, sims = global_search(gi, vlad(gallery[j], gi.model))
        assert ids[0] == j and sims[0] == pytest.approx(1.0, abs=1e-4)
    # the same gallery built again gives the same descriptors
    np.testing.assert_array_equal(build_global(FakeIndex(gallery), CFG).xb, gi.xb)


def test_build_global_does_not_depend_on_the_order_images_were_indexed_in(gi, gallery, monkeypatch):
    """An index built in two steps lists its images in another order than one built at once (kept images
    first): the same images must get the same global descriptors, also when k-means and PCA subsample."""
    import l2g.globaldesc as G

    perm = np.random.default_rng(5).permutation(len(gallery))
    shuffled = FakeIndex([gallery[i] for i in perm], [f"img{i:03d}.jpg" for i in perm])
    np.testing.assert_allclose(build_global(shuffled, CFG).xb, gi.xb[perm], atol=1e-5)
    small = GlobalConfig(words=16, pca_dim=32, train_sample=300, seed=0)   # k-means on a part of the rows
    ref = build_global(FakeIndex(gallery), small).xb
    np.testing.assert_allclose(build_global(shuffled, small).xb, ref[perm], atol=1e-5)
    monkeypatch.setattr(G, "PCA_MAX_IMAGES", 8)                            # PCA on a part of the images
    ref = build_global(FakeIndex(gallery), CFG).xb
    np.testing.assert_allclose(build_global(shuffled, CFG).xb, ref[perm], atol=1e-5)


def test_build_global_small_and_empty_images():
    rng = np.random.default_rng(2)
    protos = _protos()
    two = FakeIndex([_image(rng, protos, 50), _image(rng, protos, 50)])
    g2 = build_global(two, CFG)                              # < 3 images: no whitening
    assert not g2.model.whitened and g2.xb.shape == (2, 16 * 128)
    few = FakeIndex([_image(rng, protos, 3), np.zeros((0, 128), np.float32), _image(rng, protos, 4)])
    g3 = build_global(few, CFG)                              # 7 descriptors < 16 words: words clamped
    assert g3.params["words"] == 7 and not g3.xb[1].any()
    with pytest.raises(ValueError, match="no descriptors"):
        build_global(FakeIndex([np.zeros((0, 128), np.float32)]), CFG)


def test_an_image_without_descriptors_ranks_below_every_real_image(gallery):
    """Its global row is zero (cosine 0), which would beat a real image whose cosine is negative."""
    li = FakeIndex(gallery[:5] + [np.zeros((0, 128), np.float32)])
    g = build_global(li, CFG)
    assert not g.xb[5].any() and g.xb[:5].any(axis=1).all()
    v = vlad(gallery[0], g.model)
    g.xb[1] = -g.xb[0]                                       # a real image the query is opposite to
    sims = global_similarities(g, v)
    assert sims[1] < -0.5 and sims[5] == -1.0
    ids, _ = global_search(g, v)
    assert ids[0] == 0 and ids.tolist().index(5) >= ids.tolist().index(1) - 1 and set(ids[-2:]) == {1, 5}
    g.xb[1] = 0.9 * g.xb[2] - 0.1 * g.xb[0]                  # a small negative cosine: above the empty image
    g.xb[1] /= np.linalg.norm(g.xb[1])
    ids, sims = global_search(g, v)
    assert ids[-1] == 5 and sims[list(ids).index(1)] > -1.0
    assert (global_similarities(g, np.zeros_like(v)) == 0).all()   # a query without descriptors: all 0


def test_global_search_ties_exclude_and_top(gi, gallery):
    v = vlad(gallery[4], gi.model)
    ids, sims = global_search(gi, v, top=3, exclude=4)
    assert len(ids) == 3 and 4 not in ids and np.all(np.diff(sims) <= 0)
    ids2, _ = global_search(gi, v, exclude=[4, 0])
    assert len(ids2) == 10 and not {0, 4} & set(ids2.tolist())
    tie = type(gi)(gi.model, np.zeros((5, gi.xb.shape[1]), np.float32), gi.paths[:5])
    ids3, _ = global_search(tie, v)
    np.testing.assert_array_equal(ids3, np.arange(5))      # all tied: id order
    with pytest.raises(ValueError, match="v must be"):
        global_similarities(gi, v[:-1])


def test_gallery_members_find_their_partner_despite_whitening():
    """Whitening fitted on the gallery itself at full rank (n - 1 dims) must stay shrunk: plain
    whitening makes every gallery member equidistant from every other (whitened Gram = I - 11^T/n)."""
    rng = np.random.default_rng(3)
    protos = _protos()
    base = [_image(rng, protos) for _ in range(8)]
    pairs = [x for d in base for x in (d, d[rng.choice(len(d), 120, replace=False)])]
    g = build_global(FakeIndex(pairs), GlobalConfig(words=16, pca_dim=1000, train_sample=5_000))
    assert g.model.whitened and g.model.dim == len(pairs) - 1 and g.model.pca_eps > 0
    for j in range(len(pairs)):
        ids, _ = global_search(g, g.xb[j], exclude=j)
        assert ids[0] == j ^ 1
    # the failure this guards against: the same model without shrinkage
    m = g.model
    raw = np.stack([vlad_raw(d, m.centroids) for d in pairs])
    plain = (raw - m.pca_mean) @ m.pca_proj.T / np.sqrt(m.pca_eig)
    plain /= np.linalg.norm(plain, axis=1, keepdims=True)
    off = (plain @ plain.T)[~np.eye(len(pairs), dtype=bool)]
    assert off.std() < 0.01


def test_save_load_round_trip(tmp_path, gi, gallery):
    save_global(tmp_path, gi)
    assert (tmp_path / GLOBAL_FILE).is_file()
    assert not list(tmp_path.glob("*.tmp*"))
    li = FakeIndex(gallery)
    back = load_global(tmp_path, li)
    assert back is not None
    np.testing.assert_array_equal(back.xb, gi.xb)
    assert back.paths == gi.paths and back.params == gi.params
    for j in (0, 3):
        v1, v2 = vlad(gallery[j], gi.model), vlad(gallery[j], back.model)
        np.testing.assert_array_equal(v1, v2)
        np.testing.assert_array_equal(global_search(gi, v1)[0], global_search(back, v2)[0])
    assert load_global(tmp_path, li, cfg=CFG) is not None
    assert load_global(tmp_path, li, cfg=GlobalConfig(words=32)) is None
    assert load_global(tmp_path, FakeIndex(gallery[:-1])) is None     # other paths
    li.images[0].sha1 = "changed"
    assert load_global(tmp_path, li) is None                           # same path, other content
    assert load_global(tmp_path / "nowhere") is None
    (tmp_path / GLOBAL_FILE).write_bytes(b"not an npz")
    assert load_global(tmp_path) is None
