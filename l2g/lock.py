"""One build at a time per index folder: an exclusive lock (``filelock`` on ``.l2g.lock``),
re-entrant within a thread; other threads and processes wait, or fail when the wait runs out."""
from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

from .config import StoreConfig
from .errors import L2GError

LOCK_NAME = ".l2g.lock"


class IndexBusyError(L2GError, RuntimeError):
    """Another build holds the lock on the index folder."""


_REG = threading.Lock()
_HELD: dict[str, list] = {}   # folder -> [threading.RLock, filelock.FileLock | None, depth]


@contextlib.contextmanager
def folder_lock(folder: Path, timeout: float | None = None, cfg: StoreConfig = StoreConfig()):
    """Hold the exclusive build lock of ``folder`` (created if needed).

    timeout: seconds to wait for another build (None: cfg.lock_timeout; < 0: wait as long as it
    takes; 0: fail at once). Re-entrant in one thread; other threads and processes wait.
    Raises IndexBusyError when the wait runs out.
    """
    import filelock

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    timeout = cfg.lock_timeout if timeout is None else timeout
    key = str(folder.resolve())
    busy = (f"another build holds the lock on {folder} ({LOCK_NAME}); wait for it to finish, "
            "or run with --wait SECONDS to wait for it")
    deadline = time.monotonic() + timeout          # one wait in all: the thread lock, then the file lock
    with _REG:
        slot = _HELD.setdefault(key, [threading.RLock(), None, 0])
    if not slot[0].acquire(timeout=-1 if timeout < 0 else timeout):
        raise IndexBusyError(busy)
    try:
        if slot[2] == 0:
            left = timeout if timeout < 0 else max(0.0, deadline - time.monotonic())
            fl = filelock.FileLock(folder / LOCK_NAME, timeout=left, thread_local=False)
            try:
                fl.acquire()
            except filelock.Timeout:
                raise IndexBusyError(busy) from None
            slot[1] = fl
        slot[2] += 1
        try:
            yield
        finally:
            slot[2] -= 1
            if slot[2] == 0:
                slot[1].release()
                slot[1] = None
    finally:
        slot[0].release()
