"""The FAISS structure over a gallery's descriptors: which kind for how many vectors, how it is
made empty, trained on a fixed-seed sample, filled chunk by chunk, written and read back (memory-mapped
when large). Rows are vectors (N, 128).

Every kind is an ``index_factory`` string (KINDS); IVF kinds take l2g's nlist rule (nlist_for).
"""
from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np

from . import config as C
from .errors import IndexFormatError
from .features import DESC_DIM
from .scan import path_order

# kind -> index_factory template ({nlist} is filled in by nlist_for); bytes/descriptor are the codes + 8 B ids
KINDS = {
    "flat": "Flat",                         # exact, 512 B
    "ivf": "IVF{nlist},Flat",               # 520 B, flat coarse quantizer
    "ivfsq8": "IVF{nlist},SQ8",             # 136 B
    "ivfhnsw": "IVF{nlist}_HNSW32,Flat",    # 520 B, HNSW coarse quantizer (many lists, cheap assignment)
    "ivfhnsw_sq8": "IVF{nlist}_HNSW32,SQ8",  # 136 B
    "ivfhnsw_sq6": "IVF{nlist}_HNSW32,SQ6",  # 104 B
    # fast-scan PQ (4-bit codes, SIMD scan); the kNN re-scores rescore_factor*k candidates exactly (rescore)
    "ivfpq64_rs": "IVF{nlist}_HNSW32,PQ64x4fs",    # 32 B codes + 8 B ids
    "ivfpq128_rs": "IVF{nlist}_HNSW32,PQ128x4fs",  # 64 B codes + 8 B ids
    # 4-bit scalar codes: as compact, and its lists memory-map (FAISS reads fast-scan lists into memory)
    "ivfsq4_rs": "IVF{nlist}_HNSW32,SQ4",          # 64 B codes + 8 B ids
}
HNSW_QUANTIZER = ("ivfhnsw", "ivfhnsw_sq8", "ivfhnsw_sq6", "ivfpq64_rs", "ivfpq128_rs", "ivfsq4_rs")
RESCORED = ("ivfpq64_rs", "ivfpq128_rs", "ivfsq4_rs")   # kinds whose candidates are re-scored from the feature store


def index_kind(n_total: int, cfg: C.IndexConfig) -> str:
    """The index kind used for n_total vectors: cfg.kind, or for 'auto' Flat up to exact_max, cfg.auto_kind
    up to compact_min, cfg.compact_kind above (compact_min 0: never)."""
    if cfg.kind != "auto":
        if cfg.kind not in KINDS:
            raise ValueError(f"unknown index kind {cfg.kind!r}; expected 'auto' or one of {sorted(KINDS)}")
        return cfg.kind
    if n_total <= cfg.exact_max:
        return "flat"
    return cfg.compact_kind if 0 < cfg.compact_min < n_total else cfg.auto_kind


def train_rows(n_total: int, cfg: C.IndexConfig) -> np.ndarray:
    """The fixed-seed training sample of an IVF index over n_total rows: sorted row ids (m,), m =
    min(cfg.train_sample, n_total), drawn without replacement with cfg.seed."""
    rng = np.random.default_rng(cfg.seed)
    return np.sort(rng.choice(n_total, min(cfg.train_sample, n_total), replace=False))


def train_rows_in(paths: list, counts: np.ndarray, cfg: C.IndexConfig) -> np.ndarray:
    """train_rows drawn over the images in path order: the rows (m,) of a store that holds images of ``paths``
    with ``counts`` descriptors each, in that order, given in path order. The sample, and so the trained
    quantiser, depend on the images, not on the order they were indexed in."""
    counts = np.asarray(counts, np.int64)
    order = path_order(paths)
    start = np.concatenate([[0], np.cumsum(counts)])[:-1]
    c_start = np.concatenate([[0], np.cumsum(counts[order])])
    pos = train_rows(int(counts.sum()), cfg)
    at = np.searchsorted(c_start, pos, side="right") - 1
    return start[order[at]] + (pos - c_start[at])


