"""The demo's view transforms (pure functions of an image and a seeded generator).

A group is one photograph seen several ways: a perspective warp, scale + rotation, light, blur +
noise, an occlusion and small partial crops (10-25 % of the scene, pairwise nearly disjoint, so
that two crops of one photograph share little and only the gallery's other views link them).
Every function maps (H, W, 3) uint8 to (H', W', 3) uint8 and returns the parameters it drew.
"""
from __future__ import annotations

import zlib

import numpy as np
from PIL import Image, ImageFilter

DEMO_SEED = 2025


def seeded_rng(*keys: str | int) -> np.random.Generator:
    """The demo's generator for ``keys`` (a group name, a texture and its variant, ...): DEMO_SEED
    plus each key's CRC-32, so every view is seeded on its own and reproducible."""
    return np.random.default_rng([DEMO_SEED, *(zlib.crc32(str(k).encode()) for k in keys)])
DEMO_MAX_SIDE = 640          # longest side of every group view
CROP_MIN_SIDE = 320          # crops are enlarged to at least this longest side (never above DEMO_MAX_SIDE)
CROP_MAX_UPSCALE = 1.5       # ... and by at most this factor: a partial view, not a blurred blow-up
CROP_AREAS = ((0.18, 0.25), (0.12, 0.20), (0.10, 0.16), (0.10, 0.15))   # share of the scene of crop1..crop4
CROP_MAX_OVERLAP = 0.15      # a crop shares at most this share of its area with an earlier crop
FILL = (24, 24, 24)          # colour of the canvas uncovered by warps

View = tuple[str, np.ndarray, dict]     # (view name, (H, W, 3) uint8, params)


def fit(rgb: np.ndarray, long_side: int, allow_up: bool = False) -> np.ndarray:
    """Resize (H, W, 3) uint8 so that its longest side is ``long_side`` (down only unless allow_up)."""
    h, w = rgb.shape[:2]
    if max(h, w) == long_side or (max(h, w) < long_side and not allow_up):
        return rgb
    s = long_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


def perspective_coeffs(out_pts: np.ndarray, in_pts: np.ndarray) -> list[float]:
    """8 PIL PERSPECTIVE coefficients mapping output pixel (u, v) to input (x, y); pts (4, 2)."""
    rows, rhs = [], []
    for (u, v), (x, y) in zip(out_pts, in_pts):
        rows.append([u, v, 1, 0, 0, 0, -u * x, -v * x])
        rows.append([0, 0, 0, u, v, 1, -u * y, -v * y])
        rhs += [x, y]
    return [float(c) for c in np.linalg.solve(np.asarray(rows, float), np.asarray(rhs, float))]


def homography_view(rgb: np.ndarray, rng: np.random.Generator, lo: float = 0.04, hi: float = 0.26,
                    fill=FILL) -> tuple[np.ndarray, dict]:
    """Perspective warp: each corner pulled inwards by lo-hi of the size. (H, W, 3) -> same shape."""
    h, w = rgb.shape[:2]
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], float)
    inward = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], float)
    moved = corners + inward * rng.uniform(lo, hi, (4, 2)) * [w, h]
    coeffs = perspective_coeffs(moved, corners)
    out = Image.fromarray(rgb).transform((w, h), Image.Transform.PERSPECTIVE, coeffs,
                                         Image.Resampling.BICUBIC, fillcolor=fill)
    return np.asarray(out), {"corners": np.round(moved, 1).tolist()}


