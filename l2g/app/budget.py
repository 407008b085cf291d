"""The query page's verification budget N for global-to-local (issue 12): a sidebar control, and the
global-to-local column shown as ``g2l@N`` (the registry's budget methods, ``methods.budget_methods``).

The background job verifies the default budget (VerifyConfig.top); its RANSAC inlier counts are in
the run's Context memo (``background.apply``), so a smaller N re-orders the top N of the global
list by those counts (``methods._g2l``) without extracting, searching or verifying again.
"""
from __future__ import annotations

from .. import methods as M
from .. import pipeline as P

KEY = "l2g_p_budget"


def verifying_column() -> str | None:
    """The side-by-side column that verifies (global-to-local), or None."""
    return next((m for m in M.SIDE_BY_SIDE if M.get(m).budget is not None), None)


def options(eng: P.Engine) -> dict[int, str]:
    """N -> method, for the budgets the default verification covers (N <= VerifyConfig.top)."""
    top = eng.cfg.verify.top
    return {n: m for n, m in M.budget_methods(eng.cfg).items() if n <= top}


def control(box, eng: P.Engine) -> int:
    """The sidebar's select slider over the budgets (the default: VerifyConfig.top)."""
    opts, top = list(options(eng)), eng.cfg.verify.top
    n = eng.li.n_images
    box.subheader("Global-to-local (no new verification)")
    if len(opts) <= 1:
        box.caption(f"Verification budget N: {top} (the only budget configured)")
        return top
    return box.select_slider(
        "Verification budget N", opts, value=top, key=KEY, disabled=eng.gi is None,
        format_func=lambda k: f"{k} ({k / max(1, n):.0%})",
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
