"""The gallery's global descriptors (VLAD of RootSIFT, PCA-whitened; the maths is ``l2g.vlad``):
built from a local index, saved as ``global.npz`` in its folder (atomically, recorded in the
manifest), loaded when their fingerprint matches (``ensure_global``), and searched by cosine.
Rows are vectors: the gallery's global descriptors xb (n_images, d_out); cosine is a dot product.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import store
from .config import GlobalConfig
from .errors import IndexFormatError
from .scan import path_order
from .vlad import (  # noqa: F401 (re-exported: the global descriptor's maths)
    PCA_MAX_IMAGES,
    VladModel,
    _l2,
    fit_whitening,
    train_vlad,
    vlad,
    vlad_raw,
    whiten,
)

GLOBAL_FILE = "global.npz"
FIX = ("Re-run `python -m l2g index` on the gallery (or `python -m l2g check DIR --repair`): it rebuilds "
       "the global descriptors.")
STORE_VERSION = 3          # bump when the layout of global.npz (or how it is computed) changes; 2: damped whitening;
#                            3: images in path order (build-order independent)

Progress = Callable[[int, int, str], None] | None


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

    @functools.cached_property
    def empty(self) -> np.ndarray:
        """(n_images,) bool: rows of images without descriptors (zero), found once, not per query."""
        return ~self.xb.any(axis=1)

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
    images without descriptors left out) and returns the final xb. Images are
    visited in path order for the sample and the fit, so the descriptors depend
    on the set of images, not on the order they were indexed in (an index built
    in two steps has the global descriptors of one built at once). Raises
    ValueError when the gallery holds no descriptors.
    """
    t0 = time.perf_counter()
    n = li.n_images
    counts = np.array([e.n for e in li.images], np.int64)
    if n == 0 or counts.sum() == 0:
        raise ValueError("the gallery has no descriptors: nothing to train a VLAD codebook on")
    order = path_order(li.paths)        # build-order independent
    picks = _sample_rows(counts[order], cfg.train_sample, cfg.seed)
    sample = []
    for at, i in enumerate(order):
        if progress:
            progress(at, 2 * n, "sampling descriptors for the VLAD codebook")
        if len(picks[at]):
            sample.append(li.features(int(i)).desc[picks[at]])
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
    nonzero = raw.any(axis=1)
    fit_rows = order[nonzero[order]]
    if len(fit_rows) > PCA_MAX_IMAGES:
        keep = np.sort(np.random.default_rng(cfg.seed).choice(len(fit_rows), PCA_MAX_IMAGES, replace=False))
        fit_rows = fit_rows[keep]
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

    return store.ensure(folder, GLOBAL_FILE, global_fingerprint(cfg), li.order,
                        lambda rec: _read(Path(folder) / GLOBAL_FILE, rec), build, repair, li.cfg.store, FIX)


# --------------------------------------------------------------------------- search
def global_similarities(gi: GlobalIndex, v: np.ndarray) -> np.ndarray:
    """Cosine of query vector v (d_out,) with every gallery row -> (n_images,) float32.

    A zero query has similarity 0 with every row. A zero gallery row (an image without descriptors)
    has -1, the least cosine: no evidence must not rank above a real image whose cosine is negative.
    """
    v = np.asarray(v, np.float32)
    if v.shape != (gi.xb.shape[1],):
        raise ValueError(f"v must be ({gi.xb.shape[1]},), got {v.shape}")
    sims = (gi.xb @ _l2(v)).astype(np.float32)
    if v.any():
        sims[gi.empty] = -1.0
    return sims


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
