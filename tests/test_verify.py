"""Tests for l2g.verify: mutual NN, robust fits on synthetic geometry, real-photo verification,
and the global-to-local baseline on a tiny real index (built once for the module)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from l2g.config import DEFAULT, FeatureConfig, GlobalConfig, VerifyConfig
from l2g.demo import skimage_data_dir
from l2g.features import Extractor, Features
from l2g.globaldesc import build_global, global_search, vlad
from l2g.index import build_index
from l2g.verify import G2LResult, VerifyResult, g2l_rerank, mutual_nn, ransac, verify_pair

FEAT = FeatureConfig(num_features=300, max_side=320)
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "camera.png")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _project(H: np.ndarray, xy: np.ndarray) -> np.ndarray:
    p = np.c_[xy, np.ones(len(xy))] @ H.T
    return p[:, :2] / p[:, 2:]


# ----------------------------------------------------------------------------- mutual_nn
def test_mutual_nn_recovers_a_permutation():
    rng = np.random.default_rng(0)
    a = _unit(np.abs(rng.standard_normal((400, 128))))
    perm = rng.permutation(400)
    m, dist = mutual_nn(a, a[perm])
    assert m.dtype == np.int32 and m.shape == (400, 2) and dist.shape == (400,)
    inv = np.argsort(perm)
    np.testing.assert_array_equal(m[:, 0], np.arange(400))
    np.testing.assert_array_equal(m[:, 1], inv)
    assert dist.max() < 1e-3


def test_mutual_nn_matches_brute_force():
    rng = np.random.default_rng(1)
    a, b = _unit(rng.standard_normal((150, 32))), _unit(rng.standard_normal((90, 32)))
    D = np.linalg.norm(a[:, None] - b[None], axis=-1)
    want = [(i, j) for i, j in enumerate(D.argmin(1)) if D[:, j].argmin() == i]
    m, dist = mutual_nn(a, b)
    assert [tuple(r) for r in m.tolist()] == want
    np.testing.assert_allclose(dist, D[m[:, 0], m[:, 1]], atol=1e-4)


def test_mutual_nn_ratio_test_drops_ambiguous_matches():
    rng = np.random.default_rng(2)
    a = _unit(rng.standard_normal((50, 128)))
    b = a.copy()
    b[:, :] = _unit(b + 0.05 * rng.standard_normal(b.shape))
    b = np.vstack([b, _unit(a[:5] + 0.06 * rng.standard_normal((5, 128)))])   # near-twins of rows 0-4
    m0, _ = mutual_nn(a, b)
    m1, _ = mutual_nn(a, b, ratio=0.8)
    assert set(range(5, 50)) <= set(m1[:, 0].tolist())
    assert not set(range(5)) & set(m1[:, 0].tolist())
    assert len(m0) == 50


def test_mutual_nn_edge_cases():
    e = np.zeros((0, 128), np.float32)
    x = _unit(np.ones((3, 128)))
    for a, b in ((e, x), (x, e), (e, e)):
        m, d = mutual_nn(a, b)
        assert m.shape == (0, 2) and d.shape == (0,)
    m, _ = mutual_nn(x[:1], x[:1], ratio=0.8)                # single candidate: ratio test passes
    assert m.tolist() == [[0, 0]]
    with pytest.raises(ValueError, match="desc1 and desc2"):
        mutual_nn(np.zeros((3, 64)), np.zeros((3, 128)))


# ----------------------------------------------------------------------------- ransac
def _outlier_mix(xy1, xy2, frac, rng, size=400.0):
    n_out = int(round(frac / (1 - frac) * len(xy1)))
    o1, o2 = rng.uniform(0, size, (n_out, 2)), rng.uniform(0, size, (n_out, 2))
    truth = np.r_[np.ones(len(xy1), bool), np.zeros(n_out, bool)]
    order = rng.permutation(len(truth))
    return np.r_[xy1, o1][order], np.r_[xy2, o2][order], truth[order]


def _precision_recall(pred, truth):
    tp = (pred & truth).sum()
    return tp / max(pred.sum(), 1), tp / truth.sum()


def test_ransac_homography_with_40_percent_outliers():
    rng = np.random.default_rng(3)
    H = np.array([[0.9, 0.15, 20.0], [-0.1, 1.05, 10.0], [2e-4, -1e-4, 1.0]])
    xy1 = rng.uniform(0, 400, (120, 2))
    xy2 = _project(H, xy1) + rng.normal(0, 0.5, (120, 2))
    p1, p2, truth = _outlier_mix(xy1, xy2, 0.4, rng)
    inl, M = ransac(p1, p2, VerifyConfig(ransac_thresh=3.0), model="homography")
    prec, rec = _precision_recall(inl, truth)
    assert prec > 0.9 and rec > 0.9
    assert M.shape == (3, 3)
    np.testing.assert_allclose(_project(M, xy1[:10]), _project(H, xy1[:10]), atol=2.0)
    inl2, M2 = ransac(p1, p2, VerifyConfig(ransac_thresh=3.0), model="homography")
    np.testing.assert_array_equal(inl, inl2)                 # seeded: repeatable
    np.testing.assert_array_equal(M, M2)


def test_ransac_fundamental_with_40_percent_outliers():
    rng = np.random.default_rng(4)
    X = np.c_[rng.uniform(-2, 2, (150, 2)), rng.uniform(4, 8, 150)]          # a 3-D point cloud
    K = np.array([[300.0, 0, 200], [0, 300, 200], [0, 0, 1]])
    a = 0.2
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    t = np.array([-1.0, 0.1, 0.2])

    def cam(P):
        p = P @ K.T
        return p[:, :2] / p[:, 2:]

    xy1 = cam(X) + rng.normal(0, 0.3, (150, 2))
    xy2 = cam(X @ R.T + t) + rng.normal(0, 0.3, (150, 2))
    p1, p2, truth = _outlier_mix(xy1, xy2, 0.4, rng)
    inl, F = ransac(p1, p2, VerifyConfig(ransac_thresh=2.0), model="fundamental")
    prec, rec = _precision_recall(inl, truth)
    assert prec > 0.9 and rec > 0.9
    h1, h2 = np.c_[xy1, np.ones(150)], np.c_[xy2, np.ones(150)]
    lines = h1 @ F.T                                          # epipolar lines in image 2
    err = np.abs((h2 * lines).sum(1)) / np.linalg.norm(lines[:, :2], axis=1)
    assert np.median(err) < 1.0


def test_ransac_too_few_and_degenerate():
    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 100, (7, 2))
    inl, M = ransac(xy, xy + 1, model="fundamental")          # 7 < 8
    assert inl.shape == (7,) and not inl.any() and M is None
    inl, M = ransac(xy[:3], xy[:3], model="homography")
    assert not inl.any() and M is None
    same = np.tile([[10.0, 20.0]], (30, 1))                   # all points identical
    for model in ("fundamental", "homography"):
        inl, M = ransac(same, same, model=model)
        assert inl.shape == (30,)
    line = np.c_[np.arange(30.0), 2 * np.arange(30.0)]        # collinear
    ransac(line, line + 3, model="homography")
    nan = xy.copy()
    nan[0, 0] = np.nan
    assert not ransac(np.r_[nan, xy], np.r_[xy, xy], model="homography")[0].any()
    with pytest.raises(ValueError, match="model"):
        ransac(xy, xy, model="affine")
    with pytest.raises(ValueError, match=r"\(M, 2\)"):
        ransac(xy, xy[:5])


# ----------------------------------------------------------------------------- real photos
def _warp(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[0.06 * w, 0.1 * h], [0.96 * w, 0], [0.9 * w, 0.94 * h], [0.02 * w, h]])
    return cv2.warpPerspective(rgb, cv2.getPerspectiveTransform(src, dst), (w, h))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 4-photo gallery index + the features of a perspective-warped astronaut (the query)."""
    data = skimage_data_dir()
    if data is None or not all((data / p).is_file() for p in PHOTOS):
        pytest.skip("scikit-image photos not installed")
    from l2g.images import load_image

    root = tmp_path_factory.mktemp("tiny")
    gal = root / "gallery"
    gal.mkdir()
    rgbs = {}
    for p in PHOTOS:
        rgbs[p] = load_image(data / p, max_side=FEAT.max_side).rgb
        Image.fromarray(rgbs[p]).save(gal / p)
    cfg = DEFAULT.replace(features=FEAT)
    ex = Extractor(FEAT)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # small images: on a shared 2-core box one thread is ~8x faster
    try:
        li, report = build_index(gal, root / "index", cfg, paths=list(PHOTOS), extractor=ex)
        q = ex(_warp(rgbs["astronaut.png"]))
    finally:
        torch.set_num_threads(threads)
    assert not report.failed
    return li, q


