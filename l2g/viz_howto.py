"""The how-it-works diagram: global-to-local against local-to-global, step by step (an RGB array
or a PNG; no Streamlit here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .viz_text import _font

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


def _draw_row(dr: ImageDraw.ImageDraw, y: int, steps, colour, width: int, rng) -> None:
    n, bw, bh, x0 = len(steps), 230, 150, 30
    gap = (width - 2 * x0 - n * bw) / (n - 1)
    for i, (head, body) in enumerate(steps):
        x = x0 + i * (bw + gap)
        dr.rounded_rectangle([x, y, x + bw, y + bh], 14, fill=(250, 250, 250), outline=colour, width=3)
        dr.text((x + 12, y + 10), head, fill=colour, font=_font(20))
        dr.multiline_text((x + 12, y + 40), body, fill=(40, 40, 40), font=_font(15), spacing=4)
        ix, iy = x + bw - 70, y + bh - 56        # a small glyph of what the step holds
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
        if i < n - 1:
            ax, ay = x + bw + 4, y + bh / 2
            dr.line([ax, ay, ax + gap - 8, ay], fill=(90, 90, 90), width=3)
            dr.polygon([(ax + gap - 4, ay), (ax + gap - 14, ay - 7), (ax + gap - 14, ay + 7)], fill=(90, 90, 90))


def how_it_works_image(width: int = 1400) -> np.ndarray:
    """The two pipelines, global-to-local above local-to-global, as an RGB array."""
    height = 560
    im = Image.new("RGB", (width, height), (255, 255, 255))
    dr = ImageDraw.Draw(im)
    rng = np.random.default_rng(7)
    dr.text((30, 18), "Global-to-local vs local-to-global retrieval", fill=(0, 0, 0), font=_font(28))
    blue, green = (50, 90, 170), (30, 130, 70)
    dr.text((30, 70), "Global-to-local (classic): a global descriptor picks the shortlist, "
                      "local features only verify it", fill=blue, font=_font(18))
    _draw_row(dr, 100, _G2L, blue, width, rng)
    dr.text((30, 290), "Local-to-global (Aiger et al. 2025): local features search the whole gallery, "
                       "a global step re-ranks the shortlist", fill=green, font=_font(18))
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
