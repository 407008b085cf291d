"""The demo gallery: photographs shipped inside pip packages, turned into groups of views and
surrounded by texture distractors.

A group is one photograph seen several ways (l2g.demo_views: warp, scale+rotation, light,
blur+noise, occlusion and four small, nearly disjoint partial crops of 10-25 % of the scene). Distractors
(l2g.demo_textures) are unrelated photographs, variants of texture photographs (brick, grass,
gravel) and seeded procedural textures: repetitive surfaces that draw false local votes, and
enough of them that verifying a global top 10 covers about 5 % of the gallery.

Sources: scikit-image's data folder, plus scikit-learn's china.jpg / flower.jpg and matplotlib's
grace_hopper.jpg when those packages are installed (found with importlib, never imported; never
the network). Seeded, so a rebuild is byte-identical on the same packages and Pillow/libjpeg.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from l2g import config
from l2g.demo_textures import (
    DISTRACTOR_SIDE,
    FAMILY_VARIANTS,
    procedural_texture,
    texture_variant,
)
from l2g.demo_views import CROP_MIN_SIDE, DEMO_MAX_SIDE, DEMO_SEED, fit, group_views, seeded_rng  # noqa: F401 (re-exported)
from l2g.images import ImageError, load_image

DEMO_VERSION = 3             # 3: small crops (10-25 %), texture distractors, ~200 images
DEMO_QUALITY = 90

# group name -> scikit-image data files (the first is the reference view; more files = more real views)
GROUP_SOURCES: dict[str, tuple[str, ...]] = {
    "astronaut": ("astronaut.png",), "coffee": ("coffee.png",), "chelsea": ("chelsea.png",),
    "rocket": ("rocket.jpg",), "camera": ("camera.png",),
    "motorcycle": ("motorcycle_left.png", "motorcycle_right.png"),   # a real stereo pair
    "hubble": ("hubble_deep_field.jpg",), "ihc": ("ihc.png",), "coins": ("coins.png",),
}
# more groups from other packages' data folders, used when the package is installed: (package, path)
EXTRA_GROUP_SOURCES: dict[str, tuple[str, str]] = {
    "china": ("sklearn", "datasets/images/china.jpg"), "flower": ("sklearn", "datasets/images/flower.jpg"),
    "hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}
# distractor families: each base (a shipped photograph or a seeded procedural texture) is seen
# len(FAMILY_VARIANTS) ways, so its members match each other and form their own cluster
DISTRACTOR_SOURCES = ("moon.png", "retina.jpg", "clock_motion.png", "cell.png", "text.png", "page.png",
                      "microaneurysms.png", "color.png", "brick.png", "grass.png", "gravel.png")
PROCEDURAL_BASES = (("clouds", 0), ("clouds", 1), ("shapes", 0), ("shapes", 1), ("smear", 0), ("smear", 1),
                    ("smear", 2), ("bricks", 0), ("cells", 0), ("dots", 0))

Progress = Callable[[int, int, str], None]


# ----------------------------------------------------------------------------- sources


def package_dir(name: str) -> Path | None:
    """The folder of an installed package, found without importing it (None if not installed)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def skimage_data_dir() -> Path | None:
    """The scikit-image data folder, found without importing skimage (None if not installed)."""
    root = package_dir("skimage")
    return None if root is None else root / "data"


def _photo(data_dir: Path | None, fname: str, side: int = DEMO_MAX_SIDE) -> np.ndarray | None:
    """(H, W, 3) uint8 of a shipped photograph, longest side <= side; None if absent."""
    if data_dir is None or not (data_dir / fname).is_file():
        return None
    try:
        return load_image(data_dir / fname, max_side=side).rgb
    except ImageError:
        return None


def group_photos() -> dict[str, list[np.ndarray]]:
    """Group name -> its photographs (reference first), for every source found on disk."""
    data = skimage_data_dir()
    out = {}
    for name, files in GROUP_SOURCES.items():
        loaded = [p for p in (_photo(data, f) for f in files) if p is not None]
        if loaded and (data / files[0]).is_file():
            out[name] = loaded
    for name, (pkg, rel) in EXTRA_GROUP_SOURCES.items():
        root = package_dir(pkg)
        photo = None if root is None else _photo(root, rel)
        if photo is not None:
            out[name] = [photo]
    return out


def distractor_makers() -> list[tuple[str, str, str, Callable[[], np.ndarray | None]]]:
    """(file stem, kind, source, maker) of every distractor; kind 'photo' (variants of a shipped
    photograph) or 'procedural' (variants of a seeded texture); source names the family."""
    data = skimage_data_dir()
    # each base is made once and shared by its family's variants (functools.cache), lazily as before
    bases = [(Path(f).stem, "photo", f, functools.cache(lambda f=f: _photo(data, f, None)))
             for f in DISTRACTOR_SOURCES]
    bases += [(f"{k}{s + 1}", "procedural", f"procedural:{k}:{s}",
               functools.cache(lambda k=k, s=s: procedural_texture(k, s, (2 * DISTRACTOR_SIDE,
                                                                          3 * DISTRACTOR_SIDE // 2))))
              for k, s in PROCEDURAL_BASES]
    out = []
    for stem, kind, src, base in bases:
        for v in FAMILY_VARIANTS:
            def make(base=base, src=src, v=v):
                img = base()
                return None if img is None else texture_variant(img, v, seeded_rng(src, v))
            out.append((f"{stem}_{v}", kind, src, make))
    return out


# ----------------------------------------------------------------------------- build


def _save_jpeg(rgb: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(fit(rgb, DEMO_MAX_SIDE)).save(path, "JPEG", quality=DEMO_QUALITY)


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
    photos = group_photos()
    if not photos:
        raise RuntimeError("build_demo: no scikit-image photograph found on disk; is scikit-image installed?")
    makers = distractor_makers()
    total, step = len(photos) + len(makers), 0
    groups: dict[str, list[str]] = {}
    distractors: list[str] = []
    views: dict[str, dict] = {}
    for gname, imgs in photos.items():
        step += 1
        for vname, img, params in group_views(gname, imgs):
            rel = f"groups/{gname}/{gname}_{vname}.jpg"
            _save_jpeg(img, tmp / rel)
            groups.setdefault(gname, []).append(rel)
            views[rel] = {"source": gname, "transform": vname, **params}
        report(step, total, f"group {gname}: {len(groups[gname])} views")
    for dname, kind, src, make in makers:
        step += 1
        img = make()
        if img is not None:
            rel = f"distractors/{dname}.jpg"
            _save_jpeg(img, tmp / rel)
            distractors.append(rel)
            views[rel] = {"source": src, "kind": kind}
        report(step, total, f"distractor {dname}")
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
