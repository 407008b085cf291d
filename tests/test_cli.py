"""The command line: search --json format, bad input messages, index of an empty folder."""
from __future__ import annotations

import json

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


def test_index_of_a_folder_without_images(tmp_path, capsys):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "a.png").write_bytes(b"")
    assert main(["index", str(tmp_path / "g"), "--out", str(tmp_path / "ix")]) == 2
    captured = capsys.readouterr()
    assert "no readable images" in captured.err and "empty file" in captured.out


def test_missing_index_is_a_clear_error(tmp_path, capsys):
    img = tmp_path / "x.jpg"
    img.write_bytes(b"")
    assert main(["search", str(img), "--index", str(tmp_path / "none")]) == 2
    assert "no index" in capsys.readouterr().err
