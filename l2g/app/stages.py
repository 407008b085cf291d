"""The query page's stages, in the order the data flows: shortlist (1), embedding (2), rankings (3),
match view (4), export. Global-to-local verification runs in the background (background.py)."""
from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import PurePosixPath

import streamlit as st

from .. import methods as M
from .. import pipeline as P
from .. import viz
from . import background, budget, core, fmt, latency, matchview, state, tables, verdict
from . import settings as S
from .settings import KEEP, THUMB_NAME_CHARS

SEL = matchview.SEL
DEFERRED = M.names(deferred=True, shown=True)   # slow methods (g2l): verified in the background


_ms, _l2g, _select = matchview._ms, matchview._l2g, matchview._select


STAGES = [("extract", "extract"), ("local search", "search"), ("confidence", "confidence"), ("re-rank (MDS)", "l2g"),
          ("global descriptor", "global"), ("spatial verification", "g2l")]
STAGE_LABEL = {key: lab for lab, key in STAGES}


def timing_line(slot, run: P.QueryRun) -> None:
    """One line of per-stage times (written twice: before and after spatial verification)."""
    t = run.timings
    pending = {M.get(m).own for m in background.missing(run, DEFERRED)}
    parts = [f"{lab} **{'running in the background…' if key in pending else _ms(t.get(key))}**"
             for lab, key in STAGES if key in t or key in pending]
    act = st.session_state.get("l2g_last_action")
    what = ""
    if act:
        what = f" — last update: {act[2] if len(act) > 2 else act[0]} in **{_ms(act[1])}**"
    slot.markdown(":material/timer: " + " · ".join(parts) + what +
                  f"  \nQuery: **{run.query.name}**, {len(run.query.feats)} keypoints used, "
                  f"shortlist {len(run.local.ids)}.")


def shortlist(eng: P.Engine, run: P.QueryRun, positives) -> None:
    st.subheader(f"Stage 1 · Local search shortlist  ·  {_ms(run.timings.get('search'))}")
    cap = eng.cfg.search.max_matches
    st.caption("Every query descriptor votes for the gallery images among its nearest neighbours "
               f"(CANN kernel). Score = summed votes / query keypoints. Matches: keypoint pairs found, "
               f"kept up to {cap} per image for drawing (\"≥ {cap}\" when the cap is hit).")
    n = st.select_slider("Thumbnails shown", [8, 12, 16, 24, 36, 48], value=12, key="l2g_nthumb", persist_state=KEEP)
    ids = run.local.ids[:n]
    cells = st.grid(min_column_width=S.thumb_min_px(), gap=S.THUMB_GAP, vertical_alignment="bottom",
                    key="l2g_shortlist")    # as many in a row as fit whole: 4 at 1280 px, 2 at 1000 and 800
    for r, j in enumerate(int(i) for i in ids):
        mark = "" if positives is None else (" ✓" if j in positives else " ✗")
        lines = (f"#{r + 1}{mark} · {run.local.scores[r]:.3f}", fmt.matches_text(run.local.n_matches(j), cap),
                 fmt.middle_ellipsis(PurePosixPath(eng.li.paths[j]).name, THUMB_NAME_CHARS))
        with cells.cell():      # a line each (rank and score, matches, the name shortened in the middle), the
            st.image(state.thumb_of(eng, j), width="stretch")         # button below: level along a row
            st.caption("  \n".join(lines), wrap=False, text_alignment="center")
            st.button(S.THUMB_BUTTON, key=f"l2g_sl_{j}", on_click=_select, args=(j,), width="stretch",
                      help=f"Open `{eng.li.paths[j]}` in the match view (Stage 4)")


def _clear_selection() -> None:
    """Back to no selected point: the plot's own selection is dropped too (a new chart key)."""
    ss = st.session_state
    ss.pop(SEL, None)
    ss.pop("l2g_mds_sig", None)
    ss["l2g_mds_gen"] = ss.get("l2g_mds_gen", 0) + 1


def _pick_point() -> None:
    j = st.session_state.get("l2g_mds_pick")
    if j is not None and j >= 0:
        _select(j)


def plot_config(name: str) -> dict:
    """Plotly toolbar: the camera button saves a PNG (made in the browser, no server-side renderer)."""
    return {"displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": f"l2g_{name}_mds",
                                                           "scale": 2}}


