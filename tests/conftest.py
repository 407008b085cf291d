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
