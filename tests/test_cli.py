"""The command line: search --json format, bad input messages, index of an empty folder."""
from __future__ import annotations

import json

import pytest

from l2g.cli import main


def test_search_json(demo_engine, demo_gallery, capsys):
    query = demo_gallery / "groups/chelsea/chelsea_crop1.jpg"
    assert main(["search", str(query), "--index", str(demo_engine.li.folder), "--top", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["query"] == str(query)
    assert [r["rank"] for r in out["results"]] == [1, 2, 3]
    # the crop itself is in the gallery: it comes first, then other views of the cat
    assert out["results"][0]["path"] == "groups/chelsea/chelsea_crop1.jpg"
    assert all(r["path"].startswith("groups/chelsea/") for r in out["results"])
    assert out["results"][0]["score"] >= out["results"][1]["score"] > 0 and out["results"][1]["matches"] > 0


def test_search_rejects_a_non_image(demo_engine, tmp_path, capsys):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    assert main(["search", str(bad), "--index", str(demo_engine.li.folder)]) == 2
    assert "not an image" in capsys.readouterr().err


def _snapshot(folder):
    """Every file under ``folder`` (hidden ones too) -> its bytes; None when the folder does not exist."""
    if not folder.exists():
        return None
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else "dir") for p in folder.rglob("*")}


def _two_photos(demo_gallery, g):
    import shutil

    g.mkdir()
    for name in ("chelsea/chelsea_orig.jpg", "coffee/coffee_orig.jpg"):
        shutil.copy(demo_gallery / "groups" / name, g / name.split("/")[1])


def _no_images(g, kind):
    g.mkdir(parents=True, exist_ok=True)
    if kind == "unreadable":       # image names, no image inside; and files that are not images
        (g / "a.png").write_bytes(b"")
        (g / "b.jpg").write_text("not an image")
        (g / "notes.txt").write_text("hello")


@pytest.mark.parametrize("kind", ["empty", "unreadable"])
def test_index_of_a_folder_without_images_writes_nothing(kind, tmp_path, capsys):
    """It wrote faiss.index, graph.npz, manifest.json, features/ and .l2g.lock into --out, then said
    'no readable images'. Now nothing is made, and each file's reason is in the message."""
    _no_images(tmp_path / "g", kind)
    assert main(["index", str(tmp_path / "g"), "--out", str(tmp_path / "ix"), *SMALL]) == 2
    err = capsys.readouterr().err
    assert "no readable images" in err and "Nothing was written" in err
    if kind == "unreadable":
        assert "a.png: empty file" in err and "b.jpg: not an image" in err
    else:
        assert "holds no image file" in err
    assert not (tmp_path / "ix").exists()


@pytest.mark.parametrize("kind", ["empty", "unreadable"])
def test_an_index_is_left_as_it_was_when_its_gallery_has_no_image_left(kind, demo_gallery, tmp_path, capsys):
    """A gallery emptied (or its photos replaced by unreadable files) after it was indexed: the index of
    before stays byte-identical (it was rewritten as an index of nothing)."""
    g, ix = tmp_path / "g", tmp_path / "ix"
    _two_photos(demo_gallery, g)
    assert main(["index", str(g), "--out", str(ix), *SMALL]) == 0
    before = _snapshot(ix)
    assert "manifest.json" in before and ".l2g.lock" in before
    for p in list(g.iterdir()):
        p.unlink()
    _no_images(g, kind)
    assert main(["index", str(g), "--out", str(ix), *SMALL]) == 2
    assert "no readable images" in capsys.readouterr().err
    assert _snapshot(ix) == before


def test_missing_index_is_a_clear_error(tmp_path, capsys):
    img = tmp_path / "x.jpg"
    img.write_bytes(b"")
    assert main(["search", str(img), "--index", str(tmp_path / "none")]) == 2
    assert "no index" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["auto:3", "cpu:0", "cuda:", "cuda:x", "gpu"])
