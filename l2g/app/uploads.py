"""Turn uploaded files (images and zips) into a gallery folder under data/uploads/<hash>/.

No Streamlit here. Zips are extracted member by member with checks: no
absolute paths, no '..', no links, per-file / total / count caps; nested
folders are kept, non-images and unreadable images are skipped and listed.
The folder name is a hash of the accepted content, so the same upload twice
lands in (and re-uses the index of) the same folder.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .. import config as C
from ..images import ImageError, load_image

MAX_FILE_BYTES = 50_000_000        # one image (inside a zip or not)
MAX_TOTAL_BYTES = 1_000_000_000    # everything uploaded at once, uncompressed
MAX_FILES = 5000


@dataclass
class UploadReport:
    folder: Path | None = None
    images: list = field(default_factory=list)      # relative paths written
    skipped: list = field(default_factory=list)     # (name, reason)


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in C.IMAGE_EXTENSIONS


def safe_member_path(name: str) -> str | None:
    """A zip member name -> a safe relative POSIX path, or None when it must be refused."""
    n = name.replace("\\", "/")
    if not n or n.startswith("/") or (len(n) > 1 and n[1] == ":"):
        return None
    parts = [p for p in PurePosixPath(n).parts if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def _check_image(name: str, data: bytes) -> str | None:
    """None when ``data`` decodes as an image, else the reason."""
    try:
        load_image(data, max_side=64, name=name)
        return None
    except ImageError as e:
        return e.reason


def _members(files, report: UploadReport):
    """Yield (relative path, bytes) of every acceptable image among uploads [(name, bytes)]."""
    total = 0
    count = 0
    for name, data in files:
        base = os.path.basename(str(name).replace("\\", "/")) or "upload"
        if base.lower().endswith(".zip"):
            try:
                zf = zipfile.ZipFile(io.BytesIO(data))
            except (zipfile.BadZipFile, OSError, ValueError) as e:
                report.skipped.append((base, f"not a readable zip ({e})"))
                continue
            with zf:
                stem = os.path.splitext(base)[0]
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    label = f"{base}:{info.filename}"
                    rel = safe_member_path(info.filename)
                    mode = info.external_attr >> 16
                    if rel is None:
                        report.skipped.append((label, "unsafe path (absolute or '..'), refused"))
                    elif stat.S_ISLNK(mode):
                        report.skipped.append((label, "a symbolic link, refused"))
                    elif any(p.startswith(".") or p == "__MACOSX" for p in rel.split("/")):
                        report.skipped.append((label, "hidden or system file"))
                    elif not _is_image_name(rel):
                        report.skipped.append((label, "not an image (by extension)"))
                    elif info.file_size > MAX_FILE_BYTES:
                        report.skipped.append((label, f"too large ({info.file_size} bytes > {MAX_FILE_BYTES})"))
                    elif total + info.file_size > MAX_TOTAL_BYTES or count >= MAX_FILES:
                        report.skipped.append((label, "upload size or file-count cap reached"))
                    else:
                        try:
                            with zf.open(info) as fh:
                                blob = fh.read(MAX_FILE_BYTES + 1)
                        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as e:
                            report.skipped.append((label, f"cannot be extracted ({e})"))
                            continue
                        if len(blob) > MAX_FILE_BYTES:
                            report.skipped.append((label, "too large once decompressed"))
                            continue
                        total += len(blob)
                        count += 1
                        yield f"{stem}/{rel}", blob, label
        elif not _is_image_name(base):
            report.skipped.append((base, "not an image (by extension)"))
        elif len(data) > MAX_FILE_BYTES:
            report.skipped.append((base, f"too large ({len(data)} bytes > {MAX_FILE_BYTES})"))
        elif total + len(data) > MAX_TOTAL_BYTES or count >= MAX_FILES:
            report.skipped.append((base, "upload size or file-count cap reached"))
        else:
            total += len(data)
            count += 1
            yield base, bytes(data), base


def save_uploads(files, uploads_dir: Path) -> UploadReport:
    """Write the images among ``files`` [(name, bytes)] to uploads_dir/<hash>/ (atomically).

    Returns a report with the folder (None when no image was accepted), the
    images written and the files skipped with their reasons.
    """
    report = UploadReport()
    accepted: dict[str, bytes] = {}
    for rel, blob, label in _members(files, report):
        if rel in accepted:
            report.skipped.append((label, "duplicate name, first one kept"))
            continue
        reason = _check_image(label, blob)
        if reason:
            report.skipped.append((label, reason))
            continue
        accepted[rel] = blob
    if not accepted:
        return report
    h = hashlib.sha1()
    for rel in sorted(accepted):
        h.update(rel.encode() + b"\0" + hashlib.sha1(accepted[rel]).digest())
    uploads_dir = Path(uploads_dir)
    folder = uploads_dir / h.hexdigest()[:16]
    report.images = sorted(accepted)
    report.folder = folder
    if folder.is_dir() and not folder.is_symlink():   # the same upload before (a planted link is not reused)
        return report
    tmp = uploads_dir / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for rel, blob in accepted.items():
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(blob)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report