def embedding(eng: P.Engine, run: P.QueryRun, params: dict, positives):
    rr = _l2g(run, params)
    ss = st.session_state
    st.subheader(f"Stage 2 · Similarity embedding  ·  {_ms(run.timings.get('l2g'))}")
    plot, side = st.columns(S.EMBED_SPLIT, gap=S.EMBED_GAP)
    side.caption("The query and its top-k as points whose distances reproduce 1 − (pairwise local similarity), "
                 "by MDS in d dimensions; candidates are re-ranked by cosine to the query (the diamond). "
                 "Click a point (2-D) or pick it below (2-D and 3-D) to open it in the match view (Stage 4). "
                 "PNG: the camera button of the plot's toolbar.")
    dim = side.radio("View", ["2-D", "3-D"], horizontal=True, key="l2g_mds_dim", persist_state=KEEP)
    view = side.radio("Projection", ["PCA", "fresh MDS"], horizontal=True, key="l2g_mds_view", persist_state=KEEP,
                      disabled=rr.X.shape[1] <= 3,
                      help="PCA: the d-D embedding the ranking used, on its main axes. Fresh MDS: the same "
                           "similarities embedded directly in 2-D / 3-D (a more faithful picture).")
    opts = ["rank change"] + (["ground truth"] if positives is not None else [])
    colour = side.radio("Colour by", opts, horizontal=True, key="l2g_mds_colour", persist_state=KEEP)
    head = [int(j) for j in rr.ids[:len(rr.head)]]
    chart_key = f"l2g_mds_{ss.get('l2g_mds_gen', 0)}"
    if dim == "2-D":      # a click on the 2-D plot (its state from the last run) selects that candidate
        ev = ss.get(chart_key) or {}
        pts = ev.get("selection", {}).get("points", []) if hasattr(ev, "get") else []
        cand = [p["customdata"][0] for p in pts if p.get("customdata") and p["customdata"][0] >= 0]
        if cand and ss.get("l2g_mds_sig") != tuple(cand):
            ss["l2g_mds_sig"] = tuple(cand)
            ss[SEL] = int(cand[0])
    sel = ss.get(SEL)
    ss["l2g_mds_pick"] = sel if sel in head else -1
    new_rank = {j: r + 1 for r, j in enumerate(head)}
    side.selectbox("Open a point in the match view", [-1] + head, key="l2g_mds_pick", on_change=_pick_point,
                   format_func=lambda j: "—" if j < 0 else f"l2g #{new_rank[j]}: {fmt.short_name(eng.li.paths[j])}",
                   help="The same as clicking the point; 3-D plots cannot report clicks to the app.")
    side.button("Clear selection", icon=":material/deselect:", on_click=_clear_selection, key="l2g_mds_clear",
                disabled=sel is None)
    fig = viz.mds_figure(rr, eng.li.paths, "ground_truth" if colour == "ground truth" else "rank_change",
                         positives or set(), 2 if dim == "2-D" else 3, local_scores=run.local.all_scores,
                         query_label=run.query.name, selected=sel, view="pca" if view == "PCA" else "mds",
                         title_chars=S.EMBED_TITLE_CHARS)
    name = run.query.name.replace("/", "_").rsplit(".", 1)[0]
    with plot, st.container(key="l2g_mds_plot"):
        if dim == "2-D":
            st.plotly_chart(fig, key=chart_key, on_select="rerun", selection_mode="points",
                            config=plot_config(name))
        else:
            st.plotly_chart(fig, key="l2g_mds3", config=plot_config(name))
    return fig


def _head(eng: P.Engine, m: str, run: P.QueryRun, params: dict, ap: dict, tk: str) -> str:
    lab = core.METHOD_LABELS[m if M.get(m).shown else budget.verifying_column()]    # g2l@N: with N below
    head = f"**{lab}**" + (f" (w = {params['w']:.2f})" if m in M.WITH_BLEND.values() else "")
    n = budget.label(m, run, eng.li.n_images)
    head += f" · {n}" if n else ""
    t = run.results[m].timings.get(tk) if not M.get(m).shown else run.timings.get(tk)
    head += f" · {STAGE_LABEL.get(tk, tk)} {_ms(t)}"        # what the time is: the method's own stage
    return head + (f" · AP **{ap[m]:.3f}**" if m in ap else "")


