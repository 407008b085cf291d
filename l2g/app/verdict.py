"""An honest "no match" on the query page: the query judged against the gallery's calibration
(l2g.confidence), and the message that says so, with its evidence."""
from __future__ import annotations

import streamlit as st

from .. import confidence as CF
from .. import pipeline as P
from ..errors import L2GError
from . import background, core

VERDICT_KEY = "l2g_verdict"        # (run key, Verdict) of the current search


@st.cache_resource(show_spinner="Calibrating the 'no confident match' thresholds on the gallery's non-matching "
                               "pairs (once per index)…", max_entries=8)
def _calibration(folder: str, order: str, _eng=None) -> CF.Calibration:
    """The calibration of the index in ``folder`` with images ``order``, stored beside the index
    (confidence.json, l2g.store.ensure)."""
    eng = _eng
    return CF.ensure_calibration(eng.li.folder, eng.li, eng.graph, eng.gt, eng.cfg.confidence, eng.cfg.verify).result


def calibration(eng: P.Engine) -> CF.Calibration | None:
    """The engine's calibration; None while a background build extends the index (its thread
    calibrates the whole gallery when done: part of a gallery is a poor null) or when it cannot be made:
    the page then judges nothing."""
    if background.index_job(eng.li.folder) is not None:
        return None
    try:
        return _calibration(str(eng.li.folder), eng.li.order, _eng=eng)    # hashed once, when opened
    except (L2GError, OSError):
        return None


def verdict(eng: P.Engine, run: P.QueryRun) -> CF.Verdict | None:
    """The current search's verdict, computed once per search (sliders that only re-rank re-use it)."""
    ss = st.session_state
    key = (ss.get("l2g_run_key"), eng.li.n_images)
    memo = ss.get(VERDICT_KEY)
    if memo is not None and memo[0] == key:
        return memo[1]
    cal = calibration(eng)
    if cal is None:
        return None
    v = CF.assess(cal, eng.li, run.query.feats, run.local.ids, run.local.scores, eng.cfg.verify,
                  eng.cfg.confidence.verify_top, shared_inliers(eng, run))   # v.timings['confidence']: shown
    ss[VERDICT_KEY] = (key, v)
    return v


def shared_inliers(eng: P.Engine, run: P.QueryRun):
    """The query's inlier counts as its methods compute them (``l2g.methods.Context.inliers``: one
    RANSAC per (query, image) pair, shared with global-to-local, the match view and the background
    job), when they are the ones the calibration expects (core.query_context); else None."""
    ctx = core.query_context(eng, run)
    return None if ctx is None else ctx.inliers


def show(eng: P.Engine, v: CF.Verdict | None) -> bool:
    """Draw the verdict; True when the ranked lists should be shown collapsed (no confident match)."""
    if v is None or v.by == "uncalibrated":
        return False
    if v.confident:
        why = {"score": "local score", "inliers": "verified inliers"}.get(v.by, "local score and verified inliers")
        st.success(f"Confident match ({why} above the gallery's calibrated threshold): {v.evidence()}.",
                   icon=":material/check_circle:")
        return False
    st.warning(f"**No confident match in this gallery:** {v.shortfall()}. The thresholds are calibrated on the "
               f"gallery's non-matching pairs (about {100 * eng.cfg.confidence.fa_target:.0f}% of queries "
               f"from outside the gallery pass them). The ranked lists are below, collapsed.",
               icon=":material/help:")
    return True


def pair_text(eng: P.Engine, v: CF.Verdict | None, run: P.QueryRun, j: int, n_inliers: int) -> str | None:
    """A warning for the match view when the query and candidate j are not a confident match (None when
    they are, or when nothing is calibrated). The pair is judged as the query is (l2g.confidence.judge):
    its local score and ``n_inliers``, its verified inliers (core.pair_matches: mutual nearest-neighbour
    matches + RANSAC, the count of global-to-local and of the calibration)."""
    if v is None or v.by == "uncalibrated":
        return None
    if not v.confident:
        return (f"No confident match for this query in this gallery ({v.shortfall()}). The {n_inliers} "
                f"verified inliers of this pair, drawn below, are what non-matching images of this "
                f"gallery reach too.")
    ids = [int(i) for i in run.local.ids]
    score = float(run.local.scores[ids.index(j)]) if j in ids else 0.0
    cal = CF.Calibration(v.score_threshold, v.inlier_threshold, [], [], "pair", v.params)
    pv = CF.judge(cal, score, int(n_inliers), j)
    if pv.confident:
        return None
    return (f"Not a confident match for this pair: {pv.shortfall('local score')}. The lines below are "
            f"tentative matches; non-matching images of this gallery reach as many.")