def test_verify_pair_real_warp_vs_unrelated(tiny):
    li, q = tiny
    astro, coffee = li.features(li.id_of("astronaut.png")), li.features(li.id_of("coffee.png"))
    for model in ("homography", "fundamental"):
        good = verify_pair(q, astro, model=model)
        bad = verify_pair(q, coffee, model=model)
        assert isinstance(good, VerifyResult) and good.model == model
        assert good.n_inliers >= 60 and good.matrix is not None
        assert bad.n_inliers < good.n_inliers / 3
        assert good.inliers.shape == (good.n_matches,) and good.n_inliers == good.inliers.sum()
        assert {"match", "ransac", "verify"} <= set(good.timings)
    assert verify_pair(q, coffee, model="homography").n_inliers < 15


def test_verify_pair_given_matches_and_edge_cases(tiny):
    li, q = tiny
    astro = li.features(li.id_of("astronaut.png"))
    auto = verify_pair(q, astro, model="homography")
    given = verify_pair(q, astro, matches=auto.matches, model="homography")
    np.testing.assert_array_equal(given.inliers, auto.inliers)
    np.testing.assert_allclose(given.dist, auto.dist, atol=1e-5)
    assert given.params["matches_given"]
    empty = Features.empty()
    for a, b in ((q, empty), (empty, astro)):
        r = verify_pair(a, b)
        assert r.n_inliers == 0 and r.matrix is None and r.matches.shape == (0, 2)
    r = verify_pair(q, astro, matches=np.zeros((0, 2), np.int32))
    assert r.n_inliers == 0
    with pytest.raises(ValueError, match="outside"):
        verify_pair(q, astro, matches=np.array([[0, len(astro)]]))
    with pytest.raises(ValueError, match=r"\(M, 2\)"):
        verify_pair(q, astro, matches=np.zeros((3, 3), np.int32))


