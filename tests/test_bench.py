"""The benchmarks (benchs/, run by `python -m l2g bench`): one quick run (real 100-image gallery + synthetic
1,000) and its JSON, the index_factory strings, the exact kNN and re-scoring, thread limits, a single script."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import faiss
import numpy as np
import pytest

from benchs import bench_index, bench_learned, bench_rerank, bench_search
from benchs.common import threads
from benchs.galleries import RawStore
from l2g import bench
from l2g import config as C
from l2g.errors import L2GError
from l2g.features import DESC_DIM
from l2g.index import make_faiss


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    assert bench.main(argparse.Namespace(out=str(out), sizes=[100, 1000], quick=True)) == 0
    return json.loads(out.read_text())


def _searches(kind: dict) -> list:
    """Every search summary of an index kind: Flat's, or one per nprobe (plain and re-scored)."""
    if "search" in kind:
        return [kind["search"]]
    return [x for v in ("plain", "rescored") for x in kind.get(v, {}).values()]


def test_top_level_keys(report):
    assert {"machine", "config", "extraction", "sizes", "rerank", "targets"} <= set(report)
    assert set(report["sizes"]) == {"100", "1000"}
    assert report["machine"]["cores"] >= 1 and report["machine"]["faiss"] and report["machine"]["kornia"]
    assert report["wall_s"] > 0


def test_extraction(report):
    ext = report["extraction"]
    assert ext["wall_s"] > 0
    for side in ext["sides"]:
        row = ext[str(side)]
        for backend in ("pyramid", "patch"):
            assert row[backend]["s_per_image"] > 0
            assert row[backend]["keypoints_mean"] > 0
        assert row["patch_over_pyramid"] == pytest.approx(row["patch"]["s_per_image"] / row["pyramid"]["s_per_image"])


def test_sizes_are_sane(report):
    for name, size in report["sizes"].items():
        assert size["images"] == int(name)
        assert size["descriptors"] > size["images"]
        assert size["source"] == ("real" if name == "100" else "synthetic")
        assert size["stage"]["wall_s"] > 0
        for kind in size["kinds"].values():
            b = kind["build"]
            assert b["s_per_image"] > 0 and b["images_per_s"] > 0 and b["peak_rss_delta_bytes"] >= 0
            assert 0 < b["extraction_bound_images_per_s"] < b["images_per_s"]
            assert kind["bytes"]["per_descriptor"] > 24          # kpts + img_of alone are 24 B
            for s in _searches(kind):
                assert s["p95_s"] >= s["p50_s"] > 0
                assert 0.0 <= s["hit@1"] <= 1.0
                for key, v in s.items():
                    if key.startswith("recall@"):
                        assert 0.0 <= v <= 1.0
        # Flat holds every float32 row: at least 512 B per descriptor
        assert size["kinds"]["flat"]["bytes"]["per_descriptor"] >= 4 * DESC_DIM


def test_exact_paths_agree(report):
    # Flat search and the chunked brute force (plus the same voting) rank the same images
    for size in report["sizes"].values():
        assert size["exact_check"] and all(v == 1.0 for v in size["exact_check"].values())


def test_more_probes_never_lose_recall(report):
    for size in report["sizes"].values():
        for kind in ("ivf", "ivfsq8"):
            for variant in ("plain", "rescored"):
                sweep = size["kinds"].get(kind, {}).get(variant)
                if not sweep:
                    continue
                probes = sorted(sweep, key=int)
                k = "recall@100" if "recall@100" in sweep[probes[0]] else "recall@10"
                assert sweep[probes[-1]][k] >= sweep[probes[0]][k]


def test_compressed_index_is_small(report):
    sq8 = report["sizes"]["1000"]["kinds"]["ivfsq8"]
    # 128 one-byte codes + 8-byte ids + 24 B keypoints/row map, far below the float32 kinds
    assert sq8["bytes"]["per_descriptor"] < 0.5 * report["sizes"]["1000"]["kinds"]["ivf"]["bytes"]["per_descriptor"]
    assert sq8["rescore"]["raw_on_disk_bytes_per_descriptor"] == 4 * DESC_DIM


def test_rerank_and_targets(report):
    for method in ("classical", "smacof"):
        for k in ("100", "700"):
            assert report["rerank"][method][k]["p95_s"] >= report["rerank"][method][k]["p50_s"] > 0
    for t in report["targets"].values():
        assert {"target", "measured", "met"} <= set(t)
        assert t["met"] is None or isinstance(t["met"], bool)
    assert report["targets"]["index_bytes_per_descriptor"]["measured"] > 0


