"""l2g.search: the CANN kernel and local-search voting on the demo gallery (and realbench-dev)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from l2g import config as C
from l2g.datasets import load_eval_dataset
from l2g.metrics import average_precision
from l2g.search import kernel, local_search


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


def test_realbench_local_search_map_floor(realbench, tmp_path_factory):
    """Each group image queries all others; the shipped local-search mAP is 65.0 (README results table)."""
    from l2g.pipeline import open_engine

    ds = load_eval_dataset(realbench)
    eng = open_engine(realbench, tmp_path_factory.mktemp("rb") / "ix", paths=ds.images, with_global=False)
    li, aps = eng.li, []
    for q in ds.queries:
        i = li.id_of(q.path)
        res = local_search(li, li.features(i), eng.cfg.search, exclude=i, with_matches=False)
        aps.append(average_precision(res.paths, q.easy))
    assert 100 * np.mean(aps) >= 60.0, 100 * np.mean(aps)


def _toy_index(n_img: int = 30, per: int = 50):
    """A LocalIndex over n_img synthetic images of per unit rows each, exact (Flat) search."""
    import faiss

    from l2g.index import ImageEntry, LocalIndex

    rng = np.random.default_rng(0)
    xb = np.abs(rng.standard_normal((n_img * per, 128))).astype(np.float32) ** 2
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    ix = faiss.IndexFlatL2(128)
    ix.add(xb)
    images = [ImageEntry(f"{j:03d}.jpg", "", per, (64, 64)) for j in range(n_img)]
    return LocalIndex(Path("."), Path("."), C.DEFAULT, images, ix, "flat", np.zeros((len(xb), 5), np.float32)), xb


def _toy_query(xb: np.ndarray, src: int, per: int = 50, n: int = 80):
    """n rows: noisy copies of image src's rows, then random ones; random responses."""
    from l2g.features import Features

    rng = np.random.default_rng(1)
    x = np.concatenate([xb[src * per:src * per + n // 2] + 0.01 * rng.random((n // 2, 128), dtype=np.float32),
                        np.abs(rng.standard_normal((n - n // 2, 128), dtype=np.float32))])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    kpts = np.zeros((n, 5), np.float32)
    kpts[:, 4] = rng.random(n)
    return Features(kpts, x, (64, 64))


def test_query_cap_searches_with_the_strongest_descriptors():
    """max_query m: the m strongest query rows vote exactly as a query made of them alone would, the
    scores are divided by m, and the matches name the query's own keypoints."""
    import dataclasses

    from l2g.features import Features

    li, xb = _toy_index()
    q, cfg = _toy_query(xb, src=3), C.SearchConfig(p0=1.0)
    full = local_search(li, q, cfg)
    assert full.ids[0] == 3 and full.n_query == len(q)
    same = local_search(li, q, dataclasses.replace(cfg, max_query=len(q)))
    np.testing.assert_array_equal(same.all_scores, full.all_scores)
    capped = local_search(li, q, dataclasses.replace(cfg, max_query=30))
    rows = np.sort(np.argsort(-q.kpts[:, 4])[:30])
    alone = local_search(li, Features(q.kpts[rows], q.desc[rows], q.size), cfg)
    assert capped.n_query == 30 and capped.params["max_query"] == 30
    np.testing.assert_array_equal(capped.all_scores, alone.all_scores)
    np.testing.assert_array_equal(capped.ids, alone.ids)
    assert not np.array_equal(capped.all_scores, full.all_scores)
    for j in capped.ids[:5]:
        np.testing.assert_array_equal(capped.matches[j][:, 0], rows[alone.matches[j][:, 0]])
        np.testing.assert_array_equal(capped.matches[j][:, 1], alone.matches[j][:, 1])
        assert set(capped.matches[j][:, 0]) <= set(rows)


def test_rescored_index_searches_like_exact(tiny_gallery, tiny_cfg, tmp_path):
    """The compact kind (fast-scan PQ, candidates re-scored from the feature store) built, loaded and
    memory-mapped gives exact search's shortlist and scores when its candidates hold the true neighbours
    (every list probed, 20x the candidates); with the codes' own distances the scores would differ."""
    from l2g import ann
    from l2g.index import build_index, load_index

    flat, _ = build_index(tiny_gallery, tmp_path / "flat", tiny_cfg.replace(index__kind="flat"))
    cfg = tiny_cfg.replace(index__kind="ivfpq128_rs", index__nlist=8, index__rescore_nprobe=8, index__rescore_factor=20,
                           index__mmap_min_mb=0)
    built, _ = build_index(tiny_gallery, tmp_path / "pq", cfg)
    loaded = load_index(tmp_path / "pq")
    assert built.kind == loaded.kind == "ivfpq128_rs" and loaded.cfg.index.rescore_factor == 20
    scfg = C.SearchConfig(shortlist=100)
    for i in range(flat.n_images):
        q = flat.features(i)
        ref = local_search(flat, q, scfg, exclude=i)
        for li in (built, loaded):
            got = local_search(li, q, scfg, exclude=i)
            np.testing.assert_array_equal(got.ids, ref.ids)
            np.testing.assert_allclose(got.all_scores, ref.all_scores, rtol=1e-5, atol=1e-6)
    q = flat.features(0)
    D, _ = loaded.ix.search(q.desc, 20)                          # the codes' own distances
    Dx, _ = ann.search(loaded.ix, loaded.kind, q.desc, 20, loaded.cfg.index, loaded.descriptors)
    assert np.abs(D - Dx).max() > 1e-3
    from l2g.errors import IndexFormatError

    f = tmp_path / "pq" / "faiss.index"
    f.write_bytes(f.read_bytes()[:-100])                           # truncated: refused like any other kind
    with pytest.raises(IndexFormatError, match="faiss.index"):
        load_index(tmp_path / "pq")
