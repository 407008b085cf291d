"""One path resolver and one option mapper for the CLI and the app."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from l2g import config as C
from l2g import featkey as P
from l2g import options, paths
from l2g.app.settings import Gallery, parse_settings
from l2g.cli import main, parser
from l2g.errors import ConfigError
from l2g.pipeline import index_dir_for


def test_data_dir_option_then_environment_then_default(tmp_path):
    env = {C.DATA_DIR_ENV: str(tmp_path / "env")}
    assert paths.data_dir(tmp_path / "opt", env) == (tmp_path / "opt").resolve()
    assert paths.data_dir(None, env) == (tmp_path / "env").resolve()
    assert paths.data_dir(None, {}) == C.DATA_DIR.resolve()
    assert parse_settings([], env).data_dir == (tmp_path / "env").resolve()
    assert parse_settings(["--data-dir", str(tmp_path / "opt")], env).data_dir == (tmp_path / "opt").resolve()


def test_named_datasets(tmp_path):
    assert paths.dataset_dir("roxford5k", tmp_path) == tmp_path / "roxford5k"     # where a download goes
    (tmp_path / "realbench-dev").mkdir()
    assert paths.dataset_dir("realbench-dev", tmp_path) == (tmp_path / "realbench-dev").resolve()
    assert paths.resolve_dataset("no/such/folder", tmp_path) == Path("no/such/folder")
    here = tmp_path / "mine"
    here.mkdir()
    assert paths.resolve_dataset(here, tmp_path) == here


def test_index_folders_one_rule(tmp_path):
    a, b = tmp_path / "x" / "photos", tmp_path / "y" / "photos"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    d = tmp_path / "data"
    ia, ib = paths.index_dir(a, C.DEFAULT, d), paths.index_dir(b, C.DEFAULT, d)
    assert ia != ib and ia.parent.name.startswith("photos-") and ia.name == C.DEFAULT.features.name
    (d / "demo").mkdir(parents=True)
    assert paths.index_dir(d / "demo", C.DEFAULT, d) == d / "index" / "demo" / C.DEFAULT.features.name
    s = parse_settings(["--data-dir", str(d)], {})
    for kind in ("root", "upload", "demo"):
        assert s.index_dir(Gallery("g", a.resolve(), kind)) == index_dir_for(a, C.DEFAULT, d)


def test_cli_built_index_is_the_one_the_app_opens(demo_gallery, tmp_path, capsys):
    g = tmp_path / "gallery"
    g.mkdir()
    for name in ("coffee_orig", "coffee_light"):
        shutil.copy(demo_gallery / f"groups/coffee/{name}.jpg", g / f"{name}.jpg")
    d = tmp_path / "data"
    assert main(["index", str(g), "--data-dir", str(d), "--no-global", "--preset", "fast"]) == 0
    out = capsys.readouterr().out
    s = parse_settings(["--data-dir", str(d), "--preset", "fast"], {})
    want = s.index_dir(Gallery("gallery", g.resolve(), "root"))
    assert (want / "manifest.json").is_file(), (out, list(d.rglob("manifest.json")))
    assert str(want) in out and want.name == "sift-root-n1000-s640-g31-r1.5-rs-o15-c1e-05-pyramid"


def test_options_map_once_for_cli_and_app(monkeypatch):
    a = parser().parse_args(["index", "f", "--features", "700"])
    b = parser().parse_args(["index", "f", "--num-features", "700"])
    assert options.config_from_args(a, {}) == options.config_from_args(b, {})
    assert options.config_from_args(a, {}).features.num_features == 700
    fast = options.make_config("fast")
    assert fast.features.name != C.DEFAULT.features.name and "n1000-s640" in fast.features.name
    assert options.make_config("default") == C.DEFAULT
    env = {"L2G_NUM_FEATURES": "900", "L2G_PRESET": "fast"}
    s = parse_settings([], env)
    assert s.cfg.features.num_features == 900 and s.cfg.features.max_side == 640
    assert parse_settings(["--num-features", "300"], env).cfg.features.num_features == 300
    assert parse_settings(["--max-side", "512"], {}).cfg.features.max_side == 512
    with pytest.raises(ConfigError, match="unknown preset"):
        options.make_config("huge")
    with pytest.raises(ConfigError, match="L2G_MAX_SIDE"):
        options.make_config(None, {"L2G_MAX_SIDE": "big"})
    with pytest.raises(ConfigError, match="positive"):
        options.make_config(num_features=0)
    monkeypatch.setenv("L2G_NUM_FEATURES", "800")      # the CLI reads the same variables
    assert options.config_from_args(parser().parse_args(["index", "f"])).features.num_features == 800


def test_extractor_brings_its_own_kernel_bandwidth():
    """ALIKED's descriptor distances are ~3x RootSIFT's: choosing it sets its p0 unless p0 was changed."""
    assert options.make_config().search.p0 == C.SearchConfig().p0
    aliked = options.make_config(extractor="aliked")
    assert aliked.search.p0 == C.EXTRACTOR_P0["aliked"] != C.SearchConfig().p0
    tuned = C.DEFAULT.replace(features__extractor="aliked", search__p0=0.9)
    assert P.for_extractor(tuned).search.p0 == 0.9          # an explicit bandwidth is kept
