"""The FAISS structure over a gallery's descriptors: which kind for how many vectors, how it is
made empty, trained on a fixed-seed sample and filled chunk by chunk. Rows are vectors (N, 128)."""
from __future__ import annotations

import faiss
import numpy as np

from . import config as C
from .features import DESC_DIM


def index_kind(n_total: int, cfg: C.IndexConfig) -> str:
    """The index kind used for n_total vectors: cfg.kind, or for 'auto' Flat up to exact_max, IVF above."""
    if cfg.kind != "auto":
        return cfg.kind
    return "flat" if n_total <= cfg.exact_max else "ivf"


def make_faiss(n_total: int, cfg: C.IndexConfig, d: int = DESC_DIM) -> tuple[faiss.Index, str]:
    """An empty index for ``n_total`` vectors of dimension d: Flat, IVF-Flat or IVF-SQ8."""
    kind = index_kind(n_total, cfg)
    if kind == "flat":
        return faiss.IndexFlatL2(d), kind
    nlist = cfg.nlist or int(np.clip(4 * np.sqrt(max(n_total, 1)), 64, 16384))
    nlist = max(1, min(nlist, n_total // 39 if n_total >= 39 else 1))
    quant = faiss.IndexFlatL2(d)
    if kind == "ivf":
        ix = faiss.IndexIVFFlat(quant, d, nlist)
    elif kind == "ivfsq8":
        ix = faiss.IndexIVFScalarQuantizer(quant, d, nlist, faiss.ScalarQuantizer.QT_8bit)
    else:
        raise ValueError(f"unknown index kind {cfg.kind!r}")
    ix.own_fields = True
    quant.this.disown()
    ix.nprobe = cfg.nprobe
    return ix, kind


def train_and_add(ix: faiss.Index, xb_chunks, n_total: int, cfg: C.IndexConfig, sample: np.ndarray | None = None):
    """Train (IVF only) on a fixed-seed sample, then add rows chunk by chunk.

    xb_chunks: an iterable (re-iterable if a sample must be drawn) of (n_i, d) float32.
    """
    if not ix.is_trained:
        if sample is None:
            raise ValueError("an IVF index needs a training sample")
        ix.train(np.ascontiguousarray(sample, dtype=np.float32))
    for xb in xb_chunks:
        for s in range(0, len(xb), cfg.add_chunk):
            ix.add(np.ascontiguousarray(xb[s:s + cfg.add_chunk], dtype=np.float32))
