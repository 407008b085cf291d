"""Figures: point counts, colours, hover text, overlay colours and sizes, the how-it-works PNG."""
import json

import numpy as np
import pytest
from PIL import Image

from l2g import viz, viz_budget, viz_howto
from l2g.rerank import RerankResult


def fake_rr(k=6, d=8, seed=0):
    rng = np.random.default_rng(seed)
    head = np.arange(10, 10 + k)
    order = rng.permutation(k)
    X = rng.normal(size=(k + 1, d))
    S = np.eye(k + 1)
    S[0, 1:] = S[1:, 0] = np.linspace(0.9, 0.4, k)
    return RerankResult(ids=np.concatenate([head[order], [99, 98]]), scores=np.linspace(1, 0.1, k), head=head,
                        X=X, S=S, cos_mds=np.zeros(k), cos_global=None, stress1=0.123)


LABELS = {j: f"img{j}.jpg" for j in range(100)}


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("colors_by", ["rank_change", "ground_truth"])
def test_mds_figure_has_k_plus_one_points(dim, colors_by):
    rr = fake_rr()
    fig = viz.mds_figure(rr, LABELS, colors_by, positives={10, 12}, dim=dim)
    assert viz.count_points(fig) == 7
    d = json.loads(fig.to_json())
    assert viz.count_points(d) == 7
    query = [t for t in d["data"] if t["name"] == "query"]
    assert len(query) == 1 and len(query[0]["x"]) == 1
    assert query[0]["marker"]["symbol"] == viz.QUERY_SYMBOL == "diamond"   # the same marker in 2-D and 3-D
    if dim == 2:
        assert all(t["type"] == "scatter" for t in d["data"])
    else:
        assert all(t["type"] == "scatter3d" for t in d["data"]) and "z" in d["data"][0]
    assert "stress-1 = 0.123" in d["layout"]["title"]["text"]
    # every candidate id appears once in customdata
    ids = sorted(c[0] for t in d["data"] if t["name"] != "query" for c in t["customdata"])
    assert ids == list(range(10, 16))


def test_mds_hover_and_colours():
    rr = fake_rr()
    change = rr.rank_change()
    fig = viz.mds_figure(rr, LABELS, "rank_change", dim=2)
    cand = fig.data[0]
    assert list(cand.marker.color) == [change[j] for j in rr.head]
    first = cand.text[0]
    assert "img10.jpg" in first and "local score" in first and "new score" in first and "rank change" in first
    gt = viz.mds_figure(rr, LABELS, "ground_truth", positives={10, 12}, dim=2)
    names = [t.name for t in gt.data]
    assert names == ["other", "positive", "query"]
    assert sorted(c[0] for c in gt.data[1].customdata) == [10, 12]
    with pytest.raises(ValueError):
        viz.mds_figure(rr, LABELS, "nonsense")


def test_mds_view_option():
    rr = fake_rr(k=8, d=8)
    S = np.random.default_rng(3).uniform(0, 1, (9, 9))
    rr.S = (S + S.T) / 2
    np.fill_diagonal(rr.S, 1)
    fig = viz.mds_figure(rr, LABELS, dim=2, view="mds")
    assert viz.count_points(fig) == 9 and "2-D MDS view" in fig.layout.title.text
    assert "PCA view" in viz.mds_figure(rr, LABELS, dim=2, view="pca").layout.title.text
    with pytest.raises(ValueError):
        viz.mds_figure(rr, LABELS, view="tsne")


@pytest.mark.parametrize("dim,view", [(2, "pca"), (3, "pca"), (2, "mds"), (3, "mds")])
def test_mds_title_lines_fit_the_width_given(dim, view):
    """Given title_chars, the title is broken between its parts into lines that long, and the top margin
    grows by a line's height per line after the first (the plot starts below the title); without it, one
    line as before. No part is lost."""
    rr = fake_rr(k=100, d=32)
    rr.S = np.eye(101) * 0.5 + 0.5 / 101
    one = viz.mds_figure(rr, LABELS, dim=dim, view=view).layout
    assert "<br>" not in one.title.text
    for chars in (41, 35):
        lay = viz.mds_figure(rr, LABELS, dim=dim, view=view, title_chars=chars).layout
        lines = lay.title.text.split("<br>")
        assert len(lines) > 1 and all(len(x) <= chars for x in lines), lines
        assert " · ".join(lines) == one.title.text
        assert lay.margin.t == one.margin.t + viz.TITLE_LINE_PX * (len(lines) - 1)
    assert viz.title_lines(["a" * 50, "b"], 41) == ["a" * 50, "b"]       # a part longer than a line: its own


