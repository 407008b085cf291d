"""Stage 3's ranking tables: one method's list (rank, thumbnail, name, move, score, ✓), and the grid that
lays the lists side by side as far as the page's width allows."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from .. import methods as M
from . import core, fmt, state
from . import settings as S
from .settings import CELL_PAD_PX, CHAR_PX, RANK_NAME_CHARS

ROW_H = 48
BORDER_PX = 2          # a table's frame, both sides


@dataclass
class Table:
    """One method's ranking table, ready to draw (``show``): its rows, column settings and order."""

    method: str
    df: pd.DataFrame
    cfg: dict
    order: list

    @property
    def least_px(self) -> int:
        """Its width with the rank, thumbnail and image name whole (the score and moves may need a scroll)."""
        return sum(self.cfg[c]["width"] for c in ("rank", "thumb", "name")) + BORDER_PX


def table(eng, run, method, n, positives) -> Table:
    """A method's first n entries: group / file name, shortened in the middle to about RANK_NAME_CHARS
    (fmt.distinct_names: its distinguishing end kept, no two alike) in a column as wide as its longest
    name, next to the thumbnail (the full path in the hidden 'path' column); the score as text with its
    unit ('0.412', '165 inliers'; none for QE)."""
    rows = core.ranking_rows(eng, run, method, n, positives)
    names = fmt.distinct_names([fmt.short_name(r["name"]) for r in rows], RANK_NAME_CHARS)
    for r, name in zip(rows, names):
        r["thumb"] = state.thumb_uri_of(eng, r["id"])
        r["✓"] = "" if r["positive"] is None else ("✓" if r["positive"] else "")
        r["path"], r["name"] = r["name"], name
        r["score"] = fmt.score_cell(M.get(method), r["score"])
    df = pd.DataFrame(rows, columns=["rank", "thumb", "move", "score", "✓", "name", "path"])
    name_px = CELL_PAD_PX + CHAR_PX * max(map(len, names), default=0)     # the longest name whole
    px = S.TABLE_COL_PX
    cfg = {"thumb": st.column_config.ImageColumn("", width=px["thumb"]),
           "score": st.column_config.TextColumn(width=px["count" if fmt.is_count(M.get(method)) else "score"]),
           "rank": st.column_config.NumberColumn(width=px["rank"]),
           "move": st.column_config.TextColumn(width=px["move"]),
           "✓": st.column_config.TextColumn(width=px["✓"]),
           "name": st.column_config.TextColumn("image", width=name_px,
                                               help="File name (with its folder when the name does not say "
                                                    "its group), a long one shortened in the middle (…); the "
                                                    "full gallery path is in the match view's candidate list "
                                                    "and the exports")}
    order = [c for c in ("rank", "thumb", "name", "move", "score", "✓")   # the rank move before the score: in view
             if (c != "move" or "moves" in run.results[method].extras) and (c != "✓" or positives is not None)]
    return Table(method, df, cfg, order)


def show(t: Table) -> None:
    with st.container(key=f"l2g_rank_{t.method}"):
        st.dataframe(t.df, column_config=t.cfg, column_order=t.order, hide_index=True, row_height=ROW_H,
                     height=ROW_H * (len(t.df) + 1) + 3)


def grid(n: int, key: str, tables) -> list:
    """n cells of a grid that wraps rather than squeeze a ranking table of ``tables`` (Stage 3: the side-by-side
    pair, local and local-to-global) below its least width (rank, thumbnail and name whole; settings.table_min_px
    at least): the server cannot tell the window's width, the browser puts as many side by side as fit (three
    at a 1280-px window, two and the third below at 1000 and 800)."""
    least = max([S.table_min_px()] + [t.least_px for t in tables])
    g = st.grid(n, min_column_width=least, gap=S.TABLE_GAP, key=key)
    return [g.cell() for _ in range(n)]
