"""Figures of l2g: the MDS embedding, match overlays (the how-it-works diagram: viz_howto; the evaluation's
figures, the verification-budget curve and the AP scatter: viz_budget).

No Streamlit here: every function returns a plotly figure or an RGB array (or
writes a file), so the app, notebooks and tests share them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw

from .rerank import RerankResult

# the figures' positive / other colours; the evaluation figures, re-exported
from .viz_budget import NEG_COLOUR, POS_COLOUR, ap_scatter, budget_figure, budget_points  # noqa: F401

# the font, lines broken to fit a width (re-exported)
from .viz_text import MATCH_TITLE_PX, _font, title_lines, wrap_px  # noqa: F401

INLIER = (40, 200, 70)
OUTLIER = (230, 50, 40)
QUERY_COLOUR = "#ffb000"
QUERY_SYMBOL = "diamond"     # the one marker symbol scatter (2-D) and scatter3d (3-D) both have
MODEBAR_PX = 32              # the plotly toolbar, horizontal: a band this tall at the figure's top (26 px in Chromium)
TITLE_LINE_PX = 20           # a title line (font size 14): the top margin grows by this per line after the first


# ----------------------------------------------------------------------------- helpers


def project(X: np.ndarray, dim: int) -> tuple[np.ndarray, float]:
    """(n, d) points -> (n, dim) view by PCA (centred), and the fraction of variance kept.

    d <= dim keeps the coordinates (zero-padded). Axis signs are fixed so that the
    largest |coordinate| of each axis is positive (a stable picture across runs).
    """
    X = np.asarray(X, np.float64)
    n, d = X.shape
    if d <= dim:
        out = np.zeros((n, dim))
        out[:, :d] = X
        return out, 1.0
    Xc = X - X.mean(0)
    U, s, _ = np.linalg.svd(Xc, full_matrices=False)
    Y = U[:, :dim] * s[:dim]
    for a in range(dim):
        if Y[np.argmax(np.abs(Y[:, a])), a] < 0:
            Y[:, a] *= -1
    total = float((s ** 2).sum())
    return Y, float((s[:dim] ** 2).sum() / total) if total > 0 else 1.0


def _name(labels, j: int) -> str:
    try:
        return str(labels[int(j)])
    except (KeyError, IndexError, TypeError):
        return f"#{int(j)}"


# ----------------------------------------------------------------------------- MDS embedding


def mds_figure(rr: RerankResult, labels: Sequence[str] | Mapping[int, str], colors_by: str = "rank_change",
               positives: set | frozenset = frozenset(), dim: int = 2, local_scores=None,
               query_label: str = "query", selected: int | None = None, view: str = "pca",
               title_chars: int | None = None) -> go.Figure:
    """Scatter of the query (a diamond, in 2-D and 3-D) and its k candidates in the similarity embedding.

    rr.X is (k+1, d), row 0 the query; rows 1.. are rr.head (local-search order).
    labels: gallery id -> name (a list indexed by id, or a mapping).
    colors_by: 'rank_change' (diverging colour scale, up = green) or 'ground_truth'
    (positives green, others grey). local_scores: gallery id -> local score (a
    mapping, or an array indexed by id); default: the normalised query row rr.S[0].
    Each candidate point carries its gallery id as customdata[0].
    view (used when d > dim): 'pca' projects rr.X (the embedding the ranking used) on its main
    axes; 'mds' embeds the same dissimilarities afresh in ``dim`` dimensions.
    The title shows stress-1 and how the view was made (variance kept, or the view's own stress), in lines of
    at most ``title_chars`` characters where it is given (title_lines: the width the figure gets).
    selected (a gallery id among the candidates): ringed in black, in 2-D by the point's outline, in 3-D
    (no per-point outlines there) by a trace of its own, 'selected: NAME' in the legend.
    """
    if colors_by not in ("rank_change", "ground_truth"):
        raise ValueError(f"colors_by must be 'rank_change' or 'ground_truth', got {colors_by!r}")
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim!r}")
    head = np.asarray(rr.head, np.int64)
    k = len(head)
    X = np.asarray(rr.X, np.float64)
    if X.shape[0] != k + 1:
        raise ValueError(f"rr.X has {X.shape[0]} rows for {k} candidates (+1 query)")
    if view not in ("pca", "mds"):
        raise ValueError(f"view must be 'pca' or 'mds', got {view!r}")
    d = X.shape[1]
    if not k:
        Y, about = np.zeros((1, dim)), [f"{d}-D"]
    elif view == "mds" and d > dim:     # a fresh low-dimensional MDS of the same dissimilarities
        from .mds import embed
        from .rerank import dissimilarity

        # SMACOF on purpose: classical MDS in 2-D / 3-D would only repeat the PCA view of a classical embedding
        m = embed(dissimilarity(np.asarray(rr.S, np.float64), rr.params.get("transform", "1-s")), dim,
                  method="smacof")
        Y, about = m.X, [f"{dim}-D MDS view, its stress-1 = {m.stress1:.3f}", f"ranking uses {d}-D"]
    else:
        Y, kept = project(X, dim)
        about = [f"{d}-D"] + ([f"PCA view: {100 * kept:.0f}% of variance"] if d > dim else [])
    change = rr.rank_change()
    new_score = {int(j): float(s) for j, s in zip(rr.ids[:k], rr.scores)}
    new_rank = {int(j): r + 1 for r, j in enumerate(rr.ids[:k])}
    if local_scores is None:
        loc = {int(j): float(rr.S[0, i + 1]) for i, j in enumerate(head)}
    else:
        loc = {int(j): float(local_scores[int(j)]) for j in head}
    names = [_name(labels, j) for j in head]
    local_rank = {int(j): r + 1 for r, j in enumerate(head if rr.local_ids is None else rr.local_ids)}
    moves = np.array([change.get(int(j), 0) for j in head], np.float64)
    is_pos = np.array([int(j) in positives or names[i] in positives for i, j in enumerate(head)], bool)
    hover = [f"<b>{names[i]}</b><br>local score {loc[int(j)]:.4f} (rank {local_rank[int(j)]})<br>"
             f"new score {new_score.get(int(j), float('nan')):.4f} (rank {new_rank.get(int(j), i + 1)})<br>"
             f"rank change {_arrow(int(moves[i]))}" + ("<br>positive" if is_pos[i] else "")
             for i, j in enumerate(head)]
    coords = lambda sel: {ax: Y[1:][sel, a].tolist() for a, ax in enumerate("xyz"[:dim])}  # noqa: E731
    Scatter = go.Scatter if dim == 2 else go.Scatter3d
    size = 10 if dim == 2 else 5
    line = dict(width=[3 if int(j) == selected else 0.5 for j in head], color="black")
    rim = dict(width=1, color="#444444")      # 3-D: one outline for all (a pale colour stays visible on white)
    traces = []
    if colors_by == "rank_change":
        lim = max(1.0, float(np.abs(moves).max()) if k else 1.0)
        sel = np.ones(k, bool)
        traces.append(Scatter(**coords(sel), mode="markers", name="candidates",
                              customdata=head[:, None].tolist(), text=hover, hovertemplate="%{text}<extra></extra>",
                              marker=dict(size=size, color=moves.tolist(), colorscale="RdYlGn", cmin=-lim, cmax=lim,
                                          colorbar=dict(title="rank<br>change", thickness=12),
                                          line=line if dim == 2 else rim)))
    else:
        for flag, nm, col in ((False, "other", NEG_COLOUR), (True, "positive", POS_COLOUR)):
            sel = is_pos == flag
            if not sel.any():
                continue
            traces.append(Scatter(**coords(sel), mode="markers", name=nm, customdata=head[sel][:, None].tolist(),
                                  text=[h for h, s in zip(hover, sel) if s],
                                  hovertemplate="%{text}<extra></extra>",
                                  marker=dict(size=size + (3 if flag else 0), color=col,
                                              line=dict(width=[w for w, s in zip(line["width"], sel) if s],
                                                        color="black") if dim == 2 else rim)))
    if dim == 3 and selected is not None and int(selected) in set(head.tolist()):
        i = int(np.flatnonzero(head == int(selected))[0])     # 3-D markers take no per-point outline: a ring
        traces.append(go.Scatter3d(**coords(np.arange(k) == i), mode="markers", name=f"selected: {names[i]}",
                                   customdata=[[int(selected)]], text=[hover[i]],
                                   hovertemplate="%{text}<extra></extra>",
                                   marker=dict(symbol="circle-open", size=14, color="black", line=dict(width=3))))
    qc = {ax: [float(Y[0, a])] for a, ax in enumerate("xyz"[:dim])}
    traces.append(Scatter(**qc, mode="markers", name="query", customdata=[[-1]],
                          text=[f"<b>{query_label}</b> (query)"], hovertemplate="%{text}<extra></extra>",
                          marker=dict(symbol=QUERY_SYMBOL, size=16 if dim == 2 else 9,
                                      color=QUERY_COLOUR, line=dict(width=1.5, color="black"))))
    if dim == 2:          # a click selects a point: keep the others in full colour (no greying out)
        for t in traces:
            t.update(unselected=dict(marker=dict(opacity=1.0)), selected=dict(marker=dict(opacity=1.0)))
    fig = go.Figure(traces)
    lines = title_lines([f"Query + top-{k}", f"stress-1 = {rr.stress1:.3f}", *about], title_chars)
    fig.update_layout(
        title=dict(text="<br>".join(lines), font=dict(size=14), x=0.01, xanchor="left", y=1 - MODEBAR_PX / 520,
                   yanchor="top"),
        modebar=dict(orientation="h"),     # a band above the title: title, plot and colourbar title start below it
        margin=dict(l=10, r=40, t=MODEBAR_PX + 32 + TITLE_LINE_PX * (len(lines) - 1), b=10), height=520,
        clickmode="event+select",
        legend=dict(orientation="h", y=-0.05, itemsizing="constant"), dragmode="pan" if dim == 2 else "orbit")
    if dim == 2:
        fig.update_yaxes(scaleanchor="x", scaleratio=1, zeroline=False, showticklabels=False)
        fig.update_xaxes(zeroline=False, showticklabels=False)
    return fig


def _arrow(move: int) -> str:
    return f"↑{move}" if move > 0 else f"↓{-move}" if move < 0 else "="


def array_of(v) -> np.ndarray:
    """A figure-JSON array (a list, or plotly's {'bdata', 'dtype', 'shape'} encoding) -> numpy."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v.get("dtype", "f8"))
        shape = v.get("shape")
        return a.reshape([int(x) for x in str(shape).split(",")]) if shape else a
    return np.asarray(v if v is not None else [])


def count_points(fig: go.Figure | dict) -> int:
    """Total number of plotted points over every trace of a figure (or its JSON dict)."""
    data = fig.to_dict()["data"] if isinstance(fig, go.Figure) else fig["data"]
    return int(sum(len(array_of(t.get("x"))) for t in data))


# ----------------------------------------------------------------------------- matches


def match_figure(img_q: np.ndarray, img_g: np.ndarray, kpts_q: np.ndarray, kpts_g: np.ndarray,
                 matches: np.ndarray, inliers: np.ndarray | None = None, height: int = 480,
                 max_lines: int = 400, title: str | None = None, shown_px: int | None = None) -> np.ndarray:
    """Side-by-side RGB overlay: query left, gallery image right, one line per match.

    img_*: (H, W, 3) uint8 in the pixel frame of their keypoints kpts_* (N, >=2; x, y first).
    matches: (m, 2) int (query keypoint, gallery keypoint); inliers: (m,) bool or None.
    Inliers are drawn green over outliers in red; at most ``max_lines`` lines (inliers
    first, then an even sample of outliers). A caption band above states the counts; ``shown_px``: the least
    width the figure is shown at (the app's narrowest column), its caption then drawn large enough to read
    MATCH_TITLE_PX high there, in as many lines as it needs.
    Returns an (H', W', 3) uint8 array.
    """
    matches = np.asarray(matches, np.int64).reshape(-1, 2)
    m = len(matches)
    inl = np.zeros(m, bool) if inliers is None else np.asarray(inliers, bool).reshape(-1)
    if len(inl) != m:
        raise ValueError(f"{m} matches but {len(inl)} inlier flags")
    ims, scales = [], []
    for img in (img_q, img_g):
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected (H, W, 3) images, got {img.shape}")
        s = height / img.shape[0]
        w = max(1, round(img.shape[1] * s))
        ims.append(Image.fromarray(img.astype(np.uint8)).resize((w, height), Image.Resampling.BILINEAR))
        scales.append(s)
    gap = 8
    W = ims[0].width + gap + ims[1].width
    n_in = int(inl.sum())
    caption = title or (f"{m} matches: {n_in} inliers (green), {m - n_in} outliers (red)"
                        if inliers is not None else f"{m} matches (not verified)")
    size = max(18, round(MATCH_TITLE_PX * W / shown_px)) if shown_px else 18
    font = _font(size)
    lines = wrap_px(caption, font, W - 12)
    band = 16 + len(lines) * (size + 4)
    canvas = Image.new("RGB", (W, height + band), (255, 255, 255))
    canvas.paste(ims[0], (0, band))
    canvas.paste(ims[1], (ims[0].width + gap, band))
    ImageDraw.Draw(canvas).multiline_text((6, 6), "\n".join(lines), fill=(0, 0, 0), font=font, spacing=4)
    if m:
        kq = np.asarray(kpts_q, np.float64)[:, :2]
        kg = np.asarray(kpts_g, np.float64)[:, :2]
        if matches[:, 0].max() >= len(kq) or matches[:, 1].max() >= len(kg) or matches.min() < 0:
            raise ValueError("a match refers to a keypoint index out of range")
        pq = kq[matches[:, 0]] * scales[0] + [0, band]
        pg = kg[matches[:, 1]] * scales[1] + [ims[0].width + gap, band]
        idx_in = np.flatnonzero(inl)[:max_lines]
        out = np.flatnonzero(~inl)
        room = max(0, max_lines - len(idx_in))
        if len(out) > room:
            out = out[np.linspace(0, len(out) - 1, room).astype(int)] if room else out[:0]
        layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
        dr = ImageDraw.Draw(layer)
        for idx, col, alpha in ((out, OUTLIER, 150), (idx_in, INLIER, 220)):
            for i in idx:
                a, b = tuple(pq[i]), tuple(pg[i])
                dr.line([a, b], fill=col + (alpha,), width=1 if col == OUTLIER else 2)
                for x, y in (a, b):
                    dr.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], outline=col + (255,), width=1)
        canvas = Image.alpha_composite(canvas.convert("RGBA"), layer).convert("RGB")
    return np.asarray(canvas, np.uint8)


def to_png(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes (for downloads)."""
    import io

    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, np.uint8)).save(buf, "PNG")
    return buf.getvalue()