def test_project_keeps_low_dim_and_reduces_high_dim():
    X = np.random.default_rng(1).normal(size=(9, 2))
    Y, kept = viz.project(X, 3)
    assert Y.shape == (9, 3) and kept == 1.0 and np.allclose(Y[:, :2], X)
    Z = np.random.default_rng(2).normal(size=(9, 16))
    Y, kept = viz.project(Z, 2)
    assert Y.shape == (9, 2) and 0 < kept < 1


def test_match_figure_colours_and_size():
    rng = np.random.default_rng(0)
    a = np.full((100, 150, 3), 255, np.uint8)
    b = np.full((200, 100, 3), 255, np.uint8)
    kq = np.column_stack([rng.uniform(10, 140, 20), rng.uniform(10, 90, 20), np.ones(20), np.zeros(20), np.ones(20)])
    kg = np.column_stack([rng.uniform(10, 90, 20), rng.uniform(10, 190, 20), np.ones(20), np.zeros(20), np.ones(20)])
    m = np.column_stack([np.arange(10), np.arange(10)])
    inl = np.arange(10) < 6
    out = viz.match_figure(a, b, kq, kg, m, inl, height=240)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[1] == 360 + 8 + 120           # both images scaled to height 240, plus the gap
    px = out.reshape(-1, 3).astype(int)
    green = ((px[:, 1] > 150) & (px[:, 0] < 120) & (px[:, 2] < 140)).sum()
    red = ((px[:, 0] > 180) & (px[:, 1] < 120) & (px[:, 2] < 120)).sum()
    assert green > 100 and red > 50
    only_out = viz.match_figure(a, b, kq, kg, m, np.zeros(10, bool), height=240).reshape(-1, 3).astype(int)
    assert ((only_out[:, 1] > 150) & (only_out[:, 0] < 120) & (only_out[:, 2] < 140)).sum() == 0
    empty = viz.match_figure(a, b, kq, kg, np.zeros((0, 2), int), np.zeros(0, bool), height=240)
    assert empty.shape == out.shape
    png = viz.to_png(out)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        viz.match_figure(a, b, kq, kg, m, inl[:3])
    with pytest.raises(ValueError):
        viz.match_figure(a, b, kq, kg, np.array([[50, 0]]), None)


def test_ap_scatter():
    fig = viz.ap_scatter([0.2, 0.5, 0.9], [0.4, 0.5, 0.3], ["a", "b", "c"])
    pts = fig.data[1]
    assert list(pts.x) == [0.2, 0.5, 0.9] and [c[0] for c in pts.customdata] == [0, 1, 2]
    assert "1 better, 1 worse, 1 equal" in fig.layout.title.text
    with pytest.raises(ValueError):
        viz.ap_scatter([0.1], [0.2, 0.3], ["a"])


def test_how_it_works_png(tmp_path):
    p = viz_howto.write_how_it_works(tmp_path / "hiw.png", width=1200)
    with Image.open(p) as im:
        assert im.format == "PNG" and im.size[0] == 1200 and im.size[1] > 300
        arr = np.asarray(im.convert("RGB"))
    assert arr.std() > 10           # not blank


def _modebar_bottom(lay) -> float:
    """px from the figure's top to the bottom of the band the plotly toolbar takes: horizontal, a band of
    viz.MODEBAR_PX at the top; vertical, as tall as its buttons (208 px for the app's 2-D set), which the
    layout does not say: the whole right edge is taken."""
    return viz.MODEBAR_PX if lay.get("modebar", {}).get("orientation") == "h" else lay["height"]


def _px_top(title, height) -> float:
    """px from the figure's top to a layout title's top (y in container fractions, yanchor 'top')."""
    assert title.get("yref", "container") == "container" and title["yanchor"] == "top"
    return (1 - title["y"]) * height


