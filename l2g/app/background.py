"""Slow methods (global-to-local verification) in a background thread, so the query page is
interactive at once.

No Streamlit here: a job runs the deferred methods (``l2g.methods``, ``deferred=True``) of one
search on its own copy of the run's shared stages and keeps their Rankings; the page polls it (a
fragment re-running every second) and, once it is done, stores them in the runs that share that
search (``apply``).
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field

from .. import methods as M
from .. import pipeline as P
from .fmt import FEATURES_PHASE, phase_name


def missing(run: P.QueryRun, methods) -> list[str]:
    """The methods of ``methods`` this run still lacks and can have (those that need global
    descriptors only when the run has them)."""
    return [m for m in methods if m not in run.results
            and (run.global_ids is not None or not M.get(m).needs_global)]


@dataclass
class G2LJob:
    """The deferred methods of one run; ``done`` once ``result`` or ``error`` is set."""

    key: object                       # the search it belongs to (the page's run key)
    local: object                     # run.local of that search: runs sharing it get the result
    result: dict | None = None        # method name -> Ranking
    timings: dict = field(default_factory=dict)   # stage -> seconds
    memo: dict = field(default_factory=dict)      # the job's Context memo (its RANSAC inlier counts)
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)
    thread: threading.Thread | None = None

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def wait(self, timeout: float | None = None) -> bool:
        if self.thread is not None:
            self.thread.join(timeout)
        return self.done


def start(eng: P.Engine, run: P.QueryRun, key, methods) -> G2LJob | None:
    """A running job for the ``methods`` ``run`` lacks (None when it lacks none)."""
    todo = missing(run, methods)
    if not todo:
        return None
    job = G2LJob(key=key, local=run.local)
    # its own context and memo: the page's thread keeps using (and filling) the run's own
    side = dataclasses.replace(run, results={}, timings={}, ctx=dataclasses.replace(run.ctx, memo=job.memo))

    def work():
        try:
            P.add_methods(side, todo)
        except Exception as e:        # noqa: BLE001 -- shown on the page instead of the list
            job.error = f"{type(e).__name__}: {e}"
        else:
            job.timings = {k: v for k, v in side.timings.items() if k != "total"}
            job.result = dict(side.results)

    job.thread = threading.Thread(target=work, name="l2g-deferred", daemon=True)
    job.thread.start()
    return job


def apply(job: G2LJob, runs) -> bool:
    """Store a finished job's Rankings in every run of ``runs`` with the job's search; True if any.
    Its RANSAC inlier counts go into those runs' memo too, so a smaller verification budget
    (``g2l@N``) is read from them without verifying again."""
    if job is None or job.result is None:
        return False
    hit = False
    inliers = {k: v for k, v in job.memo.items() if k[0] == "inliers"}
    for r in runs:
        if r is not None and r.local is job.local:
            r.ctx.memo.update({k: v for k, v in inliers.items() if k not in r.ctx.memo})
        if r is not None and r.local is job.local and any(m not in r.results for m in job.result):
            r.results.update({m: v for m, v in job.result.items() if m not in r.results})
            r.results = {m: r.results[m] for m in M.METHODS if m in r.results}
            r.timings.update(job.timings)
            r.timings["total"] = sum(v for k, v in r.timings.items() if k != "total")
            hit = True
    return hit


# ----------------------------------------------------------------------------- indexing in the background


@dataclass
class IndexJob:
    """A gallery's index extended in a background thread (a first start indexes part of the demo,
    opens the Query page on it, and adds the rest here). ``finished`` once the thread ends."""

    folder: str                       # the index folder (the job's key)
    total: int                        # images to have indexed when done
    first: int                        # images indexed before the job started
    done: int = 0                     # images indexed so far (features phase)
    phase: str = "local features"
    error: str | None = None
    finished: bool = False
    started: float = field(default_factory=time.perf_counter)
    thread: threading.Thread | None = None

    def progress(self, done: int, total: int, message: str) -> None:
        """The build's progress callback (index.py, graph.py, globaldesc.py messages)."""
        name = phase_name(message)
        if name != FEATURES_PHASE[0]:
            self.phase, self.done = name, self.total
        elif total:
            self.phase, self.done = name, max(self.done, min(int(done), self.total))

    @property
    def rate(self) -> float:
        """Images indexed per second since the job started."""
        dt = time.perf_counter() - self.started
        return (self.done - self.first) / dt if dt > 0 and self.done > self.first else 0.0

    def text(self) -> str:
        """'indexing 60/180 images in the background, 2.1 img/s, ~1 min left'."""
        if self.error:
            return f"indexing the rest of the gallery failed: {self.error}"
        if self.finished:
            return f"all {self.total} images indexed"
        if self.phase != "local features":
            return (f"indexing {self.total}/{self.total} images in the background: {self.phase} "
                    f"({time.perf_counter() - self.started:.0f} s so far)")
        s = f"indexing {self.done}/{self.total} images in the background"
        r = self.rate
        if r > 0:
            left = (self.total - self.done) / r
            rate = f"{r:.2f}" if r < 1 else f"{r:.1f}"
            s += f", {rate} img/s, ~{left:.0f} s left" if left < 90 else f", {rate} img/s, ~{left / 60:.0f} min left"
        return s

    def wait(self, timeout: float | None = None) -> bool:
        if self.thread is not None:
            self.thread.join(timeout)
        return self.finished


_INDEX_JOBS: dict[str, IndexJob] = {}
_INDEX_LOCK = threading.Lock()
_FINISHED: dict[str, int] = {}


def index_job(folder) -> IndexJob | None:
    """The background indexing job of an index folder while it runs (None when none runs)."""
    job = _INDEX_JOBS.get(str(folder))
    return job if job is not None and not job.finished else None


def last_index_job(folder) -> IndexJob | None:
    """The latest job of an index folder, running or finished."""
    return _INDEX_JOBS.get(str(folder))


def running_folders() -> list[str]:
    """The index folders a background build is working on."""
    return [k for k, j in list(_INDEX_JOBS.items()) if not j.finished]


def generation(folder) -> int:
    """How many background builds of an index folder have finished (the app's engine cache key)."""
    return _FINISHED.get(str(folder), 0)


def start_indexing(work, folder, total: int, first: int) -> IndexJob:
    """Run ``work(job)`` (which indexes, reporting through ``job.progress``) in a daemon thread,
    one job per index folder at a time: a running job is returned as it is."""
    key = str(folder)
    with _INDEX_LOCK:
        job = _INDEX_JOBS.get(key)
        if job is not None and not job.finished:
            return job
        job = IndexJob(key, total, first, done=first)

        def run():
            try:
                work(job)
            except Exception as e:        # noqa: BLE001 -- shown on the page; the first part stays usable
                job.error = f"{type(e).__name__}: {e}"
            finally:
                with _INDEX_LOCK:
                    _FINISHED[key] = _FINISHED.get(key, 0) + 1
                    job.finished = True

        job.thread = threading.Thread(target=run, name="l2g-index", daemon=True)
        _INDEX_JOBS[key] = job
        job.thread.start()
    return job
