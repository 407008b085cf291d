"""A global image descriptor with no downloaded weights: VLAD of RootSIFT, PCA-whitened.

VLAD (Jegou et al. 2010) with the usual fixes: hard assignment to a k-means
codebook of K words, the residuals x - c_k summed per word, intra-normalisation
(each word's block L2-normalised, Arandjelovic & Zisserman 2013), signed square
root, L2; then PCA-whitening learned on the gallery's own VLADs (Jegou & Chum
2012) and L2 again. Rows are vectors: descriptors (N, 128), the gallery's
global descriptors xb (n_images, d_out); cosine similarity is a dot product.

On disk: ``global.npz`` in the local index folder (written atomically).
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from . import store
from .config import GlobalConfig
from .errors import IndexFormatError
from .features import DESC_DIM

GLOBAL_FILE = "global.npz"
FIX = ("Re-run `python -m l2g index` on the gallery (or `python -m l2g check DIR --repair`): it rebuilds "
       "the global descriptors.")
KMEANS_ITERS = 20          # Lloyd iterations of the codebook k-means
POWER_ALPHA = 0.5          # signed power normalisation exponent
WHITEN_SHRINK = 1.0        # whitening eps = this x the mean eigenvalue (see fit_whitening)
PCA_MAX_IMAGES = 2048      # whitening is fitted on at most this many images (fixed-seed sample)
STORE_VERSION = 2          # bump when the layout of global.npz (or how it is computed) changes; 2: damped whitening

Progress = Callable[[int, int, str], None] | None


@dataclass
class VladModel:
    """Codebook and (optional) PCA-whitening.

    centroids: (K, 128) float32
    pca_mean:  (K*128,) float32, or None when no whitening was fitted
    pca_proj:  (d_out, K*128) float32, rows are principal directions
    pca_eig:   (d_out,) float32 eigenvalues of the raw VLAD covariance
    pca_eps:   whitening divides projection k by sqrt(pca_eig[k] + pca_eps)
    """

    centroids: np.ndarray
    pca_mean: np.ndarray | None = None
    pca_proj: np.ndarray | None = None
    pca_eig: np.ndarray | None = None
    pca_eps: float = 0.0
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def words(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def raw_dim(self) -> int:
        return int(self.centroids.shape[0] * self.centroids.shape[1])

    @property
    def whitened(self) -> bool:
        return self.pca_proj is not None

    @property
    def dim(self) -> int:
        """Length of the vectors :func:`vlad` returns."""
        return int(self.pca_proj.shape[0]) if self.whitened else self.raw_dim


def _check_desc(x: np.ndarray, name: str, d: int = DESC_DIM) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"{name} must be (N, {d}), got {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _l2(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """L2-normalise along ``axis``; all-zero slices stay zero."""
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


# --------------------------------------------------------------------------- training
def train_vlad(xb_sample: np.ndarray, cfg: GlobalConfig = GlobalConfig(),
               images: Iterable[np.ndarray] | None = None) -> VladModel:
    """k-means codebook of ``cfg.words`` words (faiss, seed ``cfg.seed``) on (N, 128) descriptors.

    Whitening must be learned on per-image VLADs, not on descriptors: pass
    ``images`` (one (n_i, 128) descriptor array per training image) to fit it
    here, or call :func:`fit_whitening` later (``build_global`` does). Raises
    ValueError with fewer descriptors than words.
    """
    x = _check_desc(xb_sample, "xb_sample")
    if len(x) < cfg.words:
        raise ValueError(f"k-means needs at least {cfg.words} descriptors (cfg.words), got {len(x)}")
    t0 = time.perf_counter()
    km = faiss.Kmeans(x.shape[1], cfg.words, niter=KMEANS_ITERS, seed=cfg.seed, verbose=False)
    km.cp.min_points_per_centroid = 1   # small galleries: no warning spam, clustering still runs
    km.train(x)
    cents = np.ascontiguousarray(km.centroids, dtype=np.float32).reshape(cfg.words, x.shape[1])
    model = VladModel(cents, params={"words": cfg.words, "seed": cfg.seed, "kmeans_iters": KMEANS_ITERS,
                                     "n_train": int(len(x)), "pca_dim": 0, "whitened": False,
                                     # faiss subsamples to this many points (max_points_per_centroid)
                                     "kmeans_points": int(min(len(x), km.cp.max_points_per_centroid * cfg.words))},
                      timings={"kmeans": time.perf_counter() - t0})
    if images is None:
        return model
    raw = [vlad_raw(d, cents) for d in images]
    raw = np.stack(raw) if raw else np.zeros((0, model.raw_dim), np.float32)
    return fit_whitening(model, raw[np.any(raw != 0, axis=1)], cfg.pca_dim)


def fit_whitening(model: VladModel, raw: np.ndarray, pca_dim: int) -> VladModel:
    """A copy of ``model`` with PCA-whitening fitted on raw VLADs (n, K*128), one row per image.

    The output dimension is min(pca_dim, n - 1, K*128); with fewer than 3 rows
    (or a dimension below 1) no whitening is fitted and the copy is returned as is.

    The whitening is shrunk: eps = WHITEN_SHRINK x the mean of the n - 1 non-zero
    eigenvalues. Plain whitening (eps ~ 0) fitted on the gallery itself is
    degenerate for queries taken from that gallery: at full rank every gallery
    vector becomes equidistant from every other (whitened Gram = I - 11^T/n).
    On realbench-dev (169 images, leave-one-out) eps ~ 0 gave mAP 0.10, raw VLAD
    0.65, shrunk 0.67; with each query's group left out of the fit, 0.74 / 0.65 / 0.77.
    """
    raw = np.asarray(raw, np.float32)
    if raw.ndim != 2 or raw.shape[1] != model.raw_dim:
        raise ValueError(f"raw VLADs must be (n, {model.raw_dim}), got {raw.shape}")
    t0 = time.perf_counter()
    n = raw.shape[0]
    d = int(min(pca_dim, n - 1, model.raw_dim))
    base = dataclasses.replace(model, pca_mean=None, pca_proj=None, pca_eig=None, pca_eps=0.0,
                               params={**model.params, "pca_dim": 0, "whitened": False},
                               timings=dict(model.timings))
    if n < 3 or d < 1:
        return base
    mean = raw.astype(np.float64).mean(0)
    xc = raw.astype(np.float64) - mean
    # n << K*128 in practice: the SVD of the centred data matrix is cheap and exact.
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    eig_all = (s[:n - 1] ** 2) / (n - 1)
    eig = eig_all[:d]
    proj = vt[:d]
    # Fix each direction's sign (largest |component| positive) so results do not depend on LAPACK.
    flip = np.sign(proj[np.arange(d), np.abs(proj).argmax(1)])
    proj = proj * np.where(flip == 0, 1.0, flip)[:, None]
    base.pca_mean = mean.astype(np.float32)
    base.pca_proj = np.ascontiguousarray(proj, dtype=np.float32)
    base.pca_eig = eig.astype(np.float32)
    base.pca_eps = float(WHITEN_SHRINK * eig_all.mean()) + 1e-12
    base.params.update(pca_dim=d, whitened=True, whiten_shrink=WHITEN_SHRINK, pca_eps=base.pca_eps, n_pca=n)
    base.timings["pca"] = time.perf_counter() - t0
    return base


# --------------------------------------------------------------------------- encoding
def vlad_raw(desc: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Normalised VLAD before whitening.

    desc: (N, 128), centroids: (K, 128) -> (K*128,) float32, unit norm (zeros when N == 0).
    """
    c = np.asarray(centroids, np.float32)
    x = _check_desc(desc, "desc", c.shape[1])
    k, d = c.shape
    if len(x) == 0:
        return np.zeros(k * d, np.float32)
    # nearest word of each descriptor: argmin |x - c|^2 = argmax (x.c - |c|^2 / 2)
    word = np.argmax(x @ c.T - 0.5 * (c * c).sum(1), axis=1)
    onehot = np.zeros((len(x), k), np.float32)
    onehot[np.arange(len(x)), word] = 1.0
    counts = onehot.sum(0)
    v = onehot.T @ x - counts[:, None] * c            # (K, 128) residual sums
    v = _l2(v, axis=1)                                 # intra-normalisation
    v = np.sign(v) * np.abs(v) ** POWER_ALPHA          # signed power normalisation
    return _l2(v.reshape(-1)).astype(np.float32)


