"""The query page's verification budget N for global-to-local (issue 12): a sidebar control, and the
global-to-local column shown as ``g2l@N`` (the registry's budget methods, ``methods.budget_methods``).

The background job verifies the default budget (VerifyConfig.top); its RANSAC inlier counts are in
the run's Context memo (``background.apply``), so a smaller N re-orders the top N of the global
list by those counts (``methods._g2l``) without extracting, searching or verifying again.
"""
from __future__ import annotations

import streamlit as st

from .. import methods as M
from .. import pipeline as P
from . import fmt
from .settings import KEEP

KEY = "l2g_p_budget"


def verifying_column() -> str | None:
    """The side-by-side column that verifies (global-to-local), or None."""
    return next((m for m in M.SIDE_BY_SIDE if M.get(m).budget is not None), None)


def options(eng: P.Engine) -> dict[int, str]:
    """N -> method, for the budgets the default verification covers (N <= VerifyConfig.top)."""
    top = eng.cfg.verify.top
    return {n: m for n, m in M.budget_methods(eng.cfg).items() if n <= top}


def share_label(k: int, n: int) -> str:
    """The slider's label of budget k in a gallery of n images: its share, never over 100 %."""
    return f"{k} ({k / max(1, n):.0%})" if k < n else f"{k} (the whole gallery)"


def control(box, eng: P.Engine) -> int:
    """The sidebar's select slider over the budgets (the default: VerifyConfig.top)."""
    opts, top = list(options(eng)), eng.cfg.verify.top
    n = eng.li.n_images
    box.subheader("Global-to-local (no new verification)")
    if len(opts) <= 1:
        box.caption(f"Verification budget N: {top} (the only budget configured)")
        return top
    if st.session_state.get(KEY, top) not in opts:     # e.g. a tour stop's N that this configuration lacks
        st.session_state.pop(KEY)
    return box.select_slider(
        "Verification budget N", opts, value=top, key=KEY, disabled=eng.gi is None, persist_state=KEEP,
        format_func=lambda k: share_label(k, n),
        help="Images of the global shortlist that global-to-local verifies with RANSAC (share of the "
             "gallery in brackets). A smaller N re-orders only the top N of the global list by the inlier "
             "counts already computed: a partial match ranked low by the global descriptor drops out, "
             "while local-to-global keeps it.")


def shown(m: str, run: P.QueryRun, params: dict) -> str:
    """The method shown in the verifying column ``m``: ``g2l@N`` for the chosen N, made from the
    memoised inlier counts once ``m``'s own list is verified; ``m`` itself otherwise."""
    if m != verifying_column() or m not in run.results:
        return m
    name = M.budget_methods(run.ctx.cfg).get(params.get("budget"), m)
    if name not in run.results:
        t = dict(run.timings)
        P.add_methods(run, [name])      # memo hits only: N <= the budget m verified
        run.timings = t                 # the page's verification time stays that of m's list
    return name


def label(m: str, run: P.QueryRun, n_images: int) -> str | None:
    """'N = 10 verified (6% of the gallery)' for a verifying method, None for the others."""
    if M.get(m).budget is None or m not in run.results:
        return None
    nv = run.results[m].extras.get("n_verified", M.budget(M.get(m), run.ctx.cfg))
    return f"N = {nv} verified ({nv / max(1, n_images):.0%} of the gallery)"


def unverified(run: P.QueryRun, m: str, positives) -> list[int]:
    """The query's positives that a verifying method ``m`` did not verify (beyond its N in the
    global list), in global order; [] when positives are unknown or ``m`` does not verify."""
    if not positives or M.get(m).budget is None or m not in run.results or run.global_ids is None:
        return []
    r = run.results[m]
    verified = {int(j) for j in r.ids[:r.extras.get("n_verified", len(r.scores))]}
    return [int(j) for j in run.global_ids if int(j) in positives and int(j) not in verified]


def unverified_note(eng: P.Engine, run: P.QueryRun, m: str, positives) -> str | None:
    """'2 of the query's 3 positives lie beyond the N verified: a.jpg (global #14, local-to-global #2)'."""
    miss = unverified(run, m, positives)
    if not miss:
        return None
    grank = {int(j): r for r, j in enumerate(run.global_ids, 1)}
    main = run.results.get(M.MAIN)
    mrank = {} if main is None else {int(j): r for r, j in enumerate(main.ids, 1)}
    lab = M.get(M.MAIN).label
    items = [f"{fmt.short_name(eng.li.paths[j])} (global #{grank[j]}"
             + (f", {lab} #{mrank[j]})" if j in mrank else ")") for j in miss[:5]]
    more = f" and {len(miss) - 5} more" if len(miss) > 5 else ""
    return (f"{len(miss)} of the query's {len(positives)} positives lie beyond the N verified, so spatial "
            f"verification never sees them: {', '.join(items)}{more}.")