def scale_rotate_view(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Downscale by 0.38-0.5 and rotate by 15-35 degrees (either way), canvas expanded."""
    s = float(rng.uniform(0.38, 0.5))
    angle = float(rng.uniform(15, 35) * rng.choice([-1, 1]))
    h, w = rgb.shape[:2]
    small = Image.fromarray(rgb).resize((round(w * s), round(h * s)), Image.Resampling.LANCZOS)
    out = small.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=FILL)
    return fit(np.asarray(out), DEMO_MAX_SIDE), {"scale": round(s, 3), "angle": round(angle, 2)}


def illumination_view(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Gamma (darker or brighter), contrast and a per-channel colour cast."""
    gamma = float(rng.choice([rng.uniform(0.5, 0.7), rng.uniform(1.5, 1.9)]))
    contrast = float(rng.uniform(0.7, 1.2))
    cast = rng.uniform(0.8, 1.15, 3)
    x = np.clip((((rgb / 255.0) ** gamma - 0.5) * contrast + 0.5) * cast, 0, 1)
    params = {"gamma": round(gamma, 3), "contrast": round(contrast, 3), "cast": np.round(cast, 3).tolist()}
    return np.rint(x * 255).astype(np.uint8), params


def blur_noise_view(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Gaussian blur (radius 1.5-2.5) then Gaussian noise (sigma 8-12 grey levels)."""
    radius = float(rng.uniform(1.5, 2.5))
    sigma = float(rng.uniform(8, 12))
    blurred = np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(radius)), np.float64)
    noisy = np.clip(np.rint(blurred + rng.normal(0.0, sigma, rgb.shape)), 0, 255).astype(np.uint8)
    return noisy, {"radius": round(radius, 3), "sigma": round(sigma, 3)}


def occlusion_view(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A filled rectangle covering 15-25 % of the image at a random place."""
    h, w = rgb.shape[:2]
    area, aspect = rng.uniform(0.15, 0.25), rng.uniform(0.6, 1.6)
    bw = int(min(w, round(np.sqrt(area * w * h * aspect))))
    bh = int(min(h, round(area * w * h / max(bw, 1))))
    x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    out = rgb.copy()
    out[y0:y0 + bh, x0:x0 + bw] = colour
    return out, {"box": [x0, y0, x0 + bw, y0 + bh], "colour": list(colour)}


def _texture_integral(rgb: np.ndarray) -> np.ndarray:
    """(H+1, W+1) integral image of the grey-level gradient magnitude."""
    g = rgb.astype(np.float64).mean(axis=2)
    mag = np.zeros_like(g)
    mag[:, :-1] += np.abs(np.diff(g, axis=1))
    mag[:-1, :] += np.abs(np.diff(g, axis=0))
    return np.pad(mag.cumsum(0).cumsum(1), ((1, 0), (1, 0)))


def _box_score(integral: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = box
    total = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return float(total) / max(1, (x1 - x0) * (y1 - y0))


def _overlap(a, b) -> float:
    """Share of box a's area that box b covers."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy / max(1, (a[2] - a[0]) * (a[3] - a[1]))


def crop_boxes(rgb: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """Small partial-view boxes (x0, y0, x1, y1), one per CROP_AREAS entry: each is the most
    textured window of its drawn size and aspect that overlaps the earlier ones by at most
    CROP_MAX_OVERLAP of its area (the least overlapping one when none does)."""
    h, w = rgb.shape[:2]
    integral = _texture_integral(rgb)
    boxes: list[tuple[int, int, int, int]] = []
    for lo, hi in CROP_AREAS:
        area = float(rng.uniform(lo, hi))
        aspect = float(rng.uniform(0.6, 1.5))            # box width / height, relative to the image's
        fw = float(np.clip(np.sqrt(area * aspect), 0.2, 0.9))
        fh = float(np.clip(area / fw, 0.2, 0.9))
        bw, bh = round(w * fw), round(h * fh)
        cands = [(int(x), int(y), int(x) + bw, int(y) + bh) for y in np.linspace(0, h - bh, 7).round()
                 for x in np.linspace(0, w - bw, 9).round()]
        worst = [max([_overlap(c, b) for b in boxes], default=0.0) for c in cands]
        ok = [c for c, o in zip(cands, worst) if o <= CROP_MAX_OVERLAP]
        pick = max(ok, key=lambda c: _box_score(integral, c)) if ok else cands[int(np.argmin(worst))]
        boxes.append(pick)
    return boxes


def crop_view(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Cut ``box`` out of (H, W, 3) uint8 and resize it to a normal viewing size."""
    x0, y0, x1, y1 = box
    part = np.ascontiguousarray(rgb[y0:y1, x0:x1])
    upscaled = min(max(rgb.shape[:2]), round(CROP_MAX_UPSCALE * max(part.shape[:2])))
    target = min(DEMO_MAX_SIDE, max(CROP_MIN_SIDE, upscaled))
    return fit(part, target, allow_up=True)


def group_views(name: str, photos: list[np.ndarray]) -> list[View]:
    """All views of one group; ``photos[0]`` is the reference, later photos are real extra views."""
    rng = seeded_rng(name)
    ref = photos[0]
    views: list[View] = [("orig", ref, {})]
    views += [(f"view{i}", p, {"real_view": i}) for i, p in enumerate(photos[1:], start=1)]
    for vname, fn in (("homography", homography_view), ("scalerot", scale_rotate_view),
                      ("light", illumination_view), ("blurnoise", blur_noise_view),
                      ("occlusion", occlusion_view)):
        views.append((vname, *fn(ref, rng)))
    h, w = ref.shape[:2]
    for i, box in enumerate(crop_boxes(ref, rng), start=1):
        area = (box[2] - box[0]) * (box[3] - box[1]) / (w * h)
        views.append((f"crop{i}", crop_view(ref, box), {"box": list(box), "area": round(area, 3)}))
    return views