def outgrown(ix: faiss.Index, kind: str, n_total: int, cfg: C.IndexConfig) -> bool:
    """Whether an IVF index trained for fewer vectors should be retrained for n_total: the nlist rule asks
    for at least cfg.retrain_growth times its lists (never with a fixed cfg.nlist; a flat index never)."""
    ivf = faiss.try_extract_index_ivf(ix)
    if ivf is None or cfg.nlist or cfg.retrain_growth <= 0:
        return False
    return nlist_for(n_total, kind, cfg) >= cfg.retrain_growth * ivf.nlist


def nlist_for(n_total: int, kind: str, cfg: C.IndexConfig) -> int:
    """IVF lists for n_total vectors: cfg.nlist, else about 4 sqrt(N) (flat coarse quantizer) or
    cfg.hnsw_lists_per_sqrt sqrt(N) (HNSW coarse quantizer), clamped to [64, cfg.max_nlist] and to at
    least 39 vectors per list (FAISS's k-means minimum)."""
    per = cfg.hnsw_lists_per_sqrt if kind in HNSW_QUANTIZER else 4
    nlist = cfg.nlist or int(np.clip(per * np.sqrt(max(n_total, 1)), 64, cfg.max_nlist))
    return max(1, min(nlist, n_total // 39 if n_total >= 39 else 1))


def factory_key(kind: str, n_total: int, cfg: C.IndexConfig) -> str:
    """The index_factory string l2g builds for ``kind`` over n_total vectors, e.g. 'IVF5656,Flat'."""
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {sorted(KINDS)}")
    return KINDS[kind].format(nlist=nlist_for(n_total, kind, cfg))


def set_search_params(ix: faiss.Index, cfg: C.IndexConfig) -> faiss.Index:
    """Set nprobe (IVF; a fast-scan one, as the RESCORED kinds are: cfg.rescore_nprobe) and the HNSW
    coarse quantizer's efSearch from cfg; returns ix."""
    ivf = faiss.try_extract_index_ivf(ix)
    if ivf is not None:
        ivf.nprobe = cfg.rescore_nprobe if _rescored(ivf) else cfg.nprobe
        q = faiss.downcast_index(ivf.quantizer)
        if isinstance(q, faiss.IndexHNSW):
            q.hnsw.efSearch = max(cfg.hnsw_ef, ivf.nprobe)
    return ix


def make_faiss(n_total: int, cfg: C.IndexConfig, d: int = DESC_DIM) -> tuple[faiss.Index, str]:
    """An empty index for ``n_total`` vectors of dimension d (index_kind picks the kind) -> (index, kind)."""
    kind = index_kind(n_total, cfg)
    ix = faiss.index_factory(d, factory_key(kind, n_total, cfg), faiss.METRIC_L2)
    return set_search_params(ix, cfg), kind


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


def rescore(xq: np.ndarray, I: np.ndarray, rows, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest of each query among its candidates.

    xq (nq, d) float32; I (nq, K) int64 candidate rows (-1: none); rows(ids (m,)) -> (m, d) float32 the
    indexed vectors (the feature store's). Returns D (nq, k) squared L2 (computed directly, by FAISS's
    fvec_L2sqr_by_idx) and I (nq, k), nearest first, ties by row id, -1 / inf where fewer than k
    candidates. Done in chunks of ``chunk`` queries.
    """
    xq = np.ascontiguousarray(xq, np.float32)
    nq, K = I.shape
    k = min(k, K)
    Do, Io = np.full((nq, k), np.inf, np.float32), np.full((nq, k), -1, np.int64)
    for s in range(0, nq, chunk):
        Ic = I[s:s + chunk]
        n, ok = len(Ic), Ic >= 0
        X = np.ascontiguousarray(rows(np.where(ok, Ic, 0).reshape(-1)), np.float32)    # (n K, d)
        d2 = np.empty((n, K), np.float32)
        at = np.arange(n * K, dtype=np.int64).reshape(n, K)
        faiss.fvec_L2sqr_by_idx(faiss.swig_ptr(d2), faiss.swig_ptr(xq[s:s + n]), faiss.swig_ptr(X),
                                faiss.swig_ptr(at), xq.shape[1], n, K)
        d2[~ok] = np.inf
        o = np.lexsort((Ic, d2), axis=1)[:, :k]
        Do[s:s + n], Io[s:s + n] = np.take_along_axis(d2, o, 1), np.take_along_axis(Ic, o, 1)
    Io[~np.isfinite(Do)] = -1
    return Do, Io


def search(ix: faiss.Index, kind: str, xq: np.ndarray, k: int, cfg: C.IndexConfig, rows=None):
    """k nearest rows of xq (nq, d) -> D (nq, k) squared L2, I (nq, k). A RESCORED kind takes
    cfg.rescore_factor * k candidates from ix and re-scores them exactly with ``rows`` (see rescore)."""
    if kind not in RESCORED:
        return ix.search(xq, k)
    if rows is None:
        raise ValueError(f"a {kind!r} index re-scores its candidates from the feature store, and none was given")
    _, I = ix.search(xq, min(max(1, cfg.rescore_factor) * k, ix.ntotal))
    return rescore(xq, I, rows, k)


def write_faiss(ix: faiss.Index, path) -> None:
    """Serialise ix to ``path`` (callers write to a temporary path and rename: l2g.store.atomic_path)."""
    faiss.write_index(ix, str(path))


def use_mmap(path, cfg: C.IndexConfig) -> bool:
    """Whether faiss.index at ``path`` is memory-mapped rather than read: cfg.mmap_min_mb < 0 never,
    else when the file has at least cfg.mmap_min_mb MiB (0: always)."""
    if cfg.mmap_min_mb < 0:
        return False
    try:
        return os.path.getsize(path) >= cfg.mmap_min_mb * 2**20
    except OSError:
        return False


def _mmap_flags(head: bytes) -> int:
    """FAISS read flags that memory-map the file at ``path``: IVF inverted lists as read-only on-disk lists
    (``IO_FLAG_MMAP``: it checks every list against the file's end, where ``IO_FLAG_MMAP_IFC`` let a file
    1-7 bytes short open), every other kind's codes with ``IO_FLAG_MMAP_IFC``. FAISS reads a fast-scan
    IVF's block lists (ivfpq*_rs) into memory even so: ~76 B per descriptor resident (ivfsq4_rs maps).
    ``head``: the file's first 4 bytes (its FAISS fourcc)."""
    if head[:2] in (b"Iw", b"Iv"):       # the fourcc of every IndexIVF* (IwFl, IwSq, IvPQ, ...)
        return faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
    return faiss.IO_FLAG_MMAP_IFC


def _rescored(ivf) -> bool:
    """Does an IVF index hold the approximate codes of a RESCORED kind (fast-scan PQ, 4-bit SQ)?"""
    ivf = faiss.downcast_index(ivf)
    return isinstance(ivf, faiss.IndexIVFFastScan) or (
        isinstance(ivf, faiss.IndexIVFScalarQuantizer) and ivf.sq.qtype == faiss.ScalarQuantizer.QT_4bit)


def available_mb() -> float | None:
    """MiB of memory the kernel can give this process now (/proc/meminfo MemAvailable); None elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def _check_fits(path: Path, head: bytes) -> None:
    """A fast-scan IVF file (fourcc ``head`` IwPf: FAISS reads its block lists whole, even memory-mapped)
    larger than the memory available: refused with the fix, rather than the process killed reading it."""
    if head != b"IwPf":
        return
    size, free = path.stat().st_size / 2**20, available_mb()
    if free is not None and size > free:
        raise IndexFormatError(
            f"{path}: its {size:,.0f} MiB of fast-scan lists do not fit in the {free:,.0f} MiB of memory "
            "available (FAISS reads them whole); free memory, or rebuild the index with --index-kind "
            "ivfsq4_rs, whose lists stay on disk (memory-mapped)")


def read_faiss(path, mmap: bool = False) -> faiss.Index:
    """Read a FAISS index from ``path``. mmap=True maps its vectors / inverted lists from the file
    (they stay in the page cache, so an index larger than RAM opens; the index is then read-only).
    A missing, truncated or damaged file raises IndexFormatError."""
    path = Path(path)
    if not path.is_file():
        raise IndexFormatError(f"{path}: missing")
    with open(path, "rb") as f:
        head = f.read(4)
    _check_fits(path, head)
    try:
        return faiss.read_index(str(path), _mmap_flags(head) if mmap else 0)
    except RuntimeError as e:
        lines = [s for s in str(e).splitlines() if s.strip()]
        raise IndexFormatError(f"{path}: unreadable ({lines[-1] if lines else type(e).__name__})") from None
