"""Shared fixtures and helpers: the demo gallery and its index (built once per test session), a small
slice of it with bad files, and the app's small demo data folder.

No test file imports from another test file: what two files share lives here.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from l2g import config as C

# Tests must not fight over 2 cores with BLAS threads of their own.
os.environ.setdefault("OMP_NUM_THREADS", "2")

# A small feature preset for index and graph tests (fast extraction, same code paths).
SMALL_CFG = C.DEFAULT.replace(features__num_features=400, features__max_side=480)
# The app's small feature preset, read by l2g/app/settings.py from the environment.
SMALL_APP_ENV = {"L2G_NUM_FEATURES": "300", "L2G_MAX_SIDE": "320"}


@pytest.fixture(scope="session")
def demo_gallery(tmp_path_factory) -> Path:
    """The demo gallery generated into a temporary folder (deterministic, ~2 s)."""
    from l2g.datasets import build_demo

    return build_demo(tmp_path_factory.mktemp("demo") / "demo")


@pytest.fixture(scope="session")
def demo_engine(demo_gallery, tmp_path_factory):
    """An Engine over the demo gallery with the shipped default configuration."""
    from l2g.pipeline import open_engine

    return open_engine(demo_gallery, tmp_path_factory.mktemp("index") / C.DEFAULT.features.name)


@pytest.fixture(scope="session")
def realbench() -> Path:
    if not (C.REALBENCH_DIR / "groups.json").is_file():
        pytest.skip(f"realbench-dev not found at {C.REALBENCH_DIR}")
    return C.REALBENCH_DIR


@pytest.fixture(scope="session")
def small_cfg():
    """The small feature preset (400 keypoints, 480 px) of the index and graph tests."""
    return SMALL_CFG


@pytest.fixture(scope="session")
def small_gallery(demo_gallery, tmp_path_factory) -> tuple[Path, list]:
    """A 20-image slice of the demo, with a corrupt file and a text file posing as a JPEG.

    Returns (root, sorted relative paths of the good images). Tests must not write into root.
    """
    root = tmp_path_factory.mktemp("small")
    gt = json.loads((demo_gallery / "groups.json").read_text())
    keep = [p for g in ("astronaut", "coffee", "chelsea") for p in gt["groups"][g]] + gt["distractors"][:4]
    for p in keep:
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(demo_gallery / p, root / p)
    (root / "broken.jpg").write_bytes((demo_gallery / keep[0]).read_bytes()[:300])
    (root / "notes.jpg").write_text("not an image")
    (root / "empty.png").write_bytes(b"")
    return root, sorted(keep)


# ----------------------------------------------------------------------------- the app's small data folder

def build_small(data: Path) -> dict:
    """The demo and its small index under ``data`` (idempotent); returns the app's env vars."""
    from l2g import pipeline as P
    from l2g.app.settings import Gallery, parse_settings
    from l2g.datasets import build_demo

    env = {"L2G_DATA_DIR": str(data), **SMALL_APP_ENV}
    s = parse_settings([], env)
    build_demo(s.demo_dir)
    ix = s.index_dir(Gallery("demo", s.demo_dir.resolve(), "demo"))
    P.open_engine(s.demo_dir, ix, s.cfg, sync=not (ix / "manifest.json").is_file())
    return env


def outside_photo() -> tuple[str, bytes]:
    """A scikit-image picture the demo does not use: (file name, bytes) of a query with no match in the
    demo gallery."""
    from l2g import demo

    used = set(demo.DISTRACTOR_SOURCES) | {f for fs in demo.GROUP_SOURCES.values() for f in fs}
    name = next(f for f in ("horse.png", "logo.png", "phantom.png", "microaneurysms.png") if f not in used)
    return name, (demo.skimage_data_dir() / name).read_bytes()


def small_data_dir(tmp_path_factory) -> Path:
    """Where the small demo index lives: $L2G_TEST_DATA (kept between runs) or this session's tmp."""
    keep = os.environ.get("L2G_TEST_DATA")
    return Path(keep) if keep else tmp_path_factory.getbasetemp() / "l2g_small_data"


# --------------------------------------------------------------------------- tiny index (integrity tests)
# A few demo images at low resolution with few features: an index in a second or two.
TINY_IMAGES = ("groups/astronaut/astronaut_orig.jpg", "groups/astronaut/astronaut_light.jpg",
               "groups/coffee/coffee_orig.jpg", "groups/coffee/coffee_light.jpg",
               "groups/chelsea/chelsea_orig.jpg", "groups/chelsea/chelsea_light.jpg")
TINY_FEATURES, TINY_SIDE = 150, 256


def pytest_collection_modifyitems(config, items):
    if os.environ.get("L2G_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow test: set L2G_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_cfg():
    """The feature settings of the tiny gallery's index (CLI: --features 150 --max-side 256)."""
    return C.DEFAULT.replace(features__num_features=TINY_FEATURES, features__max_side=TINY_SIDE)


@pytest.fixture(scope="session")
def tiny_gallery(demo_gallery, tmp_path_factory) -> Path:
    """Six demo images (three pairs of views) copied into their own gallery folder."""
    import shutil

    root = tmp_path_factory.mktemp("tiny") / "gallery"
    for p in TINY_IMAGES:
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(demo_gallery / p, root / p)
    return root


@pytest.fixture(scope="session")
def tiny_extractor(tiny_cfg):
    from l2g.features import Extractor

    return Extractor(tiny_cfg.features)


def engine_answers(eng) -> dict:
    """Everything an engine answers, to compare two indexes: every gallery image's local ranking
    (paths, scores), the graph and the global descriptors."""
    import numpy as np

    from l2g.search import local_search

    li, out = eng.li, {}
    for i in range(li.n_images):
        r = local_search(li, li.features(i), eng.cfg.search, exclude=i, with_matches=False)
        out[li.paths[i]] = (list(r.paths), np.round(r.scores, 6).tolist())
    out["graph"] = np.round(eng.graph.G.toarray(), 6).tolist()
    out["global"] = None if eng.gi is None else np.round(eng.gi.xb, 5).tolist()
    return out


@pytest.fixture(scope="session")
def answers():
    return engine_answers
