"""Stage 4 of the query page, the match view (with an inliers-only toggle), and the exports."""
from __future__ import annotations

from pathlib import PurePosixPath

import streamlit as st

from .. import methods as M
from .. import pipeline as P
from .. import viz
from . import core, fmt, state
from . import settings as S
from .settings import KEEP
from .verdict import pair_text

SEL = "l2g_selected"


def _ms(t: float | None) -> str:
    return "—" if t is None else f"{1000 * t:.0f} ms" if t < 10 else f"{t:.1f} s"


def _select(j) -> None:
    """Open candidate j in the match view. A value that is not an id is ignored: when a new search
    changes the candidates while the browser still shows the old list, the candidate box can send
    back an old option's label."""
    try:
        st.session_state[SEL] = int(j)
    except (TypeError, ValueError):
        pass


def shown_method(m: str, run: P.QueryRun, params: dict) -> str:
    """The method shown in place of ``m``: its global blend (methods.WITH_BLEND) when w > 0."""
    b = M.WITH_BLEND.get(m)
    return b if b and params["w"] > 0 and b in run.results else m


def _l2g(run: P.QueryRun, params: dict):
    """The local-to-global result shown (RerankResult): the blend when w > 0."""
    return getattr(run, shown_method(M.MAIN, run, params))


def _verified(eng: P.Engine, run: P.QueryRun, j: int):
    """(core.PairMatches, query RGB, gallery RGB, gallery features) of candidate j; kept for the
    current search, so that re-ranking sliders and the inliers-only toggle do not redo it."""
    key = (st.session_state.get("l2g_run_key"), j)
    memo = st.session_state.get("l2g_match_memo")
    if memo and memo[0] == key:
        return memo[1]
    q = run.query
    gf = eng.li.features(j)
    pm = core.pair_matches(eng, run, j, gf)
    if q.image is not None:
        img_q = q.image.rgb
    else:
        p = eng.li.image_path(q.gallery_id)
        img_q = state.gallery_rgb(str(p), p.stat().st_mtime, eng.cfg.features.max_side)
    p = eng.li.image_path(j)
    img_g = state.gallery_rgb(str(p), p.stat().st_mtime, eng.cfg.features.max_side)
    out = (pm, img_q, img_g, gf)
    st.session_state["l2g_match_memo"] = (key, out)
    return out