def rankings(eng: P.Engine, run: P.QueryRun, params: dict, positives, clock: dict, ready=None,
             nested: bool = False):
    """Stage 3: local, local-to-global and global-to-local side by side (the last one from the background
    job, polled by a fragment until it is ready); returns AP per method. ``clock``: the interaction's
    latency record (latency.begin)."""
    st.subheader("Stage 3 · Rankings")
    shown = [(budget.shown(matchview.shown_method(m, run, params), run, params), M.get(m).own or "search")
             for m in M.SIDE_BY_SIDE]        # the verifying column at the sidebar's budget N (g2l@N)
    ap = core.aps(eng, run, positives)
    n = st.select_slider("Ranks shown", [10, 20, 30, 50, 100], value=20, key="l2g_nrank", persist_state=KEEP)
    made = {m: tables.table(eng, run, m, n, positives) for m, _ in shown
            if m in run.rankings() and m not in background.missing(run, DEFERRED)}
    pair = [made[m] for m, _ in shown[:2] if m in made]        # local and l2g: side by side whenever two fit
    cols = tables.grid(len(shown), "l2g_rankings", pair)
    for c, (m, tk) in zip(cols, shown):
        with c:
            if m in background.missing(run, DEFERRED):
                failed = st.session_state.get("l2g_g2l_failed")
                if failed is not None:
                    st.error(f"{core.METHOD_LABELS[m]}: spatial verification failed: {failed[1]}")
                else:
                    g2l_pending(eng, run, m)
                continue
            if m not in run.rankings():
                st.info(f"{core.METHOD_LABELS[m]}: not available (no global descriptors)")
                continue
            st.markdown(_head(eng, m, run, params, ap, tk))
            tables.show(made[m])
            note = budget.unverified_note(eng, run, m, positives)    # partial matches the budget N misses
            if note:
                st.caption(note)
    rec = latency.mark(clock, bool(background.missing(run, DEFERRED)))
    (ready or st).caption(f"Rankings for {run.query.name} {latency.text(rec, _ms)}." +
               ("" if positives is not None else " AP is shown when the query is a gallery image of a "
                                                 "gallery with ground truth (groups.json)."))
    more = [m for m in run.rankings() if m not in {s for s, _ in shown} and m not in DEFERRED and M.get(m).shown]
    if more:
        title = "More methods: " + ", ".join(core.METHOD_LABELS[m] for m in more)
        if nested:           # inside the collapsed lists (no confident match): expanders do not nest
            st.markdown(f"**{title}**")
        with nullcontext() if nested else st.expander(title):
            made = {m: tables.table(eng, run, m, n, positives) for m in more}
            for c, m in zip(tables.grid(len(more), "l2g_more_rankings", made.values()), more):
                with c:
                    st.markdown(f"**{core.METHOD_LABELS[m]}**" + (f" · AP **{ap[m]:.3f}**" if m in ap else ""))
                    tables.show(made[m])
    return ap


def _all_runs():
    ss = st.session_state
    return [ss.get("l2g_run"), ss.get("l2g_run_base")] + [b for b, _ in ss.get("l2g_runcache", {}).values()]


def sync_g2l(eng: P.Engine, run: P.QueryRun):
    """Start the background verification of this search if needed, or store its finished result."""
    ss = st.session_state
    job = ss.get("l2g_g2l_job")
    if job is not None and job.done:
        background.apply(job, _all_runs())
        if job.error:
            ss["l2g_g2l_failed"] = (job.local, job.error)      # not retried for this search
        ss.pop("l2g_g2l_job")
        job = None
    failed = ss.get("l2g_g2l_failed")
    if failed is not None and failed[0] is not run.local:
        ss.pop("l2g_g2l_failed")
        failed = None
    if background.missing(run, DEFERRED) and failed is None and (job is None or job.local is not run.local):
        ss["l2g_g2l_job"] = background.start(eng, run, ss.get("l2g_run_key"), DEFERRED)


def g2l_pending(eng: P.Engine, run: P.QueryRun, method: str) -> None:
    """The global-to-local column while its job runs: a note re-drawn every second (a fragment, so the
    rest of the page stays as it is and usable); the whole page re-runs once the list is ready."""

    inline = {"first": True}    # the call within the page's run never re-runs the page (one-shot messages)

    def poll():
        job = st.session_state.get("l2g_g2l_job")
        first, inline["first"] = inline["first"], False
        if job is None or job.done:
            if not first:
                latency.rerun_followup()
            if job is None:
                return
        st.markdown(f"**{core.METHOD_LABELS[method]}**")
        n = min(M.budget(M.get(method), eng.cfg) or len(run.global_ids), len(run.global_ids))
        st.info(f"Spatial verification of the global shortlist's top {n} is running in the "
                f"background: {time.perf_counter() - job.started:.0f} s so far. The rest of the page is ready.",
                icon=":material/hourglass_top:")

    st.fragment(poll, run_every=1.0)()


def render_all(eng: P.Engine, run: P.QueryRun, params: dict, clock: dict, right, timing_slot) -> None:
    """Stage 1 in the ``right`` column (next to the query), then the embedding, the rankings, the match
    view and the exports below, in the order the data flows."""
    sync_g2l(eng, run)
    run = st.session_state.get("l2g_run", run)
    positives = core.positives_for(eng, run.query)
    if len(run.local.ids) == 0:
        timing_line(timing_slot, run)
        st.info(f"Nothing to rank: the gallery holds no image other than the query **{run.query.name}**. "
                "Add images on the Galleries page, or upload a query instead.")
        return
    v = verdict.verdict(eng, run)
    if v is not None:
        run.timings.setdefault("confidence", v.timings.get("confidence", 0.0))
    timing_line(timing_slot, run)
    with right:
        collapsed = verdict.show(eng, v)
        ready = st.empty() if collapsed else None
        if not collapsed:
            shortlist(eng, run, positives)
    with st.expander("The ranked lists anyway (no confident match)", expanded=False) if collapsed else nullcontext():
        if collapsed:
            shortlist(eng, run, positives)
        fig = embedding(eng, run, params, positives)
        rankings(eng, run, params, positives, clock, ready, nested=collapsed)
        png, j = matchview.match_view(eng, run, params, positives, v)
        matchview.export(eng, run, params, positives, fig, png, j)
