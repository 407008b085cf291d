"""The demo gallery: photographs shipped inside scikit-image, turned into groups of views.

A group is one photograph seen several ways (perspective warp, scale+rotation, light, blur+noise,
occlusion and above all partial crops keeping 20-45 % of the scene); distractors are unrelated
photographs and seeded procedural images. Seeded, so a rebuild is byte-identical on the same
Pillow/libjpeg; files are read straight from the scikit-image package folder (never the network).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from l2g import config
from l2g.images import ImageError, load_image

DEMO_VERSION = 2             # 2: crops are enlarged at most CROP_MAX_UPSCALE times
DEMO_SEED = 2025
DEMO_MAX_SIDE = 640          # longest side of every written JPEG
DEMO_QUALITY = 90
CROP_MIN_SIDE = 320          # crops are enlarged to at least this longest side (never above DEMO_MAX_SIDE)
CROP_MAX_UPSCALE = 1.5       # ... and by at most this factor: a partial view, not a blurred blow-up
FILL = (24, 24, 24)          # colour of the canvas uncovered by warps

# group name -> scikit-image data files (the first is the reference view; more files = more real views)
GROUP_SOURCES: dict[str, tuple[str, ...]] = {
    "astronaut": ("astronaut.png",), "coffee": ("coffee.png",), "chelsea": ("chelsea.png",),
    "rocket": ("rocket.jpg",), "camera": ("camera.png",),
    "motorcycle": ("motorcycle_left.png", "motorcycle_right.png"),   # a real stereo pair
    "hubble": ("hubble_deep_field.jpg",), "ihc": ("ihc.png",), "coins": ("coins.png",),
}
DISTRACTOR_SOURCES = ("brick.png", "grass.png", "gravel.png", "moon.png", "text.png", "page.png",
                      "clock_motion.png", "cell.png", "retina.jpg")
PROCEDURAL_DISTRACTORS = ("shapes", "clouds")

Progress = Callable[[int, int, str], None]
View = tuple[str, np.ndarray, dict]     # (view name, (H, W, 3) uint8, params)


# ----------------------------------------------------------------------------- sources


def skimage_data_dir() -> Path | None:
    """The scikit-image data folder, found without importing skimage (None if not installed)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _photo(data_dir: Path | None, fname: str) -> np.ndarray | None:
    """(H, W, 3) uint8 of a shipped photograph, longest side <= DEMO_MAX_SIDE; None if absent."""
    if data_dir is None or not (data_dir / fname).is_file():
        return None
    try:
        return load_image(data_dir / fname, max_side=DEMO_MAX_SIDE).rgb
    except ImageError:
        return None


# ----------------------------------------------------------------------------- transforms (pure)


def _fit(rgb: np.ndarray, long_side: int, allow_up: bool = False) -> np.ndarray:
    """Resize (H, W, 3) uint8 so that its longest side is ``long_side`` (down only unless allow_up)."""
    h, w = rgb.shape[:2]
    if max(h, w) == long_side or (max(h, w) < long_side and not allow_up):
        return rgb
    s = long_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


def _perspective_coeffs(out_pts: np.ndarray, in_pts: np.ndarray) -> list[float]:
    """8 PIL PERSPECTIVE coefficients mapping output pixel (u, v) to input (x, y); pts (4, 2)."""
    rows, rhs = [], []
    for (u, v), (x, y) in zip(out_pts, in_pts):
        rows.append([u, v, 1, 0, 0, 0, -u * x, -v * x])
        rows.append([0, 0, 0, u, v, 1, -u * y, -v * y])
        rhs += [x, y]
    return [float(c) for c in np.linalg.solve(np.asarray(rows, float), np.asarray(rhs, float))]


def homography_view(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Perspective warp: each corner pulled inwards by 2-22 % of the size. (H, W, 3) -> same shape."""
    h, w = rgb.shape[:2]
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], float)
    inward = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], float)
    moved = corners + inward * rng.uniform(0.02, 0.22, (4, 2)) * [w, h]
    coeffs = _perspective_coeffs(moved, corners)
    out = Image.fromarray(rgb).transform((w, h), Image.Transform.PERSPECTIVE, coeffs,
                                         Image.Resampling.BICUBIC, fillcolor=FILL)
    return np.asarray(out), {"corners": np.round(moved, 1).tolist()}


def scale_rotate_view(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Downscale by 0.55-0.75 and rotate by 15-35 degrees (either way), canvas expanded."""
    s = float(rng.uniform(0.55, 0.75))
    angle = float(rng.uniform(15, 35) * rng.choice([-1, 1]))
    h, w = rgb.shape[:2]
    small = Image.fromarray(rgb).resize((round(w * s), round(h * s)), Image.Resampling.LANCZOS)
    out = small.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=FILL)
    return _fit(np.asarray(out), DEMO_MAX_SIDE), {"scale": round(s, 3), "angle": round(angle, 2)}


