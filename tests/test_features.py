"""l2g.features: Kornia SIFT/RootSIFT extraction, learned extractors and their weights."""
from __future__ import annotations

import numpy as np
import pytest

from l2g import config as C
from l2g.features import Extractor, ExtractorUnavailable, rootsift
from l2g.images import load_image


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
