"""The index folder's storage rules, used by every writer: atomic writes, checksums, one lock.

- ``atomic_write(path)``: a uniquely named temporary file in the same folder
  (``tempfile.mkstemp``), flushed and fsynced, then ``os.replace``: a reader sees
  the old file or the new one, never half of one, and two writers never share a
  temporary name.
- ``save_npz``: byte-deterministic ``.npz`` (fixed zip timestamps), so a rebuild
  of the same content gives the same checksum.
- ``record`` / ``verify`` (``l2g.checksum``): a file's size and SHA-256; files over
  ``StoreConfig.full_hash_max`` are verified on open by size plus a hash of
  ``hash_samples`` blocks at fixed offsets, and in full by ``python -m l2g check``. ``ensure``
  reads and hashes a stage's file once per open (its ``load`` gets the verified bytes) and records
  a file its build wrote from the bytes written (not read back).
- ``fingerprint``: one short hash of the settings a stored stage depends on.
- ``folder_lock`` (``l2g.lock``): an exclusive lock on an index folder (``filelock``),
  re-entrant within a process; another build waits or fails, as ``timeout`` says.
- ``read_json`` / ``write_json``: JSON carrying its own checksum (a damaged or
  hand-edited manifest is detected).
"""
from __future__ import annotations

import contextlib
import contextvars
import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import checksum
from .checksum import fingerprint, order_hash, record, sha256_file, verify  # noqa: F401 (re-exported)
from .config import StoreConfig
from .errors import IndexFormatError
from .lock import LOCK_NAME, IndexBusyError, folder_lock  # noqa: F401 (re-exported)

TMP_SUFFIX = ".tmp"
# Inside ``ensure`` only (per thread): the bytes of the file it has just read and verified, which its
# ``load`` reads instead of the disk (so a file is read and hashed once per open), and the bytes and
# SHA-256 of what its ``build`` writes (so the record is taken from them, not from hashing the file again).
_VERIFIED: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("l2g_store_verified", default=None)
_WRITTEN: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("l2g_store_written", default=None)


@dataclass
class Stage:
    """What one cached stage's ``ensure`` did: the result, and whether it was loaded or (re)built."""

    name: str                 # file in the index folder: 'graph.npz', 'global.npz'
    result: object
    action: str               # 'loaded' | 'built' | 'extended' | 'rebuilt' (was damaged)
    reason: str = ""          # why it was built: 'not built yet', 'settings changed', what was damaged
    timings: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- writes
def _umask_at_import() -> int:
    mask = os.umask(0o022)      # os.umask can only be read by setting it: once, when l2g.store is imported
    os.umask(mask)
    return mask


_UMASK = _umask_at_import()


def umask() -> int:
    """The process's umask now (Linux: read from /proc, no set-and-restore race between threads; else
    the one at import)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return _UMASK


@contextlib.contextmanager
def atomic_path(path: Path, sync: bool = True):
    """A unique temporary path beside ``path`` for a library that writes by name (faiss.write_index);
    on success it is fsynced (``sync``) and replaces ``path`` atomically, on failure it is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:        # mkstemp makes it 0600: the mode of a file open() would create (others sharing the folder read it)
        os.fchmod(fd, 0o666 & ~umask())
    finally:
        os.close(fd)
    try:
        yield tmp
        if sync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb", sync: bool = True):
    """Open a unique temporary file beside ``path``; on success it replaces ``path`` atomically
    (fsynced first unless ``sync`` is False)."""
    with atomic_path(path, sync) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()


def write_bytes(path: Path, data: bytes, sha256: str | None = None) -> None:
    """Write ``data`` to ``path`` atomically (``sha256``: its hash, when the caller has it)."""
    with atomic_write(path) as f:
        f.write(data)
    wanted = _WRITTEN.get()
    if wanted is not None and wanted[0] == _key(path):   # a stage's file: ensure records it from these bytes
        wanted[1].append((data, sha256 or checksum.sha256_bytes(data)))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def npz_bytes(**arrays) -> bytes:
    """The .npz of ``arrays`` (uncompressed, like np.savez) with fixed timestamps: same arrays, same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for k, v in arrays.items():
            info = zipfile.ZipInfo(f"{k}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with z.open(info, "w", force_zip64=True) as fid:
                np.lib.format.write_array(fid, np.asanyarray(v), allow_pickle=False)
    return buf.getvalue()


def save_npz(path: Path, **arrays) -> dict:
    """Write ``arrays`` to ``path`` atomically; returns the file's record (see ``record``)."""
    data = npz_bytes(**arrays)
    sha = checksum.sha256_bytes(data)
    write_bytes(path, data, sha)
    return {"size": len(data), "sha256": sha, "sample": checksum.sample_hash(data, len(data), StoreConfig())}


def load_npz(path: Path, rec: dict | None = None, fix: str = "") -> dict:
    """All arrays of an .npz (no pickles), after checking it against its record when one is given.

    Raises IndexFormatError naming the file (and ``fix``) when it is missing, differs from its
    record, or is not a readable .npz (truncated, bit-flipped: the zip CRC fails).
    """
    path = Path(path)
    data = verified = _verified_bytes(path)   # ensure read and checked it against ``rec`` a moment ago
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise IndexFormatError(f"{path}: cannot read ({e.strerror or e}). {fix}".strip()) from None
    if rec is not None and verified is None:
        why = checksum.mismatch(data, rec, full=True)
        if why:
            raise IndexFormatError(f"{path}: damaged ({why}). {fix}".strip())
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 -- zipfile/numpy raise many types for damaged bytes
        raise IndexFormatError(f"{path}: damaged ({type(e).__name__}: {e}). {fix}".strip()) from None


