"""The query page: pick a query, run every method, show each stage (see stages.py)."""
from __future__ import annotations

import functools
import hashlib
import random
import time
from contextlib import nullcontext

import streamlit as st

from .. import config as C
from .. import methods as M
from .. import pipeline as P
from ..errors import L2GError
from ..images import ImageError
from . import budget, core, fmt, latency, qbox, stages, state, tour
from .settings import KEEP, QPICK_CHARS, QUERY_GAP, QUERY_SPLIT
from .uploads import MAX_FILE_BYTES

OPEN_KEY = "l2g_open_query"      # set by the Evaluation page: a gallery path to open
FIRST_METHODS = M.names(deferred=False, shown=True)   # the deferred ones (g2l) follow once the page is drawn
UPLOAD_KEY = "l2g_query_upload"   # (name, bytes) of the uploaded query, kept outside the uploader widget (whose
#                                  file is dropped when another page is shown) until removed in the uploader;
#                                  tests put an upload here to stand in for the uploader
PREVIEW_KEY = "l2g_upload_preview"   # (spec key, LoadedImage, notes) of the current upload


def _int_slider(box, label: str, lo: int, hi: int, value: int, **kw) -> int:
    """A whole-number slider that survives tiny galleries: when only one value is possible
    (lo >= hi) it shows that value as a caption instead of a slider, which Streamlit refuses; a value
    kept from another gallery (settings.KEEP) is brought within [lo, hi]."""
    if hi <= lo:
        box.caption(f"{label}: {lo} (the only value this gallery allows)")
        return lo
    key, ss = kw.get("key"), st.session_state
    if key in ss and not lo <= ss[key] <= hi:       # kept from a larger gallery: within this one's range
        ss[key] = min(max(ss[key], lo), hi)
    return box.slider(label, lo, hi, min(max(value, lo), hi), persist_state=KEEP, **kw)


def sidebar_params(eng: P.Engine) -> dict:
    """Search and re-ranking sliders. Features / shortlist re-run the search; k, d, w only re-rank;
    the verification budget N only re-reads the inlier counts of global-to-local.

    Every range is derived from the gallery, so a gallery of 1, 2 or 3 images gets fixed values
    instead of sliders whose minimum equals their maximum."""
    sb = st.sidebar
    n = eng.li.n_images
    nf = eng.cfg.features.num_features
    sb.subheader("Search")
    p = {"n_features": _int_slider(sb, "Query features used", min(50, nf), nf, nf, step=50, key="l2g_p_nfeat",
                                   help="The query's strongest keypoints only (changing it re-runs the search)"),
         "shortlist": _int_slider(sb, "Shortlist size M", min(2, n), min(500, n), eng.cfg.search.shortlist,
                                  key="l2g_p_shortlist",
                                  help="Images kept by local search (changing it re-runs the search)")}
    sb.subheader("Re-ranking (no new search)")
    kmax = min(p["shortlist"], 200)
    p["k"] = _int_slider(sb, "Re-ranked head k", min(3, kmax), kmax, eng.cfg.rerank.k, key="l2g_p_k")
    p["dim"] = sb.select_slider("Embedding dimension d", [2, 3, 4, 8, 16, 32, 64], value=eng.cfg.rerank.dim,
                                key="l2g_p_dim", persist_state=KEEP)
    p["w"] = sb.slider("Global blend weight w", 0.0, 1.0, float(eng.cfg.rerank.w), step=0.05,
                       help="0: pure similarity embedding; >0 blends in the global descriptor cosine",
                       disabled=eng.gi is None, key="l2g_p_w", persist_state=KEEP)
    p["budget"] = budget.control(sb, eng)
    return p


def _default_query(eng: P.Engine) -> str:
    """The first image of the first group with positives (a query with ground truth), else the first."""
    if eng.gt is not None:
        for members in eng.gt.groups.values():
            ids = [m for m in members if eng.li.id_of(m) is not None]
            if len(ids) > 1:
                return ids[0]
    return eng.li.paths[0]


