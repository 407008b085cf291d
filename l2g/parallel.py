"""Feature extraction of a build's images: in the build's own process, or in worker processes.

``l2g.index`` hashes every image and decides what needs extracting (the parent keeps the
hashing, the reuse of features on disk, repairs and every report); ``extract`` does the rest
for those images: load, extract, ``save_features``. With ``BuildConfig.workers`` > 1 (0 = all
cores) and at least ``BuildConfig.parallel_min`` images, it runs them in a
``ProcessPoolExecutor`` of *spawned* processes (torch and fork do not mix), each with one torch
thread and its own ``Extractor`` built once. In the build's own process extraction runs with
one torch thread too: torch's results differ in the last bits with the thread count (descriptors
by ~1e-8), and this way the features files are the same bytes whatever the number of workers.
A worker does not run the caller's ``__main__``
(spawn re-runs it by default): everything it needs is in ``l2g``, and the main module of an app
that embeds l2g may not run outside its host (Streamlit's script module, a notebook, a test's).
Each worker writes its features file atomically (unique temporary file, then rename), so a
killed build keeps every finished image and a resume re-uses it. A worker that dies (killed,
out of memory) fails the build with an L2GError; the features already written stay on disk.

On a GPU (``BuildConfig.device`` 'cuda', or 'auto' where torch sees one) there are no worker
processes: the build's own process loads the images and feeds images of equal size to the GPU
``BuildConfig.batch`` at a time (``Extractor.batch``). A batch size above 1 does the same on the CPU.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing import context as mp_context
from multiprocessing import spawn as mp_spawn
from pathlib import Path

from . import config as C
from .errors import ImageError, L2GError
from .features import Extractor, resolve_device, save_features
from .images import load_image
from .sift import keep_freed_memory


@dataclass(frozen=True)
class Job:
    """One image to extract: its path relative to the gallery, on disk, its features file name
    (``features/<sha1>.npz``, relative to the index folder), content hash, and whether the old
    index had it (its features were damaged)."""

    rel: str
    path: Path
    name: str
    sha: str
    kept: bool


@dataclass(frozen=True)
class Extracted:
    """What the parent needs of an extracted image (the features themselves stay on disk)."""

    n: int                 # keypoints
    size: tuple            # (W, H) of the loaded image
    scale: float           # loaded / original size
    rec: dict              # the features file's record (l2g.store.record)


def n_workers(cfg: C.L2GConfig) -> int:
    """Worker processes asked for: BuildConfig.workers, 0 meaning every core."""
    w = cfg.build.workers
    return max(1, os.cpu_count() or 1) if w <= 0 else w


def batch_size(cfg: C.L2GConfig, device) -> int:
    """Images per extraction call: BuildConfig.batch, 0 meaning 16 on CUDA and 1 on the CPU."""
    return cfg.build.batch if cfg.build.batch > 0 else (16 if device.type == "cuda" else 1)


def extract_one(path: Path, dest: Path, max_side: int, extractor: Extractor) -> Extracted | str:
    """Load, extract and save one image; an unreadable image gives its ImageError message."""
    try:
        img = load_image(path, max_side=max_side)
    except ImageError as e:
        return str(e)
    return _save(dest, extractor(img.rgb), img.scale)


def _save(dest: Path, f, scale: float) -> Extracted:
    rec = save_features(dest, f)
    return Extracted(len(f), tuple(f.size), float(scale), rec)


_EXTRACTOR: Extractor | None = None   # a worker's own extractor (set by _init)


def _exit_with_parent(parent: int, every: float = 0.5) -> None:
    """Exit this worker once its parent is gone: kill -9 of a build skips the pool's shutdown, and a
    worker would otherwise live on (hundreds of MB each) re-parented to init."""
    def watch():
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="l2g-exit-with-parent", daemon=True).start()


def _init(fcfg: C.FeatureConfig) -> None:
    global _EXTRACTOR
    import torch

    _exit_with_parent(os.getppid())
    torch.set_num_threads(1)
    keep_freed_memory()          # a single-threaded worker that only extracts: freed memory reused, not re-faulted
    _EXTRACTOR = Extractor(fcfg, device="cpu")


def _work(path: Path, dest: Path, max_side: int) -> Extracted | str:
    return extract_one(path, dest, max_side, _EXTRACTOR)


@contextlib.contextmanager
def _one_torch_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _plain(extractor, cfg: C.L2GConfig) -> bool:
    """Can a worker's own Extractor(cfg.features) stand in for the caller's extractor?"""
    return extractor is None or (type(extractor) is Extractor and extractor.cfg == cfg.features)


def extract(jobs: Iterable[Job], out: Path, cfg: C.L2GConfig, extractor: Extractor | None = None,
            progress: Callable | None = None, done: int = 0, total: int = 0
            ) -> Iterator[tuple[Job, Extracted | str, bool]]:
    """Extract ``jobs`` into index folder ``out``; yields (job, Extracted or error message, first).

    Jobs sharing a features file (identical image content) are extracted once: the others
    follow with ``first`` False. Serial: ``progress(done, total, rel)`` before each image, in
    job order. Parallel: after each image, in the order they finish (callers order by path).
    """
    leaders: dict[str, Job] = {}
    followers: list[Job] = []
    for j in jobs:
        if j.name in leaders:
            followers.append(j)
        else:
            leaders[j.name] = j
    device = resolve_device(cfg.build.device)
    workers = min(n_workers(cfg), len(leaders))
    results: dict[str, Extracted | str] = {}
    if device.type != "cpu" or batch_size(cfg, device) > 1:
        if extractor is None or (_plain(extractor, cfg) and extractor.device != device):
            extractor = Extractor(cfg.features, device=str(device))   # (the caller's own kind runs as given)
        with _one_torch_thread():
            yield from _batched(leaders, out, cfg, extractor, batch_size(cfg, device), results, progress, done, total)
    elif workers <= 1 or len(leaders) < cfg.build.parallel_min or not _plain(extractor, cfg):
        extractor = extractor or Extractor(cfg.features, device="cpu")
        with _one_torch_thread():
            for j in leaders.values():
                if progress:
                    progress(done, total, j.rel)
                results[j.name] = r = extract_one(j.path, out / j.name, cfg.features.max_side, extractor)
                done += 1
                yield j, r, True
    else:
        yield from _pool(leaders, out, cfg, workers, results, progress, done, total)
    for j in followers:
        yield j, results[j.name], False


def _batched(leaders: dict, out: Path, cfg: C.L2GConfig, extractor: Extractor, size: int, results: dict,
             progress, done, total):
    """In the build's own process: load ``4 * size`` images at a time, extract those of equal size
    ``size`` per call (Extractor.batch), save each; yields like ``extract`` in job order."""
    jobs = list(leaders.values())
    for s in range(0, len(jobs), 4 * size):
        window, imgs = [], []
        for j in jobs[s:s + 4 * size]:
            if progress:
                progress(done, total, j.rel)
            try:
                img = load_image(j.path, max_side=cfg.features.max_side)
            except ImageError as e:
                results[j.name] = str(e)
                continue
            window.append((j, img.scale))
            imgs.append(img.rgb)
        feats = extractor.batch(imgs, size)
        for (j, scale), f in zip(window, feats):
            results[j.name] = _save(out / j.name, f, scale)
        for j in jobs[s:s + 4 * size]:
            done += 1
            yield j, results[j.name], True


_WITHOUT_MAIN = threading.local()   # .on while this thread starts one of l2g's own workers
_LOCK = threading.Lock()
_PREPARATION_DATA: list = []        # spawn's own get_preparation_data, once _preparation_data wraps it


def _preparation_data(name):
    """multiprocessing.spawn's preparation data, without the main module to re-run while
    ``_WITHOUT_MAIN.on`` (only in the thread starting an l2g worker: any other spawn is unchanged)."""
    d = _PREPARATION_DATA[0](name)
    if getattr(_WITHOUT_MAIN, "on", False):
        d.pop("init_main_from_path", None)
        d.pop("init_main_from_name", None)
    return d


class _Process(mp_context.SpawnProcess):
    """A spawned process that does not re-run the parent's ``__main__``: spawn re-runs it (as
    ``__mp_main__``) in every child by default, and an embedding app's main module may fail
    there (Streamlit's script module, a notebook's) or cost a whole app start per worker."""

    @staticmethod
    def _Popen(process_obj):
        with _LOCK:
            if not _PREPARATION_DATA:       # wrap it once (another wrapper put on later keeps calling ours)
                _PREPARATION_DATA.append(mp_spawn.get_preparation_data)
                mp_spawn.get_preparation_data = _preparation_data
        _WITHOUT_MAIN.on = True
        try:
            return mp_context.SpawnProcess._Popen(process_obj)
        finally:
            _WITHOUT_MAIN.on = False


class _Spawn(mp_context.SpawnContext):
    Process = _Process


def _pool(leaders: dict, out: Path, cfg: C.L2GConfig, workers: int, results: dict, progress, done, total):
    pool = cf.ProcessPoolExecutor(workers, mp_context=_Spawn(), initializer=_init,
                                  initargs=(cfg.features,))
    try:
        futs = {pool.submit(_work, j.path, out / j.name, cfg.features.max_side): j for j in leaders.values()}
        for fut in cf.as_completed(futs):
            j = futs[fut]
            try:
                r = fut.result()
            except cf.process.BrokenProcessPool:
                raise L2GError(
                    f"a feature-extraction worker stopped unexpectedly (killed, or out of memory?) while "
                    f"{out} was being built; the {len(results)} images extracted are kept in {out / 'features'} "
                    f"and a re-run resumes from them (--workers 1 extracts in one process)") from None
            results[j.name] = r
            done += 1
            if progress:
                progress(done, total, j.rel)
            yield j, r, True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
