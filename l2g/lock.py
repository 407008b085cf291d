"""One build at a time per index folder: an exclusive lock (``filelock`` on ``.l2g.lock``),
re-entrant within a thread; other threads and processes wait, or fail when the wait runs out."""
from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from pathlib import Path

from .config import StoreConfig
from .errors import IndexFormatError, L2GError

LOCK_NAME = ".l2g.lock"


class IndexBusyError(L2GError, RuntimeError):
    """Another build holds the lock on the index folder."""


_REG = threading.Lock()
_HELD: dict[str, list] = {}   # folder -> [threading.RLock, filelock.FileLock | None, depth]


def _slot(folder: Path) -> list:
    """The process's [thread lock, file lock, depth] entry of ``folder`` (made on first use)."""
    with _REG:
        return _HELD.setdefault(str(Path(folder).resolve()), [threading.RLock(), None, 0])


def lock_problem(folder: Path) -> str:
    """Why ``folder``'s lock file cannot be taken ('' when it can: a regular file, or none yet). A folder,
    pipe or device of that name made every build fail with the raw OS error ('Is a directory')."""
    path = Path(folder) / LOCK_NAME
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return ""
    except OSError as e:
        return f"{path}: cannot be read ({e.strerror or e}); remove it and run the command again"
    if stat.S_ISREG(mode):
        return ""
    what = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
    return (f"{path} is {what}, not the index's build lock file (which l2g makes itself): remove it "
            f"(`rm -r {path}`) and run the command again")


@contextlib.contextmanager
def folder_lock(folder: Path, timeout: float | None = None, cfg: StoreConfig = StoreConfig()):
    """Hold the exclusive build lock of ``folder`` (created if needed).

    timeout: seconds to wait for another build (None: cfg.lock_timeout; < 0: wait as long as it
    takes; 0: fail at once). Re-entrant in one thread; other threads and processes wait.
    Raises IndexBusyError when the wait runs out, IndexFormatError when the lock file is not a file.
    """
    import filelock

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if why := lock_problem(folder):
        raise IndexFormatError(why)
    timeout = cfg.lock_timeout if timeout is None else timeout
    busy = (f"another build holds the lock on {folder} ({LOCK_NAME}); wait for it to finish, "
            "or run with --wait SECONDS to wait for it")
    deadline = time.monotonic() + timeout          # one wait in all: the thread lock, then the file lock
    slot = _slot(folder)
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


def held_by_another(folder: Path) -> bool:
    """Whether another thread or process holds the build lock of ``folder`` now (never waits; a reader's
    check: the calling thread's own lock, a missing lock file or a read-only folder say False)."""
    import filelock

    folder = Path(folder)
    if not (folder / LOCK_NAME).is_file():
        return False
    slot = _slot(folder)
    if not slot[0].acquire(blocking=False):
        return True                                  # another thread of this process builds
    try:
        if slot[2]:
            return False                             # this thread holds it (a repair checking its work)
        fl = filelock.FileLock(folder / LOCK_NAME, timeout=0, thread_local=False)
        try:
            fl.acquire()
        except filelock.Timeout:
            return True
        except OSError:
            return False
        fl.release()
        return False
    finally:
        slot[0].release()


def _identity(folder: Path, names) -> tuple:
    out = []
    for name in names:
        try:
            st = (folder / name).stat()
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def _pause(seconds: float) -> None:
    time.sleep(seconds)


def read_consistent(folder: Path, names, read, attempts: int = 6, wait: float = 0.1):
    """``read()`` (which opens files ``names`` of ``folder`` and raises IndexFormatError on a mismatch)
    over the files of one build: a read during which one of them was replaced (a build renaming in its
    new files) is done again, and so is a failed one while another build holds the folder's lock, a
    bounded number of times (waits doubling from ``wait``). When a build keeps the files changing,
    IndexBusyError says so (not a damage: nothing to repair)."""
    folder = Path(folder)
    busy = IndexBusyError(f"a build is updating the index at {folder}; try again when it finishes")
    for attempt in range(attempts):
        stamp = _identity(folder, names)
        try:
            out = read()
        except IndexFormatError:
            changed = _identity(folder, names) != stamp
            if not (changed or held_by_another(folder)):
                raise                                # a damaged file, no build at work: the message says the fix
            if attempt == attempts - 1:
                raise busy from None
        else:
            if _identity(folder, names) == stamp:
                return out
            if attempt == attempts - 1:
                raise busy
        _pause(wait * 2 ** attempt)
    raise busy