def whiten(raw: np.ndarray, model: VladModel) -> np.ndarray:
    """Apply the model's PCA-whitening to raw VLADs (..., K*128) -> (..., d_out), rows L2-normalised.

    All-zero inputs (images with no descriptors) stay all-zero.
    """
    raw = np.asarray(raw, np.float32)
    if raw.shape[-1] != model.raw_dim:
        raise ValueError(f"raw VLADs must have {model.raw_dim} columns, got {raw.shape}")
    if not model.whitened:
        return raw.copy()
    zero = ~np.any(raw != 0, axis=-1)
    y = (raw - model.pca_mean) @ model.pca_proj.T / np.sqrt(model.pca_eig + model.pca_eps)
    y = _l2(y)
    y[zero] = 0.0
    return y.astype(np.float32)


def vlad(desc: np.ndarray, model: VladModel) -> np.ndarray:
    """Global descriptor of one image: desc (N, 128) -> (model.dim,) float32, unit norm.

    0 descriptors give the zero vector (its cosine with anything is taken as 0).
    """
    return whiten(vlad_raw(desc, model.centroids), model)


# --------------------------------------------------------------------------- gallery
@dataclass
class GlobalIndex:
    """Global descriptors of a gallery.

    xb: (n_images, d_out) float32 rows in gallery id order, unit norm (zero rows: no descriptors)
    paths: gallery-relative paths, same order; sha1: their content hashes (when known)
    """

    model: VladModel
    xb: np.ndarray
    paths: list
    sha1: list = field(default_factory=list)
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return int(self.xb.shape[0])


