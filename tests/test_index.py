"""l2g.index: building, saving, loading, extending and resuming the FAISS index; IVF recall; memory."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from l2g import config as C
from l2g.index import add_images, build_index, load_index
from l2g.search import local_search


def _rankings(li, queries):
    out = {}
    for p in queries:
        i = li.id_of(p)
        r = local_search(li, li.features(i), C.DEFAULT.search, exclude=i)
        out[p] = (r.paths, np.round(r.scores, 6).tolist())
    return out


def test_bad_files_are_skipped_and_reported(small_gallery, small_cfg, tmp_path):
    root, keep = small_gallery
    li, rep = build_index(root, tmp_path / "ix", small_cfg)
    failed = dict(rep.failed)
    assert set(failed) == {"broken.jpg", "notes.jpg", "empty.png"}
    assert "empty" in failed["empty.png"] and "not an image" in failed["notes.jpg"]
    assert li.paths == keep and li.n_images == len(keep)
    assert load_index(tmp_path / "ix").failed == li.failed


def test_save_load_and_incremental_add_match_fresh_build(small_gallery, small_cfg, tmp_path):
    root, keep = small_gallery
    fresh, _ = build_index(root, tmp_path / "fresh", small_cfg, paths=keep)
    queries = keep[::3]
    want = _rankings(fresh, queries)
    assert _rankings(load_index(tmp_path / "fresh"), queries) == want
    first, later = keep[: len(keep) // 2], keep[len(keep) // 2:]
    build_index(root, tmp_path / "inc", small_cfg, paths=first)
    inc, rep = add_images(tmp_path / "inc", later, small_cfg)
    assert sorted(rep.added) == sorted(later) and sorted(rep.skipped) == sorted(first)
    assert inc.paths == first + sorted(later)
    assert _rankings(inc, queries) == want
    assert _rankings(load_index(tmp_path / "inc"), queries) == want


def test_interrupted_build_resumes_without_redoing_work(small_gallery, small_cfg, tmp_path):
    root, keep = small_gallery

    def stop_after_5(done, total, msg):
        if done == 5:
            raise KeyboardInterrupt

    serial = small_cfg.replace(build__workers=1)    # exactly 5: workers may finish the images they hold
    with pytest.raises(KeyboardInterrupt):
        build_index(root, tmp_path / "ix", serial, paths=keep, progress=stop_after_5)
    assert not (tmp_path / "ix" / "manifest.json").exists()
    assert len(list((tmp_path / "ix" / "features").glob("*.npz"))) == 5
    li, rep = build_index(root, tmp_path / "ix", small_cfg, paths=keep)
    assert len(rep.reused) == 5 and len(rep.added) == len(keep) - 5 and li.n_images == len(keep)


def test_ivf_recall_against_exact(demo_engine, tmp_path):
    """The demo's IVF index keeps >= 0.9 of the exact (Flat) top-10 shortlist."""
    ivf = demo_engine.li
    shutil.copytree(ivf.folder / "features", tmp_path / "features")
    flat, _ = build_index(ivf.root, tmp_path, ivf.cfg.replace(index__kind="flat"), paths=ivf.paths)
    assert ivf.kind == "ivf" and flat.kind == "flat"
    rec = []
    for i in range(0, ivf.n_images, 7):
        a = local_search(flat, ivf.features(i), exclude=i, with_matches=False).ids[:10]
        b = local_search(ivf, ivf.features(i), exclude=i, with_matches=False).ids[:10]
        rec.append(len(set(a) & set(b)) / 10)
    assert np.mean(rec) >= 0.9, rec


def test_index_memory_per_descriptor(demo_engine):
    m = demo_engine.li.memory_bytes()
    assert m["per_descriptor"] <= 600, m
