"""Turn uploaded files (images and zips) into a gallery folder under data/uploads/<hash>/.

No Streamlit here. Zips are extracted member by member with checks: no
absolute paths, no '..', no links, per-file / total / count caps; nested
folders are kept, non-images and unreadable images are skipped and listed.
The folder name is a hash of the accepted content, so the same upload twice
lands in (and re-uses the index of) the same folder. The name shown in the app
(typed by the user, else the zip's name) is kept in the folder's NAME_FILE;
rename and delete act only on direct subfolders of the uploads folder.
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
from ..errors import GalleryError
from ..images import ImageError, load_image

MAX_FILE_BYTES = 50_000_000        # one image (inside a zip or not)
MAX_TOTAL_BYTES = 1_000_000_000    # everything uploaded at once, uncompressed
MAX_FILES = 5000
NAME_FILE = ".l2g_name"            # the gallery's display name (a dot file: never indexed)
MAX_NAME = 40


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


def clean_name(name: str | None) -> str:
    """A display name from user text: printable, one line, at most MAX_NAME characters ('' if none)."""
    text = " ".join("".join(c if c.isprintable() else " " for c in str(name or "")).split())
    return text.replace("/", "-").replace("\\", "-")[:MAX_NAME].strip()


def default_name(files) -> str:
    """The zip's name without '.zip' (several zips joined by '+'), else 'N images'."""
    bases = [os.path.basename(str(n).replace("\\", "/")) for n, _ in files]
    zips = [os.path.splitext(b)[0] for b in bases if b.lower().endswith(".zip")]
    if zips:
        return clean_name("+".join(zips))
    return f"{len(bases)} image" + ("" if len(bases) == 1 else "s")


def upload_name(folder: Path) -> str | None:
    """The display name stored in an upload folder, or None."""
    try:
        return clean_name((Path(folder) / NAME_FILE).read_text(encoding="utf-8")) or None
    except (OSError, UnicodeDecodeError):
        return None


def _own_upload(uploads_dir: Path, folder: Path) -> Path:
    """``folder`` resolved, after checking it is a direct subfolder of ``uploads_dir``; ValueError if not."""
    root = Path(uploads_dir).resolve()
    f = Path(folder)
    if f.is_symlink():
        raise GalleryError(f"{f.name} is a link, not an uploaded gallery")
    f = f.resolve()
    if f.parent != root or not f.is_dir() or f.name.startswith("."):
        raise GalleryError(f"{folder} is not an uploaded gallery (only folders directly under the uploads "
                         f"folder can be renamed or deleted)")
    return f


def rename_upload(uploads_dir: Path, folder: Path, name: str) -> str:
    """Store a new display name for an uploaded gallery; returns the cleaned name."""
    f = _own_upload(uploads_dir, folder)
    clean = clean_name(name)
    if not clean:
        raise GalleryError("The new name is empty.")
    (f / NAME_FILE).write_text(clean, encoding="utf-8")
    return clean


def delete_upload(uploads_dir: Path, folder: Path) -> None:
    """Delete an uploaded gallery's folder (its images); nothing outside the uploads folder."""
    f = _own_upload(uploads_dir, folder)
    trash = f.with_name(f".{f.name}.deleting-{os.getpid()}")
    os.replace(f, trash)              # gone from the gallery list at once, even if removal is slow
    shutil.rmtree(trash, ignore_errors=True)


def save_uploads(files, uploads_dir: Path, name: str | None = None) -> UploadReport:
    """Write the images among ``files`` [(name, bytes)] to uploads_dir/<hash>/ (atomically).

    Returns a report with the folder (None when no image was accepted), the
    images written and the files skipped with their reasons. ``name`` (else the
    zip's name) is stored as the gallery's display name.
    """
    files = list(files)
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
    label = clean_name(name) or (default_name(files) if any(str(n).lower().endswith(".zip") for n, _ in files)
                                 else default_name([(r, b"") for r in accepted]))
    h = hashlib.sha1()
    for rel in sorted(accepted):
        h.update(rel.encode() + b"\0" + hashlib.sha1(accepted[rel]).digest())
    uploads_dir = Path(uploads_dir)
    folder = uploads_dir / h.hexdigest()[:16]
    report.images = sorted(accepted)
    report.folder = folder
    if folder.is_dir() and not folder.is_symlink():   # the same upload before (a planted link is not reused);
        if clean_name(name) or upload_name(folder) is None:   # named anew only when a name was typed
            (folder / NAME_FILE).write_text(label, encoding="utf-8")
        return report
    tmp = uploads_dir / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for rel, blob in accepted.items():
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(blob)
        (tmp / NAME_FILE).write_text(label, encoding="utf-8")
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report
