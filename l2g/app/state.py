"""Shared Streamlit plumbing: settings, the cached engine, gallery choice (thumbnails: l2g.app.thumbs).

The Engine (index, graph, global descriptors, extractor) is shared by every
browser session through ``st.cache_resource``; everything about one user's
query lives in ``st.session_state`` under keys starting with ``l2g_``.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import streamlit as st

from .. import confidence
from .. import config as C
from .. import pipeline as P
from ..datasets import build_demo
from ..demo import demo_is_complete
from ..demo_tour import FIRST_N, index_order  # FIRST_N: demo images indexed before the Query page opens
from ..errors import IndexFormatError, L2GError
from ..features import Extractor
from ..scan import list_images
from . import background, fmt
from .settings import DEMO, Gallery, Settings, check_gallery, list_galleries, parse_settings
from .thumbs import data_uri, gallery_rgb, thumb, thumb_of, thumb_uri, thumb_uri_of  # noqa: F401 (re-exported)


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    return parse_settings(sys.argv[1:])


@st.cache_resource(show_spinner=False)
def extractor(fcfg, device: str = C.BuildConfig.device) -> Extractor:
    """The feature extractor on ``device`` (--device / L2G_DEVICE), warmed up on a small image: the
    first call of the backend is slow (its one-off set-up), and should not fall on the first upload."""
    ex = Extractor(fcfg, device=device, keep_buffers=False)   # ~180 MiB at 1024 px, not held between queries
    ex(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    return ex


def _extractor(cfg: C.L2GConfig) -> Extractor:
    return extractor(cfg.features, cfg.build.device)


@st.cache_resource(show_spinner=False, max_entries=4)
def _engine(gallery: str, index_dir: str, cfg_name: str, generation: int = 0, _cfg=None) -> P.Engine:
    """An index already on disk, opened as it is (fast). Keyed by gallery, index folder, preset and
    the number of background builds finished on that folder (so a finished one swaps the engine)."""
    return P.open_engine(Path(gallery), Path(index_dir), _cfg, extractor=_extractor(_cfg), sync=False)


_BUILD_LOCKS: dict = {}
_LOCKS_LOCK = threading.Lock()


def _progress_bar(label: str, phased: bool = True):
    """A progress bar and its callback: each phase (features, graph, global) is named and gets its own
    rate and ETA, so a count going back to 0 reads as a new phase."""
    bar = st.progress(0.0, text=label)
    t0 = time.perf_counter()
    phase = {"name": None, "t0": t0}

    def cb(done, total, message):
        name = fmt.build_phase(message) if phased else "progress"
        now = time.perf_counter()
        if name != phase["name"]:
            phase.update(name=name, t0=now)
        frac = min(1.0, done / total) if total else 0.0
        bar.progress(frac, text=f"{label} · {name}: {message} "
                                f"({fmt.eta_text(done, total, now - phase['t0'])}; {now - t0:.0f} s in all)")
    return bar, cb


def _build(g: Gallery, path: Path, index_dir: Path, s: Settings, paths: list | None = None) -> None:
    """Build or update the index, graph and global descriptors on disk, with a progress bar.

    Outside the cached function (a cached function cannot draw into the page), one build per
    index folder at a time: a second session waits, then finds the index ready."""
    with _LOCKS_LOCK:
        lock = _BUILD_LOCKS.setdefault(str(index_dir), threading.Lock())
    with lock:
        t_build = time.perf_counter()
        bar, cb = _progress_bar(f"Indexing {g.label}" + (f" (its first {len(paths)} images; the rest follow in the "
                                                          f"background)" if paths else ""))
        eng = P.open_engine(path, index_dir, s.cfg, progress=cb, extractor=_extractor(s.cfg), sync=True,
                            paths=paths)
        bar.empty()
        rep = eng.report
        if rep is not None and rep.repaired:
            st.info(f"Repaired the index of {g.label} (damaged or missing files rebuilt):\n- "
                    + "\n- ".join(f"`{name}`: {why}" for name, why in rep.repaired[:20]))
        if rep is not None and (rep.failed or rep.empty):
            bad = [f"`{p}`: {r}" for p, r in rep.failed[:20]] + [f"`{p}`: no keypoints" for p in rep.empty[:20]]
            st.warning(f"{len(rep.failed) + len(rep.empty)} image(s) of {g.label} not indexed:\n- "
                       + "\n- ".join(bad))
        if rep is not None:     # shown on the next run too (Re-scan gives feedback)
            st.session_state["l2g_scan_note"] = (
                f"{g.label}: {eng.li.n_images} images indexed — {len(rep.added)} new or changed, "
                f"{len(rep.skipped) + len(rep.reused)} unchanged, {len(rep.failed) + len(rep.empty)} not indexable "
                f"({time.perf_counter() - t_build:.1f} s).")
    _engine.clear()


def _index_ready(index_dir: Path) -> bool:
    return (index_dir / "manifest.json").is_file() and (index_dir / "graph.npz").is_file()


def _demo_order(path: Path) -> list[str]:
    """The demo's images in first-start order (l2g.demo_tour.index_order); [] when unreadable. Read once
    per version of its groups.json (size and time key the cache), not on every rerun of a page."""
    try:
        stat = (path / "groups.json").stat()
    except OSError:
        return []
    return list(_order_of(str(path), stat.st_mtime_ns, stat.st_size))


@st.cache_resource(show_spinner=False, max_entries=4)
def _order_of(path: str, mtime_ns: int, size: int) -> tuple:
    try:
        return tuple(index_order(json.loads((Path(path) / "groups.json").read_text(encoding="utf-8"))))
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return ()


def _extend_in_background(path: Path, index_dir: Path, s: Settings, eng: P.Engine, order: list) -> None:
    """Start indexing the demo images the engine lacks in a background thread (once per folder; a
    failed job is not restarted until the server restarts or *Re-scan* runs)."""
    have = set(eng.li.paths) | {p for p, _ in eng.li.failed}
    missing = [p for p in order if p not in have]
    last = background.last_index_job(index_dir)
    if not missing or (last is not None and (not last.finished or last.error)):
        return

    def work(job):
        e = P.open_engine(path, index_dir, s.cfg, progress=job.progress, extractor=_extractor(s.cfg),
                          sync=True)
        confidence.ensure_calibration(index_dir, e.li, e.graph, e.gt, e.cfg.confidence, e.cfg.verify)

    background.start_indexing(work, index_dir, len(order), eng.li.n_images)


def indexing_note(eng: P.Engine | None = None) -> None:
    """While a background build runs (on the engine's index folder; without an engine, on any): its
    progress, redrawn every few seconds (a fragment: the page stays usable). Once it is done, the
    whole app re-runs, on the new engine."""
    folders = [str(eng.li.folder)] if eng is not None else background.running_folders()
    folders = [f for f in folders if background.last_index_job(f) is not None]
    if not folders:
        return
    folder = folders[0]
    shown = {"running": background.index_job(folder) is not None}
    have = f"the {eng.li.n_images} images indexed so far" if eng is not None else "the images indexed so far"

    def poll():
        job = background.last_index_job(folder)
        if job.finished and shown["running"]:
            st.rerun(scope="app")
        if job.finished:
            if job.error:
                st.error(job.text())
            return
        frac = job.done / job.total if job.total else 0.0
        st.progress(min(1.0, frac), text=f":material/hourglass_top: {job.text()}. The Query page searches "
                                          f"{have}; it switches to all of them when the rest is done.")

    st.fragment(poll, run_every=C.AppConfig().progress_every if shown["running"] else None)()


def open_gallery(g: Gallery, rebuild: bool = False) -> tuple[P.Engine | None, str | None]:
    """(engine, None) for gallery g, built with a progress bar the first time; (None, why) on failure."""
    s = settings()
    try:
        path = check_gallery(g, s)
        if g.kind == "demo" and not demo_is_complete(path):
            bar, cb = _progress_bar("Building the demo gallery", phased=False)
            build_demo(path, progress=cb)
            bar.empty()
        index_dir = s.index_dir(g)
        order = _demo_order(path) if g.kind == "demo" else []
        if background.index_job(index_dir) is not None:
            rebuild = False          # a background build holds the folder: it is the re-scan
        if rebuild or not _index_ready(index_dir):
            if not path.is_dir():
                return None, f"The gallery **{g.label}** is not a readable folder ({path})."
            if not list_images(path):
                return None, f"The gallery **{g.label}** holds no images ({path})."
            first = order[:FIRST_N] if order and not rebuild else None
            _build(g, path, index_dir, s, paths=first)
        gen = lambda: background.generation(index_dir)  # noqa: E731
        try:
            eng = _engine(str(path), str(index_dir), s.cfg.features.name, gen(), _cfg=s.cfg)
        except IndexFormatError:     # damaged, or written by an older l2g: the build repairs it
            _build(g, path, index_dir, s)
            eng = _engine(str(path), str(index_dir), s.cfg.features.name, gen(), _cfg=s.cfg)
        if order:
            _extend_in_background(path, index_dir, s, eng, order)
        if eng.li.n_images == 0:
            return None, (f"No image of **{g.label}** could be indexed: "
                          + "; ".join(f"`{p}`: {r}" for p, r in eng.li.failed[:5]))
        return eng, None
    except (L2GError, OSError) as e:      # bad input or an unreadable folder: a message, the page goes on
        return None, f"Cannot open the gallery **{g.label}**: {e}"


def _forget_query() -> None:
    for k in [k for k in st.session_state if k.startswith("l2g_run") or k in
              ("l2g_query", "l2g_selected", "l2g_query_key", "l2g_match_memo", "l2g_last_action",
                                        "l2g_qcache", "l2g_g2l_job", "l2g_g2l_failed")]:
        del st.session_state[k]


def pick_gallery(sidebar=True) -> tuple[Gallery, P.Engine | None]:
    """The sidebar gallery selectbox (shared by every page) and the opened engine.

    A gallery that cannot be opened gets an error and the previous one stays loaded
    (the selectbox goes back to it)."""
    s = settings()
    gals = list_galleries(s)
    labels = [g.label for g in gals]
    ss = st.session_state
    want = ss.get("l2g_gallery", DEMO)
    if want not in labels:
        want = DEMO
    if ss.get("l2g_gallery_box") not in labels:
        ss.pop("l2g_gallery_box", None)
    box = st.sidebar if sidebar else st
    pending = ss.pop("l2g_gallery_pending", None)     # set by an upload: the box follows it
    if pending in labels:
        want = ss["l2g_gallery_box"] = pending
    kw = {} if pending in labels else {"index": labels.index(want)}   # (a value set by code needs no default)
    label = box.selectbox("Gallery", labels, **kw, key="l2g_gallery_box",
                          help="The demo, realbench-dev when present, your uploads, and folders under "
                               "the allowed roots (--gallery-root / L2G_GALLERY_ROOTS).")
    g = gals[labels.index(label)]
    rebuild = box.button("Re-scan gallery", help="Index images added or changed since the last build")
    for msg in ss.pop("l2g_gallery_errors", []):
        st.error(msg)
    eng, err = open_gallery(g, rebuild=rebuild)
    note = ss.pop("l2g_scan_note", None)
    if rebuild and not err:
        box.success(note or f"{label}: nothing new to index.", icon=":material/check:")
    if err:
        if label != want:            # go back to the gallery that was loaded
            ss["l2g_gallery_errors"] = [err + f" Staying on **{want}**."]
            del ss["l2g_gallery_box"]
            st.rerun()
        st.error(err)
        return g, None
    if ss.get("l2g_gallery") != label or ss.get("l2g_engine_n") != eng.li.n_images:
        _forget_query()        # another gallery, or the same one after a background build
    ss["l2g_engine_n"] = eng.li.n_images
    ss["l2g_gallery"] = label
    box.caption(f"{eng.li.n_images} images, {eng.li.ntotal:,} descriptors, "
                f"preset `{eng.cfg.features.name}`" + (", ground truth: groups.json" if eng.gt else ""))
    return g, eng
