"""The feature store: the keypoints and descriptors of every gallery image, in a few memory-mapped shards.

In an index folder's ``features/``::

    shard-<k>-<hash>.npy   one structured .npy per StoreConfig.shard_images images, rows in manifest
                           order: {kpts: (5,) float32, desc: (D,) uint8 | float16}; opened with
                           ``np.load(mmap_mode='r')``, so opening reads no descriptor
    <sha1>.npz             extraction scratch (l2g.features.save_features): one per image, written
                           as it is extracted (the resume unit of a killed build); packed into the
                           shards by the build and deleted once the shards and the manifest are durable

Descriptors are stored as ``round(255 x)`` uint8 when every value of the shard lies in [0, 1]
(RootSIFT), as float16 otherwise (StoreConfig.desc_dtype = 'float16': always); ``decode`` gives
float32 back. The layout is a function of the image list alone (``layout``: consecutive runs of
``shard_images`` images, each named by the hash of its images), so adding images writes the last
partial shard anew plus new ones, a shard whose images did not change is kept as it is, and a
repaired or migrated folder has the same files as a clean build. The manifest records each shard
(``store.record`` plus ``span``: its images [a, b), and ``images``: their order hash).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import store
from .config import FORMAT_VERSION, StoreConfig
from .errors import IndexFormatError
from .features import Features, load_features
from .manifest import entries

PREFIX = "features/shard-"
Loader = Callable[[], Features]


def row_dtype(desc: str | np.dtype, dim: int) -> np.dtype:
    """The structured row of a shard: keypoints (5,) float32 and a descriptor (dim,) of ``desc``."""
    return np.dtype([("kpts", "<f4", (5,)), ("desc", np.dtype(desc).newbyteorder("<"), (dim,))])


def encode(desc: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """(N, D) float32 descriptors as ``dtype`` (uint8: round(255 x), values in [0, 1])."""
    if np.dtype(dtype) == np.uint8:
        return np.rint(np.asarray(desc, np.float32) * np.float32(255)).astype(np.uint8)
    return np.asarray(desc).astype(dtype)


def decode(stored: np.ndarray) -> np.ndarray:
    """Stored (N, D) descriptors as float32 (a copy)."""
    if stored.dtype == np.uint8:
        return stored.astype(np.float32) / np.float32(255)
    return stored.astype(np.float32)


def layout(images: Sequence, per_shard: int, codec: str) -> list[tuple[str, int, int]]:
    """(name, a, b) of each shard over ``images`` (entries with .path, .sha1, .n): images [a, b)."""
    per = max(1, int(per_shard))
    out = []
    for k, a in enumerate(range(0, len(images), per)):
        b = min(a + per, len(images))
        out.append((f"{PREFIX}{k:05d}-{store.fingerprint([store.order_hash(images[a:b]), codec])[:10]}.npy", a, b))
    return out


@dataclass
class Shard:
    name: str                   # 'features/shard-....npy', relative to the index folder
    a: int                      # first image
    b: int                      # one past the last image
    r0: int                     # first global row
    arr: np.ndarray             # (rows,) structured, memory-mapped


class FeatureStore:
    """Read-only view of the shards of an index: rows are global descriptor ids (manifest order)."""

    def __init__(self, shards: list[Shard], offsets: np.ndarray):
        self.shards = shards
        self.offsets = offsets                            # (n_images + 1,) int64
        self._starts = np.array([s.r0 for s in shards], np.int64)

    @property
    def nbytes(self) -> int:
        """Bytes of the shards' rows (mapped, not read)."""
        return int(sum(s.arr.nbytes for s in self.shards))

    def _field(self, rows, field: str) -> np.ndarray:
        """``field`` of global ``rows`` (a slice or an int array); descriptors decoded to float32."""
        dim = self.shards[0].arr.dtype["desc"].shape[0] if self.shards else 0
        width = 5 if field == "kpts" else dim
        if isinstance(rows, slice):
            start, stop, step = rows.indices(int(self.offsets[-1]))
            if step != 1:
                return self._field(np.arange(start, stop, step), field)
            parts = [sh.arr[field][max(start - sh.r0, 0):stop - sh.r0] for sh in self.shards
                     if sh.r0 < stop and start < sh.r0 + len(sh.arr)]
        else:      # gathered shard by shard into one array of the stored type, decoded once
            idx = np.asarray(rows, np.int64).reshape(-1)
            if len(idx) and self.shards:
                which = np.searchsorted(self._starts, idx, side="right") - 1
                if len(self.shards) == 1:
                    out = self.shards[0].arr[field][idx - self.shards[0].r0]
                else:              # sorted by shard once, then one slice of the order per shard
                    out = np.empty((len(idx), width), self.shards[0].arr.dtype[field].base)
                    order = np.argsort(which, kind="stable")
                    bounds = np.searchsorted(which[order], np.arange(len(self.shards) + 1))
                    for s in np.flatnonzero(np.diff(bounds)):
                        at = order[bounds[s]:bounds[s + 1]]
                        sh = self.shards[s]
                        out[at] = sh.arr[field][idx[at] - sh.r0]
                return np.ascontiguousarray(out if field == "kpts" else decode(out), np.float32)
            parts = []
        if not parts:
            return np.zeros((0, width), np.float32)
        out = [np.asarray(p, np.float32) if field == "kpts" else decode(np.asarray(p)) for p in parts]
        return np.ascontiguousarray(np.concatenate(out) if len(out) > 1 else out[0], np.float32)

    def keypoints(self, rows) -> np.ndarray:
        """(len(rows), 5) float32 keypoints of global rows."""
        return self._field(rows, "kpts")

    def descriptors(self, rows) -> np.ndarray:
        """(len(rows), D) float32 descriptors of global rows."""
        return self._field(rows, "desc")

    def features(self, i: int, size, params: dict | None = None) -> Features:
        """Keypoints and float32 descriptors of image i."""
        rows = slice(int(self.offsets[i]), int(self.offsets[i + 1]))
        return Features(self.keypoints(rows), self.descriptors(rows), tuple(size), dict(params or {}))


