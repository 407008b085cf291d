"""The query page's stages: shortlist, embedding, rankings, match view, export."""
from __future__ import annotations

import json
import math
import time

import pandas as pd
import streamlit as st

from .. import methods as M
from .. import pipeline as P
from .. import viz
from ..verify import verify_pair
from . import core, state

SEL = "l2g_selected"
DEFERRED = M.names(deferred=True, shown=True)   # slow methods (g2l), run after the page is drawn


def _ms(t: float | None) -> str:
    return "—" if t is None else f"{1000 * t:.0f} ms" if t < 10 else f"{t:.1f} s"


STAGES = [("extract", "extract"), ("local search", "search"), ("re-rank (MDS)", "l2g"),
          ("global descriptor", "global"), ("spatial verification", "g2l")]


def timing_line(slot, run: P.QueryRun) -> None:
    """One line of per-stage times (written twice: before and after spatial verification)."""
    t = run.timings
    pending = {M.get(m).own for m in DEFERRED if m not in run.results} if run.global_ids is not None else set()
    parts = [f"{lab} **{'running…' if key in pending else _ms(t.get(key))}**"
             for lab, key in STAGES if key in t or key in pending]
    act = st.session_state.get("l2g_last_action")
    what = ""
    if act:
        what = (f" — last update: {'new search + re-ranking' if act[0] == 'search' else 're-ranking only'} "
                f"in **{_ms(act[1])}**")
    slot.markdown(":material/timer: " + " · ".join(parts) + what +
                  f"  \nQuery: **{run.query.name}**, {len(run.query.feats)} keypoints used, "
                  f"shortlist {len(run.local.ids)}.")


def _shown(m: str, run: P.QueryRun, params: dict) -> str:
    """The method shown for ``m``: its global blend (methods.WITH_BLEND) when w > 0."""
    b = M.WITH_BLEND.get(m)
    return b if b and params["w"] > 0 and b in run.results else m


def _l2g(run: P.QueryRun, params: dict):
    """The local-to-global result shown: the blend when w > 0."""
    return getattr(run, _shown("l2g", run, params))


def _select(j: int) -> None:
    st.session_state[SEL] = int(j)


def shortlist(eng: P.Engine, run: P.QueryRun, positives) -> None:
    st.subheader(f"Stage 1 · Local search shortlist  ·  {_ms(run.timings.get('search'))}")
    st.caption("Every query descriptor votes for the gallery images among its nearest neighbours "
               "(CANN kernel). Score = summed votes / query keypoints.")
    n = st.select_slider("Thumbnails shown", [6, 12, 18, 24, 36, 48], value=12, key="l2g_nthumb")
    ids = run.local.ids[:n]
    per_row = 6
    for r0 in range(0, len(ids), per_row):
        cols = st.columns(per_row)
        for c, r in zip(cols, range(r0, min(r0 + per_row, len(ids)))):
            j = int(ids[r])
            mark = "" if positives is None else (" ✓" if j in positives else " ✗")
            c.image(state.thumb_of(eng, j), width="stretch",
                    caption=f"#{r + 1}{mark} {eng.li.paths[j].split('/')[-1]}\n"
                            f"score {run.local.scores[r]:.3f} · {run.local.n_matches(j)} matches")
            c.button("matches", key=f"l2g_sl_{j}", on_click=_select, args=(j,), width="stretch")


def embedding(eng: P.Engine, run: P.QueryRun, params: dict, positives):
    rr = _l2g(run, params)
    st.subheader(f"Stage 2 · Similarity embedding  ·  {_ms(run.timings.get('l2g'))}")
    st.caption("The query and its top-k as points whose distances reproduce 1 − (pairwise local similarity), "
               "by MDS in d dimensions; candidates are re-ranked by cosine to the query (the star). "
               "Click a point (2-D) to open it in the match view.")
    c1, c2, c3 = st.columns([1, 1.3, 1.7])
    dim = c1.radio("View", ["2-D", "3-D"], horizontal=True, key="l2g_mds_dim")
    view = c2.radio("Projection", ["PCA", "fresh MDS"], horizontal=True, key="l2g_mds_view",
                    disabled=rr.X.shape[1] <= 3,
                    help="PCA: the d-D embedding the ranking used, on its main axes. Fresh MDS: the same "
                         "similarities embedded directly in 2-D / 3-D (a more faithful picture).")
    opts = ["rank change"] + (["ground truth"] if positives is not None else [])
    colour = c3.radio("Colour by", opts, horizontal=True, key="l2g_mds_colour")
    fig = viz.mds_figure(rr, eng.li.paths, "ground_truth" if colour == "ground truth" else "rank_change",
                         positives or set(), 2 if dim == "2-D" else 3, local_scores=run.local.all_scores,
                         query_label=run.query.name, selected=st.session_state.get(SEL),
                         view="pca" if view == "PCA" else "mds")
    if dim == "2-D":
        ev = st.plotly_chart(fig, key="l2g_mds", on_select="rerun", selection_mode="points")
        pts = (ev or {}).get("selection", {}).get("points", []) if ev else []
        cand = [p["customdata"][0] for p in pts if p.get("customdata") and p["customdata"][0] >= 0]
        sig = tuple(cand)
        if cand and st.session_state.get("l2g_mds_sig") != sig:
            st.session_state["l2g_mds_sig"] = sig
            st.session_state[SEL] = int(cand[0])
    else:
        st.plotly_chart(fig, key="l2g_mds3")
    return fig


