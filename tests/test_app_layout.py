"""What must read whole at 1280-, 1000- and 800-px windows with the sidebar open (settings.MAIN_PX, measured in
Chromium): Stage 1's thumbnails, the match view and the exports, the Evaluation page's controls. The room each
widget gets is derived from the same constants the app sizes its grids and columns with; a label's need from
settings.CHAR_PX and the paddings beside it."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from l2g.app import core
from l2g.app import settings as S
from tests.test_app import TIMEOUT, _app, _eval_page, _settle, small_data, small_env  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("small_env")      # the demo's small index, as in test_app


def _grid_cells(grid, n: int, room: float) -> tuple[int, float]:
    """(cells in a row, a cell's width) that the browser gives a grid of n cells in a container ``room`` px
    wide: as many cells of the grid's least width as fit, sharing what is left."""
    gap = S.GAP_PX[grid.gap]
    per_row = max(1, min(n, int((room + gap) // (grid.min_column_width + gap))))
    return per_row, (room - gap * (per_row - 1)) / per_row


def _thumb_cells(grid, n: int, main: int) -> tuple[int, float]:
    """Stage 1's grid (_grid_cells) in the query's column beside it (settings.QUERY_SPLIT) when the page's main
    column is ``main`` px wide."""
    return _grid_cells(grid, n, S.column_px(main, S.QUERY_SPLIT, 1, S.QUERY_GAP))


def test_shortlist_thumbnails_read_whole_at_narrow_windows():
    """Stage 1's thumbnails sit in a grid that wraps rather than squeeze them: at a 1000-px and an 800-px window
    with the sidebar open, each one's caption lines (rank and score, matches, the name) and its button's label
    fit its cell (four in a column of about 280 px cut them to 'astro…' and 'ma…'); four in a row stay at
    1280 px."""
    at = _settle(_app().run())
    assert not at.exception, at.exception
    grid = at.get_by_key("l2g_shortlist")
    assert getattr(grid, "type", None) == "grid_container", "Stage 1's thumbnails are not in a wrapping grid"
    run = at.session_state["l2g_run"]
    n = min(at.session_state["l2g_nthumb"], len(run.local.ids))
    buttons = [b for b in grid.button if b.key.startswith("l2g_sl_")]
    captions = [c.value for c in grid.caption]
    assert len(buttons) == len(captions) == n, (len(buttons), len(captions), n)
    lines = [line for c in captions for line in c.split("  \n")]
    assert len(lines) == 3 * n and all(c.startswith(f"#{r + 1} ") for r, c in enumerate(captions)), captions
    assert max(map(len, lines)) * S.CHAR_PX > (S.column_px(S.MAIN_PX[1000], S.QUERY_SPLIT, 1, S.QUERY_GAP)
                                               - 3 * S.GAP_PX[grid.gap]) / 4   # four in a row would cut them
    rows = {}
    for w, main in S.MAIN_PX.items():
        rows[w], cell = _thumb_cells(grid, n, main)
        for line in lines:
            assert len(line) * S.CHAR_PX <= cell, (w, line, cell)
        for b in buttons:
            assert len(b.label) * S.CHAR_PX + S.BUTTON_PAD_PX <= cell, (w, b.label, cell)
    assert rows[1280] == 4 and rows[1000] >= 2 and rows[800] >= 2, rows


def _holds(node, key: str) -> bool:
    if getattr(node, "key", None) == key or getattr(node, "id", None) == key:
        return True
    return any(_holds(c, key) for c in getattr(node, "children", {}).values())


def _column_px(at, key: str, main: float) -> float:
    """Width of the st.columns column holding the widget ``key`` (its key or id) when the page's main column is
    ``main`` px wide (the innermost columns that hold it, inside the main column)."""
    found = []

    def walk(node):
        kids = list(getattr(node, "children", {}).values())
        cols = [c for c in kids if getattr(c, "type", None) == "column"]
        for i, c in enumerate(cols):
            if _holds(c, key):
                found.append(([x.weight for x in cols], i, c.gap))
        for c in kids:
            walk(c)

    walk(at._tree)
    assert found, f"{key}: not in a column"
    weights, i, gap = found[-1]
    return S.column_px(main, weights, i, gap)


def test_match_view_and_exports_read_whole_at_narrow_windows():
    """Stage 4 and the exports at 1000- and 800-px windows with the sidebar open: the "Inliers only" toggle's
    label beside the candidate picker, each metric's label (with its help icon) and value, and each export
    button's label fit (the toggle read 'I…', 'local vo…' and every export label were cut at 800 px)."""
    at = _settle(_app().run())
    assert not at.exception, at.exception
    toggle = at.toggle(key="l2g_inliers_only")
    for w, main in S.MAIN_PX.items():
        room = _column_px(at, "l2g_inliers_only", main)
        assert S.label_px(toggle.label, S.TOGGLE_PX + S.HELP_PX) <= room, (w, room)
    metrics = at.get_by_key("l2g_match_metrics")
    exports = at.get_by_key("l2g_export")
    assert getattr(metrics, "type", None) == getattr(exports, "type", None) == "grid_container"
    shown = [(m.label, m.value, bool(m.help)) for m in metrics.metric]
    assert [lab for lab, _, _ in shown] == ["matches", "inliers", "local votes", "local rank", "l2g rank"]
    labels = [b.proto.label for b in exports.get("download_button")]
    assert len(labels) == 4, labels
    for w, main in S.MAIN_PX.items():
        _, cell = _grid_cells(metrics, len(shown), main)
        for lab, v, hlp in shown:
            assert S.label_px(lab, S.HELP_PX if hlp else 0) <= cell, (w, lab, cell)
            assert S.METRIC_CHAR_PX * len(str(v)) <= cell, (w, v, cell)
        _, cell = _grid_cells(exports, len(labels), main)
        for lab in labels:
            assert S.label_px(lab, S.BUTTON_PAD_PX) <= cell, (w, lab, cell)
    assert _grid_cells(exports, len(labels), S.MAIN_PX[1280])[0] == 4       # one row on a wide window


def test_evaluation_controls_read_whole_at_narrow_windows():
    """The Evaluation page's controls at an 800-px window: every chosen method's chip in view (the chips wrap
    rather than scroll out of sight in one row), and the number of queries wide enough for its − and +."""
    at = AppTest.from_function(_eval_page, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    ms = at.multiselect[0]
    assert ms.proto.wrap is True
    chips = sum(S.label_px(core.METHOD_LABELS[m], S.BUTTON_PAD_PX) for m in ms.value)
    assert chips > _column_px(at, ms.id, S.MAIN_PX[1280])              # one row would hide some, at 1280 px too
    num = at.number_input[0]
    for w in (1000, 800):
        assert _column_px(at, num.id, S.MAIN_PX[w]) >= S.NUMBER_STEPPERS_PX, w


def test_match_candidates_show_name_and_ranks_before_the_cut():
    """Stage 4's candidate picker: each option's name and its local → l2g ranks come before its full path, and
    fit the picker's column at a 800-px window (the browser cuts what follows; the path was first, so the ranks
    were cut away at 1000 and 800 px)."""
    at = _settle(_app().run())
    assert not at.exception, at.exception
    box = at.selectbox(key="l2g_match_pick")
    run = at.session_state["l2g_run"]
    ranks = {int(j): r + 1 for r, j in enumerate(run.l2g.ids)}
    room = _column_px(at, "l2g_match_pick", S.MAIN_PX[800]) - S.SELECT_CHROME_PX
    assert len(box.options) == len(run.local.ids)
    for r, (j, label) in enumerate(zip(run.local.ids, box.options)):
        head, path = label.rsplit(" · ", 1)
        assert f"#{r + 1} → #{ranks[int(j)]}" in head, (label, r)      # local rank → l2g rank
        assert len(head) * S.CHAR_PX <= room, (label, room)             # whole before the cut at 800 px
        assert path.endswith(head.split(" · ")[0].split("…")[-1])       # the name's end, then its full path
