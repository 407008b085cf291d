"""The local-search engine on the demo gallery: features, index, search, save/load, resume."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from l2g import config as C
from l2g.datasets import load_eval_dataset
from l2g.features import Extractor, ExtractorUnavailable, Features, NoKeypointsError, rootsift
from l2g.images import load_image
from l2g.index import build_index, add_images, load_index
from l2g.metrics import average_precision
from l2g.search import kernel, local_search

SMALL = C.DEFAULT.replace(features__num_features=400, features__max_side=480)


def test_features_shapes_and_determinism(demo_gallery):
    img = load_image(demo_gallery / "groups/astronaut/astronaut_orig.jpg")
    ex = Extractor(C.FeatureConfig(num_features=500))
    a, b = ex(img.rgb), Extractor(C.FeatureConfig(num_features=500))(img.rgb)
    assert 100 < len(a) <= 500
    assert a.kpts.shape == (len(a), 5) and a.desc.shape == (len(a), 128) and a.desc.dtype == np.float32
    np.testing.assert_array_equal(a.kpts, b.kpts)
    np.testing.assert_array_equal(a.desc, b.desc)
    np.testing.assert_allclose(np.linalg.norm(a.desc, axis=1), 1.0, atol=1e-4)
    assert (a.desc >= 0).all()  # RootSIFT rows are non-negative
    h, w = img.rgb.shape[:2]
    assert (a.kpts[:, 0] >= 0).all() and (a.kpts[:, 0] < w).all() and (a.kpts[:, 1] < h).all()
    assert np.all(np.diff(a.kpts[:, 4]) <= 0)  # strongest first


def test_rootsift_is_hellinger():
    x = np.abs(np.random.default_rng(0).normal(size=(5, 128))).astype(np.float32)
    r = rootsift(x)
    np.testing.assert_allclose(r @ r.T, np.sqrt(x / x.sum(1, keepdims=True)) @ np.sqrt(x / x.sum(1, keepdims=True)).T,
                               rtol=1e-5)


def test_blank_image_has_no_keypoints_and_query_is_refused(demo_engine):
    from l2g.pipeline import make_query

    blank = np.full((300, 400, 3), 128, np.uint8)
    assert len(Extractor(C.FeatureConfig(num_features=200))(blank)) == 0
    with pytest.raises(NoKeypointsError, match="no keypoints"):
        local_search(demo_engine.li, Features.empty())
    import io
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(blank).save(buf, "PNG")
    with pytest.raises(NoKeypointsError, match="no keypoints"):
        make_query(demo_engine, source=buf.getvalue())


def test_learned_extractor_without_weights_is_a_clear_error(tmp_path, monkeypatch):
    import l2g.features as F

    monkeypatch.setattr(F, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ExtractorUnavailable, match="not on disk"):
        Extractor(C.FeatureConfig(extractor="disk"))
    assert "disk" not in F.available_extractors() and "sift" in F.available_extractors()


def test_disk_random_weights_shapes():
    ex = Extractor(C.FeatureConfig(extractor="disk", num_features=64), pretrained=False)
    rgb = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    f = ex(rgb)
    assert f.kpts.shape[1] == 5 and f.desc.shape[1] == 128 and len(f) <= 64


def test_kernel_shape():
    cfg = C.SearchConfig()
    r = np.array([0.0, cfg.p0 / 2, cfg.p0, 2 * cfg.p0])
    k = kernel(r, cfg)
    assert k[0] == 1.0 and 0 < k[1] < 1 and k[2] == 0 and k[3] == 0


def test_partial_crops_retrieve_their_group_first(demo_engine, demo_gallery):
    """Every partial-crop view finds its own source group at rank 1 (itself left out)."""
    li = demo_engine.li
    gt = json.loads((demo_gallery / "groups.json").read_text())["groups"]
    crops = [(g, p) for g, ps in gt.items() for p in ps if "_crop" in p]
    assert len(crops) >= 2 * len(gt) - 1
    misses = []
    for g, p in crops:
        i = li.id_of(p)
        res = local_search(li, li.features(i), demo_engine.cfg.search, exclude=i)
        assert i not in res.ids
        if res.paths[0] not in gt[g]:
            misses.append((p, res.paths[0]))
        assert res.n_matches(res.ids[0]) > 0
    assert not misses, misses


def test_demo_local_search_map(demo_engine, demo_gallery):
    ds = load_eval_dataset(demo_gallery)
    li, aps = demo_engine.li, []
    for q in ds.queries:
        i = li.id_of(q.path)
        res = local_search(li, li.features(i), demo_engine.cfg.search, exclude=i, with_matches=False)
        aps.append(average_precision(res.paths, q.easy))
    assert np.mean(aps) > 0.9, np.mean(aps)


def _rankings(li, queries):
    out = {}
    for p in queries:
        i = li.id_of(p)
        r = local_search(li, li.features(i), C.DEFAULT.search, exclude=i)
        out[p] = (r.paths, np.round(r.scores, 6).tolist())
    return out


@pytest.fixture(scope="module")
def small_gallery(demo_gallery, tmp_path_factory):
    """A 20-image slice of the demo, with a corrupt file and a text file posing as a JPEG."""
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


def test_bad_files_are_skipped_and_reported(small_gallery, tmp_path):
    root, keep = small_gallery
    li, rep = build_index(root, tmp_path / "ix", SMALL)
    failed = dict(rep.failed)
    assert set(failed) == {"broken.jpg", "notes.jpg", "empty.png"}
    assert "empty" in failed["empty.png"] and "not an image" in failed["notes.jpg"]
    assert li.paths == keep and li.n_images == len(keep)
    assert load_index(tmp_path / "ix").failed == li.failed


def test_save_load_and_incremental_add_match_fresh_build(small_gallery, tmp_path):
    root, keep = small_gallery
    fresh, _ = build_index(root, tmp_path / "fresh", SMALL, paths=keep)
    queries = keep[::3]
    want = _rankings(fresh, queries)
    assert _rankings(load_index(tmp_path / "fresh"), queries) == want
    first, later = keep[: len(keep) // 2], keep[len(keep) // 2:]
    build_index(root, tmp_path / "inc", SMALL, paths=first)
    inc, rep = add_images(tmp_path / "inc", later, SMALL)
    assert sorted(rep.added) == sorted(later) and sorted(rep.skipped) == sorted(first)
    assert inc.paths == first + sorted(later)
    assert _rankings(inc, queries) == want
    assert _rankings(load_index(tmp_path / "inc"), queries) == want


def test_interrupted_build_resumes_without_redoing_work(small_gallery, tmp_path):
    root, keep = small_gallery

    def stop_after_5(done, total, msg):
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index(root, tmp_path / "ix", SMALL, paths=keep, progress=stop_after_5)
    assert not (tmp_path / "ix" / "manifest.json").exists()
    assert len(list((tmp_path / "ix" / "features").glob("*.npz"))) == 5
    li, rep = build_index(root, tmp_path / "ix", SMALL, paths=keep)
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


def test_realbench_local_search_map_floor(realbench, tmp_path_factory):
    """Each group image queries all others; the measured local-search mAP is 67.8 (README)."""
    from l2g.pipeline import open_engine

    ds = load_eval_dataset(realbench)
    eng = open_engine(realbench, tmp_path_factory.mktemp("rb") / "ix", paths=ds.images, with_global=False)
    li, aps = eng.li, []
    for q in ds.queries:
        i = li.id_of(q.path)
        res = local_search(li, li.features(i), eng.cfg.search, exclude=i, with_matches=False)
        aps.append(average_precision(res.paths, q.easy))
    assert 100 * np.mean(aps) >= 60.0, 100 * np.mean(aps)


def test_graph_is_extended_when_images_are_added(small_gallery, tmp_path):
    """open_engine on a grown gallery keeps the old graph rows and searches only the new images."""
    from l2g.graph import load_graph
    from l2g.pipeline import open_engine

    root, keep = small_gallery
    first = [p for p in keep if "astronaut" in p or "distractors" in p]
    eng1 = open_engine(root, tmp_path / "ix", SMALL, paths=first, with_global=False)
    g1 = eng1.graph
    assert g1.G.shape == (len(first), len(first)) and g1.G.diagonal().sum() == 0
    eng2 = open_engine(root, tmp_path / "ix", SMALL, paths=keep, with_global=False)
    g2 = eng2.graph
    n = len(keep)
    assert g2.G.shape == (n, n) and g2.paths == eng2.li.paths and g2.params.get("updated") == n - len(first)
    # old rows keep their neighbours; the new images have rows of their own
    np.testing.assert_allclose(g2.G[: len(first), : len(first)].toarray(), g1.G.toarray())
    new = [eng2.li.id_of(p) for p in keep if p not in first]
    assert all(g2.G[j].nnz > 0 for j in new)
    # a coffee view's strongest neighbour in the graph is another coffee view
    j = eng2.li.id_of("groups/coffee/coffee_orig.jpg")
    best = int(g2.G[j].toarray().ravel().argmax())
    assert eng2.li.paths[best].startswith("groups/coffee/")
    assert load_graph(tmp_path / "ix", eng2.li) is not None
