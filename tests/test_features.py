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


# --------------------------------------------------------------------------- devices, batches, the first octave
def _same_size(demo_gallery, names, shape=(300, 400)):
    """Demo photographs cropped to one (H, W) shape (uint8 RGB)."""
    h, w = shape
    return [load_image(demo_gallery / n, max_side=480).rgb[:h, :w].copy() for n in names]


NAMES = ("groups/astronaut/astronaut_orig.jpg", "groups/coffee/coffee_orig.jpg", "groups/chelsea/chelsea_orig.jpg")


@pytest.mark.parametrize("backend", ["pyramid", "pyramid-nd"])
def test_batched_extraction_equals_one_image_at_a_time(demo_gallery, backend):
    cfg = C.FeatureConfig(num_features=300, max_side=480, backend=backend)
    ex = Extractor(cfg, device="cpu")
    imgs = _same_size(demo_gallery, NAMES) + [load_image(demo_gallery / NAMES[0], max_side=480).rgb[:200, :260].copy()]
    one, batched = [ex(im) for im in imgs], ex.batch(imgs, size=2)
    for a, b in zip(one, batched):
        assert abs(len(a) - len(b)) <= 2 and len(a) > 50 and a.size == b.size
        assert b.params == {"extractor": cfg.name}
        # batched convolutions round differently in the last bits (measured: <= 0.01 px, 1e-4 in a
        # descriptor), so keypoints of nearly equal response may swap places: compared as sets
        d = np.abs(b.kpts[:, None, :3] - a.kpts[None, :, :3]).max(2)
        same = (d.min(1) < 0.05) & (np.abs(b.desc - a.desc[d.argmin(1)]).max(1) < 1e-3)
        assert same.mean() > 0.97
    np.testing.assert_array_equal(batched[-1].kpts, one[-1].kpts)    # the odd-sized image ran alone
    assert ex.batch([]) == []
    with pytest.raises(ValueError, match="uint8"):
        ex.batch([imgs[0].astype(np.float32)])


def test_device_auto_is_the_cpu_here_and_cuda_without_a_gpu_is_refused():
    import torch

    from l2g.errors import ConfigError
    from l2g.features import resolve_device

    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
        return
    assert resolve_device("auto") == resolve_device("cpu") == torch.device("cpu")
    assert Extractor(C.FeatureConfig(num_features=50)).device.type == "cpu"
    for dev in ("cuda", "cuda:0"):
        with pytest.raises(ExtractorUnavailable, match="sees no CUDA GPU.*--device cpu"):
            Extractor(C.FeatureConfig(num_features=50), device=dev)
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_single_first_octave_is_in_the_image_frame_and_named(demo_gallery):
    """Without the doubled octave the keypoints stay in the image's pixel frame (Kornia reports them in
    half of it): most of them sit where the doubled pyramid finds one too, at a similar scale."""
    img = load_image(demo_gallery / NAMES[0], max_side=480).rgb
    full = Extractor(C.FeatureConfig(num_features=1000, max_side=480))(img)
    nd_cfg = C.FeatureConfig(num_features=300, max_side=480, backend="pyramid-nd")
    nd = Extractor(nd_cfg)(img)
    assert nd_cfg.name.endswith("-pyramid-nd") and C.FeatureConfig().name.endswith("-pyramid")
    h, w = img.shape[:2]
    assert 100 < len(nd) <= 300 and (nd.kpts[:, 0] < w).all() and (nd.kpts[:, 1] < h).all()
    assert nd.kpts[:, 0].max() > 0.75 * w and nd.kpts[:, 1].max() > 0.75 * h   # not squeezed into a half frame
    d = np.linalg.norm(nd.xy[:, None] - full.xy[None], axis=2)
    near = d.argmin(1)
    ok = (d.min(1) < 1.5) & (np.abs(np.log(nd.kpts[:, 2] / full.kpts[near, 2])) < np.log(1.5))
    assert ok.mean() > 0.8, ok.mean()     # measured: 0.95
    assert not nd_cfg.double_image and C.FeatureConfig().double_image and C.FeatureConfig(backend="patch").double_image
    with pytest.raises(ValueError, match="pyramid-nd"):
        Extractor(C.FeatureConfig(backend="dense"))




def test_a_read_only_image_is_extracted_without_a_warning_and_left_as_it_was():
    """np.asarray(PIL image) is read-only; torch warns once per process on such memory (the learned extractors'
    input path; DISK with random weights here), so the check runs in a fresh process."""
    import subprocess
    import sys

    code = ("import warnings, numpy as np\nfrom l2g import config as C\nfrom l2g.features import Extractor\n"
            "rgb = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)\n"
            "frozen = rgb.copy()\nfrozen.flags.writeable = False\n"
            "ex = Extractor(C.FeatureConfig(extractor='disk', num_features=64), pretrained=False)\n"
            "with warnings.catch_warnings():\n    warnings.simplefilter('error')\n    f = ex(frozen)\n"
            "assert len(f) > 0 and np.array_equal(frozen, rgb)\n"
            "np.testing.assert_array_equal(f.desc, ex(rgb).desc)\nprint('ok', len(f))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-2000:]