# --------------------------------------------------------------------------- self-checking JSON
def write_json(path: Path, obj: dict) -> None:
    """Write ``obj`` plus a ``checksum`` of its canonical JSON, atomically; keys sorted, so the bytes
    depend on the content only (a repaired manifest is byte-identical to a clean build's)."""
    body = {k: v for k, v in obj.items() if k != "checksum"}
    body["checksum"] = fingerprint(body)
    write_text(path, json.dumps(body, indent=1, sort_keys=True))


def read_json(path: Path, fix: str = "") -> dict:
    """The object written by write_json; IndexFormatError when it is unreadable or its checksum fails."""
    path = Path(path)
    try:
        data = _verified_bytes(path)
        obj = json.loads(path.read_text() if data is None else data.decode())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexFormatError(f"{path}: damaged ({type(e).__name__}: {e}). {fix}".strip()) from None
    if not isinstance(obj, dict):
        raise IndexFormatError(f"{path}: damaged (not a JSON object). {fix}".strip())
    if "checksum" in obj and obj["checksum"] != fingerprint({k: v for k, v in obj.items() if k != "checksum"}):
        raise IndexFormatError(f"{path}: damaged or edited by hand (its checksum does not match its "
                               f"content). {fix}".strip())
    return obj


MANIFEST = "manifest.json"


def record_file(folder: Path, name: str, rec: dict | None) -> None:
    """Set (or with None drop) the manifest's record of ``name``; call with the folder lock held,
    after ``name`` itself is written (the manifest is always written last)."""
    path = Path(folder) / MANIFEST
    m = read_json(path)
    files = dict(m.get("files", {}))
    if rec is None:
        files.pop(name, None)
    else:
        files[name] = rec
    write_json(path, {**m, "files": files})


def ensure(folder: Path, name: str, fp: str, order: str, load, build, repair: bool = True,
           cfg: StoreConfig = StoreConfig(), fix: str = "") -> Stage:
    """The one cache rule of every stage stored beside the index (hloc ``extract_features.main`` style).

    The manifest's record of ``name`` must verify (size and full checksum) and carry the wanted
    settings ``fingerprint`` and image list hash ``order``; then ``load(rec)`` is returned as is.
    The file is read and hashed once: ``load`` gets the verified bytes (``load_npz`` / ``read_json``
    read them instead of the disk), and a file the build wrote is recorded from the bytes written.
    Otherwise ``build(old) -> (result, action)`` runs under the folder lock (``old``: the
    stored result when it verified with the same fingerprint, for extending), and the file it
    wrote is recorded. A damaged file is rebuilt (repair=True) or raises IndexFormatError.
    """
    import time

    t0 = time.perf_counter()
    folder = Path(folder)
    rec = read_json(folder / MANIFEST).get("files", {}).get(name)
    action, reason, old = "built", "not built yet", None
    if rec is not None:
        why, data = _read_verified(folder / name, rec)
        token = _VERIFIED.set((_key(folder / name), data)) if data is not None else None
        try:
            old = None if why else load(rec)    # reads ``data``: no second read, no second hash
        except IndexFormatError as e:
            if not repair:
                raise
            why = str(e).split(": ", 1)[-1].split(". ", 1)[0]
        finally:
            if token is not None:
                _VERIFIED.reset(token)
        if why and not repair:
            raise IndexFormatError(f"{folder / name}: {why}. {fix}".strip())
        if why:
            action, reason = "rebuilt", why
        elif old is not None and rec.get("fingerprint") == fp and rec.get("images") == order:
            return Stage(name, old, "loaded", "", {"load": time.perf_counter() - t0})
        else:
            reason = "settings or images changed"
        old = old if rec.get("fingerprint") == fp else None
    with folder_lock(folder, cfg.lock_timeout, cfg):
        written: list = []
        token = _WRITTEN.set((_key(folder / name), written))
        try:
            result, built = build(old)
        finally:
            _WRITTEN.reset(token)
        if written:     # the bytes the build wrote (save_npz / write_json): not read back, hashed once
            data, sha = written[-1]
            rec = {"size": len(data), "sha256": sha, "sample": checksum.sample_hash(data, len(data), cfg)}
        else:           # written by other means
            rec = checksum.record(folder / name, cfg)
        record_file(folder, name, {**rec, "fingerprint": fp, "images": order})
    return Stage(name, result, built if action == "built" else action, reason,
                 {"build": time.perf_counter() - t0})


def _key(path: Path) -> str:
    return os.path.abspath(path)


def _read_verified(path: Path, rec: dict) -> tuple[str, bytes | None]:
    """('', the bytes of ``path``) when they match ``rec`` in full (size and SHA-256), else (why not, None)."""
    if not path.is_file():
        return "missing", None
    try:
        data = path.read_bytes()
    except OSError as e:
        return f"cannot read ({e.strerror or e})", None
    why = checksum.mismatch(data, rec, full=True)
    return why, None if why else data


def _verified_bytes(path: Path) -> bytes | None:
    """The bytes ``ensure`` has read and verified for ``path`` (while its ``load`` runs), else None."""
    got = _VERIFIED.get()
    return got[1] if got is not None and got[0] == _key(path) else None


def clean_temporaries(folder: Path) -> list[str]:
    """Delete temporary files left by killed writers (call with the folder lock held)."""
    gone = []
    for sub in (Path(folder), Path(folder) / "features"):
        for p in sub.glob(f".*{TMP_SUFFIX}") if sub.is_dir() else []:
            with contextlib.suppress(OSError):
                p.unlink()
                gone.append(str(p.relative_to(folder)))
    return gone