def _sample_rows(counts: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """Choose n of sum(counts) rows uniformly (fixed seed): per image, sorted local row indices."""
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(offsets[-1])
    take = np.sort(np.random.default_rng(seed).choice(total, min(n, total), replace=False))
    bounds = np.searchsorted(take, offsets)
    return [take[bounds[i]:bounds[i + 1]] - offsets[i] for i in range(len(counts))]


def build_global(li, cfg: GlobalConfig = GlobalConfig(), progress: Progress = None) -> GlobalIndex:
    """VLAD codebook, whitening and global descriptors for every image of a LocalIndex.

    Samples up to ``cfg.train_sample`` descriptors across the gallery (seed
    ``cfg.seed``) for k-means (words clamped to the sample size), computes the
    raw VLAD of every image, fits PCA-whitening on them (at most PCA_MAX_IMAGES,
    images without descriptors left out) and returns the final xb. Raises
    ValueError when the gallery holds no descriptors.
    """
    t0 = time.perf_counter()
    n = li.n_images
    counts = np.array([e.n for e in li.images], np.int64)
    if n == 0 or counts.sum() == 0:
        raise ValueError("the gallery has no descriptors: nothing to train a VLAD codebook on")
    picks = _sample_rows(counts, cfg.train_sample, cfg.seed)
    sample = []
    for i in range(n):
        if progress:
            progress(i, 2 * n, "sampling descriptors for the VLAD codebook")
        if len(picks[i]):
            sample.append(li.features(i).desc[picks[i]])
    sample = np.concatenate(sample)
    words = int(min(cfg.words, len(sample)))
    model = train_vlad(sample, dataclasses.replace(cfg, words=words))
    del sample
    t1 = time.perf_counter()
    raw = np.zeros((n, model.raw_dim), np.float32)
    for i in range(n):
        if progress:
            progress(n + i, 2 * n, "computing VLAD descriptors")
        raw[i] = vlad_raw(li.features(i).desc, model.centroids)
    t2 = time.perf_counter()
    fit_rows = np.nonzero(np.any(raw != 0, axis=1))[0]
    if len(fit_rows) > PCA_MAX_IMAGES:
        fit_rows = np.sort(np.random.default_rng(cfg.seed).choice(fit_rows, PCA_MAX_IMAGES, replace=False))
    model = fit_whitening(model, raw[fit_rows], cfg.pca_dim)
    xb = whiten(raw, model)
    t3 = time.perf_counter()
    if progress:
        progress(2 * n, 2 * n, "global descriptors done")
    params = {"words": words, "pca_dim": model.params["pca_dim"], "whitened": model.whitened,
              "train_sample": cfg.train_sample, "n_train": model.params["n_train"], "seed": cfg.seed,
              "config": dataclasses.asdict(cfg), "d_out": model.dim}
    return GlobalIndex(model, xb, list(li.paths), [e.sha1 for e in li.images], params,
                       {"sample": t1 - t0 - model.timings["kmeans"], "kmeans": model.timings["kmeans"],
                        "vlad": t2 - t1, "pca": t3 - t2, "total": t3 - t0})


def save_global(folder, gi: GlobalIndex) -> Path:
    """Write ``global.npz`` into ``folder`` atomically (l2g.store); returns its path."""
    folder = Path(folder)
    m = gi.model
    arrays = {"centroids": m.centroids, "xb": gi.xb,
              "paths": np.array(json.dumps(list(gi.paths))), "sha1": np.array(json.dumps(list(gi.sha1))),
              "params": np.array(json.dumps(gi.params)), "model_params": np.array(json.dumps(m.params)),
              "version": np.array(STORE_VERSION)}
    if m.whitened:
        arrays.update(pca_mean=m.pca_mean, pca_proj=m.pca_proj, pca_eig=m.pca_eig,
                      pca_eps=np.array(m.pca_eps))
    store.save_npz(folder / GLOBAL_FILE, **arrays)
    return folder / GLOBAL_FILE


def _read(path: Path, rec: dict | None) -> GlobalIndex | None:
    """global.npz as a GlobalIndex; None for another layout version; IndexFormatError when damaged."""
    z = store.load_npz(path, rec, FIX)
    try:
        if int(z["version"]) != STORE_VERSION:
            return None
        eps = z.get("pca_eps")
        model = VladModel(z["centroids"], z.get("pca_mean"), z.get("pca_proj"), z.get("pca_eig"),
                          0.0 if eps is None else float(eps), json.loads(str(z["model_params"])))
        return GlobalIndex(model, z["xb"], json.loads(str(z["paths"])), json.loads(str(z["sha1"])),
                           json.loads(str(z["params"])))
    except (KeyError, ValueError, TypeError) as e:
        raise IndexFormatError(f"{path}: damaged ({type(e).__name__}: {e}). {FIX}") from None


def _stale(gi: GlobalIndex, li, cfg: GlobalConfig | None) -> bool:
    if cfg is not None and gi.params.get("config") != dataclasses.asdict(cfg):
        return True
    return li is not None and (list(li.paths) != gi.paths or
                               bool(gi.sha1) and [e.sha1 for e in li.images] != gi.sha1)


def load_global(folder, li=None, cfg: GlobalConfig | None = None) -> GlobalIndex | None:
    """Read ``global.npz`` from ``folder``.

    None when it is absent, unreadable, of another layout version, built with
    another ``cfg`` (when given), or stale for ``li`` (other paths or contents).
    """
    path = Path(folder) / GLOBAL_FILE
    if not path.is_file():
        return None
    try:
        gi = _read(path, None)
    except IndexFormatError:
        return None
    return None if gi is None or _stale(gi, li, cfg) else gi


def global_fingerprint(cfg: GlobalConfig) -> str:
    """The settings global.npz depends on (its config and layout version), hashed."""
    return store.fingerprint({"config": dataclasses.asdict(cfg), "version": STORE_VERSION})


def ensure_global(folder, li, cfg: GlobalConfig = GlobalConfig(), progress: Progress = None,
                  repair: bool = True) -> store.Stage:
    """The global descriptors of ``li`` in ``folder`` (``store.ensure``): loaded when built with
    ``cfg`` for the same image list, else built; a damaged global.npz is rebuilt (repair=True) or
    an IndexFormatError (repair=False)."""
    def build(_old):
        if progress:
            progress(0, 1, "global descriptors (VLAD)")
        gi = build_global(li, cfg, progress)
        save_global(folder, gi)
        return gi, "built"

    return store.ensure(folder, GLOBAL_FILE, global_fingerprint(cfg), store.order_hash(li.images),
                        lambda rec: _read(Path(folder) / GLOBAL_FILE, rec), build, repair, li.cfg.store, FIX)


# --------------------------------------------------------------------------- search
def global_similarities(gi: GlobalIndex, v: np.ndarray) -> np.ndarray:
    """Cosine of query vector v (d_out,) with every gallery row -> (n_images,) float32.

    A zero query (or a zero gallery row) has similarity 0.
    """
    v = np.asarray(v, np.float32)
    if v.shape != (gi.xb.shape[1],):
        raise ValueError(f"v must be ({gi.xb.shape[1]},), got {v.shape}")
    return (gi.xb @ _l2(v)).astype(np.float32)


def global_search(gi: GlobalIndex, v: np.ndarray, top: int | None = None,
                  exclude: int | Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gallery ids by decreasing cosine with v (ties by id) and their similarities.

    Returns ids (M,) int64, sims (M,) float32 with M = min(top, n_images - excluded).
    """
    sims = global_similarities(gi, v)
    ids = np.argsort(-sims.astype(np.float64), kind="stable")
    if exclude is not None:
        drop = [exclude] if np.isscalar(exclude) else list(exclude)
        ids = ids[~np.isin(ids, np.asarray(drop, np.int64))]
    if top is not None:
        ids = ids[:top]
    return ids.astype(np.int64), sims[ids]
