"""Tests for l2g.mds: exact recovery, SMACOF monotonicity, edge cases, validation."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import procrustes
from scipy.spatial.distance import pdist, squareform

from l2g.mds import MDSResult, classical_mds, embed, smacof


def _dist(X: np.ndarray) -> np.ndarray:
    """X: (n, k) -> (n, n) Euclidean distances (independent of l2g.mds)."""
    return squareform(pdist(X))


def _circle(n: int = 12) -> np.ndarray:
    t = 2 * np.pi * np.arange(n) / n
    return np.column_stack([np.cos(t), np.sin(t)])


def _perturbed(n: int = 30, seed: int = 0, noise: float = 0.3) -> np.ndarray:
    """Distances of a 5-D cloud multiplied by symmetric noise: not Euclidean in 2-D."""
    rng = np.random.default_rng(seed)
    D = _dist(rng.standard_normal((n, 5)))
    E = np.exp(noise * rng.standard_normal((n, n)))
    D = D * (E + E.T) / 2
    np.fill_diagonal(D, 0.0)
    return D


# --------------------------------------------------------------------------- exact recovery

@pytest.mark.parametrize("method", ["classical", "smacof"])
def test_circle_reproduces_distances(method):
    D = _dist(_circle(12))
    res = embed(D, 2, method=method)
    assert isinstance(res, MDSResult)
    assert res.X.shape == (12, 2)
    np.testing.assert_allclose(_dist(res.X), D, atol=1e-6)
    assert res.stress < 1e-10
    assert res.stress1 < 1e-6


@pytest.mark.parametrize("method", ["classical", "smacof"])
def test_random_cloud_recovered_up_to_rotation(method):
    rng = np.random.default_rng(1)
    P = rng.standard_normal((40, 3)) * np.array([3.0, 2.0, 1.0])
    res = embed(_dist(P), 3, method=method)
    _, _, disparity = procrustes(P, res.X)
    assert disparity < 1e-8
    # procrustes rescales; the embedding must also have the right scale
    np.testing.assert_allclose(_dist(res.X), _dist(P), atol=1e-6)


def test_classical_extra_dims_are_zero_columns():
    P = _circle(12)
    res = classical_mds(_dist(P), 5)
    assert res.X.shape == (12, 5)
    np.testing.assert_allclose(res.X[:, 2:], 0.0, atol=1e-7)
    np.testing.assert_allclose(_dist(res.X), _dist(P), atol=1e-6)
    ev = res.params["eigenvalues"]
    assert len(ev) == 5 and ev[0] >= ev[1] > 0 and all(v == 0.0 for v in ev[2:])


def test_dim_larger_than_n_pads_with_zeros():
    P = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    for method in ("classical", "smacof"):
        res = embed(_dist(P), 7, method=method)
        assert res.X.shape == (4, 7)
        assert np.all(np.isfinite(res.X))
        np.testing.assert_allclose(_dist(res.X), _dist(P), atol=1e-6)


def test_classical_is_deterministic_and_centred():
    D = _perturbed(25, seed=3)
    a, b = classical_mds(D, 4), classical_mds(D.copy(), 4)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_allclose(a.X.mean(axis=0), 0.0, atol=1e-10)


# --------------------------------------------------------------------------- SMACOF behaviour

def test_smacof_improves_on_classical_for_non_euclidean_input():
    D = _perturbed()
    cl = classical_mds(D, 2)
    sm = smacof(D, 2, max_iter=500, eps=1e-9)
    assert sm.stress < 0.9 * cl.stress          # a real improvement, not round-off
    assert sm.n_iter > 5
    hist = np.asarray(sm.params["stress_history"])
    assert hist[0] == pytest.approx(cl.stress, rel=1e-9)
    assert np.all(np.diff(hist) <= 1e-9 * hist[0])  # monotone non-increasing
    assert sm.stress == pytest.approx(hist[-1], rel=1e-8)
    # the reported stress is the one of the returned X
    d = _dist(sm.X)
    iu = np.triu_indices_from(D, 1)
    raw = float(((d[iu] - D[iu]) ** 2).sum())
    assert sm.stress == pytest.approx(raw, rel=1e-9)
    assert sm.stress1 == pytest.approx(np.sqrt(raw / (D[iu] ** 2).sum()), rel=1e-9)


def test_smacof_stress_decreases_with_more_iterations():
    D = _perturbed(seed=2)
    stresses = [smacof(D, 2, max_iter=m, eps=0.0).stress for m in (0, 1, 2, 5, 20, 100)]
    assert stresses[0] == pytest.approx(classical_mds(D, 2).stress, rel=1e-9)
    assert all(b <= a * (1 + 1e-12) for a, b in zip(stresses, stresses[1:]))
    assert stresses[-1] < stresses[0]


def test_smacof_eps_stops_early_and_max_iter_caps():
    D = _perturbed(seed=4)
    loose = smacof(D, 2, max_iter=1000, eps=1e-2)
    tight = smacof(D, 2, max_iter=1000, eps=1e-8)
    capped = smacof(D, 2, max_iter=3, eps=0.0)
    assert loose.n_iter < tight.n_iter
    assert tight.stress <= loose.stress
    assert capped.n_iter == 3 and len(capped.params["stress_history"]) == 4


def test_smacof_random_init_reaches_low_stress():
    P = np.random.default_rng(5).standard_normal((20, 2))
    init = np.random.default_rng(6).standard_normal((20, 2))
    res = smacof(_dist(P), 2, init=init, max_iter=3000, eps=1e-12)
    assert res.params["init"] == "given"
    assert res.stress1 < 0.05


def test_smacof_weights_zero_pair_is_ignored():
    P = _circle(8)
    D = _dist(P)
    D_bad = D.copy()
    D_bad[0, 1] = D_bad[1, 0] = 5.0               # one corrupted pair
    W = np.ones_like(D)
    W[0, 1] = W[1, 0] = 0.0
    init = P + 0.05 * np.random.default_rng(7).standard_normal(P.shape)
    res = smacof(D_bad, 2, init=init, weights=W, max_iter=2000, eps=1e-12)
    assert res.params["weighted"]
    unweighted = smacof(D_bad, 2, init=init, max_iter=2000, eps=1e-12)
    assert unweighted.stress > 0.1                 # without weights the bad pair distorts the fit
    mask = W > 0
    np.fill_diagonal(mask, False)
    np.testing.assert_allclose(_dist(res.X)[mask], D[mask], atol=1e-4)
    assert res.stress < 1e-6


def test_smacof_handles_coincident_points():
    P = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    D = _dist(P) + 0.2 * (1 - np.eye(5))           # non-Euclidean, forces iterations
    init = P.copy()                                # rows 0 and 1 coincide
    res = smacof(D, 2, init=init, max_iter=50, eps=0.0)
    assert np.all(np.isfinite(res.X)) and np.isfinite(res.stress)
    assert res.stress <= res.params["stress_history"][0]


# --------------------------------------------------------------------------- edge cases

@pytest.mark.parametrize("method", ["classical", "smacof"])
def test_degenerate_all_zero(method):
    res = embed(np.zeros((5, 5)), 3, method=method)
    assert res.X.shape == (5, 3)
    assert np.all(res.X == 0.0)
    assert res.stress == 0.0 and res.stress1 == 0.0


@pytest.mark.parametrize("method", ["classical", "smacof"])
def test_tiny_inputs(method):
    r0 = embed(np.zeros((0, 0)), 4, method=method)
    assert r0.X.shape == (0, 4) and r0.stress == 0.0
    r1 = embed(np.zeros((1, 1)), 4, method=method)
    assert r1.X.shape == (1, 4) and np.all(r1.X == 0.0)
    r2 = embed(np.array([[0.0, 3.0], [3.0, 0.0]]), 4, method=method)
    assert r2.X.shape == (2, 4)
    np.testing.assert_allclose(r2.X[:, 0], [-1.5, 1.5])
    np.testing.assert_allclose(r2.X[:, 1:], 0.0)
    assert r2.stress == 0.0


def test_tiny_asymmetry_is_symmetrised():
    D = _dist(_circle(6))
    D[0, 1] += 1e-9
    res = classical_mds(D, 2)
    assert np.all(np.isfinite(res.X))


def test_result_carries_params_and_timings():
    res = embed(_perturbed(12), 3, method="smacof", max_iter=10, eps=0.0)
    assert res.params["method"] == "smacof" and res.params["dim"] == 3
    assert res.params["max_iter"] == 10 and res.n_iter <= 10
    assert res.timings["total"] >= 0.0 and "smacof" in res.timings


# --------------------------------------------------------------------------- validation

@pytest.mark.parametrize("D, msg", [
    (np.zeros((3, 4)), "square"),
    (np.zeros(3), "square"),
    (np.array([[0.0, -1.0, 1.0], [-1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]), "non-negative"),
    (np.array([[0.0, np.nan, 1.0], [np.nan, 0.0, 1.0], [1.0, 1.0, 0.0]]), "finite"),
    (np.array([[0.0, np.inf, 1.0], [np.inf, 0.0, 1.0], [1.0, 1.0, 0.0]]), "finite"),
    (np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]), "symmetric"),
    (np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]), "diagonal"),
])
@pytest.mark.parametrize("method", ["classical", "smacof"])
def test_bad_input_raises(D, msg, method):
    with pytest.raises(ValueError, match=msg):
        embed(D, 2, method=method)


def test_bad_arguments_raise():
    D = _dist(_circle(5))
    for dim in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="dim"):
            classical_mds(D, dim)
    with pytest.raises(ValueError, match="method"):
        embed(D, 2, method="isomap")
    with pytest.raises(ValueError, match="init"):
        smacof(D, 2, init=np.zeros((5, 3)))
    with pytest.raises(ValueError, match="init"):
        smacof(D, 2, init=np.full((5, 2), np.nan))
    with pytest.raises(ValueError, match="max_iter"):
        smacof(D, 2, max_iter=-1)
    with pytest.raises(ValueError, match="eps"):
        smacof(D, 2, eps=-1.0)
    with pytest.raises(ValueError, match="weights"):
        smacof(D, 2, weights=np.ones((4, 4)))
    with pytest.raises(ValueError, match="weights"):
        smacof(D, 2, weights=-np.ones((5, 5)))
