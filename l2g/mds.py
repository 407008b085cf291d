"""Multidimensional scaling of a dissimilarity matrix.

Two solvers, both pure numpy / scipy functions:

* :func:`classical_mds` -- Torgerson scaling: double-centre the squared
  dissimilarities and keep the top eigenpairs.
* :func:`smacof` -- metric MDS by stress majorisation (Guttman transform,
  de Leeuw 1977; Borg & Groenen, *Modern MDS*, ch. 8), started from the
  classical solution.  Every iteration cannot increase the raw stress.

Stress conventions (both reported in :class:`MDSResult`)::

    raw     = sum_{i<j} w_ij (d_ij - delta_ij)^2
    stress1 = sqrt(raw / sum_{i<j} w_ij delta_ij^2)     (Kruskal stress-1)

where ``delta`` is the input dissimilarity, ``d`` the embedded Euclidean
distance and ``w`` the (optional) weights, 1 by default.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
from scipy.spatial.distance import pdist, squareform

from .config import RerankConfig

SYM_TOL = 1e-6        # relative asymmetry / diagonal tolerance of the input
EIG_REL_TOL = 1e-12   # eigenvalues below this fraction of the largest count as zero
FULL_EIGH_MAX_N = 200  # up to this n a full eigendecomposition beats the subset solver
METHODS = ("smacof", "classical")


@dataclass
class MDSResult:
    """An embedding and how well it fits.

    X: (n, dim) float64 coordinates, centred at the origin.
    stress: raw stress, sum over i<j of w_ij (d_ij - delta_ij)^2.
    stress1: Kruskal stress-1, sqrt(raw / sum_{i<j} w_ij delta_ij^2); 0 when that sum is 0.
    n_iter: accepted SMACOF updates (0 for classical scaling and tiny inputs).
    """

    X: np.ndarray
    stress: float
    stress1: float
    n_iter: int
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- validation

def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_square(M, name: str = "D", n: int | None = None) -> np.ndarray:
    """Validate M: (n, n) finite, non-negative and symmetric (to SYM_TOL relative); return a symmetric float64
    copy with a zero diagonal. A dissimilarity D must have a zero diagonal; a weight matrix's is ignored."""
    M = np.array(M, dtype=np.float64, copy=True)
    if M.ndim != 2 or M.shape[0] != M.shape[1] or (n is not None and M.shape != (n, n)):
        raise ValueError(f"{name} must be a square {'(n, n)' if n is None else (n, n)} matrix, got shape {M.shape}")
    if M.size == 0:
        return M
    if not np.all(np.isfinite(M)):
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    if np.any(M < 0):
        raise ValueError(f"{name} must be non-negative (min {M.min():.3g})")
    tol = SYM_TOL * max(float(M.max()), np.finfo(np.float64).tiny)
    asym = float(np.abs(M - M.T).max())
    if asym > tol:
        raise ValueError(f"{name} must be symmetric: max |{name} - {name}.T| = {asym:.3g} > {tol:.3g}")
    diag = float(np.abs(np.diag(M)).max())
    if name == "D" and diag > tol:
        raise ValueError(f"D must have a zero diagonal: max |diag| = {diag:.3g} > {tol:.3g}")
    M = 0.5 * (M + M.T)
    np.fill_diagonal(M, 0.0)
    return M


# --------------------------------------------------------------------------- helpers

def _raw_stress(X: np.ndarray, D: np.ndarray, W: np.ndarray | None) -> float:
    """sum_{i<j} w_ij (|x_i - x_j| - delta_ij)^2 for X: (n, k), D and W: (n, n)."""
    diff = squareform(pdist(X)) - D
    diff *= diff
    return 0.5 * float((diff if W is None else diff * W).sum())


