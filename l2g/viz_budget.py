"""The verification-budget figure of an evaluation: mAP against N, the images a method verifies.

No Streamlit here (re-exported by ``l2g.viz``). It reads ``evaluate``'s results dict: a method
with ``budget: {n, fraction}`` is a point of the verifying curve (global-to-local at N = 5, 10,
...); every other method does not depend on N and is a labelled horizontal line.
"""
from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go

CURVE_COLOUR = "#d73027"
LINE_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")


def budget_points(results: dict) -> list[tuple[int, float, float, str]]:
    """(N, share of the gallery, mAP, method) of the verifying methods, one per N, by N
    (``g2l`` and ``g2l@50`` verify the same 50 images: the first in results order is kept)."""
    pts: dict[int, tuple] = {}
    for m, r in results["methods"].items():
        b = r.get("budget")
        if b is not None:
            pts.setdefault(int(b["n"]), (int(b["n"]), float(b["fraction"]), float(r["map"]), m))
    return [pts[n] for n in sorted(pts)]


def budget_figure(results: dict, labels: Mapping[str, str] | None = None) -> go.Figure | None:
    """mAP (y) against the verification budget N (x, log scale; its share of the gallery on the tick
    label and on hover): the verifying methods as one line with markers, the N-independent methods as
    horizontal lines labelled with their names. None when no method of ``results`` verifies."""
    labels = labels or {}
    pts = budget_points(results)
    if not pts:
        return None
    ns = [p[0] for p in pts]
    lo, hi = min(ns) / 1.25, max(ns) * 1.25
    fig = go.Figure()
    flat = [(m, r) for m, r in results["methods"].items() if r.get("budget") is None]
    for i, (m, r) in enumerate(flat):
        name = labels.get(m, m)
        fig.add_trace(go.Scatter(
            x=[lo, hi], y=[r["map"]] * 2, mode="lines+text", name=name, text=["", name],
            textposition="top left", line=dict(color=LINE_COLOURS[i % len(LINE_COLOURS)], width=2, dash="dash"),
            hovertemplate=f"<b>{name}</b><br>mAP %{{y:.1f}} (any N)<extra></extra>"))
    curve = labels.get(pts[-1][3], pts[-1][3]).split(",")[0]     # 'global-to-local, 20 verified' -> ...
    fig.add_trace(go.Scatter(
        x=ns, y=[p[2] for p in pts], mode="lines+markers", name=f"{curve} at budget N",
        customdata=[[p[1] * 100, labels.get(p[3], p[3])] for p in pts],
        line=dict(color=CURVE_COLOUR, width=3), marker=dict(size=10),
        hovertemplate="<b>%{customdata[1]}</b><br>N = %{x} verified (%{customdata[0]:.0f}% of the gallery)"
                      "<br>mAP %{y:.1f}<extra></extra>"))
    fig.update_layout(
        title=dict(text=f"mAP against the verification budget N ({results.get('n_images', '?')} images)",
                   font=dict(size=14)),
        xaxis=dict(title="N images verified per query (share of the gallery)", type="log",
                   tickvals=ns, ticktext=[f"{n} ({f:.0%})" for n, f, _, _ in pts]),
        yaxis=dict(title="mAP"), legend=dict(orientation="h", y=-0.25),
        margin=dict(l=10, r=10, t=50, b=10), height=440)
    return fig