@functools.lru_cache(maxsize=4)           # per gallery, not per page run
def _pick_labels(paths: tuple) -> dict:
    """path -> the gallery image picker's label: its name first, shortened in the middle to QPICK_CHARS (its
    distinguishing end kept, no two alike: whole in the query's column at 1000 px, where the browser cuts
    what follows), then the full path (typed to search). The picker's value stays the path."""
    short = fmt.distinct_names([fmt.short_name(p) for p in paths], QPICK_CHARS)
    return {p: p if s == p else f"{s} · {p}" for p, s in zip(paths, short)}


def _gallery_pick(eng: P.Engine) -> str:
    paths = eng.li.paths
    if st.session_state.get("l2g_qpick") not in paths:
        st.session_state["l2g_qpick"] = _default_query(eng)

    def rnd():
        st.session_state["l2g_qpick"] = random.choice(paths)

    st.selectbox("Gallery image", paths, key="l2g_qpick", persist_state=KEEP,
                 format_func=_pick_labels(tuple(paths)).get,
                 help="Type part of its path to search. Each image reads as its name, shortened in the middle "
                      "(…) to what the narrowest layout shows whole, then its full path.")
    st.button("Random", icon=":material/casino:", on_click=rnd, help="A random gallery image as the query")
    return st.session_state["l2g_qpick"]


def _upload_changed() -> None:
    """The uploader's file was replaced or removed by the user: the kept upload follows (a page switch
    empties the widget without a change event, so the kept upload stays)."""
    up = st.session_state.get("l2g_upload")
    if up is None:
        st.session_state.pop(UPLOAD_KEY, None)
    else:
        st.session_state[UPLOAD_KEY] = (up.name, up.getvalue())


def query_spec(eng: P.Engine, label: str) -> dict | None:
    """The query the user asked for: {'key', 'name', 'gallery_id' or 'data', 'rgb' preview, 'notes'}."""
    ss = st.session_state
    kind = st.radio("Query", ["Gallery image", "Upload"], horizontal=True, key="l2g_qkind",
                    index=1 if ss.get(UPLOAD_KEY) else 0, label_visibility="collapsed", persist_state=KEEP)
    spec = {"notes": []}
    if kind == "Gallery image":
        rel = _gallery_pick(eng)
        gid = eng.li.id_of(rel)
        p = eng.li.image_path(gid)
        spec.update(key=(label, "g", rel), name=rel, gallery_id=gid)
        try:
            spec["rgb"] = state.gallery_rgb(str(p), p.stat().st_mtime, eng.cfg.features.max_side)
        except (ImageError, OSError) as e:
            st.error(f"Cannot read {rel}: {e}")
            return None
        return spec
    up = st.file_uploader("Drop a query image here", key="l2g_upload", max_upload_size=MAX_FILE_BYTES // 1_000_000,
                          help="JPEG, PNG, TIFF, WebP, ... Large images are downscaled.", on_change=_upload_changed)
    if up is not None:
        ss[UPLOAD_KEY] = (up.name, up.getvalue())
    if ss.get(UPLOAD_KEY) is None:
        st.info("Upload an image (drag and drop), or switch to a gallery image.")
        return None
    name, data = ss[UPLOAD_KEY]
    if up is None:           # kept from before a page switch: the uploader itself shows no file
        st.caption(f"Query: **{name}**, uploaded earlier. Drop an image here to replace it.")
        st.button("Remove this upload", icon=":material/close:", key="l2g_upload_forget", on_click=ss.pop,
                  args=(UPLOAD_KEY, None), help="Forget the uploaded query")
    spec.update(key=(label, "u", hashlib.sha1(data).hexdigest(), eng.cfg.features.max_side), name=name, data=data)
    memo = st.session_state.get(PREVIEW_KEY)
    if memo is None or memo[0] != spec["key"]:     # one decode per upload, not one per page run
        try:
            memo = (spec["key"], *core.preview(data, eng.cfg.features.max_side, name=name))
        except ImageError as e:
            st.error(f"Cannot use this file as a query: {e}")
            return None
        st.session_state[PREVIEW_KEY] = memo
    _, img, spec["notes"] = memo
    spec["rgb"], spec["image"] = img.rgb, img          # the query is made from this decode
    return spec


rectangle = qbox.rectangle


QCACHE_SIZE = 8        # query features kept per session (one per image / crop)
RUNCACHE_SIZE = 6      # searches kept per session (with their global-to-local list once verified)