def _fill_and_stress(X: np.ndarray, G: np.ndarray, left: np.ndarray, right: np.ndarray,
                     DW: np.ndarray, W: np.ndarray | None, half_sum_wdelta2: float) -> float:
    """Write the (n, n) distances of X: (n, k) into G and return the raw stress.

    left: (n, k + 2) and right: (k + 2, n) are work buffers; on return
    left = [X, |x|^2, 1], so that G' @ left yields b X and the row sums of b.
    One matrix product gives the squared distances ([x, |x|^2, 1] . [-2x, 1, |x|^2]);
    the stress uses sum w (d - delta)^2 = sum w d^2 - 2 sum w delta d + sum w delta^2,
    so the n x n matrices are only read, never copied.
    """
    n, k = X.shape
    sq = np.einsum("ij,ij->i", X, X)
    left[:, :k], left[:, k], left[:, k + 1] = X, sq, 1.0
    np.multiply(X.T, -2.0, out=right[:k])   # right is built transposed: C-contiguous for BLAS
    right[k], right[k + 1] = 1.0, sq
    np.matmul(left, right, out=G)
    np.maximum(G, 0.0, out=G)
    G.flat[:: n + 1] = 0.0
    if W is None:
        total = X.sum(axis=0)
        sum_wd2 = 2.0 * n * float(sq.sum()) - 2.0 * float(total @ total)
    else:
        sum_wd2 = float(np.vdot(W, G))
    np.sqrt(G, out=G)
    raw = 0.5 * sum_wd2 - float(np.vdot(DW, G)) + half_sum_wdelta2
    return max(raw, 0.0)


def _stress1(raw: float, denom: float) -> float:
    return float(np.sqrt(raw / denom)) if denom > 0 else 0.0


def _tiny(D: np.ndarray, dim: int, method: str, t0: float) -> MDSResult | None:
    """Closed-form answers for n < 3 and for the all-zero matrix; None otherwise."""
    n = D.shape[0]
    X = np.zeros((n, dim))
    if n == 2:
        X[0, 0], X[1, 0] = -0.5 * D[0, 1], 0.5 * D[0, 1]
    elif n >= 3 and np.any(D > 0):
        return None
    return MDSResult(X=X, stress=0.0, stress1=0.0, n_iter=0,
                     params={"method": method, "dim": dim, "n": n, "closed_form": True},
                     timings={"total": time.perf_counter() - t0})


# --------------------------------------------------------------------------- solvers