def shard_records(files: dict) -> list[tuple[str, dict]]:
    """The manifest's shard records, in image order."""
    return sorted(((k, v) for k, v in files.items() if k.startswith(PREFIX)), key=lambda kv: kv[1].get("span", [0])[0])


def open_store(folder: Path, images: Sequence, files: dict, cfg: StoreConfig = StoreConfig(),
               fix: str = "", full: bool | None = None, damaged: list | None = None) -> FeatureStore:
    """Map the shards recorded in ``files`` over ``images``, each checked against its record
    (``store.verify``: full hash up to cfg.full_hash_max, size + sampled hash above; full=True:
    always in full). IndexFormatError naming the shard (and ``fix``) on any mismatch; with a
    ``damaged`` list, (shard, why) is appended there instead and the shard left out (a build's
    view of what it can keep: then the store may not cover every image)."""
    folder = Path(folder)
    counts = np.array([e.n for e in images], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    shards, at = [], 0
    for name, rec in shard_records(files):
        a, b = (list(rec.get("span") or [-1, -1]) + [-1, -1])[:2]
        bad = store.verify(folder / name, rec, full, cfg)
        if not bad and (a != at or not a < b <= len(images) or rec.get("images") != store.order_hash(images[a:b])):
            bad = f"recorded for images {a}..{b}, not for the manifest's image list (re-ordered or edited)"
        arr = None
        if not bad:
            try:
                arr = np.load(folder / name, mmap_mode="r" if offsets[b] > offsets[a] else None, allow_pickle=False)
            except (OSError, ValueError) as e:
                bad = f"unreadable ({type(e).__name__}: {e})"
        if arr is not None and (arr.dtype.names != ("kpts", "desc") or arr.shape != (offsets[b] - offsets[a],)):
            bad = f"{arr.dtype} {arr.shape}, not the manifest's {offsets[b] - offsets[a]} rows"
        if bad and damaged is not None:
            damaged.append((name, bad))
            at = max(at, b) if isinstance(b, int) else at
            continue
        if bad:
            raise IndexFormatError(f"{folder / name}: {bad}. {fix}".strip())
        shards.append(Shard(name, a, b, int(offsets[a]), arr))
        at = b
    if at != len(images) and damaged is None:
        raise IndexFormatError(f"{folder / 'manifest.json'}: its shards cover {at} of {len(images)} images "
                               f"(features/shard-*.npy missing from the manifest). {fix}".strip())
    return FeatureStore(shards, offsets)


def write_shard(path: Path, loaders: Sequence[Loader], rows: int, codec: str,
                cfg: StoreConfig = StoreConfig()) -> dict:
    """Write one shard from the images' ``loaders`` (each returns that image's Features), atomically;
    returns its record. Two passes over the loaders (the descriptor range, then the rows), so at
    most one image is in memory."""
    lo, hi, dim = np.inf, -np.inf, None
    for load in loaders:
        f = load()
        dim = dim or (f.desc.shape[1] if len(f) else None)
        if len(f):
            lo, hi = min(lo, float(f.desc.min())), max(hi, float(f.desc.max()))
    dt = np.dtype(np.uint8 if codec == "uint8" and 0 <= lo and hi <= 1 else np.float16)
    with store.atomic_path(path) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=row_dtype(dt, dim or 128), shape=(rows,))
        r = 0
        for load in loaders:
            f = load()
            arr["kpts"][r:r + len(f)] = f.kpts
            arr["desc"][r:r + len(f)] = encode(f.desc, dt)
            r += len(f)
        if r != rows:
            raise IndexFormatError(f"{path}: the images' features have {r} rows, the manifest says {rows}")
        arr.flush()
        del arr
    return store.record(path, cfg)