def test_a_bad_device_is_refused_when_the_options_are_parsed(device, tmp_path, capsys, monkeypatch):
    """'auto:3' used to pass the option check and fail later, in the extractor."""
    (tmp_path / "g").mkdir()
    for argv in (["index", str(tmp_path / "g"), "--device", device],
                 ["search", "q.jpg", "--index", str(tmp_path / "ix"), "--device", device]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "--device" in err and "cuda:N" in err and repr(device) in err
    monkeypatch.setenv("L2G_DEVICE", device)          # the environment is checked as strictly
    assert main(["index", str(tmp_path / "g"), "--out", str(tmp_path / "ix")]) == 2
    assert "device must be one of" in capsys.readouterr().err and not (tmp_path / "ix").exists()


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1"])
def test_good_devices_are_taken(device):
    from l2g import options

    assert options.make_config(None, {"L2G_DEVICE": device}).build.device == device


def test_search_extracts_with_the_index_settings_on_the_device_asked(demo_engine, demo_gallery, capsys,
                                                                     monkeypatch):
    """The manifest's settings are read back in one place (manifest.stored_config); search takes only
    where to extract from its options (and the environment's other options cannot change them)."""
    from unittest import mock

    from l2g import pipeline
    from l2g.manifest import read_manifest, stored_config

    monkeypatch.setenv("L2G_NUM_FEATURES", "123")
    query = demo_gallery / "groups/chelsea/chelsea_crop1.jpg"
    with mock.patch.object(pipeline, "open_engine", wraps=pipeline.open_engine) as opened:
        assert main(["search", str(query), "--index", str(demo_engine.li.folder), "--device", "cpu"]) == 0
    cfg = opened.call_args.args[2]
    want = stored_config(read_manifest(demo_engine.li.folder))
    assert cfg.features == want.features == demo_engine.li.cfg.features and cfg.index == want.index
    assert cfg.build.device == "cpu" and cfg.features.num_features != 123


SMALL = ["--num-features", "300", "--max-side", "320", "--workers", "1"]


def _flat(path, size=(400, 300)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (128, 128, 128)).save(path)


@pytest.mark.parametrize("cmd", ["index", "calibrate"])
def test_a_gallery_without_keypoints_is_a_clear_error(cmd, tmp_path, capsys):
    """Only featureless images: a message and exit 2 (was a ValueError traceback from the VLAD training),
    again on a second run; the index folder is kept."""
    _flat(tmp_path / "g" / "flat.png")
    argv = [cmd, str(tmp_path / "g"), *SMALL, "--data-dir", str(tmp_path / "data")]
    if cmd == "index":
        argv += ["--out", str(tmp_path / "ix")]
    for _ in range(2):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "no keypoints in any image" in err and "flat.png" in err
    if cmd == "index":
        assert (tmp_path / "ix" / "manifest.json").is_file()


def test_a_gallery_with_some_featureless_images_is_indexed(demo_gallery, tmp_path, capsys):
    g = tmp_path / "g"
    _two_photos(demo_gallery, g)
    _flat(g / "flat.png")
    assert main(["index", str(g), "--out", str(tmp_path / "ix"), *SMALL]) == 0
    out = capsys.readouterr().out
    assert "images: 3" in out and "no keypoints: flat.png" in out
    assert (tmp_path / "ix" / "global.npz").is_file()


@pytest.mark.parametrize("opts, says", [(["--top", "0"], "--top: must be at least 1, got 0"),
                                        (["--top", "-9"], "--top: must be at least 1, got -9"),
                                        (["--bbox", "nan", "0", "100", "100"], "finite number of pixels, got 'nan'"),
                                        (["--bbox", "0", "0", "inf", "inf"], "finite number of pixels, got 'inf'")])
def test_search_options_are_checked_when_parsed(opts, says, tmp_path, capsys):
    """--top 0 printed a bare header, --top -9 two rows; a NaN or infinite box ended in a traceback."""
    with pytest.raises(SystemExit) as e:
        main(["search", str(tmp_path / "q.jpg"), "--index", str(tmp_path / "ix"), *opts])
    assert e.value.code == 2 and says in capsys.readouterr().err


def test_a_query_rectangle_outside_the_image_says_so():
    import numpy as np

    from l2g.errors import QueryError
    from l2g.pipeline import crop

    rgb = np.zeros((100, 200, 3), np.uint8)
    with pytest.raises(QueryError, match=r"outside the image \(200 x 100 pixels\)"):
        crop(rgb, (300, 0, 400, 50))
    with pytest.raises(QueryError, match="too small"):
        crop(rgb, (190, 0, 400, 50))
    with pytest.raises(QueryError, match="finite"):
        crop(rgb, (0, 0, float("inf"), 50))
    assert crop(rgb, (-10, -10, 50, 60)).shape == (60, 50, 3)


def test_calibrate_on_a_tiny_gallery_says_it_is_not_calibrated(demo_gallery, tmp_path, capsys):
    """Four images: it printed 'match when top local score >= 0.0000 ... or verified inliers >= 0' and
    per-fold thresholds of 0 with false-accept rates of 1, as if measured."""
    import shutil

    groups = {g: [f"{g}/{g}_{v}.jpg" for v in ("orig", "light")] for g in ("astronaut", "coffee")}
    for paths in groups.values():
        for p in paths:
            (tmp_path / "g" / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(demo_gallery / "groups" / p, tmp_path / "g" / p)
    (tmp_path / "g" / "groups.json").write_text(json.dumps({"groups": groups}))
    assert main(["calibrate", str(tmp_path / "g"), *SMALL, "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "not calibrated: too few samples (4;" in out and "keeps its defaults" in out
    assert "match when top local score" not in out
    assert '"calibrated": false' in out and "not calibrated: fold(s) 0, 1" in out


@pytest.mark.parametrize("where", ["file", "gallery", "inside"])
def test_index_out_must_be_a_folder_outside_the_gallery(where, tmp_path, capsys):
    """An existing file gave the raw '[Errno 17] File exists'; the gallery itself was taken as the index folder."""
    g = tmp_path / "g"
    _flat(g / "a.png")
    out = {"file": tmp_path / "ix", "gallery": g, "inside": g / "sub" / "ix"}[where]
    if where == "file":
        out.write_text("keep me")
    assert main(["index", str(g), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert ("is a file" if where == "file" else "inside the gallery") in err and "Errno" not in err
    assert sorted(p.name for p in g.rglob("*")) == ["a.png"]
    if where == "file":
        assert out.read_text() == "keep me"


@pytest.mark.parametrize("where", ["folder", "no parent"])
def test_eval_out_is_checked_before_any_work(where, tmp_path, capsys):
    """A bad --out made eval run every query, then fail writing (the evaluation lost); and the demo was
    generated first. Nothing is made: not the demo, not the results."""
    out = {"folder": tmp_path, "no parent": tmp_path / "no" / "such" / "r.json"}[where]
    assert main(["eval", "demo", "--out", str(out), "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert ("is a folder" if where == "folder" else "does not exist") in err
    assert not (tmp_path / "data").exists()


def test_a_lock_file_that_is_a_folder_is_named_with_the_fix(demo_gallery, tmp_path, capsys):
    """A folder named .l2g.lock in the index folder: index, search (which builds the global descriptors
    of a --no-global index) and check --repair said '[Errno 21] Is a directory'; check said 'intact'."""
    g, ix = tmp_path / "g", tmp_path / "ix"
    _two_photos(demo_gallery, g)
    assert main(["index", str(g), "--out", str(ix), "--no-global", *SMALL]) == 0
    (ix / ".l2g.lock").unlink()
    (ix / ".l2g.lock").mkdir()
    capsys.readouterr()
    for argv, code in ((["index", str(g), "--out", str(ix), *SMALL], 2),
                       (["search", str(g / "chelsea_orig.jpg"), "--index", str(ix), "--method", "global"], 2),
                       (["check", str(ix)], 1), (["check", str(ix), "--repair"], 2)):
        assert main(argv) == code, argv
        said = capsys.readouterr()
        said = said.out + said.err
        assert "is a folder, not the index's build lock file" in said and "remove it" in said, said
        assert "Errno" not in said and "intact" not in said
    assert (ix / ".l2g.lock").is_dir() and not (ix / "global.npz").exists()
    (ix / ".l2g.lock").rmdir()          # removed as told: every command works again
    assert main(["search", str(g / "chelsea_orig.jpg"), "--index", str(ix), "--method", "global"]) == 0
    assert main(["check", str(ix)]) == 0


def test_search_by_global_descriptors_says_why_there_are_none(tmp_path, capsys, monkeypatch):
    """An index of no images (as the build wrote one before it refused such a gallery) told to 're-run
    `index` without --no-global', which it had never been given."""
    from l2g import index, pipeline

    (tmp_path / "g").mkdir()
    (tmp_path / "q.png").write_bytes(b"")
    monkeypatch.setattr(index, "require_readable", lambda *a: None)       # the build of before
    monkeypatch.setattr(pipeline, "require_readable", lambda *a: None)
    assert main(["index", str(tmp_path / "g"), "--out", str(tmp_path / "ix"), *SMALL]) == 2
    assert (tmp_path / "ix" / "manifest.json").is_file()
    capsys.readouterr()
    assert main(["search", str(tmp_path / "q.png"), "--index", str(tmp_path / "ix"), "--method", "global"]) == 2
    err = capsys.readouterr().err
    assert "holds no images" in err and f"index {tmp_path / 'g'} --out" in err and "--no-global" not in err


def test_search_by_global_descriptors_of_a_no_global_index_builds_them_and_says_so(demo_gallery, tmp_path,
                                                                                   capsys):
    g, ix = tmp_path / "g", tmp_path / "ix"
    _two_photos(demo_gallery, g)
    assert main(["index", str(g), "--out", str(ix), "--no-global", *SMALL]) == 0
    capsys.readouterr()
    argv = ["search", str(g / "chelsea_orig.jpg"), "--index", str(ix), "--method", "global", "--top", "1"]
    assert main(argv) == 0
    said = capsys.readouterr()
    assert "chelsea_orig.jpg" in said.out.splitlines()[1]
    assert "global descriptors built now (the index was built with --no-global" in said.err
    assert (ix / "global.npz").is_file()
    assert main(argv) == 0 and "built now" not in capsys.readouterr().err     # kept: the next search loads them
