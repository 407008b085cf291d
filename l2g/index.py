"""A FAISS index over every local descriptor of a gallery.

On disk, one folder::

    manifest.json      format version, extractor + index settings, images (path, sha1, n, size)
    features/<sha1>.npz  per-image keypoints (N, 5) and descriptors (N, 128); written as extracted
    faiss.index        the nearest-neighbour index over all descriptors, rows in manifest order
    graph.npz          the gallery similarity graph (l2g.graph), when built

Every write is atomic (temporary file, then rename). A build is resumable:
features already on disk (by content hash) are not extracted again, so an
interrupted build loses nothing that was finished. Vectors are rows (N x D).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import faiss
import numpy as np

from . import config as C
from .features import DESC_DIM, Extractor, Features, load_features, save_features
from .errors import ImageError, IndexFormatError
from .images import file_sha1, load_image

Progress = Optional[Callable[[int, int, str], None]]


@dataclass
class ImageEntry:
    path: str          # relative to the gallery root (POSIX)
    sha1: str
    n: int             # number of descriptors
    size: tuple        # (W, H) of the image the features were computed on
    scale: float = 1.0  # loaded size / original size


@dataclass
class BuildReport:
    added: list = field(default_factory=list)      # relative paths newly indexed
    reused: list = field(default_factory=list)     # features found on disk (resumed)
    skipped: list = field(default_factory=list)    # already indexed, unchanged
    failed: list = field(default_factory=list)     # (relative path, reason)
    empty: list = field(default_factory=list)      # readable but 0 keypoints
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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


class LocalIndex:
    """A loaded gallery index: FAISS index + row-to-image map + keypoints."""

    def __init__(self, root: Path, folder: Path, cfg: C.L2GConfig, images: list[ImageEntry],
                 ix: faiss.Index, kind: str, kpts: np.ndarray, failed=None):
        self.root = Path(root)       # the gallery folder the paths are relative to
        self.folder = Path(folder)   # the index folder
        self.cfg = cfg
        self.images = images
        self.ix = ix
        self.kind = kind
        self.kpts = kpts             # (Ntot, 5) float32
        self.failed = failed or []
        counts = np.array([e.n for e in images], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.img_of = np.repeat(np.arange(len(images), dtype=np.int32), counts)  # (Ntot,)
        self._pos = {e.path: i for i, e in enumerate(images)}

    # ------------------------------------------------------------------ queries
    @property
    def n_images(self) -> int:
        return len(self.images)

    @property
    def ntotal(self) -> int:
        return int(self.offsets[-1])

    @property
    def paths(self) -> list[str]:
        return [e.path for e in self.images]

    def id_of(self, path: str) -> int | None:
        return self._pos.get(path)

    def features(self, i: int) -> Features:
        """Keypoints and descriptors of gallery image i (read from the feature store)."""
        return load_features(self.folder / "features" / f"{self.images[i].sha1}.npz")

    def image_path(self, i: int) -> Path:
        return self.root / self.images[i].path

    def memory_bytes(self) -> dict:
        """Bytes held in memory: FAISS index (serialised size), keypoints, row map."""
        ixb = int(faiss.serialize_index(self.ix).nbytes)
        return {"faiss": ixb, "kpts": int(self.kpts.nbytes), "img_of": int(self.img_of.nbytes),
                "per_descriptor": (ixb + self.kpts.nbytes + self.img_of.nbytes) / max(self.ntotal, 1)}

    # ------------------------------------------------------------------ io
    def save(self) -> None:
        """Write faiss.index and manifest.json atomically (manifest last)."""
        tmp = self.folder / "faiss.index.tmp"
        faiss.write_index(self.ix, str(tmp))
        os.replace(tmp, self.folder / "faiss.index")
        manifest = {
            "format_version": C.FORMAT_VERSION,
            "preset": self.cfg.features.name,
            "root": str(self.root),
            "kind": self.kind,
            "features": C.asdict(self.cfg.features),
            "index": C.asdict(self.cfg.index),
            "ntotal": self.ntotal,
            "images": [{"path": e.path, "sha1": e.sha1, "n": e.n, "size": list(e.size), "scale": e.scale}
                       for e in self.images],
            "failed": [list(f) for f in self.failed],
        }
        _atomic_write_text(self.folder / "manifest.json", json.dumps(manifest, indent=1))


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise IndexFormatError(f"no index at {folder} (manifest.json missing); build one with `python -m l2g index`")
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise IndexFormatError(f"damaged manifest in {folder}: {e}") from None
    if m.get("format_version") != C.FORMAT_VERSION:
        raise IndexFormatError(f"index at {folder} has format {m.get('format_version')}, this l2g reads "
                          f"{C.FORMAT_VERSION}: rebuild it")
    return m


def load_index(folder: Path, root: Path | None = None, cfg: C.L2GConfig = C.DEFAULT) -> LocalIndex:
    """Load an index folder. ``root`` overrides the gallery folder stored in the manifest."""
    folder = Path(folder)
    m = read_manifest(folder)
    cfg = cfg.replace(features=C.FeatureConfig(**m["features"]), index=C.IndexConfig(**m["index"]))
    images = [ImageEntry(e["path"], e["sha1"], e["n"], tuple(e["size"]), e.get("scale", 1.0))
              for e in m["images"]]
    if not (folder / "faiss.index").is_file():
        raise IndexFormatError(f"index at {folder} has no faiss.index; rebuild it")
    ix = faiss.read_index(str(folder / "faiss.index"))
    if ix.ntotal != m["ntotal"]:
        raise IndexFormatError(f"index at {folder} is inconsistent ({ix.ntotal} vectors, manifest says "
                          f"{m['ntotal']}); rebuild it")
    if hasattr(ix, "nprobe"):
        ix.nprobe = cfg.index.nprobe
    kpts = [load_features(folder / "features" / f"{e.sha1}.npz").kpts for e in images]
    kpts = np.concatenate(kpts) if kpts else np.zeros((0, 5), np.float32)
    return LocalIndex(Path(root or m["root"]), folder, cfg, images, ix, m["kind"], kpts,
                      [tuple(f) for f in m.get("failed", [])])


def build_index(gallery: Path, out: Path, cfg: C.L2GConfig = C.DEFAULT, paths: list[str] | None = None,
                extractor: Extractor | None = None, progress: Progress = None) -> tuple[LocalIndex, BuildReport]:
    """Index (or update the index of) the images of ``gallery`` into folder ``out``.

    ``paths`` (relative to gallery) defaults to every image under it. Images
    already in ``out`` with the same content hash are kept; new ones are
    appended in sorted order. Unreadable files are listed in the report and
    never stop the build. Returns the loaded index and a BuildReport.
    """
    from .datasets import LINK_OUTSIDE, escapes, scan_gallery

    t0 = time.perf_counter()
    gallery, out = Path(gallery), Path(out)
    (out / "features").mkdir(parents=True, exist_ok=True)
    old: dict[str, ImageEntry] = {}
    if (out / "manifest.json").is_file():
        m = read_manifest(out)
        if m["features"] != C.asdict(cfg.features):
            raise IndexFormatError(f"index at {out} was built with {m['preset']}, not {cfg.features.name}; "
                              "use another --out folder")
        old = {e["path"]: ImageEntry(e["path"], e["sha1"], e["n"], tuple(e["size"]), e.get("scale", 1.0))
               for e in m["images"]}
    scan = scan_gallery(gallery) if paths is None else None
    paths = sorted(paths if paths is not None else scan.images)
    report = BuildReport(params={"preset": cfg.features.name, "gallery": str(gallery)})
    report.failed.extend(scan.refused if scan else [])      # file symlinks leading outside the gallery
    extractor = extractor or Extractor(cfg.features)
    entries: dict[str, ImageEntry] = {}
    for i, rel in enumerate(paths):
        if progress:
            progress(i, len(paths), rel)
        p = gallery / rel
        if escapes(gallery, rel):
            report.failed.append((rel, LINK_OUTSIDE))
            continue
        try:
            sha = file_sha1(p)
        except (OSError, ImageError) as e:
            report.failed.append((rel, f"cannot read: {e}"))
            continue
        if rel in old and old[rel].sha1 == sha:
            entries[rel] = old[rel]
            report.skipped.append(rel)
            continue
        fpath = out / "features" / f"{sha}.npz"
        try:
            img = load_image(p, max_side=cfg.features.max_side)
        except ImageError as e:
            report.failed.append((rel, str(e)))
            continue
        if fpath.is_file():
            f = load_features(fpath)
            report.reused.append(rel)
        else:
            f = extractor(img.rgb)
            save_features(fpath, f)
            report.added.append(rel)
        if len(f) == 0:
            report.empty.append(rel)
        entries[rel] = ImageEntry(rel, sha, len(f), tuple(f.size), float(img.scale))
    if progress:
        progress(len(paths), len(paths), "building the nearest-neighbour index")
    t1 = time.perf_counter()
    # Order: images kept from the old index first (old order), then new ones sorted.
    kept = [e for p, e in old.items() if p in entries and entries[p] is e]
    new = [entries[p] for p in paths if p in entries and entries[p] is not old.get(p)]
    images = kept + new
    same_index = bool(old) and m["index"] == C.asdict(cfg.index)
    li = _assemble(gallery, out, cfg, images, report.failed,
                   reuse_prefix=same_index and len(kept) == len(old) and bool(kept))
    li.save()
    report.timings = {"extract": t1 - t0, "index": time.perf_counter() - t1, "total": time.perf_counter() - t0}
    return li, report


def add_images(out: Path, paths: list[str], cfg: C.L2GConfig = C.DEFAULT, extractor: Extractor | None = None,
               progress: Progress = None) -> tuple[LocalIndex, BuildReport]:
    """Add ``paths`` (relative to the indexed gallery) to the index in ``out``; existing images are kept."""
    m = read_manifest(out)
    cfg = cfg.replace(features=C.FeatureConfig(**m["features"]), index=C.IndexConfig(**m["index"]))
    have = [e["path"] for e in m["images"]]
    return build_index(Path(m["root"]), out, cfg, have + [p for p in paths if p not in set(have)],
                       extractor, progress)


def _assemble(gallery, out, cfg, images, failed, reuse_prefix: bool) -> LocalIndex:
    """Make the FAISS index over ``images``; appends to the saved one when only images were added."""
    n_total = int(sum(e.n for e in images))
    feats = lambda es: (load_features(out / "features" / f"{e.sha1}.npz") for e in es)  # noqa: E731
    ix = None
    if reuse_prefix and (out / "faiss.index").is_file():
        ix = faiss.read_index(str(out / "faiss.index"))
        m = read_manifest(out)
        kind = m["kind"]
        start = len(m["images"])
        if (ix.ntotal != m["ntotal"] or kind != index_kind(n_total, cfg.index)
                or [e["path"] for e in m["images"]] != [e.path for e in images[:start]]):
            ix = None
    if ix is None:
        ix, kind = make_faiss(n_total, cfg.index)
        start = 0
        sample = None
        if not ix.is_trained:
            rng = np.random.default_rng(cfg.index.seed)
            all_rows = np.concatenate([f.desc for f in feats(images)])
            take = rng.choice(len(all_rows), min(cfg.index.train_sample, len(all_rows)), replace=False)
            sample = all_rows[np.sort(take)]
            del all_rows
        train_and_add(ix, [], n_total, cfg.index, sample)
    train_and_add(ix, (f.desc for f in feats(images[start:])), n_total, cfg.index)
    if hasattr(ix, "nprobe"):
        ix.nprobe = cfg.index.nprobe
    kp = [f.kpts for f in feats(images)]
    kpts = np.concatenate(kp) if kp else np.zeros((0, 5), np.float32)
    return LocalIndex(gallery, out, cfg, images, ix, kind, kpts, failed)