def pack(folder: Path, images: Sequence, sources: dict, old_files: dict, cfg: StoreConfig = StoreConfig()) -> dict:
    """Write the shards of ``images`` (``layout``) into ``folder``; returns their manifest records.

    ``sources``: sha1 -> loader of that image's Features. A shard already recorded in
    ``old_files`` under the same name (same images, same codec) is kept without being read: the
    build verified it in full before it put its images in ``sources``."""
    folder = Path(folder)
    out = {}
    counts = np.array([e.n for e in images], np.int64)
    for name, a, b in layout(images, cfg.shard_images, cfg.desc_dtype):
        rec = old_files.get(name)
        keep = rec is not None and list(rec.get("span", [])) == [a, b] and (folder / name).is_file()
        if not keep:
            rec = write_shard(folder / name, [sources[e.sha1] for e in images[a:b]], int(counts[a:b].sum()),
                              cfg.desc_dtype, cfg)
        out[name] = {**{k: v for k, v in rec.items() if k in ("size", "sha256", "sample")},
                     "span": [a, b], "images": store.order_hash(images[a:b])}
    return out


def drop_packed(folder: Path, images: Sequence, shards: dict) -> list[str]:
    """Delete, once the manifest recording ``shards`` is written, the scratch features of ``images``
    (now in the shards) and any shard file the manifest does not name; returns what went."""
    folder = Path(folder)
    gone = [folder / "features" / f"{e.sha1}.npz" for e in images]
    gone += [p for p in (folder / "features").glob("shard-*.npy") if f"features/{p.name}" not in shards]
    out = []
    for p in gone:
        try:
            p.unlink()
            out.append(str(p.relative_to(folder)))
        except FileNotFoundError:
            pass
    return out


def old_sources(out: Path, m: dict | None, cfg: StoreConfig, preset: str, repaired: list) -> tuple[dict, dict]:
    """sha1 -> loader of the features of each old image held by an intact old shard (fully hashed);
    a damaged shard is listed in ``repaired`` (its images come from scratch or are extracted again).
    Also returns the records of the intact shards (``pack`` keeps them)."""
    if not m or m["format_version"] != FORMAT_VERSION:
        return {}, {}
    images, damaged = entries(m), []
    fs = open_store(out, images, m["files"], cfg, full=True, damaged=damaged)
    repaired += damaged
    return ({images[i].sha1: (lambda i=i: fs.features(i, images[i].size, {"extractor": preset}))
             for sh in fs.shards for i in range(sh.a, sh.b)}, {sh.name: m["files"][sh.name] for sh in fs.shards})


def loader(path: Path) -> Loader:
    """Reads the scratch features at ``path`` when called."""
    return lambda: load_features(path)


def scratch(out: Path, name: str, rec: dict | None, n: int | None, preset: str, repaired: list) -> Features | None:
    """The scratch features ``name`` when present and usable (``rec``: its format-2 record; ``n``: the
    rows the manifest expects), else None (a damaged file is listed in ``repaired``)."""
    if not (out / name).is_file():
        return None
    try:
        f = load_features(out / name, rec)
        if n is not None and len(f) != n:
            raise IndexFormatError(f"{out / name}: damaged ({len(f)} rows, the manifest says {n})")
        if f.params.get("extractor") != preset:
            raise IndexFormatError(f"{out / name}: made with {f.params.get('extractor') or 'unknown'} "
                                   f"settings, not {preset}")
        return f
    except IndexFormatError as e:
        repaired.append((name, str(e).split(": ", 1)[-1].split(". Re-run")[0]))
        return None
