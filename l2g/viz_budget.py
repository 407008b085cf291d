"""The evaluation's figures: mAP against the verification budget N (the images a method verifies), and
the per-query AP scatter (``ap_scatter``).

No Streamlit here (re-exported by ``l2g.viz``). The budget figure reads ``evaluate``'s results dict: a method
with ``budget: {n, fraction}`` is a point of the verifying curve (global-to-local at N = 5, 10,
...); every other method does not depend on N and is a horizontal line, each with its own colour and dash,
labelled in the right margin. Labels keep a minimum gap whatever the values (``label_positions``): two
methods at the same mAP get two readable labels, each tied to its line by a leader, and the line drawn
first is wider, so it shows around a coincident one drawn over it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

POS_COLOUR = "#00a843"      # a positive (a query improved); shared by every figure of l2g.viz
NEG_COLOUR = "#c4c4c4"      # any other (a query unchanged)
CURVE_COLOUR = "#d73027"
LINE_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")
LINE_DASHES = ("dash", "dot", "dashdot", "longdash", "longdashdot")
HEIGHT = 440            # the figure, px
PLOT_PX = 200           # its plot area's height, a lower bound (Chromium: 205 px at 420-560 px wide, 281 at 1,200)
LABEL_PX = 17           # the least vertical distance between two labels' centres (font size 12)
LINE_PX = 3             # lines closer than this (px) look like one: the earlier is drawn wider
CHAR_PX = 7             # about the width of one label character (the right margin's width)


def label_positions(values, gap: float, lo: float, hi: float) -> list[float]:
    """Heights for labels of ``values`` (in their order), as close to them as possible, each at least
    ``gap`` from the others and inside [lo, hi]; the order of the values is kept (ties: the earlier one
    lower). If [lo, hi] cannot hold them ``gap`` apart they are spread evenly over it."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    pos = [float(values[i]) for i in order]
    for k in range(1, len(pos)):
        pos[k] = max(pos[k], pos[k - 1] + gap)
    if pos and pos[-1] > hi:
        pos[-1] = hi
        for k in range(len(pos) - 2, -1, -1):
            pos[k] = min(pos[k], pos[k + 1] - gap)
    if pos and pos[0] < lo:
        pos = [lo + k * (hi - lo) / max(1, len(pos) - 1) for k in range(len(pos))]
    out = [0.0] * len(values)
    for k, i in enumerate(order):
        out[i] = pos[k]
    return out


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
    horizontal lines (mode 'lines'), each labelled in the right margin by an annotation named
    'label: NAME' whose arrow points at its line. None when no method of ``results`` verifies."""
    labels = labels or {}
    pts = budget_points(results)
    if not pts:
        return None
    ns = [p[0] for p in pts]
    lo, hi = min(ns) / 1.25, max(ns) * 1.25
    fig = go.Figure()
    flat = [(labels.get(m, m), float(r["map"])) for m, r in results["methods"].items() if r.get("budget") is None]
    ys = [p[2] for p in pts] + [v for _, v in flat]
    pad = max(2.0, 0.08 * (max(ys) - min(ys)))
    y0, y1 = min(ys) - pad, max(ys) + pad
    per_px = (y1 - y0) / PLOT_PX                  # mAP per pixel (at least; the plot is seldom smaller)
    at = label_positions([v for _, v in flat], LABEL_PX * per_px, y0, y1)
    for i, ((name, v), ly) in enumerate(zip(flat, at)):
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        under = sum(abs(w - v) < LINE_PX * per_px for _, w in flat[i + 1:])     # coincident lines drawn later
        fig.add_trace(go.Scatter(
            x=[lo, hi], y=[v] * 2, mode="lines", name=name,
            line=dict(color=colour, width=2 + 2 * under, dash=LINE_DASHES[i % len(LINE_DASHES)]),
            hovertemplate=f"<b>{name}</b><br>mAP %{{y:.1f}} (any N)<extra></extra>"))
        fig.add_annotation(x=1, xref="paper", y=v, yref="y", ax=18, axref="pixel", ay=ly, ayref="y",
                           text=name, xanchor="left", showarrow=True, arrowhead=0, arrowwidth=1,
                           arrowcolor=colour, font=dict(size=12, color=colour), name=f"label: {name}")
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
                   range=[math.log10(lo), math.log10(hi)],
                   tickvals=ns, ticktext=[f"{n} ({f:.0%})" for n, f, _, _ in pts]),
        yaxis=dict(title="mAP", range=[y0, y1]), legend=dict(orientation="h", y=-0.25),
        margin=dict(l=10, r=30 + CHAR_PX * max((len(n) for n, _ in flat), default=0), t=50, b=10), height=HEIGHT)
    return fig


def ap_scatter(before: Sequence[float], after: Sequence[float], names: Sequence[str],
               before_label: str = "local", after_label: str = "l2g") -> go.Figure:
    """Per-query AP before (x) vs after (y) re-ranking; points above the diagonal improved.

    customdata[0] of each point is its position in ``names`` (to open that query).
    """
    b = np.asarray(before, np.float64)
    a = np.asarray(after, np.float64)
    if not (len(b) == len(a) == len(names)):
        raise ValueError(f"before/after/names lengths differ: {len(b)}, {len(a)}, {len(names)}")
    delta = a - b
    colour = np.where(delta > 1e-9, POS_COLOUR, np.where(delta < -1e-9, "#d73027", NEG_COLOUR))
    text = [f"<b>{n}</b><br>AP {before_label} {x:.3f} → {after_label} {y:.3f} ({y - x:+.3f})"
            for n, x, y in zip(names, b, a)]
    fig = go.Figure([
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#bbbbbb", dash="dash"),
                   hoverinfo="skip", showlegend=False),
        go.Scatter(x=b.tolist(), y=a.tolist(), mode="markers", customdata=[[i] for i in range(len(b))], text=text,
                   hovertemplate="%{text}<extra></extra>", showlegend=False,
                   marker=dict(size=9, color=list(colour), line=dict(width=0.5, color="black"))),
    ])
    better, worse = int((delta > 1e-9).sum()), int((delta < -1e-9).sum())
    fig.update_layout(
        title=dict(text=f"AP per query: {before_label} vs {after_label} "
                        f"({better} better, {worse} worse, {len(b) - better - worse} equal)", font=dict(size=14)),
        xaxis=dict(title=f"AP {before_label}", range=[-0.02, 1.02]),
        yaxis=dict(title=f"AP {after_label}", range=[-0.02, 1.02]),
        margin=dict(l=10, r=10, t=50, b=10), height=480, clickmode="event+select")
    return fig
