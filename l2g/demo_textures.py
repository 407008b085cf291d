"""The demo's distractor families: repetitive or smeared surfaces that draw false local votes.

A family is one base image seen len(FAMILY_VARIANTS) ways (crops at two scales, a rotation, a
perspective warp, a colour tint, a blur), so that its members match each other and form their own
cluster in the similarity graph, apart from the query's group: l2g's re-ranking demotes such a
family when local search ranks it high. Bases are shipped photographs (textures such as brick,
grass and gravel, and others) or seeded procedural textures (a brick wall, a dot grid, Voronoi
cells, coloured value noise 'clouds', scattered shapes, and the same shapes motion-blurred).

Every function is seeded (same bytes on every build) and returns (H, W, 3) uint8; variants have
longest side DISTRACTOR_SIDE (lower than the group views: small images index fast).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .demo_views import fit, homography_view, seeded_rng

DISTRACTOR_SIDE = 384
FAMILY_VARIANTS = ("crop", "zoom", "rotate", "warp", "tint", "blur")   # a distractor family: one base seen 6 ways
PROCEDURAL_KINDS = ("bricks", "dots", "cells", "clouds", "shapes", "smear")


def _rgb(a: np.ndarray) -> np.ndarray:
    return a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2)


def _cut(rgb: np.ndarray, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """A random square-ish window whose side is lo-hi of the shorter image side."""
    h, w = rgb.shape[:2]
    s = round(min(h, w) * float(rng.uniform(lo, hi)))
    x0, y0 = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
    return np.ascontiguousarray(rgb[y0:y0 + s, x0:x0 + s])


def texture_variant(rgb: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One variant of a texture photograph (H, W, 3) uint8 -> (h, w, 3) uint8, longest side
    DISTRACTOR_SIDE. ``kind`` is one of FAMILY_VARIANTS."""
    rgb = _rgb(rgb)
    if kind == "crop":
        out = _cut(rgb, rng, 0.55, 0.8)
    elif kind == "zoom":
        out = _cut(rgb, rng, 0.3, 0.45)
    elif kind == "rotate":
        angle = float(rng.uniform(20, 70) * rng.choice([-1, 1]))
        big = Image.fromarray(_cut(rgb, rng, 0.8, 1.0)).rotate(angle, Image.Resampling.BICUBIC)
        s = big.size[0]
        out = np.asarray(big)[s // 5: s - s // 5, s // 5: s - s // 5]     # no empty corners
    elif kind == "warp":
        out, _ = homography_view(_cut(rgb, rng, 0.6, 0.9), rng, 0.05, 0.25, fill=(128, 128, 128))
    elif kind == "tint":
        cast = rng.uniform(0.5, 1.2, 3)
        out = np.clip(_cut(rgb, rng, 0.5, 0.9) * cast, 0, 255).astype(np.uint8)
    elif kind == "blur":
        out = np.asarray(Image.fromarray(_cut(rgb, rng, 0.6, 0.9)).filter(ImageFilter.GaussianBlur(2.0)))
    else:
        raise ValueError(f"texture_variant: unknown kind {kind!r}")
    return fit(np.ascontiguousarray(out), DISTRACTOR_SIDE, allow_up=True)


def motion_blur(rgb: np.ndarray, length: int, angle: float) -> np.ndarray:
    """(H, W, 3) uint8 averaged along a line of ``length`` px at ``angle`` radians (a camera shake)."""
    acc = np.zeros(rgb.shape, np.float64)
    for i in range(length):
        dx, dy = round(i * np.cos(angle)), round(i * np.sin(angle))
        acc += np.roll(rgb, (dy, dx), axis=(0, 1))
    return np.rint(acc / length).astype(np.uint8)


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, 3))


def procedural_texture(kind: str, seed: int, size: tuple[int, int] = (DISTRACTOR_SIDE, 288)) -> np.ndarray:
    """Seeded synthetic distractor (H, W, 3) uint8 of ``size`` (W, H); ``kind`` in PROCEDURAL_KINDS."""
    w, h = size
    rng = seeded_rng(kind, seed)
    img = Image.new("RGB", size, _colour(rng, 120, 256))
    draw = ImageDraw.Draw(img)
    if kind == "bricks":
        bw, bh = int(rng.integers(28, 60)), int(rng.integers(12, 26))
        mortar, base = int(rng.integers(2, 5)), np.array(_colour(rng, 90, 200))
        for r, y in enumerate(range(-bh, h + bh, bh)):
            off = (bw // 2) * (r % 2)
            for x in range(-bw - off, w + bw, bw):
                c = tuple(int(v) for v in np.clip(base + rng.integers(-30, 30, 3), 0, 255))
                draw.rectangle([x + mortar, y + mortar, x + bw - 1, y + bh - 1], fill=c)
    elif kind == "dots":
        s, r, c = int(rng.integers(18, 36)), float(rng.uniform(4, 9)), _colour(rng, 0, 120)
        for i, y in enumerate(range(0, h + s, s)):
            for x in range(-s, w + s, s):
                cx, cy = x + (s / 2) * (i % 2) + rng.normal(0, 1), y + rng.normal(0, 1)
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=c)
    elif kind == "cells":
        pts = rng.uniform(0, 1, (int(rng.integers(40, 90)), 2)) * [w, h]
        yy, xx = np.mgrid[0:h, 0:w]
        d = (xx[..., None] - pts[:, 0]) ** 2 + (yy[..., None] - pts[:, 1]) ** 2
        part = np.sort(d, axis=2)
        edge = np.sqrt(part[..., 1]) - np.sqrt(part[..., 0]) < 2.5
        cols = rng.integers(80, 256, (len(pts), 3))
        arr = cols[np.argmin(d, axis=2)].astype(np.uint8)
        arr[edge] = 20
        return arr
    elif kind == "clouds":
        acc = np.zeros((h, w, 3))
        for octave in range(1, 6):
            grid = (rng.random((3 * 2 ** octave, 4 * 2 ** octave, 3)) * 255).astype(np.uint8)
            acc += np.asarray(Image.fromarray(grid).resize(size, Image.Resampling.BICUBIC)) / 2 ** octave
        acc = (acc - acc.min()) / max(1e-9, acc.max() - acc.min())
        return np.rint(acc * 255).astype(np.uint8)
    elif kind in ("shapes", "smear"):
        for _ in range(60):
            x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(6, 40)
            if rng.random() < 0.5:
                draw.ellipse([x - r, y - r * 0.7, x + r, y + r * 0.7], fill=_colour(rng))
            else:
                pts = [(float(x + r * np.cos(a)), float(y + r * np.sin(a)))
                       for a in np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))]
                draw.polygon(pts, fill=_colour(rng))
        if kind == "smear":
            return motion_blur(np.asarray(img), int(rng.integers(12, 24)), float(rng.uniform(0, np.pi)))
    else:
        raise ValueError(f"procedural_texture: unknown kind {kind!r}")
    return np.asarray(img.filter(ImageFilter.GaussianBlur(0.6)))
