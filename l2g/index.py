"""A FAISS index over every local descriptor of a gallery.

On disk, one folder::

    manifest.json      format version, settings, images (path, sha1, n, size) and ``files``: size +
                       checksum of every file below (written last)
    features/shard-*.npy  keypoints and descriptors, memory-mapped shards (l2g.featstore);
                       features/<sha1>.npz: extraction scratch, deleted once packed into the shards
    faiss.index        the nearest-neighbour index over all descriptors, rows in manifest order
    graph.npz          the gallery similarity graph (l2g.graph), when built
    global.npz         the global descriptors (l2g.globaldesc), when built

Every write goes through ``l2g.store`` (unique temporary file, then rename) and a build holds the
folder's lock. A build is resumable: features on disk (in a shard, or as scratch, by content
hash) are not extracted again (``l2g.gather``, the build's first stage); it migrates a format-2
folder (nothing re-extracted). Opening checks every file against the manifest (IndexFormatError
naming the file and the fix); a build repairs what is damaged and lists it in
``BuildReport.repaired``. Vectors are rows (N x D).
"""
from __future__ import annotations

import time
from pathlib import Path

import faiss
import numpy as np

from . import config as C
from . import featstore, store
from .ann import (  # noqa: F401 (re-exported)
    index_kind,
    make_faiss,
    outgrown,
    read_faiss,
    set_search_params,
    train_and_add,
    train_rows,
    train_rows_in,
    use_mmap,
    write_faiss,
)
from .errors import IndexFormatError
from .featkey import features_key
from .features import Extractor, Features, resolve_device
from .gather import BuildReport, Progress, gather  # noqa: F401 (re-exported: they lived here)
from .lock import read_consistent
from .manifest import (  # noqa: F401
    ImageEntry,
    buildable_manifest,
    entries,
    feature_name,
    read_manifest,
    repair_hint,
    stored_config,
    write_manifest,
)
from .scan import require_readable

# Files of the stages built on top of the index (l2g.store.ensure checks each one's fingerprint and image
# list on load, so a rebuilt index keeps their records and a stale one is rebuilt, not trusted).
STAGE_FILES = ("graph.npz", "global.npz", "vgraph.npz", "confidence.json")


def index_fingerprint(cfg: C.L2GConfig, legacy: bool = False) -> str:
    """The settings faiss.index depends on (l2g.store.fingerprint): another one rebuilds it. Its
    vectors are the feature store's (decoded) descriptors, so the store's codec is one of them; the
    search-time knobs (C.INDEX_RUNTIME_FIELDS) are not (set_search_params applies them on open).
    ``legacy``: the fingerprint of indexes saved before that rule (every IndexConfig field)."""
    index = C.asdict(cfg.index)
    if not legacy:
        index = {k: v for k, v in index.items() if k not in C.INDEX_RUNTIME_FIELDS}
    return store.fingerprint({"features": features_key(cfg.features), "index": index,
                              "desc_dtype": cfg.store.desc_dtype})


