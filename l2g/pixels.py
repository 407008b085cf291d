"""Pixels of any PIL mode -> RGB uint8, in bounded memory (l2g.images decodes with these).

Alpha and colour keys are composited over white; 16-bit and float images are stretched over their
finite values to 8 bits; an image is box-reduced by an integer factor in a mode ``Image.reduce`` can
average. Wide-mode copies are made ``STRIP_ROWS`` rows at a time, never of the whole image.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
STRIP_ROWS = 512        # rows converted at a time when a full-size copy in a wider mode must be avoided


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 -> (H, W, 3) uint8, alpha-blended over a white background."""
    rgb = rgba[..., :3].astype(np.uint32)
    alpha = rgba[..., 3:4].astype(np.uint32)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def finite_range(im: Image.Image, rows: int = STRIP_ROWS) -> tuple[float, float] | None:
    """(min, max) of the finite values of a high-depth image, read strip by strip; None if none is finite."""
    if im.mode != "F":
        lo, hi = im.getextrema()            # integer modes: no copy, no NaN
        return float(lo), float(hi)
    w, h = im.size
    lo, hi = np.inf, -np.inf
    for y in range(0, h, rows):
        a = np.asarray(im.crop((0, y, w, min(h, y + rows))), dtype=np.float32)
        a = a[np.isfinite(a)]
        if a.size:
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    return (lo, hi) if lo <= hi else None


def high_depth_to_gray8(arr: np.ndarray, value_range: tuple[float, float] | None = None,
                         rows: int = STRIP_ROWS) -> np.ndarray:
    """(H, W) integer/float array -> (H, W) uint8 stretched over ``value_range`` (default: the
    array's finite values), converted ``rows`` rows at a time so no full float copy is ever made.

    Values outside the range are clipped; NaN/inf become the low end. A constant image keeps its
    value clipped to [0, 255].
    """
    if value_range is None:
        finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
        value_range = (float(finite.min()), float(finite.max())) if finite.size else None
    if value_range is None:
        return np.zeros(arr.shape, np.uint8)
    lo, hi = value_range
    if hi <= lo:
        return np.full(arr.shape, np.clip(round(lo), 0, 255), np.uint8)
    out = np.empty(arr.shape, np.uint8)
    for y in range(0, arr.shape[0], rows):
        a = arr[y:y + rows].astype(np.float64)
        a[~np.isfinite(a)] = lo
        out[y:y + rows] = np.clip(np.rint((a - lo) * (255.0 / (hi - lo))), 0, 255)
    return out


def to_rgb_array(im: Image.Image, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Any PIL image -> (H, W, 3) uint8 (alpha over white, 16-bit stretched by ``value_range``)."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8).copy()
    if mode in HIGH_DEPTH_MODES:
        gray = high_depth_to_gray8(np.asarray(im), value_range)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ALPHA_MODES or "transparency" in im.info:
        return composite_on_white(np.asarray(im.convert("RGBA"), dtype=np.uint8))
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def reducible_mode(im: Image.Image) -> str:
    """The mode ``Image.reduce`` can average ``im`` in (palette/bilevel/16-bit modes cannot be)."""
    if im.mode in ("P", "PA", "L", "RGB") and "transparency" in im.info:
        return "RGBA"                       # a colour key becomes alpha before pixels are averaged
    if im.mode in ("P", "PA"):
        return "RGBA" if im.mode == "PA" else "RGB"
    if im.mode == "1":
        return "L"
    if im.mode.startswith("I;16"):
        return "I"
    return im.mode


def shrink(im: Image.Image, factor: int, rows: int = STRIP_ROWS) -> Image.Image:
    """Box-average ``im`` by an integer ``factor``; modes reduce() refuses are converted strip by
    strip, so at most ``rows`` full-width rows are ever held in the wider mode."""
    mode = reducible_mode(im)
    if mode == im.mode:
        return im.reduce(factor)
    w, h = im.size
    out = Image.new(mode, (-(-w // factor), -(-h // factor)))
    step = factor * max(1, rows // factor)
    for y in range(0, h, step):
        part = im.crop((0, y, w, min(h, y + step))).convert(mode)
        out.paste(part.reduce(factor), (0, y // factor))
    return out
