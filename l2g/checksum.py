"""What the manifest keeps about a file, and the check of a file against it (used by l2g.store).

- ``record``: a file's size, SHA-256 and ``sample`` ('n/block/sha256' of ``hash_samples`` blocks at
  fixed offsets, the parameters travelling with the hash, so another config still verifies it).
- ``verify``: '' when a file matches its record, else why not: in full up to
  ``StoreConfig.full_hash_max`` bytes, size + sampled hash above, or the size alone when the caller
  has just written or hashed the file. Every full hash goes through ``sha256_bytes`` /
  ``sha256_file``.
- ``fingerprint``: one short hash of the settings a stored stage depends on; ``order_hash``: of an
  image list in row order.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .config import StoreConfig


def sample_hash(data_or_file, size: int, cfg: StoreConfig) -> str:
    """'n/block/sha256' of ``hash_samples`` blocks at fixed, evenly spaced offsets (first and last
    included); the sampling parameters travel with the hash, so another config still verifies it."""
    n, block = max(1, cfg.hash_samples), max(1, cfg.hash_block)
    h = hashlib.sha256(str(size).encode())
    for o in sorted({int(round(i * max(size - block, 0) / max(n - 1, 1))) for i in range(n)}):
        if isinstance(data_or_file, (bytes, memoryview)):
            h.update(data_or_file[o:o + block])
        else:
            data_or_file.seek(o)
            h.update(data_or_file.read(block))
    return f"{n}/{block}/{h.hexdigest()}"


def _resample(f, size: int, sample: str) -> str:
    try:
        n, block, _ = str(sample).split("/")
        return sample_hash(f, size, StoreConfig(hash_samples=int(n), hash_block=int(block)))
    except ValueError:
        return ""


def sha256_bytes(data: bytes) -> str:
    """The SHA-256 of bytes in memory (every full hash of a file's bytes goes through here or sha256_file)."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def record(path: Path, cfg: StoreConfig = StoreConfig()) -> dict:
    """{size, sha256, sample}: what the manifest keeps about a file it depends on."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        sample = sample_hash(f, size, cfg)
    return {"size": size, "sha256": sha256_file(path), "sample": sample}


def mismatch(data: bytes, rec: dict, full: bool) -> str:
    if len(data) != rec.get("size"):
        return f"{len(data)} bytes, the manifest recorded {rec.get('size')}"
    if full and sha256_bytes(data) != rec.get("sha256"):
        return "its checksum differs from the manifest's"
    return ""


def verify(path: Path, rec: dict | None, full: bool | None = None, cfg: StoreConfig = StoreConfig()) -> str:
    """'' when ``path`` matches its record, else why not. full=None: full hash up to
    cfg.full_hash_max bytes, size + sampled hash above; True: always the full hash; False: the size
    only (the caller has just written the file, or hashed it in full a moment ago)."""
    path = Path(path)
    if rec is None:
        return "not recorded in the manifest"
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != rec.get("size"):
        return f"{size} bytes, the manifest recorded {rec.get('size')}"
    if full is False:
        return ""
    if full or (full is None and size <= cfg.full_hash_max):
        return "" if sha256_file(path) == rec.get("sha256") else "its checksum differs from the manifest's"
    with open(path, "rb") as f:
        ok = _resample(f, size, rec.get("sample", "")) == rec.get("sample")
    return "" if ok else "its sampled checksum differs from the manifest's"


def order_hash(images) -> str:
    """Hash of an ordered image list (entries with .path, .sha1, .n): ties a file's rows to the manifest."""
    return fingerprint([[e.path, e.sha1, int(e.n)] for e in images])


def fingerprint(settings) -> str:
    """A short stable hash of JSON-able settings: a stored stage with another fingerprint is stale."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