class LocalIndex:
    """A loaded gallery index: FAISS index + row-to-image map + the feature store (memory-mapped)."""

    def __init__(self, root: Path, folder: Path, cfg: C.L2GConfig, images: list[ImageEntry],
                 ix: faiss.Index, kind: str, kpts: np.ndarray | None = None, failed=None,
                 fstore: featstore.FeatureStore | None = None):
        self.root = Path(root)       # the gallery folder the paths are relative to
        self.folder = Path(folder)   # the index folder
        self.cfg = cfg
        self.images = images
        self.ix = ix
        self.kind = kind
        self.fstore = fstore         # keypoints and descriptors (None: a shell with ``kpts`` only)
        self._kpts = kpts            # (Ntot, 5) float32 of a shell (benchmarks)
        self.failed = failed or []
        self.files: dict = {}        # manifest records of the shards (features/shard-*.npy)
        counts = np.array([e.n for e in images], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.img_of = np.repeat(np.arange(len(images), dtype=np.int32), counts)  # (Ntot,)
        self._pos = {e.path: i for i, e in enumerate(images)}
        self._order: str | None = None   # store.order_hash(images), once (the manifest's faiss.index 'images')

    # ------------------------------------------------------------------ queries
    @property
    def order(self) -> str:
        """The hash of the image list in row order (``store.order_hash``; the manifest records it for
        faiss.index and every stage): computed once, when the index was saved or opened."""
        if self._order is None:
            self._order = store.order_hash(self.images)
        return self._order

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
        """Keypoints (N, 5) and float32 descriptors (N, D) of gallery image i (from the feature store)."""
        if not 0 <= i < len(self.images):
            raise IndexError(f"image {i} of {len(self.images)}")
        return self.fstore.features(i, self.images[i].size, {"extractor": self.cfg.features.name})

    def keypoints(self, rows) -> np.ndarray:
        """(len(rows), 5) float32 keypoints of global descriptor rows (a slice or an int array)."""
        return self._kpts[rows] if self.fstore is None else self.fstore.keypoints(rows)

    def descriptors(self, rows) -> np.ndarray:
        """(len(rows), D) float32 descriptors of global rows (a slice or an int array)."""
        return self.fstore.descriptors(rows)

    def image_path(self, i: int) -> Path:
        return self.root / self.images[i].path

    def memory_bytes(self) -> dict:
        """Bytes held: FAISS index (serialised size) and row map in memory; the feature store mapped."""
        ixb = int(faiss.serialize_index(self.ix).nbytes)
        ram = ixb + int(self.img_of.nbytes) + int(self.offsets.nbytes)
        return {"faiss": ixb, "img_of": int(self.img_of.nbytes), "offsets": int(self.offsets.nbytes),
                "store_mapped": self.fstore.nbytes if self.fstore else 0, "per_descriptor": ram / max(self.ntotal, 1)}

    # ------------------------------------------------------------------ io
    def save(self, faiss_rec: dict | None = None, carry: dict | None = None) -> None:
        """Write faiss.index (unless ``faiss_rec`` says the file on disk is this index), then the
        manifest, last, recording every file; ``carry``: records of the STAGE_FILES kept."""
        if faiss_rec is None:
            with store.atomic_path(self.folder / "faiss.index") as tmp:
                write_faiss(self.ix, tmp)
            faiss_rec = store.record(self.folder / "faiss.index", self.cfg.store)
        files = {**(carry or {}), **self.files,
                 "faiss.index": {**faiss_rec, "fingerprint": index_fingerprint(self.cfg),
                                 "images": self.order}}
        self.files = files
        write_manifest(self.folder, self.cfg, self.root, self.kind, self.images, self.failed, files)


def load_index(folder: Path, root: Path | None = None, cfg: C.L2GConfig = C.DEFAULT,
               hashed: bool = False) -> LocalIndex:
    """Load an index folder, every file checked against the manifest (faiss.index above
    cfg.store.full_hash_max: size + sampled hash; ``hashed``: sizes only, the caller has just
    hashed every file in full, as ``check`` does). ``root`` overrides the stored gallery folder.
    A build replacing files meanwhile is waited out (l2g.lock.read_consistent: the open is done again
    when manifest.json or faiss.index was replaced during it; IndexBusyError if a build keeps at it)."""
    folder = Path(folder)
    return read_consistent(folder, (store.MANIFEST, "faiss.index"),
                           lambda: _load_index(folder, root, cfg, False if hashed else None))


def _load_index(folder: Path, root, cfg: C.L2GConfig, full: bool | None) -> LocalIndex:
    m = read_manifest(folder)
    cfg = stored_config(m, cfg)
    images = entries(m)
    fix = repair_hint(folder, root or m["root"])
    rec = m["files"]["faiss.index"]
    why = store.verify(folder / "faiss.index", rec, full, cfg.store)
    if why:
        raise IndexFormatError(f"{folder / 'faiss.index'}: {why}. {fix}")
    order = store.order_hash(images)
    if rec.get("images") != order:
        raise IndexFormatError(f"{folder / 'manifest.json'}: its image list does not match faiss.index "
                               f"(re-ordered or edited). {fix}")
    try:
        ix = read_faiss(folder / "faiss.index", mmap=use_mmap(folder / "faiss.index", cfg.index))
    except IndexFormatError as e:
        raise IndexFormatError(f"{e}. {fix}") from None
    if ix.ntotal != m["ntotal"] or ix.ntotal != sum(e.n for e in images):
        raise IndexFormatError(f"index at {folder} is inconsistent ({ix.ntotal} vectors, manifest says "
                               f"{m['ntotal']}). {fix}")
    set_search_params(ix, cfg.index)
    fs = featstore.open_store(folder, images, m["files"], cfg.store, fix, full)
    li = LocalIndex(Path(root or m["root"]), folder, cfg, images, ix, m["kind"], None,
                    [tuple(f) for f in m.get("failed", [])], fs)
    li.files = dict(featstore.shard_records(m["files"]))
    li._order = order
    return li


def build_index(gallery: Path, out: Path, cfg: C.L2GConfig = C.DEFAULT, paths: list[str] | None = None,
                extractor: Extractor | None = None, progress: Progress = None,
                readable_checked: bool = False) -> tuple[LocalIndex, BuildReport]:
    """Index (or update, or repair, the index of) the images of ``gallery`` into folder ``out``.

    ``paths`` (relative to gallery) defaults to every image under it. Images already in ``out`` with the
    same content hash are kept; new ones are appended in sorted order. Unreadable files are listed in the
    report and never stop the build. A damaged manifest, features file or faiss.index is rebuilt and
    listed in ``report.repaired``. Holds the folder's lock
    (cfg.store.lock_timeout). Returns the loaded index and a BuildReport. A gallery none of whose
    images decodes is refused (DatasetError) before anything is made or written (scan.require_readable;
    ``readable_checked``: the caller has just done that check, as open_engine does before its own lock).
    """
    if extractor is None:
        resolve_device(cfg.build.device)       # a device that is not there is refused before the gallery is read
    if not readable_checked:
        require_readable(gallery, paths, cfg.features.max_side)
    with store.folder_lock(out, cfg.store.lock_timeout, cfg.store):
        return _build(Path(gallery), Path(out), cfg, paths, extractor, progress)


def _build(gallery: Path, out: Path, cfg: C.L2GConfig, paths, extractor, progress):
    t0 = time.perf_counter()
    (out / "features").mkdir(parents=True, exist_ok=True)
    store.clean_temporaries(out)
    report = BuildReport(params={"preset": cfg.features.name, "gallery": str(gallery)})
    m = buildable_manifest(gallery, out, cfg, report.repaired)      # a format-2 one is migrated
    old: dict[str, ImageEntry] = {e.path: e for e in entries(m)} if m else {}
    old_files = m["files"] if m else {}
    src, intact = featstore.old_sources(out, m, cfg.store, cfg.features.name, report.repaired)
    g = gather(gallery, out, cfg, paths, extractor, progress, report, old, old_files, src)
    paths, chosen, redone, extracted_kept = g.paths, g.chosen, g.redone, g.extracted_kept
    if progress:
        progress(len(paths), len(paths), "building the nearest-neighbour index")
    t1 = time.perf_counter()
    # Order: images kept from the old index first (old order), then new ones sorted.
    kept = [e for p, e in old.items() if p in chosen and chosen[p] is e]
    new = [chosen[p] for p in paths if p in chosen and chosen[p] is not old.get(p)]
    images = kept + new
    shards = featstore.pack(out, images, src, intact, cfg.store)
    # sizes only: a kept shard was hashed in full by old_sources, a new one as it was written
    fs = featstore.open_store(out, images, shards, cfg.store, full=False)
    faiss_rec = None
    if m:
        rec = old_files["faiss.index"]
        why = store.verify(out / "faiss.index", rec, True, cfg.store)
        if why:
            report.repaired.append(("faiss.index", why))
        else:
            faiss_rec = rec
    same = (index_fingerprint(cfg), index_fingerprint(cfg, legacy=True))
    reuse = (faiss_rec is not None and not redone and faiss_rec.get("fingerprint") in same
             and len(kept) == len(old) and bool(kept))
    li = _assemble(gallery, out, cfg, images, report.failed, reuse, fs)
    li.files = shards
    carry = {k: v for k, v in old_files.items() if k in STAGE_FILES}
    li.save(faiss_rec if reuse and not new else None, carry)
    featstore.drop_packed(out, images, shards)      # scratch and old shards: the manifest no longer needs them
    if m and m["format_version"] != C.FORMAT_VERSION:
        report.migrated = (f"format {m['format_version']} -> {C.FORMAT_VERSION}: {len(kept)} features files packed "
                           f"into {len(shards)} shard(s), {extracted_kept} re-extracted; faiss.index rebuilt from "
                           "the stored descriptors")
        report.repaired.append((store.MANIFEST, report.migrated))
    report.timings = {"extract": t1 - t0, "index": time.perf_counter() - t1, "total": time.perf_counter() - t0}
    return li, report


def add_images(out: Path, paths: list[str], cfg: C.L2GConfig = C.DEFAULT, extractor: Extractor | None = None,
               progress: Progress = None) -> tuple[LocalIndex, BuildReport]:
    """Add ``paths`` (relative to the indexed gallery) to the index in ``out``; existing images are kept."""
    m = read_manifest(out)
    cfg = stored_config(m, cfg)
    have = [e["path"] for e in m["images"]]
    return build_index(Path(m["root"]), out, cfg, have + [p for p in paths if p not in set(have)],
                       extractor, progress)


def _assemble(gallery, out, cfg, images, failed, reuse_prefix: bool, fs: featstore.FeatureStore) -> LocalIndex:
    """Make the FAISS index over ``images`` from the feature store ``fs``; appends to the saved
    (verified) one when only images were added."""
    n_total = int(sum(e.n for e in images))
    ix = None
    if reuse_prefix:
        m = read_manifest(out)
        ix, kind, start = read_faiss(out / "faiss.index"), m["kind"], int(m["ntotal"])  # in RAM: rows are added
        if ix.ntotal != m["ntotal"] or kind != index_kind(n_total, cfg.index) or outgrown(ix, kind, n_total,
                                                                                         cfg.index):
            ix = None
    if ix is None:
        ix, kind = make_faiss(n_total, cfg.index)
        start = 0
        sample = None if ix.is_trained else fs.descriptors(
            train_rows_in([e.path for e in images], [e.n for e in images], cfg.index))
        train_and_add(ix, [], n_total, cfg.index, sample)
    step = max(1, cfg.index.add_chunk)
    train_and_add(ix, (fs.descriptors(slice(a, min(a + step, n_total))) for a in range(start, n_total, step)),
                  n_total, cfg.index)
    set_search_params(ix, cfg.index)     # a reused index keeps the nprobe it was saved with otherwise
    return LocalIndex(gallery, out, cfg, images, ix, kind, None, failed, fs)
