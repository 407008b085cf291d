"""Tests for l2g.bench: one quick run (real 100-image gallery + synthetic 1,000) and its JSON."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from l2g import bench
from l2g.features import DESC_DIM


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
    for name, t in report["targets"].items():
        assert {"target", "measured", "met"} <= set(t)
        assert t["met"] is None or isinstance(t["met"], bool)
    assert report["targets"]["index_bytes_per_descriptor"]["measured"] > 0


def test_rescored_search_matches_exact_on_a_toy_gallery(tmp_path):
    # re-scoring with every row as a candidate must give the exact kNN
    rng = np.random.default_rng(0)
    xb = np.abs(rng.standard_normal((2000, DESC_DIM))).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    raw = bench.RawStore.write(tmp_path / "raw.f32", np.array_split(xb, 3))
    import faiss

    flat = faiss.IndexFlatL2(DESC_DIM)
    flat.add(xb)
    xq = xb[:50] + 0.01
    D, I = bench.Rescored(flat, raw, factor=2).search(xq, 5)
    De, Ie = bench.exact_knn(raw, xq, 5, chunk=700)
    np.testing.assert_array_equal(I, Ie)
    np.testing.assert_allclose(D, De, rtol=1e-4, atol=1e-5)
