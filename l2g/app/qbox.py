"""The query rectangle: drawn as a box on the query image (Plotly box selection) or set with the two
sliders, which follow the drawn box and stay for precise values."""
from __future__ import annotations

import hashlib

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from ..images import thumbnail
from . import state
from .settings import KEEP

SIG_KEY = "l2g_qbox_sig"       # (chart key, box) of the last drawn box already applied to the sliders
SHOW_SIDE = 640                # the image is sent to the browser at most this large (px)


def chart_key(spec: dict) -> str:
    return "l2g_qbox_" + hashlib.sha1(repr(spec["key"]).encode()).hexdigest()[:10]


def slider_keys(spec: dict) -> tuple[str, str]:
    return f"l2g_bx_{spec['key']}", f"l2g_by_{spec['key']}"


def drawn_box(event, w: int, h: int) -> tuple | None:
    """(x0, y0, x1, y1) in image pixels of the last box of a plotly selection event, clamped to the
    image; None when there is none or it is empty."""
    sel = event.get("selection", {}) if hasattr(event, "get") else {}
    boxes = sel.get("box", []) if hasattr(sel, "get") else []
    if not boxes:
        return None
    b = boxes[-1]
    try:
        xs, ys = sorted(float(v) for v in b["x"][:2]), sorted(float(v) for v in b["y"][:2])
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    x0, x1 = (int(round(min(max(v, 0), w))) for v in xs)
    y0, y1 = (int(round(min(max(v, 0), h))) for v in ys)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def apply_drawn(spec: dict) -> None:
    """A box drawn since the last run moves the sliders and turns the rectangle on (before those
    widgets are drawn: Streamlit refuses to change a widget's value after)."""
    ss = st.session_state
    h, w = spec["rgb"].shape[:2]
    key = chart_key(spec)
    box = drawn_box(ss.get(key) or {}, w, h)
    if box is None or ss.get(SIG_KEY) == (key, box):
        return
    ss[SIG_KEY] = (key, box)
    kx, ky = slider_keys(spec)
    ss[kx], ss[ky] = (box[0], box[2]), (box[1], box[3])
    ss["l2g_crop_on"] = True


def figure(rgb: np.ndarray, box) -> go.Figure:
    """The query image (sent at most SHOW_SIDE px, drawn in feature-resolution pixels), the rectangle,
    and box selection as the drag mode."""
    h, w = rgb.shape[:2]
    small = thumbnail(rgb, SHOW_SIDE) if max(h, w) > SHOW_SIDE else rgb
    sh, sw = small.shape[:2]
    fig = go.Figure(go.Image(source=state.data_uri(np.ascontiguousarray(small)), x0=0, y0=0, dx=w / sw, dy=h / sh,
                             hoverinfo="skip"))
    gx, gy = np.meshgrid(np.linspace(0, w, 24), np.linspace(0, h, 24))   # invisible points: box selection
    fig.add_trace(go.Scatter(x=gx.ravel(), y=gy.ravel(), mode="markers", marker={"opacity": 0, "size": 2},
                             hoverinfo="skip", showlegend=False))          # needs a trace that can select
    if box:
        x0, y0, x1, y1 = box
        fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, line={"color": "#ffc800", "width": 3})
        for r in ((0, 0, w, y0), (0, y1, w, h), (0, y0, x0, y1), (x1, y0, w, y1)):   # shade outside the box
            fig.add_shape(type="rect", x0=r[0], y0=r[1], x1=r[2], y1=r[3], line={"width": 0},
                          fillcolor="rgba(0,0,0,0.45)")
    fig.update_xaxes(visible=False, range=[0, w], constrain="domain")
    fig.update_yaxes(visible=False, range=[h, 0], scaleanchor="x", constrain="domain")
    fig.update_layout(dragmode="select", margin={"l": 0, "r": 0, "t": 0, "b": 0}, height=int(380 * h / max(w, 1)) + 10,
                      newselection={"line": {"color": "#ffc800", "width": 2}}, activeselection={"opacity": 0.1})
    return fig


def rectangle(spec: dict) -> tuple | None:
    """Optional query rectangle (the Revisited Oxford crop): draw it on the image, or use the sliders."""
    rgb = spec["rgb"]
    h, w = rgb.shape[:2]
    apply_drawn(spec)
    on = st.checkbox("Query rectangle (search with a crop)", key="l2g_crop_on", persist_state=KEEP, wrap=True,
                     help="Drag a box on the image, or turn this on and use the sliders")
    box = None
    if on:
        kx, ky = slider_keys(spec)
        x0, x1 = st.slider("x range (px)", 0, w, (w // 4, 3 * w // 4), key=kx, persist_state=KEEP)
        y0, y1 = st.slider("y range (px)", 0, h, (h // 4, 3 * h // 4), key=ky, persist_state=KEEP)
        box = (x0, y0, x1, y1)
    with st.container(key="l2g_qbox"):
        st.plotly_chart(figure(rgb, box), key=chart_key(spec), on_select="rerun", selection_mode="box",
                        config={"displaylogo": False, "modeBarButtonsToRemove": ["lasso2d", "zoom2d", "pan2d"],
                                "scrollZoom": False})
    st.caption(f"{spec['name']} ({w} x {h} px at feature resolution)" + (f", rectangle {box}" if box else "")
               + ". Drag on the image to draw a query box.")
    return box