def match_view(eng: P.Engine, run: P.QueryRun, params: dict, positives, verdict=None):
    """The matches of the query and one candidate; ``verdict`` (l2g.confidence.Verdict): a pair below
    both calibrated thresholds is said not to be a confident match, its lines called tentative."""
    st.subheader("Stage 4 · Match view")
    rr = _l2g(run, params)
    new_rank = {int(j): r + 1 for r, j in enumerate(rr.ids)}
    ids = [int(j) for j in run.local.ids]
    sel = st.session_state.get(SEL)
    if sel not in ids:
        sel = int(rr.ids[0])
    st.session_state["l2g_match_pick"] = sel
    names = dict(zip(ids, fmt.distinct_names([PurePosixPath(eng.li.paths[j]).name for j in ids], S.QPICK_CHARS)))
    mark = {j: "" if positives is None else " ✓" if j in positives else " ✗" for j in ids}
    c1, c2 = st.columns(S.MATCH_SPLIT, vertical_alignment="bottom")       # the toggle's label whole at 800 px
    j = c1.selectbox("Candidate", ids, key="l2g_match_pick", on_change=lambda: _select(
        st.session_state["l2g_match_pick"]),     # what tells the candidates apart first, cut last: the full path
        format_func=lambda j: (f"{names[j]} · #{ids.index(j) + 1} → #{new_rank.get(j, '—')}{mark[j]} · "
                               f"{eng.li.paths[j]}"),
        help="The image's name (shortened in the middle), its rank in local search → its rank after re-ranking "
             "(l2g), ✓ / ✗ positive or not (with ground truth), then its gallery path")
    only = c2.toggle("Inliers only", key="l2g_inliers_only", persist_state=KEEP, help="Hide the outlier lines (red)")
    pm, img_q, img_g, gf = _verified(eng, run, j)
    vr = pm.verified
    m, inl = vr.matches, vr.inliers
    if only and inl is not None:
        m, inl = m[inl], inl[inl]
    n_all, n_in = vr.n_matches, pm.n_inliers
    doubt = pair_text(eng, verdict, run, j, n_in)
    title = (f"{'not a confident match: ' if doubt else ''}{n_all} {'tentative ' if doubt else ''}matches: "
             f"{n_in} verified inliers (green), " + ("outliers hidden" if only else f"{n_all - n_in} outliers (red)"))
    if doubt:
        st.warning(doubt, icon=":material/help:")
    png = viz.match_figure(img_q, img_g, run.query.feats.kpts, gf.kpts, m, inl, title=title,
                           shown_px=min(S.MAIN_PX.values()))      # its caption readable at an 800-px window
    cap = eng.cfg.search.max_matches
    st.image(png, width="stretch",
             caption=f"Left: query. Right: {eng.li.paths[j]}. Lines join mutual nearest-neighbour keypoint "
                     f"matches, the pairs global-to-local and the confidence check verify; green = RANSAC "
                     f"inliers ({vr.model})" + ("" if only else ", red = outliers") +
                     f". Verified in {_ms(pm.seconds)}. The local search voted for this image with "
                     f"{fmt.matches_text(pm.n_local, cap)} of its own (not drawn).")
    metrics = [("matches", n_all, "Mutual nearest-neighbour keypoint matches of the pair (drawn)"),
               ("inliers", n_in, "Verified inliers: matches consistent with one RANSAC model: the count "
                                 "global-to-local ranks by and the confidence check uses"),
               ("local votes", f"≥ {pm.n_local}" if pm.local_capped else pm.n_local,
                f"Matches the local search found with this image (what voted for it, not drawn), kept up to "
                f"{cap} per image (search.max_matches)"),
               ("local rank", ids.index(j) + 1, None), ("l2g rank", new_rank.get(j, "—"), None)]
    g = st.grid(min_column_width=S.metric_min_px([(lab, v, h is not None) for lab, v, h in metrics]),
                key="l2g_match_metrics")      # wraps rather than cut a label ('local vo…' at 800 px)
    for lab, v, h in metrics:
        g.metric(lab, v, help=h)
    return png, j


def export(eng, run, params, positives, fig, png, j) -> None:
    st.subheader("Export")
    name = run.query.name.replace("/", "_").rsplit(".", 1)[0]
    labels = ["Rankings (CSV)", "Rankings (JSON)", "Embedding (HTML)", "Match view (PNG)"]
    c = st.grid(min_column_width=max(S.label_px(x, S.BUTTON_PAD_PX) for x in labels),
                key="l2g_export")           # as many in a row as show their labels whole
    c.download_button(labels[0], lambda: core.export_csv(eng, run, positives),
                      f"l2g_{name}.csv", "text/csv", on_click="ignore", key="l2g_dl_csv",
                      help="Every method's ranking: rank, image path, score, positive or not")
    c.download_button(labels[1], lambda: core.export_json(eng, run, positives, params),
                      f"l2g_{name}.json", "application/json", on_click="ignore", key="l2g_dl_json",
                      help="Every method's ranking with its scores, AP, the timings and the settings used")
    c.download_button(labels[2], lambda: fig.to_html(include_plotlyjs=True),
                      f"l2g_{name}_mds.html", "text/html", on_click="ignore", key="l2g_dl_html",
                      help="The embedding figure, interactive; for a PNG use the camera button of the plot's toolbar")
    c.download_button(labels[3], lambda: viz.to_png(png),
                      f"l2g_{name}_matches_{j}.png", "image/png", on_click="ignore", key="l2g_dl_png",
                      help="The match view as drawn")
