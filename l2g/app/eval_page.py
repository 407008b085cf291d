"""Evaluation page: every method on a gallery with ground truth (groups.json)."""
from __future__ import annotations

import json
import math

import pandas as pd
import streamlit as st

from .. import methods as M
from .. import pipeline as P
from .. import viz
from ..datasets import load_eval_dataset
from ..errors import DatasetError, L2GError
from . import core, state
from . import settings as S

OPEN_KEY = "l2g_open_query"     # a gallery path the query page opens on its next run


def query_seconds(run) -> float | None:
    """Seconds the Query page's last run took with every method (each stage, the background
    global-to-local included; its 'total' is taken before that job adds its time), or None."""
    if run is None or run.timings.get("g2l") is None:
        return None
    return sum(v for k, v in run.timings.items() if k != "total")


def _run_eval(eng: P.Engine, methods, max_q):
    from ..evaluate import evaluate  # imported late: the page still renders if the harness is broken

    ds = load_eval_dataset(eng.li.root)
    bar = st.progress(0.0, text="Evaluating")

    def cb(done, total, msg):
        bar.progress(min(1.0, done / total) if total else 0.0, text=f"Evaluating: {msg} ({done}/{total})")

    res = evaluate(ds, methods, eng.cfg, engine=eng, progress=cb, max_queries=max_q or None)
    bar.empty()
    return res


def _summary(res: dict) -> pd.DataFrame:
    rows = []
    for m, r in res["methods"].items():
        rows.append({"method": core.METHOD_LABELS.get(m, m), "key": m, "mAP": r["map"], "mP@1": r["mp@1"],
                     "mP@5": r["mp@5"], "mP@10": r["mp@10"],
                     "ms / query": 1000 * r.get("timings", {}).get("per_query", float("nan"))})
    return pd.DataFrame(rows)


def _per_query(rows: list[dict], before: str, after: str) -> pd.DataFrame:
    """Rows of evaluate.per_query_ap / hurt_queries as a table, in their order."""
    return pd.DataFrame({"query": [r["query"] for r in rows], f"AP {before}": [r["base"] for r in rows],
                         f"AP {after}": [r["new"] for r in rows], "ΔAP": [r["delta"] for r in rows]})


def _query_table(df: pd.DataFrame, key: str) -> None:
    """A per-query table; selecting a row opens that query on the Query page."""
    sel = st.dataframe(df, hide_index=True, key=key, on_select="rerun", selection_mode="single-row",
                       column_config={c: st.column_config.NumberColumn(format="%.3f") for c in df.columns[1:]})
    rows = sel.get("selection", {}).get("rows", []) if sel else []
    if rows:
        _open(df["query"].iloc[rows[0]])


def _open(path: str) -> None:
    st.session_state[OPEN_KEY] = path
    st.switch_page(st.session_state["l2g_pages"]["query"])