def _remember(cache: dict, key, value, size: int) -> None:
    cache.pop(key, None)
    cache[key] = value
    while len(cache) > size:
        cache.pop(next(iter(cache)))


def compute(eng: P.Engine, spec: dict, box, params: dict) -> P.QueryRun | None:
    """The current run: re-uses the query's features (per image and crop), the search and the
    re-ranking whenever their inputs match; the caption's time counts everything done here."""
    ss = st.session_state
    qkey = (spec["key"], box)
    t0 = time.perf_counter()
    qcache = ss.setdefault("l2g_qcache", {})
    extracted = qkey not in qcache
    if extracted:
        slow = spec.get("data") is not None or box is not None       # features to extract
        with st.spinner("Extracting the query's local features…", show_time=True) if slow else nullcontext():
            out = core.make_query_safe(eng, source=spec.get("image"), gallery_id=spec.get("gallery_id"),
                                       bbox=box, name=spec["name"])
        if out.error:
            st.error(out.error)
            return None
        _remember(qcache, qkey, out.query, QCACHE_SIZE)
    ss["l2g_query"], ss["l2g_query_key"] = qcache[qkey], qkey
    rcfg = C.RerankConfig(**{**C.asdict(eng.cfg.rerank), "k": params["k"], "dim": params["dim"], "w": params["w"]})
    # the features a search uses: a slider value above the query's keypoint count changes nothing
    run_key = (qkey, min(params["n_features"], len(ss["l2g_query"].feats)), params["shortlist"])
    what = "feature extraction + " if extracted and (spec.get("data") is not None or box is not None) else ""
    if ss.get("l2g_run_key") != run_key:
        runs = ss.setdefault("l2g_runcache", {})
        base, made_with = runs.get(run_key, (None, None))
        if base is None:
            q = core.limit_features(ss["l2g_query"], params["n_features"])
            cfg = eng.cfg.replace(search__shortlist=params["shortlist"], rerank=rcfg)
            try:
                base = P.run_query(eng, q, cfg, FIRST_METHODS)   # g2l runs in the background (stages)
                made_with = rcfg
            except L2GError as e:
                st.error(f"The search failed: {e}")
                return None
            action = ("search", what + "new search + re-ranking")
        else:
            action = ("reuse", "search seen before, re-used")
        _remember(runs, run_key, (base, made_with), RUNCACHE_SIZE)
        run = base if made_with == rcfg else P.rerank_run(eng, base, rcfg)
        ss.update(l2g_run_base=base, l2g_run=run, l2g_run_key=run_key, l2g_rerank_key=rcfg,
                  l2g_last_action=(action[0], time.perf_counter() - t0, action[1]))
        ss.pop("l2g_selected", None)
    elif ss.get("l2g_rerank_key") != rcfg:
        run = P.rerank_run(eng, ss["l2g_run_base"], rcfg)
        ss.update(l2g_run=run, l2g_rerank_key=rcfg, l2g_last_action=("rerank", time.perf_counter() - t0,
                                                                      "re-ranking only"))
    return ss["l2g_run"]


def render() -> None:
    st.title("Local-to-global image retrieval")
    followup = latency.is_followup()      # the page re-ran itself (a background list is ready): no interaction
    tour.from_url()
    opened = st.session_state.pop(OPEN_KEY, None)      # from the Evaluation page or the tour
    if opened:
        st.session_state.update(l2g_qkind="Gallery image", l2g_qpick=opened)
    g, eng = state.pick_gallery()
    state.indexing_note(eng)
    if eng is None:
        st.stop()
    tour_slot = st.container()           # the open tour stop's caption, once the query is known
    clock = latency.begin(followup)      # after the gallery is open: indexing time is not query latency
    params = sidebar_params(eng)
    timing_slot = st.empty()
    left, right = st.columns(QUERY_SPLIT, gap=QUERY_GAP)
    with left:
        spec, box = query_spec(eng, g.label), None
        if spec is not None:
            for note in spec["notes"]:
                st.warning(note)
            box = rectangle(spec)
        tour.caption(tour_slot, g.label, spec, box)
        if spec is None:
            return
        run = compute(eng, spec, box, params)
    if run is not None:
        stages.render_all(eng, run, params, clock, right, timing_slot)