def _classical(D: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """D: (n, n) validated, n >= 3 -> X: (n, dim), eigenvalues: (min(dim, n),) descending."""
    n = D.shape[0]
    B = D * D
    B -= B.mean(axis=0, keepdims=True)
    B -= B.mean(axis=1, keepdims=True)
    B *= -0.5
    B = 0.5 * (B + B.T)
    k = min(dim, n)
    if n <= FULL_EIGH_MAX_N or 2 * k >= n:   # small: the full solver is faster
        lam, V = np.linalg.eigh(B)
        lam, V = lam[n - k:], V[:, n - k:]
    else:                                   # large: only the top k eigenpairs (MRRR)
        lam, V = scipy.linalg.eigh(B, subset_by_index=[n - k, n - 1], driver="evr")
    lam, V = lam[::-1], V[:, ::-1]
    top = max(float(lam[0]), 0.0)
    lam = np.where(lam > EIG_REL_TOL * top, lam, 0.0)
    # deterministic signs: the largest-magnitude entry of each eigenvector is positive
    flip = np.sign(V[np.abs(V).argmax(axis=0), np.arange(k)])
    flip[flip == 0] = 1.0
    X = np.zeros((n, dim))
    X[:, :k] = V * (flip * np.sqrt(lam))
    return X, lam


def classical_mds(D, dim: int) -> MDSResult:
    """Classical (Torgerson) scaling.

    D: (n, n) float64 symmetric non-negative dissimilarities, zero diagonal.
    dim: output dimension >= 1; columns beyond the number of positive
        eigenvalues (or beyond n) are zero.
    Returns MDSResult with X: (n, dim); params['eigenvalues'] lists the kept
    eigenvalues (negatives clipped to 0).
    """
    t0 = time.perf_counter()
    dim = _check_int(dim, "dim", 1)
    D = _check_square(D)
    early = _tiny(D, dim, "classical", t0)
    if early is not None:
        return early
    X, lam = _classical(D, dim)
    raw = _raw_stress(X, D, None)
    denom = 0.5 * float((D * D).sum())
    return MDSResult(X=X, stress=raw, stress1=_stress1(raw, denom), n_iter=0,
                     params={"method": "classical", "dim": dim, "n": D.shape[0],
                             "eigenvalues": lam.tolist()},
                     timings={"total": time.perf_counter() - t0})


def _guttman_operator(W: np.ndarray | None, n: int) -> np.ndarray | None:
    """Moore-Penrose inverse of V = diag(W 1) - W: (n, n); None for unit weights (V+ X = X / n)."""
    if W is None:
        return None
    V = -W
    V[np.diag_indices(n)] = W.sum(axis=1)
    return np.linalg.pinv(V, hermitian=True)


def smacof(D, dim: int, init=None, max_iter: int = 300, eps: float = 1e-6,
           weights=None) -> MDSResult:
    """Metric MDS by SMACOF (iterated Guttman transform).

    D: (n, n) float64 symmetric non-negative dissimilarities, zero diagonal.
    dim: output dimension >= 1.
    init: (n, dim) float64 start, or None for the classical solution.
    max_iter: at most this many Guttman updates (0 returns the start).
    eps: stop once (stress_prev - stress) <= eps * stress_prev.
    weights: (n, n) non-negative symmetric pair weights, or None for all ones;
        a zero weight drops that pair from the stress.
    Returns MDSResult with X: (n, dim); params['stress_history'] holds the raw
    stress of the start and after every update (non-increasing).
    """
    t0 = time.perf_counter()
    dim = _check_int(dim, "dim", 1)
    max_iter = _check_int(max_iter, "max_iter", 0)
    if not isinstance(eps, (int, float, np.floating)) or not np.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be finite and >= 0, got {eps!r}")
    D = _check_square(D)
    n = D.shape[0]
    W = None if weights is None else _check_square(weights, "weights", n)
    early = _tiny(D, dim, "smacof", t0)
    if early is not None:
        return early
    params = {"method": "smacof", "dim": dim, "n": n, "max_iter": max_iter, "eps": float(eps),
              "weighted": W is not None, "init": "classical" if init is None else "given"}
    timings = {}
    if init is None:
        X, _ = _classical(D, dim)
    else:
        X = np.array(init, dtype=np.float64, copy=True)
        if X.shape != (n, dim):
            raise ValueError(f"init must have shape {(n, dim)}, got {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("init must be finite")
    X -= X.mean(axis=0, keepdims=True)
    timings["init"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    Vplus = _guttman_operator(W, n)
    DW = D if W is None else D * W          # numerator of the ratios b_ij
    denom = 0.5 * float(np.vdot(DW, D))     # sum_{i<j} w_ij delta_ij^2
    floor = 1e-13 * denom                   # a fit this close is exact up to round-off
    G = np.empty((n, n))                    # the one n x n work buffer: d, then b = w delta / d
    left, right = np.empty((n, dim + 2)), np.empty((dim + 2, n))
    stress = _fill_and_stress(X, G, left, right, DW, W, denom)
    history = [stress]
    n_iter = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(max_iter):
            if stress <= floor:
                break
            # Guttman transform: X <- V+ B(X) X with B = diag(b 1) - b, b_ij = w_ij delta_ij / d_ij
            G.flat[:: n + 1] = 1.0          # diagonal 0 / 1 -> 0
            np.divide(DW, G, out=G)
            GL = G @ left                   # b X and (last column) the row sums of b
            if not np.all(np.isfinite(GL[:, -1])):
                G[~np.isfinite(G)] = 0.0    # coincident points (d_ij = 0) contribute nothing
                GL = G @ left
            BX = GL[:, -1:] * X - GL[:, :dim]
            X_new = BX / n if Vplus is None else Vplus @ BX
            stress_new = _fill_and_stress(X_new, G, left, right, DW, W, denom)
            if stress_new > stress:         # round-off at convergence: keep the better point
                break
            n_iter += 1
            decrease = stress - stress_new
            X, stress = X_new, stress_new
            history.append(stress)
            if decrease <= eps * history[-2]:
                break
    stress = _raw_stress(X, D, W)   # report the exact value, not the expansion
    timings["smacof"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t0
    params["stress_history"] = history
    return MDSResult(X=X, stress=stress, stress1=_stress1(stress, denom), n_iter=n_iter,
                     params=params, timings=timings)


def embed(D, dim: int, method: str | None = None, max_iter: int | None = None, eps: float | None = None,
          weights=None) -> MDSResult:
    """Dispatch: method 'smacof' (classical start + SMACOF) or 'classical'; None takes
    RerankConfig's default (the one l2g re-ranks with), as do max_iter and eps.

    D: (n, n) float64 dissimilarities; returns MDSResult with X: (n, dim).
    """
    rc = RerankConfig()
    method = rc.method if method is None else method
    max_iter = rc.smacof_max_iter if max_iter is None else max_iter
    eps = rc.smacof_eps if eps is None else eps
    if method == "classical":
        if weights is not None:
            raise ValueError("weights are only supported by method='smacof'")
        return classical_mds(D, dim)
    if method == "smacof":
        return smacof(D, dim, max_iter=max_iter, eps=eps, weights=weights)
    raise ValueError(f"unknown MDS method {method!r}; expected one of {METHODS}")
