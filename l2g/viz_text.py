"""Text in the figures: the font, and lines broken to fit a width (in characters or in pixels)."""
from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

MATCH_TITLE_PX = 13        # the match view's caption this many px high where the figure is shown narrowest


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):       # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def wrap_px(text: str, font, width: float) -> list[str]:
    """``text`` broken between words into lines at most ``width`` px long in ``font`` (a longer word: a line
    of its own)."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
    lines: list[str] = []
    for word in text.split():
        if lines and measure(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines or [""]


def title_lines(parts: Sequence[str], chars: int | None = None) -> list[str]:
    """``parts`` joined by ' · ' into lines of at most ``chars`` characters, broken only between parts (a part
    longer than ``chars`` gets a line of its own); one line when ``chars`` is None."""
    lines: list[str] = []
    for p in parts:
        if lines and (chars is None or len(lines[-1]) + 3 + len(p) <= chars):
            lines[-1] += " · " + p
        else:
            lines.append(p)
    return lines