@pytest.mark.parametrize("dim", [2, 3])
def test_the_toolbar_leaves_the_colourbar_title_clear(dim):
    """Every colourbar's top (with its title: plotly draws it inside the bar's length) is below the band
    the toolbar takes, from the figure's own layout: margins, height, the bar's y / len / anchor / pad."""
    d = json.loads(viz.mds_figure(fake_rr(), LABELS, "rank_change", dim=dim).to_json())
    lay = d["layout"]
    bars = [t["marker"]["colorbar"] for t in d["data"] if "colorbar" in t.get("marker", {})]
    assert bars
    plot_top = lay["margin"]["t"]
    plot_h = lay["height"] - plot_top - lay["margin"]["b"]           # before the legend's automargin
    for cb in bars:
        assert cb.get("yref", "paper") == "paper" and cb.get("lenmode", "fraction") == "fraction", cb
        y, n, anchor = cb.get("y", 0.5), cb.get("len", 1.0), cb.get("yanchor", "middle")
        top = y + {"top": 0, "middle": n / 2, "bottom": n}[anchor]    # plot fractions, from its bottom
        top_px = plot_top + (1 - top) * plot_h + cb.get("ypad", 10)
        assert top_px >= _modebar_bottom(lay), (cb, top_px, _modebar_bottom(lay))


@pytest.mark.parametrize("dim", [2, 3])
def test_mds_title_clear_of_toolbar_and_clicks_grey_nothing(dim):
    d = json.loads(viz.mds_figure(fake_rr(), LABELS, "rank_change", dim=dim, selected=11).to_json())
    lay = d["layout"]
    assert lay["title"]["xanchor"] == "left" and lay["margin"]["t"] >= 50
    assert _px_top(lay["title"], lay["height"]) >= _modebar_bottom(lay)      # the title below the toolbar
    if dim == 2:         # a click (plotly selection) keeps the other points in full colour
        for t in d["data"]:
            assert t["unselected"]["marker"]["opacity"] == 1.0


@pytest.mark.parametrize("colors_by", ["rank_change", "ground_truth"])
def test_3d_marks_the_selected_point(colors_by):
    """3-D markers take no per-point outline, so the picked point is a ring trace of its own, in the legend."""
    rr = fake_rr()
    fig = viz.mds_figure(rr, LABELS, colors_by, positives={10, 12}, dim=3, selected=12)
    i = list(rr.head).index(12)
    Y, _ = viz.project(rr.X, 3)
    marks = [t for t in fig.data if t.name.startswith("selected")]
    assert len(marks) == 1 and marks[0].name == "selected: img12.jpg" and marks[0].showlegend is not False
    m = marks[0]
    assert [c[0] for c in m.customdata] == [12]
    assert [m.x[0], m.y[0], m.z[0]] == pytest.approx(Y[1 + i].tolist()) and len(m.x) == 1
    cand = [t for t in fig.data if t.name in ("candidates", "other", "positive")]
    assert m.marker.size > max(t.marker.size for t in cand)                   # a ring around the point
    for t in cand:            # every candidate outlined: a pale (no-change) colour stays visible on white
        assert t.marker.line.width >= 1 and t.marker.line.color not in (None, "white", "#ffffff")
    assert not [t for t in viz.mds_figure(rr, LABELS, colors_by, dim=3).data if t.name.startswith("selected")]
    assert not [t for t in viz.mds_figure(rr, LABELS, colors_by, dim=3, selected=77).data
                if t.name.startswith("selected")]                          # not among the candidates: no ring


def test_label_positions_keep_a_gap_and_the_order():
    assert viz_budget.label_positions([10.0, 50.0, 90.0], 5, 0, 100) == [10.0, 50.0, 90.0]       # apart already: kept
    pos = viz_budget.label_positions([99.1, 98.6, 99.1, 40.0], 4, 30, 100)
    assert pos[3] == 40.0 and all(30 <= p <= 100 for p in pos)
    assert sorted(pos) == [pos[3], pos[1], pos[0], pos[2]]                 # value order kept, ties: earlier lower
    assert all(b - a >= 4 - 1e-9 for a, b in zip(sorted(pos), sorted(pos)[1:]))
    assert viz_budget.label_positions([5.0] * 3, 10, 0, 10) == [0.0, 5.0, 10.0]   # no room for the gap: spread evenly


def _budget_results(flat: dict) -> dict:
    m = {k: {"map": v} for k, v in flat.items()}
    for n, v in ((5, 80.2), (10, 88.0), (20, 93.5)):
        m[f"g2l@{n}"] = {"map": v, "budget": {"n": n, "fraction": n / 217}}
    return {"methods": m, "n_images": 217}


@pytest.mark.parametrize("flat", [
    {"global": 72.4, "local": 96.0, "local_qe": 98.6, "l2g": 99.1, "l2g_blend": 99.1},    # the demo: two at 99.1
    {"global": 50.0, "local": 50.0, "local_qe": 50.0, "l2g": 50.0, "l2g_blend": 50.0}])   # all five at one mAP
