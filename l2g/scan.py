"""What a gallery folder holds: its images (recursively, sorted), and what is skipped and why.

``scan_gallery`` lists the image files under a folder by extension (config.IMAGE_EXTENSIONS) and
reports the rest: archives (unpack them first), other files, folder symlinks (not followed) and file
symlinks leading outside the folder (refused). A build (l2g.index) indexes what it lists, once
``require_readable`` has found one image that decodes (else it writes nothing).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from l2g import config
from l2g.errors import DatasetError, ImageError
from l2g.images import NOT_A_FILE, load_image, special_file

ARCHIVE_EXTENSIONS = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")
LINK_OUTSIDE = "a symbolic link to a file outside the gallery folder: refused"


@dataclass
class GalleryScan:
    """What a gallery folder holds (relative POSIX paths, sorted).

    images:  image files to index (a symlink is followed only when it stays inside the folder);
    refused: (path, reason) image files that are symlinks leading outside the folder;
    ignored: (path, reason) other files and folder symlinks, which are not indexed.
    """

    images: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)


def escapes(root: str | os.PathLike, rel: str) -> bool:
    """True when ``root/rel``, symlinks followed, does not lie inside ``root`` (symlinks followed)."""
    try:
        (Path(root) / rel).resolve().relative_to(Path(root).resolve())
        return False
    except (OSError, ValueError, RuntimeError):
        return True


def path_order(paths) -> np.ndarray:
    """(n,) int64 permutation that puts ``paths`` (relative POSIX paths) in path order, the order
    scan_gallery lists a gallery in: whatever visits images in it (the IVF training sample, the VLAD
    sample and whitening fit, the tie-break of a ranking) depends on the set of images, not on the order
    a build indexed them in."""
    return np.argsort(np.array(list(paths), dtype=object), kind="stable").astype(np.int64)


def _ignored_reason(fname: str) -> str:
    ext = os.path.splitext(fname)[1].lower()
    if ext in ARCHIVE_EXTENSIONS:
        return f"an archive ({ext}): not opened, extract it into the folder to index its images"
    return f"not an image file (extension {ext or 'none'}; indexed: {', '.join(config.IMAGE_EXTENSIONS)})"


def _walk(root: Path):
    """(rel, kind, reason) of every entry under ``root`` as os.walk meets it (kind 'image', 'refused' or
    'ignored'; reason '' for an image): scan_gallery collects them, require_readable stops at a readable image."""
    exts = {e.lower() for e in config.IMAGE_EXTENSIONS}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        for d in dirnames:
            if not d.startswith(".") and os.path.islink(os.path.join(dirpath, d)):
                yield (rel_dir / d).as_posix(), "ignored", "a symbolic link to a folder: not followed"
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for fname in filenames:
            rel = (rel_dir / fname).as_posix()
            if fname.startswith("."):
                continue
            if os.path.splitext(fname)[1].lower() not in exts:
                yield rel, "ignored", _ignored_reason(fname)
            elif escapes(root, rel):
                yield rel, "refused", LINK_OUTSIDE
            elif special_file(os.path.join(dirpath, fname)):  # reading a FIFO would block the build forever
                yield rel, "ignored", NOT_A_FILE
            else:
                yield rel, "image", ""


def _folder(folder: str | os.PathLike) -> Path:
    root = Path(folder)
    if not root.exists():
        raise DatasetError(f"{root}: no such folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    return root


def scan_gallery(folder: str | os.PathLike) -> GalleryScan:
    """Walk ``folder`` recursively: images by extension (config.IMAGE_EXTENSIONS, any case), file
    symlinks leading outside refused, folder symlinks not followed, named pipes, sockets and devices
    with an image's name ignored (reading one would block), other files listed as ignored.
    Hidden files and folders (name starting with '.') are skipped silently."""
    scan = GalleryScan()
    for rel, kind, reason in _walk(_folder(folder)):
        if kind == "image":
            scan.images.append(rel)
        else:
            getattr(scan, kind).append((rel, reason))
    scan.images.sort()
    scan.refused.sort()
    scan.ignored.sort()
    return scan


def list_images(folder: str | os.PathLike) -> list[str]:
    """Relative POSIX paths of the image files under ``folder`` (recursive, sorted); see scan_gallery.

    File symlinks that lead outside ``folder`` are left out (scan_gallery reports them).
    """
    return scan_gallery(folder).images


def _listed(items, n: int = 5) -> str:
    shown = "; ".join(f"{rel}: {why}" for rel, why in items[:n])
    return shown + (f"; and {len(items) - n} more" if len(items) > n else "")


def require_readable(folder: str | os.PathLike, paths: list[str] | None = None, max_side: int | None = None) -> None:
    """Raise DatasetError unless one of the images of ``folder`` (``paths``, relative; default every
    image scan_gallery lists) decodes, as a build will decode it (``max_side``). A build calls it before
    it makes or writes anything: a folder of no readable image gets a message saying why each file was
    left out, not an index of nothing. Images are tried up to the first that decodes (a usable gallery:
    one decode, and its folder walked only that far)."""
    root = _folder(folder)
    if paths is None:       # walked lazily: a usable gallery stops at its first image
        rels = (rel for rel, kind, _ in _walk(root) if kind == "image")
    else:
        rels = sorted(p for p in paths if not escapes(root, p))
    failed = []
    for rel in rels:
        try:
            load_image(root / rel, max_side=max_side)
            return
        except ImageError as e:
            failed.append((rel, e.reason))
    if failed:
        why = f"none of its {len(failed)} image file(s) could be indexed ({_listed(sorted(failed))})"
    else:           # what the folder holds instead
        scan = scan_gallery(root) if paths is None else GalleryScan()
        left = sorted(scan.refused + scan.ignored)
        why = (f"it holds no image file (extensions: {', '.join(config.IMAGE_EXTENSIONS)})"
               + (f"; not indexed: {_listed(left)}" if left else ""))
    raise DatasetError(f"no readable images in {root}: {why}. Nothing was written; add photos to the folder "
                       "and run the command again.")
