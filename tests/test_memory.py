"""Peak memory of one query at the pixel cap (config.QUERY_PEAK_RSS_MB).

Each measurement runs in a fresh child process that measures itself: the peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after its imports is the baseline, then it
loads the image and extracts features (or runs ``python -m l2g search``) and prints the
peak RSS delta. The test images are generated here, in another child, as low-entropy PNGs
(blocks of constant value: a few MB on disk, over 100 megapixels decoded).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from l2g import config as C

REPO = Path(__file__).resolve().parent.parent

_GEN = r"""
import sys, numpy as np
from PIL import Image
Image.MAX_IMAGE_PIXELS = None
kind, path, w, h = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
bs = 250
shape = (h // bs + 1, w // bs + 1) + ((3,) if kind == "rgb" else ())
if kind == "16":
    blocks = rng.integers(0, 65535, shape).astype(np.uint16)
else:
    blocks = rng.integers(0, 255, shape).astype(np.uint8)
arr = np.repeat(np.repeat(blocks, bs, 0), bs, 1)[:h, :w]
Image.fromarray(arr).save(path, compress_level=1)
"""

_LOAD = r"""
import json, resource, sys
from l2g import config as C
from l2g.features import Extractor
from l2g.images import load_image
ex = Extractor(C.DEFAULT.features)
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux -> MiB
base = rss()
img = load_image(sys.argv[1], max_side=C.DEFAULT.features.max_side)
f = ex(img.rgb)
print(json.dumps({"delta_mb": rss() - base, "mode": img.source_mode, "shape": list(img.rgb.shape),
                  "orig": list(img.orig_size), "keypoints": len(f)}))
"""

_SEARCH = r"""
import contextlib, io, json, resource, sys
import l2g.cli, l2g.pipeline, l2g.features, l2g.index, l2g.search, l2g.rerank
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = rss()
out = io.StringIO()
with contextlib.redirect_stdout(out):
    rc = l2g.cli.main(["search", sys.argv[1], "--index", sys.argv[2], "--json"])
print(json.dumps({"delta_mb": rss() - base, "rc": rc, "out": json.loads(out.getvalue())}))
"""


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _child(code: str, *args) -> dict:
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=_env(),
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}


def _big_png(tmp_path: Path, kind: str) -> Path:
    """A PNG just under the pixel cap: 16-bit gray 10000 x 11999 px, or RGB 10950 x 10950 px."""
    w, h = (10000, 11999) if kind == "16" else (10950, 10950)
    assert w * h <= C.ImageConfig().max_pixels
    path = tmp_path / f"big_{kind}.png"
    _child(_GEN, kind, path, w, h)
    return path


@pytest.mark.parametrize("kind, mode", [("16", "I;16"), ("rgb", "RGB")])
def test_query_peak_memory_at_the_pixel_cap(tmp_path, kind, mode):
    path = _big_png(tmp_path, kind)
    assert path.stat().st_size < 20_000_000             # a small file...
    r = _child(_LOAD, path)
    assert r["mode"] == mode and max(r["shape"]) == C.DEFAULT.features.max_side
    assert r["keypoints"] > 100
    # ...that must not cost its decoded size several times over (before the fix: 3.3 GB and 1.3 GB)
    assert r["delta_mb"] <= C.QUERY_PEAK_RSS_MB, r


@pytest.fixture(scope="module")
def small_index(tmp_path_factory) -> Path:
    """An index of 3 textured images built by the CLI with --features 300 (not the default 2000)."""
    from PIL import Image

    from l2g.cli import main

    base = tmp_path_factory.mktemp("small")
    (base / "g").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        blocks = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        arr = np.kron(blocks, np.ones((12, 12, 1), np.uint8))           # 360 x 480, many corners
        Image.fromarray(arr).save(base / "g" / f"im{i}.png")
    assert main(["index", str(base / "g"), "--out", str(base / "ix"), "--features", "300", "--no-global"]) == 0
    return base / "ix"


def test_search_uses_the_index_feature_settings(small_index, tmp_path, capsys):
    """An index built with --features 300 gets a query of at most 300 keypoints (was 1,840)."""
    from l2g.cli import main

    rng = np.random.default_rng(5)
    query = tmp_path / "q.png"
    from PIL import Image

    Image.fromarray(rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)).save(query)   # thousands of corners
    assert main(["search", str(query), "--index", str(small_index), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 200 < out["keypoints"] <= 300, out["keypoints"]


def test_cli_search_peak_memory_16bit(tmp_path, small_index):
    path = _big_png(tmp_path, "16")
    r = _child(_SEARCH, path, small_index)
    assert r["rc"] == 0 and len(r["out"]["results"]) > 0 and r["out"]["keypoints"] <= 300
    assert r["delta_mb"] <= C.QUERY_PEAK_RSS_MB, r