def test_budget_labels_never_overprint(flat):
    """Each N-independent method keeps a readable label of its own, however close the mAPs."""
    names = {m: m.upper() for m in flat}
    fig = viz.budget_figure(_budget_results(flat), names)
    lay = fig.layout
    y0, y1 = lay.yaxis.range
    gap = viz_budget.LABEL_PX * (y1 - y0) / viz_budget.PLOT_PX     # LABEL_PX apart on a plot >= PLOT_PX high
    ann = {a.text: a for a in lay.annotations}
    assert set(ann) == set(names.values())                # one label per line, named
    lines = {t.name: t for t in fig.data if t.mode == "lines"}
    assert set(lines) == set(names.values())
    ys = sorted(a.ay for a in ann.values())
    assert all(b - a >= gap - 1e-9 for a, b in zip(ys, ys[1:])) and y0 <= ys[0] and ys[-1] <= y1
    for m, v in flat.items():                             # each label's arrow ends on its own line
        a = ann[names[m]]
        assert a.y == pytest.approx(v) and a.yref == "y" and a.ayref == "y" and a.showarrow
        assert a.arrowcolor == a.font.color == lines[names[m]].line.color
        assert list(lines[names[m]].y) == [v, v]
    styles = {(t.line.color, t.line.dash) for t in lines.values()}
    assert len(styles) == len(lines)                      # coincident lines stay distinguishable
    order = list(lines.values())                          # drawn in this order: a line under a later equal one is wider
    for i, t in enumerate(order):
        later = [u for u in order[i + 1:] if u.y[0] == t.y[0]]
        assert t.line.width > max((u.line.width for u in later), default=0)
    assert lay.margin.r >= max(len(n) for n in names.values()) * viz_budget.CHAR_PX    # the labels' room on the right


def test_match_figure_caption_reads_where_it_is_shown_narrowest():
    """The match view's caption (drawn into the figure) at a 800-px window's main column: its letters at least
    8 px high once the figure is scaled down to that width (18 px on a 968-px figure read 6 px there), broken
    into lines that stay inside the figure rather than run off its right edge."""
    white = np.full((512, 512, 3), 255, np.uint8)
    kp = np.zeros((1, 2))
    title = ("not a confident match: 1391 tentative matches: 1347 verified inliers (green), 44 outliers (red)")
    shown = 468
    out = viz.match_figure(white, white, kp, kp, np.zeros((0, 2), int), np.zeros(0, bool), height=480,
                           title=title, shown_px=shown)
    dark = (out < 128).any(axis=2)
    rows = np.flatnonzero(dark.any(axis=1))
    cols = np.flatnonzero(dark.any(axis=0))
    assert len(rows) and cols.max() < out.shape[1] - 4             # inside the figure
    groups = np.split(rows, np.flatnonzero(np.diff(rows) > 2) + 1)   # one run of dark rows per line
    assert len(groups) >= 2, len(groups)                             # too long for one line at that size
    tallest = max(g[-1] - g[0] + 1 for g in groups)
    assert tallest * shown / out.shape[1] >= 8, (tallest, out.shape)
    plain = viz.match_figure(white, white, kp, kp, np.zeros((0, 2), int), np.zeros(0, bool), height=480,
                             title="short")
    assert plain.shape[1] == out.shape[1] and plain.shape[0] < out.shape[0]   # a larger band, same pair


def test_how_it_works_diagram_reads_at_narrow_windows():
    """The app's how-it-works diagram (two columns, step under step): shown no wider than drawn and scaled down
    to a 1000- or 800-px window's main column, a step's text is still at least 10 px high (the one-row diagram,
    1400 px wide, read 5 px); everything drawn lies inside the image."""
    from l2g.app import settings as S

    im = viz_howto.how_it_works_columns()
    assert im.shape[1] == viz_howto.COLUMNS_WIDTH
    for w, main in S.MAIN_PX.items():
        shown = min(main, viz_howto.COLUMNS_WIDTH)                  # st.image at COLUMNS_WIDTH, capped by its column
        assert viz_howto.BODY_FONT * shown / im.shape[1] >= 10, (w, shown)
    dark = (im < 200).any(axis=2)
    assert not dark[:, -3:].any() and not dark[-3:].any()           # nothing runs off the right or the bottom
    assert dark.mean() > 0.02                                       # something is drawn
