"""Global-to-local verification in a background thread, so the query page is interactive at once.

No Streamlit here: a job computes ``g2l_rerank`` for one search and keeps its result; the page
polls it (a fragment re-running every second) and, once it is done, stores it in the runs that
share that search (``apply``).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from .. import pipeline as P
from ..verify import g2l_rerank


@dataclass
class G2LJob:
    """Spatial verification of one run's global shortlist; ``done`` once ``result`` or ``error`` is set."""

    key: object                       # the search it belongs to (the page's run key)
    local: object                     # run.local of that search: runs sharing it get the result
    result: object = None
    error: str | None = None
    seconds: float | None = None
    started: float = field(default_factory=time.perf_counter)
    thread: threading.Thread | None = None

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def wait(self, timeout: float | None = None) -> bool:
        if self.thread is not None:
            self.thread.join(timeout)
        return self.done


def start(eng: P.Engine, run: P.QueryRun, key) -> G2LJob | None:
    """A running job for ``run`` (None when it needs none: g2l known, or no global descriptors)."""
    if run.g2l is not None or run.global_ids is None:
        return None
    job = G2LJob(key=key, local=run.local)
    ex = run.query.gallery_id if run.query.bbox is None else None
    feats, ids, vcfg = run.query.feats, run.global_ids, eng.cfg.verify

    def work():
        t0 = time.perf_counter()
        try:
            res = g2l_rerank(eng.li, feats, ids, vcfg, exclude=ex)
        except Exception as e:        # noqa: BLE001 -- shown on the page instead of the list
            job.error = f"{type(e).__name__}: {e}"
        else:
            job.seconds = time.perf_counter() - t0
            job.result = res

    job.thread = threading.Thread(target=work, name="l2g-g2l", daemon=True)
    job.thread.start()
    return job


def apply(job: G2LJob, runs) -> bool:
    """Store a finished job's result in every run of ``runs`` with the job's search; True if any."""
    if job is None or job.result is None:
        return False
    hit = False
    for r in runs:
        if r is not None and r.local is job.local and r.g2l is None:
            r.g2l = job.result
            r.timings["g2l"] = job.seconds
            r.timings["total"] = sum(v for k, v in r.timings.items() if k != "total")
            hit = True
    return hit
