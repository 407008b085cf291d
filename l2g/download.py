"""Resumable, verified downloads of Revisited Oxford / Paris (ground truth + images).

``download('roxford5k', 'data')`` fills ``data/roxford5k/`` with ``gnd_roxford5k.pkl``
and ``jpg/*.jpg``. Each file is fetched into ``<file>.part`` with HTTP Range
resume, checked (size, and sha256 where known), then renamed atomically; a
``<file>.sha256`` is written next to it and re-checked on later runs. Archives
are extracted (flattened into ``jpg/``) after every member has been checked.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from l2g import config, store
from l2g.errors import DatasetError
from l2g.lock import folder_lock
from l2g.store import sha256_file  # noqa: F401 (used here and by tests as download.sha256_file)

Progress = Callable[[int, int, str], None]   # (done_bytes, total_bytes (0 if unknown), message)

CHUNK = 1 << 20
TIMEOUT_S = 30.0
GND_URL = "http://cmp.felk.cvut.cz/revisitop/data/datasets/{name}/gnd_{name}.pkl"
VGG_URL = "https://www.robots.ox.ac.uk/~vgg/data"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset. sha256=None: no official checksum is published (the first
    successful download writes ``<filename>.sha256`` and later runs verify against it)."""

    url: str
    filename: str
    sha256: str | None = None
    extract_to: str | None = None      # archives: folder (relative to the dataset) to flatten images into


# The official locations (revisitop ground truth; VGG image archives, "-v1" re-uploads).
# No sha256 is published by the authors for any of them, hence None.
DATASETS: dict[str, tuple[RemoteFile, ...]] = {
    "roxford5k": (
        RemoteFile(GND_URL.format(name="roxford5k"), "gnd_roxford5k.pkl"),
        RemoteFile(f"{VGG_URL}/oxbuildings/oxbuild_images-v1.tgz", "oxbuild_images-v1.tgz", extract_to="jpg"),
    ),
    "rparis6k": (
        RemoteFile(GND_URL.format(name="rparis6k"), "gnd_rparis6k.pkl"),
        RemoteFile(f"{VGG_URL}/parisbuildings/paris_1-v1.tgz", "paris_1-v1.tgz", extract_to="jpg"),
        RemoteFile(f"{VGG_URL}/parisbuildings/paris_2-v1.tgz", "paris_2-v1.tgz", extract_to="jpg"),
    ),
}


def _noop(done: int, total: int, message: str) -> None:
    return None


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _is_complete(path: Path, entry: RemoteFile) -> bool:
    """True when ``path`` exists and matches the known checksum (table or sidecar)."""
    if not path.is_file():
        return False
    expected = entry.sha256
    side = _sidecar(path)
    if expected is None and side.is_file():
        words = side.read_text().split()
        expected = words[0] if words else None
    if expected is None:
        return True                     # placed by hand, nothing to check it against
    return sha256_file(path) == expected.lower()


