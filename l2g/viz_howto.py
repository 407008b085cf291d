"""The how-it-works diagram: global-to-local against local-to-global, step by step (an RGB array
or a PNG; no Streamlit here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .viz_text import _font, wrap_px

BODY_FONT = 15        # a step's text, px (in the image)
COLUMNS_WIDTH = 680   # the diagram drawn as two columns (the app's): its width, px
BOX_H = 104           # a step's box in the two-column diagram, px

_G2L = [("Query", "whole image\nor its crop"),
        ("Global descriptor", "one vector per image\n(VLAD here)"),
        ("Global shortlist", "top-N by cosine;\nmisses are lost for good"),
        ("Spatial verification", "match local features,\ncount RANSAC inliers"),
        ("Ranking", "shortlist re-ordered\nby inlier count")]
_L2G = [("Query", "local features\n(RootSIFT)"),
        ("Local search", "every descriptor votes\nin the whole gallery (CANN)"),
        ("Local shortlist", "top-k + their pairwise\nlocal similarities S"),
        ("Similarity embedding", "MDS of 1 - S into\nd dimensions"),
        ("Ranking", "cosine to the query\nin the embedding")]


def _box(dr: ImageDraw.ImageDraw, x: float, y: float, bw: int, bh: int, head: str, body: str, colour, rng) -> None:
    """One step: a framed box with its name, what it does and a small glyph of what it holds."""
    dr.rounded_rectangle([x, y, x + bw, y + bh], 14, fill=(250, 250, 250), outline=colour, width=3)
    dr.text((x + 12, y + 10), head, fill=colour, font=_font(20))
    dr.multiline_text((x + 12, y + 40), body, fill=(40, 40, 40), font=_font(BODY_FONT), spacing=4)
    ix, iy = x + bw - 70, y + bh - 56
    if head == "Local shortlist":
        v = rng.random((6, 6))
        v = (v + v.T) / 2
        np.fill_diagonal(v, 1)
        for a in range(6):
            for b in range(6):
                c = int(255 - 200 * v[a, b])
                dr.rectangle([ix + 8 * b, iy + 8 * a, ix + 8 * b + 7, iy + 8 * a + 7], fill=(c, c, 255))
    elif head == "Similarity embedding":
        for p in rng.normal(0, 12, (9, 2)):
            dr.ellipse([ix + 25 + p[0] - 3, iy + 25 + p[1] - 3, ix + 25 + p[0] + 3, iy + 25 + p[1] + 3],
                       fill=(120, 120, 120))
        t = np.arange(10) * np.pi / 5 - np.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 9.0, 4.0)
        dr.polygon(list(zip(ix + 25 + r * np.cos(t), iy + 25 + r * np.sin(t))), fill=(255, 176, 0),
                   outline=(0, 0, 0))
    elif head == "Ranking":
        for r, L in enumerate((48, 40, 33, 25, 18)):
            dr.rectangle([ix, iy + 10 * r, ix + L, iy + 10 * r + 6], fill=colour)


def _draw_row(dr: ImageDraw.ImageDraw, y: int, steps, colour, width: int, rng) -> None:
    n, bw, bh, x0 = len(steps), 230, 150, 30
    gap = (width - 2 * x0 - n * bw) / (n - 1)
    for i, (head, body) in enumerate(steps):
        x = x0 + i * (bw + gap)
        _box(dr, x, y, bw, bh, head, body, colour, rng)
        if i < n - 1:
            ax, ay = x + bw + 4, y + bh / 2
            dr.line([ax, ay, ax + gap - 8, ay], fill=(90, 90, 90), width=3)
            dr.polygon([(ax + gap - 4, ay), (ax + gap - 14, ay - 7), (ax + gap - 14, ay + 7)], fill=(90, 90, 90))


def _draw_column(dr: ImageDraw.ImageDraw, x: int, y: int, steps, colour, bw: int, rng) -> None:
    bh, gap = BOX_H, 30
    for i, (head, body) in enumerate(steps):
        _box(dr, x, y + i * (bh + gap), bw, bh, head, body, colour, rng)
        if i < len(steps) - 1:
            ax, ay = x + bw / 2, y + i * (bh + gap) + bh + 4
            dr.line([ax, ay, ax, ay + gap - 8], fill=(90, 90, 90), width=3)
            dr.polygon([(ax, ay + gap - 4), (ax - 7, ay + gap - 14), (ax + 7, ay + gap - 14)], fill=(90, 90, 90))


_HEADS = ("Global-to-local (classic): a global descriptor picks the shortlist, local features only verify it",
          "Local-to-global (Aiger et al. 2025): local features search the whole gallery, a global step re-ranks "
          "the shortlist")
_NOTE = ("In l2g the global step needs no extra network: the shortlist's own pairwise local similarities are "
         "embedded by MDS, so candidates that agree with each other (and with the query) move up, isolated false "
         "matches move down.")


def how_it_works_columns() -> np.ndarray:
    """The two pipelines side by side, each step under the last, as an RGB array COLUMNS_WIDTH px wide: its text
    stays readable where a window shows it narrow (the app's How it works page at 1000 and 800 px)."""
    width, x0, gap = COLUMNS_WIDTH, 24, 32
    bw = (width - 2 * x0 - gap) // 2
    blue, green = (50, 90, 170), (30, 130, 70)
    heads = [wrap_px(h, _font(17), bw) for h in _HEADS]
    note = wrap_px(_NOTE, _font(16), width - 2 * x0)
    top = 70 + 22 * max(map(len, heads)) + 14
    height = top + 5 * BOX_H + 4 * 30 + 24 + 24 * len(note) + 16
    im = Image.new("RGB", (width, height), (255, 255, 255))
    dr = ImageDraw.Draw(im)
    rng = np.random.default_rng(7)
    dr.text((x0, 18), "Global-to-local vs local-to-global retrieval", fill=(0, 0, 0), font=_font(26))
    for k, (steps, colour) in enumerate(((_G2L, blue), (_L2G, green))):
        x = x0 + k * (bw + gap)
        dr.multiline_text((x, 70), "\n".join(heads[k]), fill=colour, font=_font(17), spacing=5)
        _draw_column(dr, x, top, steps, colour, bw, rng)
    dr.multiline_text((x0, height - 16 - 24 * len(note)), "\n".join(note), fill=(60, 60, 60), font=_font(16),
                      spacing=8)
    return np.asarray(im, np.uint8)


def how_it_works_image(width: int = 1400) -> np.ndarray:
    """The two pipelines, global-to-local above local-to-global, as an RGB array."""
    height = 560
    im = Image.new("RGB", (width, height), (255, 255, 255))
    dr = ImageDraw.Draw(im)
    rng = np.random.default_rng(7)
    dr.text((30, 18), "Global-to-local vs local-to-global retrieval", fill=(0, 0, 0), font=_font(28))
    blue, green = (50, 90, 170), (30, 130, 70)
    dr.text((30, 70), _HEADS[0], fill=blue, font=_font(18))
    _draw_row(dr, 100, _G2L, blue, width, rng)
    dr.text((30, 290), _HEADS[1], fill=green, font=_font(18))
    _draw_row(dr, 320, _L2G, green, width, rng)
    dr.multiline_text((30, 490), "In l2g the global step needs no extra network: the shortlist's own pairwise "
                                 "local similarities are embedded by MDS,\nso candidates that agree with "
                                 "each other (and with the query) move up, isolated false matches move down.",
                      fill=(60, 60, 60), font=_font(16), spacing=6)
    return np.asarray(im, np.uint8)


def write_how_it_works(path: str | Path = Path(__file__).resolve().parent.parent / "assets" / "how_it_works.png",
                       width: int = 1400) -> Path:
    """Draw :func:`how_it_works_image` and save it as a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(how_it_works_image(width)).save(path, "PNG", optimize=True)
    return path