def test_g2l_rerank_moves_the_true_match_to_the_top(tiny):
    li, q = tiny
    a = li.id_of("astronaut.png")
    others = [i for i in range(li.n_images) if i != a]
    ids = np.array(others + [a])                              # the true match last in the shortlist
    res = g2l_rerank(li, q, ids, VerifyConfig(top=4))
    assert isinstance(res, G2LResult)
    assert res.ids[0] == a and sorted(res.ids.tolist()) == sorted(ids.tolist())
    assert res.inliers.shape == (4,) and np.all(np.diff(res.inliers) <= 0)
    assert set(res.verified) == set(ids.tolist())
    assert res.verified[a].n_inliers == res.inliers[0]
    # only the head is re-ranked: with top=2 the true match (4th) stays where it was
    res2 = g2l_rerank(li, q, ids, VerifyConfig(top=2))
    np.testing.assert_array_equal(res2.ids[2:], ids[2:])
    assert res2.inliers.shape == (2,)
    # exclude drops an id; an empty query or shortlist leaves the order unchanged
    res3 = g2l_rerank(li, q, ids, VerifyConfig(top=4), exclude=a)
    assert a not in res3.ids and len(res3.ids) == 3
    res4 = g2l_rerank(li, Features.empty(), ids)
    np.testing.assert_array_equal(res4.ids, ids)
    assert len(g2l_rerank(li, q, np.array([], np.int64)).ids) == 0


def test_global_then_local_pipeline_on_a_real_index(tiny):
    """build_global on a real LocalIndex, global shortlist, spatial re-ranking: the warp finds its source."""
    li, q = tiny
    gi = build_global(li, GlobalConfig(words=8, pca_dim=16, train_sample=2_000))
    assert gi.xb.shape[0] == li.n_images and gi.paths == li.paths
    ids, sims = global_search(gi, vlad(q.desc, gi.model))
    res = g2l_rerank(li, q, ids, VerifyConfig(top=4))
    assert li.paths[res.ids[0]] == "astronaut.png"