def test_rescored_search_matches_exact_on_a_toy_gallery(tmp_path):
    # re-scoring with every row as a candidate must give the exact kNN
    rng = np.random.default_rng(0)
    xb = np.abs(rng.standard_normal((2000, DESC_DIM))).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    raw = RawStore.write(tmp_path / "raw.f32", np.array_split(xb, 3))
    flat = faiss.IndexFlatL2(DESC_DIM)
    flat.add(xb)
    xq = xb[:50] + 0.01
    D, I = bench_search.Rescored(flat, raw, factor=2).search(xq, 5)
    De, Ie = bench_search.exact_knn(raw, xq, 5, chunk=700)
    np.testing.assert_array_equal(I, Ie)
    np.testing.assert_allclose(D, De, rtol=1e-4, atol=1e-5)


def test_exact_knn_is_brute_force(tmp_path):
    """faiss.contrib's knn_ground_truth over raw chunks equals numpy's brute force (squared L2)."""
    rng = np.random.default_rng(1)
    xb = rng.standard_normal((900, DESC_DIM)).astype(np.float32)
    xq = rng.standard_normal((7, DESC_DIM)).astype(np.float32)
    raw = RawStore.write(tmp_path / "raw.f32", np.array_split(xb, 4))
    D, I = bench_search.exact_knn(raw, xq, 5, chunk=250)
    d2 = ((xq[:, None, :] - xb[None]) ** 2).sum(-1)
    want = np.argsort(d2, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(I, want)
    np.testing.assert_allclose(D, np.take_along_axis(d2, want, 1), rtol=1e-4)


@pytest.mark.parametrize("kind, n_total", [("flat", 5_000), ("ivf", 60_000), ("ivfsq8", 60_000), ("ivf", 300)])
def test_factory_key_builds_what_l2g_builds(kind, n_total):
    """The benchmark's index_factory strings give make_faiss's index: same type, nlist and nprobe."""
    icfg = C.IndexConfig()
    key = bench_index.factory_key(kind, n_total, icfg)
    ours = faiss.index_factory(DESC_DIM, key)
    theirs, _ = make_faiss(n_total, dataclasses.replace(icfg, kind=kind))
    assert type(ours) is type(theirs) or (kind == "flat" and isinstance(ours, faiss.IndexFlat)), (key, ours, theirs)
    assert getattr(ours, "nlist", 0) == getattr(theirs, "nlist", 0)
    if kind == "ivfsq8":
        assert ours.sq.qtype == theirs.sq.qtype == faiss.ScalarQuantizer.QT_8bit
        assert ours.by_residual == theirs.by_residual
    with pytest.raises(ValueError, match="unknown index kind"):
        bench_index.factory_key("hnsw", n_total, icfg)


def test_threads_limits_and_restores():
    import torch
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads(), faiss.omp_get_max_threads(), [p["num_threads"] for p in threadpool_info()]
    with threads(1):
        assert torch.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info())
    assert (torch.get_num_threads(), faiss.omp_get_max_threads(),
            [p["num_threads"] for p in threadpool_info()]) == before


def test_missing_benchs_folder_is_a_clear_error(tmp_path, monkeypatch):
    """From an installed l2g without the clone's benchs/ folder, `l2g bench` says where the benchmarks are."""
    monkeypatch.setitem(sys.modules, "benchs.run_all", None)        # as if benchs/ were not importable
    with pytest.raises(L2GError, match="benchs/ folder"):      # the CLI prints it as 'error: ...'
        bench.load_benchs(tmp_path)


def test_one_script_writes_its_own_json(tmp_path):
    out = tmp_path / "rerank.json"
    assert bench_rerank.main(["--quick", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["machine"]["threads"] >= 1
    for m in bench_rerank.METHODS:
        assert set(rep["rerank"][m]) == {"100", "700"}
        assert rep["rerank"][m]["700"]["p50_s"] > 0


@pytest.mark.parametrize("weights", ["as found", "none"])
def test_the_learned_extractor_bench_times_sift_and_aliked_where_its_weights_are(tmp_path, monkeypatch, weights):
    from l2g import features
    from l2g.features import find_weights

    if weights == "none":
        monkeypatch.setattr(features, "weight_dirs", lambda: [tmp_path])
    out = tmp_path / "learned.json"
    assert bench_learned.main(["--quick", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())["extraction"]
    assert rep["sift-256"]["over_sift"] == 1.0 and rep["sift-256"]["keypoints_mean"] > 0
    aliked = {"aliked-128", "aliked-256"}
    if find_weights("aliked-n16.pth") is None:      # no weights: said, not timed
        assert set(rep["missing"]) == aliked and not aliked & set(rep)
    else:
        assert all(rep[k]["s_per_image"] > 0 and rep[k]["keypoints_mean"] > 0 for k in aliked)
