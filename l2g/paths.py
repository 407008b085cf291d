"""One path resolver for the CLI and the app: the data folder, named datasets, index folders.

    data folder   --data-dir DIR, else L2G_DATA_DIR, else data/ in the repository
    dataset name  demo | realbench-dev | roxford5k | rparis6k -> a folder: the data folder's
                  <name>/ when it is there, else the shared data folder's (read-only sets beside
                  the repository), else the data folder's <name>/ (where a download goes)
    index folder  <data folder>/index/<gallery tag>/<features preset name>

The gallery tag is the dataset name for a named dataset, else the folder's name
plus a hash of its resolved path, so two folders with one name never share an
index and the CLI and the app always pick the same folder for the same gallery.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from . import config as C


def data_dir(explicit: str | os.PathLike | None = None, env: dict | None = None) -> Path:
    """The data folder: ``explicit`` (--data-dir), else $L2G_DATA_DIR, else config.DATA_DIR; resolved."""
    env = os.environ if env is None else env
    raw = explicit or env.get(C.DATA_DIR_ENV) or C.DATA_DIR
    return Path(raw).expanduser().resolve()


def dataset_dir(name: str, data: Path | None = None) -> Path:
    """The folder of a named dataset (see the module docstring); KeyError-free: any other name
    is returned as a path."""
    data = data_dir() if data is None else Path(data)
    if name not in C.NAMED_DATASETS:
        return Path(name)
    for root in (data, C.SHARED_DATA_DIR):
        if (root / name).is_dir():
            return (root / name).resolve()
    return data / name


def resolve_dataset(path_or_name: str | os.PathLike, data: Path | None = None) -> Path:
    """An existing folder as given, else a named dataset's folder, else the path as given."""
    p = Path(path_or_name)
    if p.exists() or str(path_or_name) not in C.NAMED_DATASETS:
        return p
    return dataset_dir(str(path_or_name), data)


def slug(path: Path) -> str:
    """A folder-name-safe tag of a path's last part."""
    p = Path(path).resolve()
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", p.name or "root")


def gallery_tag(gallery: Path, data: Path | None = None) -> str:
    """The index-folder name of a gallery: a named dataset's name, else <slug>-<8 hex of its path>."""
    g = Path(gallery).expanduser().resolve()
    for name in C.NAMED_DATASETS:
        if dataset_dir(name, data).resolve() == g:
            return name
    return f"{slug(g)}-{hashlib.sha1(str(g).encode()).hexdigest()[:8]}"


def index_dir(gallery: Path, cfg: C.L2GConfig = C.DEFAULT, data: Path | None = None) -> Path:
    """<data folder>/index/<gallery tag>/<preset>: the preset name encodes the feature settings."""
    data = data_dir() if data is None else Path(data)
    return data / "index" / gallery_tag(gallery, data) / cfg.features.name