def render() -> None:
    st.title("Evaluation")
    g, eng = state.pick_gallery()
    if eng is None:
        st.stop()
    if eng.gt is None:
        st.info(f"**{g.label}** has no ground truth (groups.json): nothing to evaluate. "
                "The demo and realbench-dev have one.")
        return
    try:
        ds = load_eval_dataset(eng.li.root)
    except DatasetError as e:
        st.error(f"The ground truth of {g.label} cannot be used: {e}")
        return
    avail = list(M.available(P.METHODS, eng.gi is not None))
    c1, c2 = st.columns(S.EVAL_SPLIT)        # the number input wide enough for its − and + at 800 px
    methods = c1.multiselect("Methods", avail, default=[m for m in avail if M.get(m).default], wrap=True,
                             format_func=lambda m: core.METHOD_LABELS[m])     # every chosen method in view
    max_q = c2.number_input("Queries (0 = all)", 0, len(ds.queries), 0,
                            help=f"{len(ds.queries)} queries: every group image queries the rest of its group")
    key = f"l2g_eval::{g.label}"
    if st.button("Run evaluation", type="primary", disabled=not methods):
        try:
            st.session_state[key] = _run_eval(eng, methods, max_q)
        except (L2GError, OSError) as e:
            st.error(f"The evaluation failed: {e}")
    res = st.session_state.get(key)
    if res is None:
        n = max_q or len(ds.queries)
        last = st.session_state.get("l2g_run")        # the Query page's last run, when there was one
        t = query_seconds(last)
        st.caption(f"Runs {n} queries through the chosen methods with the sidebar-independent default "
                   "settings: it takes about as long as that many queries on the Query page" +
                   (f" (the last query there took {t:.1f} s with every method, so about "
                    f"{max(1, math.ceil(n * t / 60))} min)." if t else ". Spatial verification (global-to-local) is "
                    "the slowest method: on the full demo, on a busy 2-core machine, all methods took about 9 "
                    "minutes."))
        return
    st.subheader(f"{res['dataset']}: {res['n_queries']} queries, {res['n_images']} images")
    if res.get("skipped"):       # images the build could not read: out of the queries and the positives
        st.warning(f"{len(res['skipped'])} image(s) could not be read and are left out of the queries and the "
                   "positives: " + "; ".join(f"{s['path']} ({s['reason']})" for s in res["skipped"][:5]) +
                   (" …" if len(res["skipped"]) > 5 else ""), icon=":material/warning:")
    summ = _summary(res)
    st.dataframe(summ.drop(columns=["key"]), hide_index=True, key="l2g_eval_table",
                 column_config={c: st.column_config.NumberColumn(format="%.1f")
                                for c in ("mAP", "mP@1", "mP@5", "mP@10", "ms / query")})
    st.download_button("results.json", lambda: json.dumps(res, indent=1, default=float), "results.json",
                       "application/json", on_click="ignore")
    curve = viz.budget_figure(res, core.METHOD_LABELS)
    if curve is not None:       # mAP against the verification budget N (the N-independent methods as lines)
        st.plotly_chart(curve, key="l2g_budget_curve")
        st.caption("Global-to-local verifies the global descriptor's top N images with RANSAC; the other "
                   "methods do not depend on N (the lines labelled on the right). At real scale N is a small "
                   "share of the gallery.")
    for pair, c in res.get("wins", {}).items():
        st.caption(f"{pair}: {c['improved']} queries improved, {c['hurt']} hurt, {c['equal']} unchanged "
                   "(per-query AP deltas in results.json)")
    ms = list(res["methods"])
    if len(ms) < 2:
        return
    c1, c2 = st.columns(2)
    before = c1.selectbox("Before", ms, index=ms.index("local") if "local" in ms else 0,
                          format_func=lambda m: core.METHOD_LABELS[m])
    after = c2.selectbox("After", ms, index=ms.index(M.MAIN) if M.MAIN in ms else 1,
                         format_func=lambda m: core.METHOD_LABELS[m])
    from ..evaluate import hurt_queries, per_query_ap

    df = _per_query(per_query_ap(res, before, after), before, after)
    fig = viz.ap_scatter(df[f"AP {before}"], df[f"AP {after}"], list(df["query"]), before, after)
    ev = st.plotly_chart(fig, key="l2g_ap_scatter", on_select="rerun", selection_mode="points")
    pts = ev.get("selection", {}).get("points", []) if ev else []
    if pts and pts[0].get("customdata"):
        _open(df["query"].iloc[int(pts[0]["customdata"][0])])
    hurt = hurt_queries(res, before, after)
    st.markdown(f"**Queries that re-ranking hurt most**: {core.METHOD_LABELS[after]} against "
                f"{core.METHOD_LABELS[before]}" + (", most AP lost first (select a row to open the query)" if hurt
                                                     else ""))
    if hurt:
        _query_table(_per_query(hurt, before, after), "l2g_hurt")
    else:
        st.caption(f"No query was hurt: none of the {len(df)} queries lost AP.")
    with st.expander(f"Every query ({len(df)}), by AP change (click a column to sort, select a row to open it)"):
        _query_table(df.sort_values("ΔAP", kind="stable").reset_index(drop=True), "l2g_per_query")
