"""The galleries the index and search benchmarks run on, and the work done at each size.

Galleries of <= 100 images are real (random views of the scikit-image photographs, indexed by
``build_index``); larger ones are synthetic RootSIFT-like rows drawn around real descriptors ("visual
words"), written chunk by chunk as one uint8 shard of l2g's feature store (148 B a row: 1.5 GB at 10M rows,
under $TMPDIR; StoreRows), which re-scored index kinds read their candidates from.
Rows are vectors: xb (N, 128), xq (nq, 128).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchs.common import Stage, machine, n_threads, photos, threads, view
from l2g import config as C
from l2g.demo import DEMO_MAX_SIDE
from l2g.features import DESC_DIM, Extractor, Features
from l2g.index import build_index

SIGMA_WORD = 0.04            # gallery row = word + N(0, s^2)/dim: NN distance to unrelated rows ~0.45, as in real data
SIGMA_MATCH = (0.005, 0.03)  # a query's true matches: source row + N(0, s^2), s uniform here (NN 0.05-0.3)
MATCH_FRAC = 0.4             # share of a query's rows copied from its source image; the rest are fresh


def plan(size: int, quick: bool) -> dict:
    """Work done at one gallery size (quick: a smoke run). nprobe 0 = every list.

    At >= 10k images: 1000 rows/image, only the side-by-side candidates (benchs/bench_candidates.py: one
    shared coarse k-means; the kinds list is empty), exact truth (brute force) on 2 queries. ``nlist`` (the
    power of 2 that leaves FAISS's minimum of 39 training rows per list, 4096 for 200k) is what the
    IVF-SQ8 graph benchmark of earlier sessions used.
    """
    real, big, train = size <= 100, size >= 10_000, 50_000 if quick else 200_000
    nprobes = [1, 16, 64] if quick else [8, 16, 32]
    return dict(real=real, per_img=100 if quick else 1000 if big else 2000, q_desc=300 if quick else 2000,
                queries=4 if quick else 5 if big else 12, exact=2 if big else 4 if quick else 12 if real else 8,
                side=160 if quick else DEMO_MAX_SIDE, feats=300 if quick else 2000, nprobes=nprobes,
                plain_nprobes=[C.IndexConfig().nprobe] if big and not quick else nprobes,
                kinds=[] if big else ["flat", "ivf"] + (["ivfsq8"] if quick and not real else []),
                nlist=2 ** int(np.log2(train / 39)) if big else 0, train_sample=train,
                quick=quick, big=big, candidates=not real,   # benchs/bench_candidates.py side by side
                graph_images=40 if big and not quick else 0)  # ... and graph rows timed on the shipped kind


class RawStore:
    """(N, d) float32 rows in a headerless file on disk; reads return fresh arrays, the file is never mapped.

    (A np.memmap was tried: page-fault read-around mapped the whole 5 GB file into RSS after a few
    re-scoring queries at 10k images; one pread per row costs ~0.1 s per 80k rows instead.)
    """

    def __init__(self, path: Path, n: int, d: int = DESC_DIM):
        self.path, self.n, self.d = Path(path), int(n), d

    def __len__(self) -> int:
        return self.n

    def chunk(self, s: int, e: int) -> np.ndarray:
        e = min(e, self.n)
        return np.fromfile(self.path, np.float32, (e - s) * self.d, offset=s * self.d * 4).reshape(-1, self.d)

    def chunks(self, size: int = 200_000):
        return (self.chunk(s, s + size) for s in range(0, self.n, size))

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Row ids (m,) -> (m, d), one pread each (random access, page cache only)."""
        out, nb = np.empty((len(idx), self.d), np.float32), self.d * 4
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for i, r in enumerate(np.asarray(idx).tolist()):
                out[i] = np.frombuffer(os.pread(fd, nb, r * nb), np.float32)
        finally:
            os.close(fd)
        return out

    def take(self, rows: np.ndarray, size: int = 500_000) -> np.ndarray:
        """Sorted row ids (m,) -> (m, d), read in one sequential pass."""
        return np.concatenate([self.chunk(s, s + size)[rows[(rows >= s) & (rows < s + size)] - s]
                               for s in range(0, self.n, size)])

    @classmethod
    def write(cls, path: Path, blocks) -> RawStore:
        n = 0
        with open(path, "wb") as f:
            for xb in blocks:
                f.write(np.ascontiguousarray(xb, np.float32).tobytes())
                n += len(xb)
        return cls(path, n)


class StoreRows:
    """(N, d) rows held as l2g's feature store holds them: one memory-mapped shard of uint8 RootSIFT rows
    (148 B a row with the zero keypoints, l2g.featstore), read back decoded to float32. The index is built
    from these decoded rows, so re-scoring from ``fstore`` is exact. Same reads as RawStore."""

    def __init__(self, path: Path, counts: np.ndarray):
        from l2g.featstore import FeatureStore, Shard

        self.path, self.counts, self.d = Path(path), np.asarray(counts, np.int64), DESC_DIM
        arr = np.load(self.path, mmap_mode="r")
        self.n = len(arr)
        offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.fstore = FeatureStore([Shard(self.path.name, 0, len(self.counts), 0, arr)], offsets)

    def __len__(self) -> int:
        return self.n

    @property
    def nbytes(self) -> int:
        return self.fstore.nbytes

    def chunk(self, s: int, e: int) -> np.ndarray:
        return self.fstore.descriptors(slice(s, min(e, self.n)))

    def chunks(self, size: int = 200_000):
        return (self.chunk(s, s + size) for s in range(0, self.n, size))

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return self.fstore.descriptors(np.asarray(idx, np.int64))

    def take(self, rows: np.ndarray, size: int = 500_000) -> np.ndarray:
        return self.rows(rows)

    @classmethod
    def write(cls, path: Path, blocks, counts: np.ndarray) -> StoreRows:
        """Rows of ``blocks`` ((n_i, d) float32 in [0, 1], counts.sum() in all) encoded as uint8, chunk by chunk."""
        from l2g.featstore import encode, row_dtype

        arr = np.lib.format.open_memmap(path, mode="w+", dtype=row_dtype(np.uint8, DESC_DIM),
                                        shape=(int(np.sum(counts)),))
        r = 0
        for xb in blocks:
            arr["desc"][r:r + len(xb)] = encode(np.clip(xb, 0, 1), np.uint8)
            r += len(xb)
        assert r == len(arr), (r, len(arr))
        arr.flush()
        del arr
        return cls(path, counts)


def _noisy(x: np.ndarray, sigma, rng: np.random.Generator) -> np.ndarray:
    """x (n, d) + N(0, sigma^2), clipped at 0 (RootSIFT rows are non-negative), rows L2-normalised."""
    y = x + (np.asarray(sigma, np.float32) * rng.standard_normal(x.shape, dtype=np.float32))
    np.maximum(y, 0, out=y)
    y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    return y


class Synth:
    """Synthetic gallery: image j = per_img real descriptors (words (W, 128)) + noise; seeded per image."""

    def __init__(self, words: np.ndarray, n_images: int, per_img: int, seed: int = 0):
        self.words, self.n_images, self.per_img, self.seed = words, n_images, per_img, seed

    def image(self, j: int) -> np.ndarray:
        """(per_img, 128) float32 rows of image j."""
        rng = np.random.default_rng([self.seed, j])
        return _noisy(self.words[rng.integers(len(self.words), size=self.per_img)], SIGMA_WORD, rng)

    def query(self, src: int, nq: int, rng: np.random.Generator) -> np.ndarray:
        """(nq, 128): MATCH_FRAC noisy copies of image src's rows, the rest fresh rows."""
        g = self.image(src)
        take = rng.choice(len(g), min(int(MATCH_FRAC * nq), len(g)), replace=False)
        matched = _noisy(g[take], rng.uniform(*SIGMA_MATCH, (len(take), 1)), rng)
        fresh = _noisy(self.words[rng.integers(len(self.words), size=nq - len(take))], SIGMA_WORD, rng)
        return np.concatenate([matched, fresh])


def real_gallery(n: int, p: dict, pics: list, tmp: Path) -> tuple:
    """n random views of the photos, indexed by build_index; query views are new views of the same photos.

    Returns (raw (N, 128) rows, counts (n,) rows per image, queries [Features], positives [set of ids], info).
    """
    rng, gal = np.random.default_rng(1), tmp / "gallery"
    gal.mkdir()
    for i in range(n):
        Image.fromarray(view(pics[i % len(pics)], rng, p["side"])).save(gal / f"v{i:05d}.jpg", quality=90)
    cfg = C.DEFAULT.replace(features__num_features=p["feats"])
    b = {}
    with Stage(b):
        li, rep = build_index(gal, tmp / "index", cfg)
    b.update({f"{k}_s": v for k, v in rep.timings.items()}, kind=li.kind, failed=len(rep.failed),
             images_per_s=li.n_images / rep.timings["total"])
    raw = RawStore.write(tmp / "raw.f32", (li.features(i).desc for i in range(li.n_images)))
    owner = np.array([int(e.path[1:6]) % len(pics) for e in li.images])
    ex, queries, positives = Extractor(cfg.features), [], []
    for i in range(p["queries"]):
        f = ex(view(pics[i % len(pics)], rng, p["side"]))
        if len(f):
            queries.append(f)
            positives.append(set(np.flatnonzero(owner == i % len(pics)).tolist()))
    return raw, np.array([e.n for e in li.images]), queries, positives, {"build_index": b, "view_side": p["side"]}


def synth_gallery(n: int, p: dict, words: np.ndarray, tmp: Path) -> tuple:
    """Synthetic rows written image by image to disk; queries are noisy parts of random gallery images.

    Returns what real_gallery returns.
    """
    syn, g = Synth(words, n, p["per_img"]), {}
    with Stage(g):
        raw = StoreRows.write(tmp / "store.npy", (syn.image(j) for j in range(n)), np.full(n, p["per_img"]))
    rng = np.random.default_rng(2)
    src = rng.choice(n, p["queries"], replace=False)
    queries = [Features(np.zeros((p["q_desc"], 5), np.float32), syn.query(int(s), p["q_desc"], rng), (0, 0))
               for s in src]
    return raw, np.full(n, p["per_img"]), queries, [{int(s)} for s in src], {
        "words": len(words), "rows_per_image": p["per_img"], "sigma_word": SIGMA_WORD, "sigma_match": SIGMA_MATCH,
        "match_frac": MATCH_FRAC, "generate": g, "raw_bytes_on_disk": raw.nbytes, "rows": "uint8 feature store"}


def gallery(size: int, p: dict, pics: list, words: np.ndarray, tmp: Path) -> tuple:
    """The gallery of one size: real views (p['real']) or synthetic rows."""
    return real_gallery(size, p, pics, tmp) if p["real"] else synth_gallery(size, p, words, tmp)


@contextlib.contextmanager
def sized_runs(name: str, quick: bool):
    """What the per-size benchmarks share: a temporary folder (removed afterwards), the report with
    its machine header, the thread limit, the photographs and their visual words.

    Yields (tmp, out, pics, words); ``out['sizes']`` is for the caller to fill."""
    from benchs import bench_extract

    tmp = Path(tempfile.mkdtemp(prefix=f"l2g-bench-{name}-"))
    out = {"machine": machine(n_threads()), "sizes": {}}
    try:
        with threads(n_threads()):
            pics = photos()
            yield tmp, out, pics, bench_extract.run(quick, pics)[1]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
