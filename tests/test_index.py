"""l2g.index: building, saving, loading, extending and resuming the FAISS index; IVF recall; memory."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from l2g import config as C
from l2g import featkey as P
from l2g.index import add_images, build_index, load_index, read_manifest
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


def _shards(folder) -> dict:
    return {k: v for k, v in read_manifest(folder)["files"].items() if k.startswith("features/shard-")}


def test_a_build_of_no_readable_image_makes_nothing(small_gallery, small_cfg, tmp_path):
    """build_index and open_engine refuse such a gallery before the lock makes the index folder (they
    wrote an index of nothing); the paths asked for are the ones tried."""
    from l2g.errors import DatasetError
    from l2g.pipeline import open_engine

    root, _ = small_gallery
    bad = ["broken.jpg", "notes.jpg", "empty.png"]
    with pytest.raises(DatasetError, match="none of its 3 image file.*broken.jpg: truncated"):
        build_index(root, tmp_path / "ix", small_cfg, paths=bad)
    with pytest.raises(DatasetError, match="no readable images"):
        open_engine(root, tmp_path / "ix", small_cfg, paths=bad)
    assert not (tmp_path / "ix").exists()


def test_save_load_and_incremental_add_match_fresh_build(small_gallery, small_cfg, tmp_path):
    """With 4 images per shard: adding images keeps the full shards as they are (not rewritten), writes
    the rest anew, and gives the very files of a fresh build."""
    root, keep = small_gallery
    cfg = small_cfg.replace(store__shard_images=4)
    fresh, _ = build_index(root, tmp_path / "fresh", cfg, paths=keep)
    queries = keep[::3]
    want = _rankings(fresh, queries)
    assert _rankings(load_index(tmp_path / "fresh"), queries) == want
    first, later = keep[:6], keep[6:]
    build_index(root, tmp_path / "inc", cfg, paths=first)
    before = _shards(tmp_path / "inc")
    assert [v["span"] for v in before.values()] == [[0, 4], [4, 6]]
    full = next(k for k, v in before.items() if v["span"] == [0, 4])
    stamp = (tmp_path / "inc" / full).stat().st_mtime_ns
    inc, rep = add_images(tmp_path / "inc", later, cfg)
    assert sorted(rep.added) == sorted(later) and sorted(rep.skipped) == sorted(first)
    assert inc.paths == first + sorted(later)
    assert (tmp_path / "inc" / full).stat().st_mtime_ns == stamp           # the full shard was kept as it is
    assert set(before) - set(_shards(tmp_path / "inc")) == set(before) - {full}   # the partial one replaced
    assert sorted(p.name for p in (tmp_path / "inc" / "features").iterdir()) == sorted(
        k.split("/")[1] for k in _shards(tmp_path / "inc"))                    # no scratch, no old shard left
    assert _rankings(inc, queries) == want
    assert _rankings(load_index(tmp_path / "inc"), queries) == want
    assert fresh.paths == inc.paths and _shards(tmp_path / "inc") == _shards(tmp_path / "fresh")


def test_feature_store_views_and_quantisation(small_gallery, small_cfg, tmp_path):
    """Shards are memory-mapped uint8 RootSIFT (148 B per descriptor with its keypoint); the views
    agree with features(i), and the decoded descriptors are within 1/510 of the extracted ones."""
    from l2g.features import Extractor
    from l2g.images import load_image

    root, keep = small_gallery
    li, _ = build_index(root, tmp_path / "ix", small_cfg, paths=keep[:5])
    li = load_index(tmp_path / "ix")
    (name, rec), = _shards(tmp_path / "ix").items()
    arr = np.load(tmp_path / "ix" / name, mmap_mode="r")
    assert isinstance(arr, np.memmap) and arr.dtype["desc"].base == np.uint8 and arr.dtype.itemsize == 148
    assert (rec["size"] - 148 * li.ntotal) < 1024                          # header only beside the rows
    i = 3
    f = li.features(i)
    a, b = int(li.offsets[i]), int(li.offsets[i + 1])
    np.testing.assert_array_equal(li.descriptors(slice(a, b)), f.desc)
    np.testing.assert_array_equal(li.keypoints(np.arange(a, b)), f.kpts)
    rows = np.array([b - 1, 0, a, li.ntotal - 1])                          # any order, across images
    np.testing.assert_array_equal(li.descriptors(rows), np.stack([li.descriptors(slice(r, r + 1))[0] for r in rows]))
    orig = Extractor(small_cfg.features)(load_image(root / li.paths[i], max_side=small_cfg.features.max_side).rgb)
    np.testing.assert_allclose(orig.kpts, f.kpts, atol=1e-3)               # keypoints are stored as float32
    assert f.desc.dtype == np.float32 and np.abs(orig.desc - f.desc).max() <= 1 / 510 + 1e-6


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
    shutil.copytree(ivf.folder, tmp_path, dirs_exist_ok=True)     # the features are kept, faiss.index rebuilt
    flat, rep = build_index(ivf.root, tmp_path, ivf.cfg.replace(index__kind="flat"), paths=ivf.paths)
    assert not rep.added and not rep.reused
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


def test_a_build_hashes_each_shard_once(tiny_gallery, tiny_cfg, tiny_extractor, tmp_path):
    """The build used to hash the shards it had just written a second time (open_store, full hash)."""
    from collections import Counter
    from pathlib import Path
    from unittest import mock

    from l2g import checksum

    names: Counter = Counter()
    real = checksum.sha256_file

    def count(path, *a, **kw):
        names[Path(path).name] += 1
        return real(path, *a, **kw)

    cfg = tiny_cfg.replace(store__shard_images=4)          # two shards
    with mock.patch.object(checksum, "sha256_file", count):
        build_index(tiny_gallery, tmp_path / "ix", cfg, extractor=tiny_extractor)
    shards = [k.split("/")[-1] for k in _shards(tmp_path / "ix")]
    assert len(shards) == 2 and all(names[s] == 1 for s in shards), names
    names.clear()
    with mock.patch.object(checksum, "sha256_file", count):     # a re-run hashes each kept shard once too
        build_index(tiny_gallery, tmp_path / "ix", cfg, extractor=tiny_extractor)
    assert all(names[s] == 1 for s in shards), names


def test_the_image_list_hash_is_computed_once_when_opened(tiny_gallery, tiny_cfg, tiny_extractor, tmp_path):
    """The app's verdict keyed its calibration on store.order_hash(li.images), hashed on every search:
    LocalIndex.order is the one computed (and checked against the manifest) when the index was opened."""
    from unittest import mock

    from l2g import store

    li, _ = build_index(tiny_gallery, tmp_path / "ix", tiny_cfg, extractor=tiny_extractor)
    opened = load_index(tmp_path / "ix")
    want = read_manifest(tmp_path / "ix")["files"]["faiss.index"]["images"]
    with mock.patch.object(store, "order_hash", wraps=store.order_hash) as hashed:
        assert li.order == opened.order == opened.order == want
    assert hashed.call_count == 0


def test_a_search_time_knob_reuses_faiss_index_and_a_build_setting_rebuilds_it(tiny_gallery, tiny_cfg, tmp_path):
    """nprobe (and the other C.INDEX_RUNTIME_FIELDS) are applied when the index is opened: changing one
    must not rebuild faiss.index (minutes at 10k images) but must be in effect, and stay with the index
    (the manifest records it, so a later open uses it); nlist shapes the index
    and rebuilds it. An index saved with the older fingerprint (every IndexConfig field) is reused too."""
    import faiss

    from l2g import store
    from l2g.features import Extractor
    from l2g.index import index_fingerprint

    cfg = tiny_cfg.replace(index__kind="ivf", index__nlist=4, index__nprobe=1, **C.PRESETS["classic"])
    ext = Extractor(cfg.features)    # the features of before FeatureConfig.resample and orient_grid
    ix = tmp_path / "ix"
    build_index(tiny_gallery, ix, cfg, extractor=ext)
    stamp = (ix / "faiss.index").stat().st_mtime_ns
    li, _ = build_index(tiny_gallery, ix, cfg.replace(index__nprobe=3), extractor=ext)
    assert (ix / "faiss.index").stat().st_mtime_ns == stamp
    assert faiss.extract_index_ivf(li.ix).nprobe == 3
    assert faiss.extract_index_ivf(load_index(ix).ix).nprobe == 3 and read_manifest(ix)["index"]["nprobe"] == 3
    m = read_manifest(ix)   # a manifest of before FeatureConfig.resample and of the older fingerprint (every
    for k in P.ADDED_FEATURE_FIELDS:             # IndexConfig field): reused and re-recorded
        del m["features"][k]
    old = {"features": m["features"], "index": C.asdict(cfg.index), "desc_dtype": cfg.store.desc_dtype}
    m["files"]["faiss.index"]["fingerprint"] = store.fingerprint(old)
    assert store.fingerprint(old) == index_fingerprint(cfg, legacy=True)
    store.write_json(ix / store.MANIFEST, m)
    build_index(tiny_gallery, ix, cfg, extractor=ext)
    assert (ix / "faiss.index").stat().st_mtime_ns == stamp
    assert read_manifest(ix)["files"]["faiss.index"]["fingerprint"] == index_fingerprint(cfg)
    li, _ = build_index(tiny_gallery, ix, cfg.replace(index__nlist=8), extractor=ext)
    assert (ix / "faiss.index").stat().st_mtime_ns != stamp and faiss.extract_index_ivf(li.ix).nlist == 8


def _ivf(li):
    import faiss

    ivf = faiss.try_extract_index_ivf(li.ix)
    return ivf.nlist, faiss.rev_swig_ptr(faiss.downcast_index(ivf.quantizer).get_xb(), ivf.nlist * ivf.d).copy()


def test_an_index_built_in_steps_answers_like_one_built_at_once(tiny_gallery, tiny_cfg, tmp_path):
    """An IVF outgrown by added images is retrained from the stored descriptors, on a sample drawn in path
    order: built in two steps (a later-sorted half first, as the app's first start does), it has the lists,
    quantiser and answers of a one-step build. A small addition appends to the trained lists instead."""
    cfg = tiny_cfg.replace(index__exact_max=100)                 # IVF over the few hundred descriptors here
    paths = sorted(p.relative_to(tiny_gallery).as_posix() for p in tiny_gallery.rglob("*.jpg"))
    once, _ = build_index(tiny_gallery, tmp_path / "once", cfg, paths=paths)
    first = paths[len(paths) // 2:][:2]                          # not a prefix of the sorted order
    build_index(tiny_gallery, tmp_path / "steps", cfg, paths=first)
    small = _ivf(load_index(tmp_path / "steps"))[0]
    steps, _ = add_images(tmp_path / "steps", paths, cfg)
    assert steps.paths != once.paths and sorted(steps.paths) == once.paths
    assert small * cfg.index.retrain_growth <= _ivf(once)[0]     # the first index was outgrown ...
    n1, c1 = _ivf(once)
    n2, c2 = _ivf(steps)
    assert n1 == n2 and np.array_equal(c1, c2)                    # ... and retrained as the one-step build is
    assert _rankings(steps, paths) == _rankings(once, paths)
    more = tmp_path / "more"                                       # an addition that does not outgrow it
    build_index(tiny_gallery, more, cfg, paths=paths[:-1])
    before = _ivf(load_index(more))
    after = _ivf(add_images(more, paths, cfg)[0])
    assert before[0] * cfg.index.retrain_growth > _ivf(once)[0]
    assert before[0] == after[0] and np.array_equal(before[1], after[1])   # rows appended, lists kept
