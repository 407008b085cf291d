"""The index folder's manifest: its image list and the record of every file it depends on.

``manifest.json`` holds the format version, the extractor and index settings, the
images (path, sha1, n, size, scale) in FAISS row order, and ``files``: the size and
checksum of faiss.index, each feature-store shard (features/shard-*.npy, l2g.featstore),
graph.npz and global.npz (see ``l2g.store``). It is written last, after the files it names, and carries its own
checksum, so a damaged, truncated or re-ordered manifest is an IndexFormatError.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from . import config as C
from . import store
from .errors import IndexFormatError
from .featkey import features_key, stored_features


@dataclass
class ImageEntry:
    path: str          # relative to the gallery root (POSIX)
    sha1: str
    n: int             # number of descriptors
    size: tuple        # (W, H) of the image the features were computed on
    scale: float = 1.0  # loaded size / original size


def feature_name(sha1: str) -> str:
    """An image's extraction scratch (and its features file in format 2), relative to the index folder."""
    return f"features/{sha1}.npz"


def repair_hint(folder: Path, root=None) -> str:
    g = root or "<gallery folder>"
    return (f"Repair it with `python -m l2g index {g} --out {folder}` (what is intact is kept) "
            f"or `python -m l2g check {folder} --repair`.")


MIGRATES = (2,)   # older formats a build migrates in place (format 2: one features/<sha1>.npz per image)


def read_manifest(folder: Path, migrating: bool = False) -> dict:
    """The manifest of an index folder, checked (IndexFormatError when missing, damaged or old;
    ``migrating``: a format in MIGRATES is returned as it is, for a build to migrate)."""
    path = Path(folder) / store.MANIFEST
    if not path.is_file():
        raise IndexFormatError(f"no index at {folder} (manifest.json missing); build one with `python -m l2g index`")
    m = store.read_json(path, repair_hint(folder))
    version = m.get("format_version")
    if version in MIGRATES and not migrating:
        raise IndexFormatError(
            f"index at {folder} has format {version} (one features file per image), this l2g reads "
            f"{C.FORMAT_VERSION}: migrate it with `python -m l2g index {m.get('root') or '<gallery folder>'} --out "
            f"{folder}` or `python -m l2g check {folder} --repair` (the features are packed into the new "
            "store; nothing is extracted again)")
    if version != C.FORMAT_VERSION and not (migrating and version in MIGRATES):
        raise IndexFormatError(f"index at {folder} has format {version}, this l2g reads "
                               f"{C.FORMAT_VERSION}: rebuild it with `python -m l2g index` (features are reused)")
    need = ("root", "kind", "features", "index", "ntotal", "images", "files")
    if any(k not in m for k in need) or "faiss.index" not in m["files"]:
        raise IndexFormatError(f"{path}: damaged (a field is missing). {repair_hint(folder)}")
    return m


def stored_config(m: dict, cfg: C.L2GConfig = C.DEFAULT) -> C.L2GConfig:
    """``cfg`` with the feature and index settings the index of manifest ``m`` was built with (the
    one place they are read back: opening, extending, repairing and searching an index)."""
    return cfg.replace(features=stored_features(m["features"]), index=C.IndexConfig(**m["index"]))


def entries(m: dict) -> list[ImageEntry]:
    return [ImageEntry(e["path"], e["sha1"], e["n"], tuple(e["size"]), e.get("scale", 1.0)) for e in m["images"]]


# FeatureConfig.name, e.g. sift-root-n2000-s1024-g31-r1.5-rs-o15-c1e-05-pyramid: the default index folder's name
PRESET_NAME = re.compile(r"[a-z0-9]+-(root|plain)-n\d+-s\d+(-[^/]*)?-("
                         + "|".join(map(re.escape, C.SIFT_BACKENDS)) + r")(-up)?")


def buildable_manifest(gallery: Path, out: Path, cfg: C.L2GConfig, repaired: list) -> dict | None:
    """The manifest of ``out`` for a build of ``gallery`` to extend; None when there is none, or
    when it is damaged or does not match faiss.index (then (file, why) is added to ``repaired``).
    IndexFormatError when the folder holds another gallery or other feature settings."""
    if not (out / store.MANIFEST).is_file():
        return None
    try:
        m = read_manifest(out, migrating=True)
    except IndexFormatError as e:
        why = str(e).split(". Repair")[0]
        named = PRESET_NAME.fullmatch(out.name)
        if named and out.name != cfg.features.name:     # hloc-style folder: its name records the features
            raise IndexFormatError(f"{why}. The folder's name says its features are {out.name}, not "
                                   f"{cfg.features.name}: repair it with the feature options it was built with "
                                   "(--preset, --num-features, --max-side, --extractor, ...), or build into "
                                   "another --out folder") from None
        repaired.append((store.MANIFEST, why))
        return None
    if features_key(stored_features(m["features"])) != features_key(cfg.features):
        raise IndexFormatError(f"index at {out} was built with {m['preset']}, not {cfg.features.name}; "
                               "use another --out folder")
    if m["files"]["faiss.index"].get("images") != store.order_hash(entries(m)):
        repaired.append((store.MANIFEST, "its image list does not match faiss.index (re-ordered or edited)"))
        return None
    old_root = Path(m["root"])
    if old_root.is_dir() and old_root.resolve() != gallery.resolve():
        raise IndexFormatError(f"index at {out} holds the gallery {old_root}, not {gallery}: use another "
                               f"--out folder (or delete {out} to replace it)")
    return m


def write_manifest(folder: Path, cfg: C.L2GConfig, root: Path, kind: str, images: list[ImageEntry], failed: list,
                   files: dict) -> None:
    """Write the manifest (atomically, with its own checksum): call after every file in ``files``."""
    store.write_json(Path(folder) / store.MANIFEST, {
        "format_version": C.FORMAT_VERSION,
        "preset": cfg.features.name,
        "root": str(root),
        "kind": kind,
        "features": C.asdict(cfg.features),
        "index": C.asdict(cfg.index),
        "ntotal": int(sum(e.n for e in images)),
        "images": [{"path": e.path, "sha1": e.sha1, "n": e.n, "size": list(e.size), "scale": e.scale}
                   for e in images],
        "failed": [list(f) for f in failed],
        "files": files,
    })
