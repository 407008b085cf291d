"""Shared fixtures: the demo gallery and its index, built once per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from l2g import config as C

# Tests must not fight over 2 cores with BLAS threads of their own.
os.environ.setdefault("OMP_NUM_THREADS", "2")


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


# --------------------------------------------------------------------------- tiny index (integrity tests)
# A few demo images at low resolution with few features: an index in a second or two.
TINY_IMAGES = ("groups/astronaut/astronaut_orig.jpg", "groups/astronaut/astronaut_light.jpg",
               "groups/coffee/coffee_orig.jpg", "groups/coffee/coffee_light.jpg",
               "groups/chelsea/chelsea_orig.jpg", "groups/chelsea/chelsea_light.jpg")
TINY_FEATURES, TINY_SIDE = 150, 256


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long tests, run only with L2G_SLOW=1")


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