def _open(url: str, start: int):
    req = urllib.request.Request(url, headers={"User-Agent": "l2g-download/1"})
    if start > 0:
        req.add_header("Range", f"bytes={start}-")
    try:
        return urllib.request.urlopen(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start > 0:
            return None                 # range not satisfiable: the .part is stale, restart
        raise DatasetError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DatasetError(f"cannot reach {url} ({reason}). Check the network connection, or download "
                           f"the file by hand and put it in the dataset folder.") from exc


def _fetch(url: str, dest: Path, entry: RemoteFile, progress: Progress) -> None:
    """Download ``url`` to ``dest`` via ``dest.part`` (resuming), verify, rename atomically."""
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    resp = _open(url, start)
    if resp is None:
        part.unlink(missing_ok=True)
        start = 0
        resp = _open(url, 0)
    with resp:
        if start > 0 and resp.status != 206:
            start = 0                   # the server ignored Range: start over
        length = int(resp.headers.get("Content-Length") or 0)
        total = start + length if length else 0
        crange = resp.headers.get("Content-Range", "")
        if start and "/" in crange and crange.rsplit("/", 1)[1].isdigit():
            total = int(crange.rsplit("/", 1)[1])
        done = start
        try:
            with open(part, "ab" if start else "wb") as f:
                progress(done, total, f"downloading {entry.filename}")
                for block in iter(lambda: resp.read(CHUNK), b""):
                    f.write(block)
                    done += len(block)
                    progress(done, total, f"downloading {entry.filename}")
        except (TimeoutError, OSError) as exc:
            raise DatasetError(f"download of {url} interrupted after {done} bytes ({exc}); "
                               f"run again to resume from {part.name}") from exc
    if total and done != total:
        raise DatasetError(f"download of {url} incomplete: {done} of {total} bytes; run again to resume")
    progress(done, total, f"verifying {entry.filename}")
    digest = sha256_file(part)
    if entry.sha256 is not None and digest != entry.sha256.lower():
        part.unlink(missing_ok=True)
        raise DatasetError(f"checksum mismatch for {entry.filename}: expected sha256 {entry.sha256}, "
                           f"got {digest}; the corrupt download was deleted, run again")
    os.replace(part, dest)
    _sidecar(dest).write_text(f"{digest}  {dest.name}\n")


def _safe_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """All members, after refusing absolute paths, '..', links and device files."""
    members = tar.getmembers()
    for m in members:
        p = PurePosixPath(m.name)
        drive = bool(p.parts) and ":" in p.parts[0]
        if m.name.startswith(("/", "\\")) or p.is_absolute() or ".." in p.parts or drive:
            raise DatasetError(f"{archive.name}: unsafe member path {m.name!r} (absolute or '..'); "
                               "refusing to extract")
        if not (m.isfile() or m.isdir()):
            raise DatasetError(f"{archive.name}: member {m.name!r} is a link or special file; "
                               "refusing to extract")
    return members


def extract_images(archive: Path, dest: Path, progress: Progress = _noop) -> int:
    """Extract the image files of a tarball flat into ``dest`` (basename only); returns the count."""
    exts = {e.lower() for e in config.IMAGE_EXTENSIONS}
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise DatasetError(f"{archive}: not a readable tar archive ({exc})") from exc
    with tar:
        members = _safe_members(tar, archive)
        images = [m for m in members if m.isfile() and os.path.splitext(m.name)[1].lower() in exts
                  and not PurePosixPath(m.name).name.startswith(".")]
        dest.mkdir(parents=True, exist_ok=True)
        for i, m in enumerate(images):
            out = dest / PurePosixPath(m.name).name
            src = tar.extractfile(m)
            if src is None:
                continue
            # a unique temporary name, then rename; no fsync per image: the .extracted marker, written
            # after the whole archive, is what makes the extraction count as done
            with src, store.atomic_write(out, sync=False) as f:
                shutil.copyfileobj(src, f, CHUNK)
            if i % 200 == 0 or i == len(images) - 1:
                progress(i + 1, len(images), f"extracting {archive.name}")
    return len(images)


def download(name: str, root: str | os.PathLike = config.DATA_DIR, progress: Progress | None = None,
             base_url: str | None = None) -> Path:
    """Fetch dataset ``name`` ('roxford5k' | 'rparis6k') into ``root/name``; returns that folder.

    base_url: replaces the host part of every URL (files are then fetched as
              ``<base_url>/<filename>``), for mirrors and tests.
    progress: called as progress(done_bytes, total_bytes, message); total 0 when unknown.
    Already complete files and extracted archives are skipped; failures raise DatasetError.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))}")
    report = progress or _noop
    folder = Path(root) / name
    with folder_lock(folder):       # a second download of the same dataset waits for the first
        _download_all(name, folder, base_url, report)
    report(1, 1, f"{name} ready in {folder}")
    return folder


def _download_all(name: str, folder: Path, base_url: str | None, report: Progress) -> None:
    for entry in DATASETS[name]:
        dest = folder / entry.filename
        url = f"{base_url.rstrip('/')}/{entry.filename}" if base_url else entry.url
        if _is_complete(dest, entry):
            report(1, 1, f"{entry.filename} already complete")
        else:
            if dest.is_file():
                dest.unlink()           # fails its checksum: fetch again
            dest.with_name(dest.name + ".extracted").unlink(missing_ok=True)
            _fetch(url, dest, entry, report)
        if entry.extract_to:
            marker = dest.with_name(dest.name + ".extracted")
            if not marker.is_file():
                n = extract_images(dest, folder / entry.extract_to, report)
                store.write_text(marker, f"{n}\n")