def _table(eng, run, method, n, positives):
    rows = core.ranking_rows(eng, run, method, n, positives)
    for r in rows:
        r["thumb"] = state.thumb_uri_of(eng, r["id"])
        r["✓"] = "" if r["positive"] is None else ("✓" if r["positive"] else "")
    df = pd.DataFrame(rows, columns=["rank", "thumb", "move", "score", "✓", "name"])
    cfg = {"thumb": st.column_config.ImageColumn("", width=50),
           "score": st.column_config.NumberColumn(format=M.get(method).fmt, width=60),
           "rank": st.column_config.NumberColumn(width=40), "move": st.column_config.TextColumn(width=45),
           "✓": st.column_config.TextColumn(width=30), "name": st.column_config.TextColumn(width="large")}
    if "moves" not in run.results[method].extras:
        df = df.drop(columns=["move"])
    if positives is None:
        df = df.drop(columns=["✓"])
    with st.container(key=f"l2g_rank_{method}"):
        st.dataframe(df, column_config=cfg, hide_index=True, row_height=48)


def rankings(eng: P.Engine, run: P.QueryRun, params: dict, positives, t_start: float):
    """The three lists; returns (AP per method, the slot of the pending global-to-local list)."""
    st.subheader("Rankings")
    ap = core.aps(eng, run, positives)
    slot = None
    n = st.select_slider("Ranks shown", [10, 20, 30, 50, 100], value=20, key="l2g_nrank")
    cols = st.columns(len(M.SIDE_BY_SIDE))
    shown = [(_shown(m, run, params), M.get(m).own or "search") for m in M.SIDE_BY_SIDE]
    for c, (m, tk) in zip(cols, shown):
        with c:
            if m in DEFERRED and m not in run.results and run.global_ids is not None:
                slot = st.empty()
                slot.info("global-to-local: spatial verification running…")
                continue
            if m not in run.rankings():
                st.info(f"{core.METHOD_LABELS[m]}: not available (no global descriptors)")
                continue
            head = f"**{core.METHOD_LABELS[m]}**" + (f" (w = {params['w']:.2f})" if m in M.WITH_BLEND.values() else "")
            head += f" · {_ms(run.timings.get(tk))}"
            if m in ap:
                head += f" · AP **{ap[m]:.3f}**"
            st.markdown(head)
            _table(eng, run, m, n, positives)
    latency = time.perf_counter() - t_start
    st.session_state["l2g_latency"] = latency
    st.caption(f"Rankings for {run.query.name} ready {_ms(latency)} after the interaction." +
               ("" if positives is not None else " AP is shown when the query is a gallery image of a "
                                                 "gallery with ground truth (groups.json)."))
    more = [m for m in run.rankings() if m not in {s for s, _ in shown} and m not in DEFERRED]
    if more:
        with st.expander("More methods: " + ", ".join(core.METHOD_LABELS[m] for m in more)):
            cols = st.columns(len(more))
            for c, m in zip(cols, more):
                with c:
                    st.markdown(f"**{core.METHOD_LABELS[m]}**" + (f" · AP **{ap[m]:.3f}**" if m in ap else ""))
                    _table(eng, run, m, n, positives)
    return ap, slot


def _matches(eng: P.Engine, run: P.QueryRun, j: int):
    """(overlay RGB, VerifyResult, seconds) of candidate j; kept for the current search, so that
    re-ranking sliders do not redo it."""
    key = (st.session_state.get("l2g_run_key"), j)
    memo = st.session_state.get("l2g_match_memo")
    if memo and memo[0] == key:
        return memo[1]
    q = run.query
    t0 = time.perf_counter()
    gf = eng.li.features(j)
    vr = verify_pair(q.feats, gf, eng.cfg.verify, matches=run.local.matches.get(j))
    t_ver = time.perf_counter() - t0
    if q.image is not None:
        img_q = q.image.rgb
    else:
        p = eng.li.image_path(q.gallery_id)
        img_q = state.gallery_rgb(str(p), p.stat().st_mtime, eng.cfg.features.max_side)
    p = eng.li.image_path(j)
    img_g = state.gallery_rgb(str(p), p.stat().st_mtime, eng.cfg.features.max_side)
    out = (viz.match_figure(img_q, img_g, q.feats.kpts, gf.kpts, vr.matches, vr.inliers), vr, t_ver)
    st.session_state["l2g_match_memo"] = (key, out)
    return out