def illumination_view(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Gamma (darker or brighter), contrast and a per-channel colour cast."""
    gamma = float(rng.choice([rng.uniform(0.5, 0.7), rng.uniform(1.5, 1.9)]))
    contrast = float(rng.uniform(0.7, 1.2))
    cast = rng.uniform(0.8, 1.15, 3)
    x = np.clip((((rgb / 255.0) ** gamma - 0.5) * contrast + 0.5) * cast, 0, 1)
    params = {"gamma": round(gamma, 3), "contrast": round(contrast, 3), "cast": np.round(cast, 3).tolist()}
    return np.rint(x * 255).astype(np.uint8), params


def blur_noise_view(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Gaussian blur (radius 1.2-2.0) then Gaussian noise (sigma 5-9 grey levels)."""
    radius = float(rng.uniform(1.2, 2.0))
    sigma = float(rng.uniform(5, 9))
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


def crop_boxes(rgb: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """Two partial-view boxes (x0, y0, x1, y1): the most textured corner (25-35 % of the area)
    and a tall doorway-like interior window (20-30 %) that mostly avoids the first."""
    h, w = rgb.shape[:2]
    integral = _texture_integral(rgb)
    f = float(np.sqrt(rng.uniform(0.25, 0.35)))
    cw, ch = round(w * f), round(h * f)
    corners = [(0, 0, cw, ch), (w - cw, 0, w, ch), (0, h - ch, cw, h), (w - cw, h - ch, w, h)]
    first = max(corners, key=lambda b: _box_score(integral, b))
    fw = float(rng.uniform(0.33, 0.42))
    fh = float(np.clip(rng.uniform(0.22, 0.30) / fw, 0.55, 0.9))
    dw, dh = round(w * fw), round(h * fh)
    candidates = [(x, y, x + dw, y + dh) for y in np.linspace(0, h - dh, 5).round().astype(int)
                  for x in np.linspace(0, w - dw, 7).round().astype(int)]

    def overlap(b):
        ix = max(0, min(b[2], first[2]) - max(b[0], first[0]))
        iy = max(0, min(b[3], first[3]) - max(b[1], first[1]))
        return ix * iy / (dw * dh)

    apart = [b for b in candidates if overlap(b) < 0.35] or candidates
    second = max(apart, key=lambda b: _box_score(integral, b))
    return [tuple(int(v) for v in first), tuple(int(v) for v in second)]


def crop_view(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Cut ``box`` out of (H, W, 3) uint8 and resize it to a normal viewing size."""
    x0, y0, x1, y1 = box
    part = np.ascontiguousarray(rgb[y0:y1, x0:x1])
    upscaled = min(max(rgb.shape[:2]), round(CROP_MAX_UPSCALE * max(part.shape[:2])))
    target = min(DEMO_MAX_SIDE, max(CROP_MIN_SIDE, upscaled))
    return _fit(part, target, allow_up=True)


def group_views(name: str, photos: list[np.ndarray]) -> list[View]:
    """All views of one group; ``photos[0]`` is the reference, later photos are real extra views."""
    rng = np.random.default_rng([DEMO_SEED, zlib.crc32(name.encode())])
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


# ----------------------------------------------------------------------------- procedural distractors


def procedural_image(kind: str, size: tuple[int, int] = (560, 420)) -> np.ndarray:
    """Seeded synthetic distractor, (H, W, 3) uint8: 'shapes' (random polygons/ellipses) or
    'clouds' (multi-octave coloured value noise)."""
    w, h = size
    rng = np.random.default_rng([DEMO_SEED, zlib.crc32(kind.encode())])
    if kind == "shapes":
        img = Image.new("RGB", size, tuple(int(c) for c in rng.integers(150, 256, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(70):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(8, 60)
            if rng.random() < 0.5:
                draw.ellipse([x - r, y - r * 0.7, x + r, y + r * 0.7], fill=colour)
            else:
                pts = [(float(x + r * np.cos(a)), float(y + r * np.sin(a)))
                       for a in np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))]
                draw.polygon(pts, fill=colour)
        return np.asarray(img)
    if kind == "clouds":
        acc = np.zeros((h, w, 3))
        for octave in range(1, 6):
            grid = (rng.random((3 * 2 ** octave, 4 * 2 ** octave, 3)) * 255).astype(np.uint8)
            acc += np.asarray(Image.fromarray(grid).resize(size, Image.Resampling.BICUBIC)) / 2 ** octave
        acc = (acc - acc.min()) / max(1e-9, acc.max() - acc.min())
        return np.rint(acc * 255).astype(np.uint8)
    raise ValueError(f"procedural_image: unknown kind {kind!r}")


# ----------------------------------------------------------------------------- build


def _save_jpeg(rgb: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_fit(rgb, DEMO_MAX_SIDE)).save(path, "JPEG", quality=DEMO_QUALITY)


def demo_is_complete(out_dir: str | os.PathLike) -> bool:
    """True when ``out_dir/groups.json`` is from this DEMO_VERSION and every listed file exists."""
    gfile = Path(out_dir) / "groups.json"
    try:
        meta = json.loads(gfile.read_text(encoding="utf-8"))
        listed = [p for ps in meta["groups"].values() for p in ps] + list(meta["distractors"])
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return False
    return meta.get("version") == DEMO_VERSION and all((Path(out_dir) / p).is_file() for p in listed)


def _write_gallery(tmp: Path, report: Progress) -> dict:
    """Write every view and distractor under ``tmp``; return the groups.json content."""
    data_dir = skimage_data_dir()
    total = len(GROUP_SOURCES) + len(DISTRACTOR_SOURCES) + len(PROCEDURAL_DISTRACTORS)
    groups: dict[str, list[str]] = {}
    distractors: list[str] = []
    views: dict[str, dict] = {}
    for step, (gname, files) in enumerate(GROUP_SOURCES.items(), start=1):
        loaded = [_photo(data_dir, f) for f in files]
        if loaded[0] is None:
            report(step, total, f"skipped group {gname} (source not shipped)")
            continue
        for vname, img, params in group_views(gname, [p for p in loaded if p is not None]):
            rel = f"groups/{gname}/{gname}_{vname}.jpg"
            _save_jpeg(img, tmp / rel)
            groups.setdefault(gname, []).append(rel)
            views[rel] = {"source": files[0], "transform": vname, **params}
        report(step, total, f"group {gname}: {len(groups[gname])} views")
    sources = [(Path(f).stem, f, lambda f=f: _photo(data_dir, f)) for f in DISTRACTOR_SOURCES]
    sources += [(k, f"procedural:{k}", lambda k=k: procedural_image(k)) for k in PROCEDURAL_DISTRACTORS]
    for step, (dname, src, make) in enumerate(sources, start=len(GROUP_SOURCES) + 1):
        img = make()
        if img is not None:
            rel = f"distractors/{dname}.jpg"
            _save_jpeg(img, tmp / rel)
            distractors.append(rel)
            views[rel] = {"source": src}
        report(step, total, f"distractor {dname}")
    if not groups:
        raise RuntimeError("build_demo: no scikit-image photograph found on disk; is scikit-image installed?")
    return {"version": DEMO_VERSION, "groups": groups, "distractors": distractors, "views": views}


def build_demo(out_dir: str | os.PathLike = config.DEMO_DIR, progress: Progress | None = None,
               force: bool = False) -> Path:
    """Generate the demo gallery into ``out_dir`` (atomically) and return its path.

    Layout: ``groups/<g>/<g>_<view>.jpg``, ``distractors/<name>.jpg`` and ``groups.json``
    ({"groups", "distractors"} plus "views": each view's source and transform parameters).
    With force=False an existing complete demo is returned at once.
    """
    out = Path(out_dir)
    if not force and demo_is_complete(out):
        return out
    report = progress or (lambda done, total, msg: None)
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        meta = _write_gallery(tmp, report)
        (tmp / "groups.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    report(1, 1, f"demo ready in {out} ({time.perf_counter() - t0:.1f} s)")
    return out