def match_view(eng: P.Engine, run: P.QueryRun, params: dict, positives):
    st.subheader("Match view")
    rr = _l2g(run, params)
    new_rank = {int(j): r + 1 for r, j in enumerate(rr.ids)}
    ids = [int(j) for j in run.local.ids]
    sel = st.session_state.get(SEL)
    if sel not in ids:
        sel = int(rr.ids[0])
    st.session_state["l2g_match_pick"] = sel
    fmt = lambda j: (f"{eng.li.paths[j]}  (local #{ids.index(j) + 1}, l2g #{new_rank.get(j, '—')})"  # noqa: E731
                     + ("" if positives is None else "  ✓ positive" if j in positives else ""))
    j = st.selectbox("Candidate", ids, format_func=fmt, key="l2g_match_pick", on_change=lambda: _select(
        st.session_state["l2g_match_pick"]))
    png, vr, t_ver = _matches(eng, run, j)
    st.image(png, width="stretch",
             caption=f"Left: query. Right: {eng.li.paths[j]}. Lines join keypoints matched by the local search; "
                     f"green = RANSAC inliers ({vr.model}), red = outliers. Verified in {_ms(t_ver)}.")
    c = st.columns(4)
    c[0].metric("matches", len(vr.matches))
    c[1].metric("inliers", vr.n_inliers)
    c[2].metric("local rank", ids.index(j) + 1)
    c[3].metric("l2g rank", new_rank.get(j, "—"))
    return png, j


def export(eng, run, params, positives, fig, png, j) -> None:
    st.subheader("Export")
    name = run.query.name.replace("/", "_").rsplit(".", 1)[0]
    c = st.columns(4)
    c[0].download_button("Rankings (CSV)", lambda: core.export_csv(eng, run, positives),
                         f"l2g_{name}.csv", "text/csv", on_click="ignore", key="l2g_dl_csv")
    c[1].download_button("Rankings + scores (JSON)", lambda: core.export_json(eng, run, positives, params),
                         f"l2g_{name}.json", "application/json", on_click="ignore", key="l2g_dl_json")
    c[2].download_button("Embedding figure (HTML)", lambda: fig.to_html(include_plotlyjs=True),
                         f"l2g_{name}_mds.html", "text/html", on_click="ignore", key="l2g_dl_html")
    c[3].download_button("Match view (PNG)", lambda: viz.to_png(png),
                         f"l2g_{name}_matches_{j}.png", "image/png", on_click="ignore", key="l2g_dl_png")


def finish_g2l(eng: P.Engine, run: P.QueryRun, positives, slot) -> None:
    """Global-to-local (spatial verification of the global shortlist), run after the page is drawn,
    so that the local and local-to-global lists show first. Stored in the run for later reruns."""
    todo = [m for m in DEFERRED if m not in run.results]
    if todo and run.global_ids is not None:
        P.add_methods(run, todo)
        base = st.session_state.get("l2g_run_base")
        if base is not None and base is not run and base.local is run.local:
            base.results.update({m: run.results[m] for m in todo})
            base.results = {k: base.results[k] for k in M.METHODS if k in base.results}
            for own in {M.get(m).own for m in todo}:
                base.timings[own] = run.timings[own]
            base.timings["total"] = sum(v for k, v in base.timings.items() if k != "total")
    if slot is not None:
        for m in DEFERRED:
            if m not in run.results:
                continue
            with slot.container():
                head = f"**{core.METHOD_LABELS[m]}** · {_ms(run.timings.get(M.get(m).own))}"
                if positives:
                    head += f" · AP **{core.aps(eng, run, positives)[m]:.3f}**"
                st.markdown(head)
                _table(eng, run, m, st.session_state.get("l2g_nrank", 20), positives)


def render_all(eng: P.Engine, run: P.QueryRun, params: dict, t_start: float, right, timing_slot) -> None:
    """Everything below the query: embedding (in the ``right`` column), rankings, shortlist, matches."""
    positives = core.positives_for(eng, run.query)
    timing_line(timing_slot, run)
    if len(run.local.ids) == 0:
        st.info(f"Nothing to rank: the gallery holds no image other than the query **{run.query.name}**. "
                "Add images on the Galleries page, or upload a query instead.")
        return
    with right:
        fig = embedding(eng, run, params, positives)
    ap, slot = rankings(eng, run, params, positives, t_start)
    shortlist(eng, run, positives)
    png, j = match_view(eng, run, params, positives)
    export(eng, run, params, positives, fig, png, j)
    finish_g2l(eng, run, positives, slot)
    timing_line(timing_slot, run)
