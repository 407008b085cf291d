"""l2g.sift / l2g.siftspace / l2g.siftdetect: the cheaper CPU stages against Kornia's own pyramid backend."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from l2g import config as C
from l2g import featkey as P
from l2g import sift, siftdetect, siftspace
from l2g.images import load_image

NAMES = ("groups/astronaut/astronaut_orig.jpg", "groups/coffee/coffee_orig.jpg")
# FeatureConfig settings of Kornia's own features
KORNIAS = {"desc_grid": 41, "orient_grid": 19, "refine": 0, "resample": False, "min_contrast": 0.0}


@pytest.fixture(scope="module")
def gray(demo_gallery):
    """Two demo photographs as (1, 1, H, W) float32 (over 256 x 256: Kornia's CPU blur path)."""
    return [sift.gray_batch([load_image(demo_gallery / n, max_side=480).rgb]) for n in NAMES]


def _kornia(**kw):
    import kornia.feature as KF

    return KF.SIFTFeatureScaleSpace(num_features=kw.get("n", 2000), rootsift=False, descriptor_backend="pyramid",
                                    upright=kw.get("upright", False)).eval()


@pytest.mark.parametrize("double", [True, False])
def test_pyramid_equals_kornias(gray, double):
    from kornia.feature.sift.scale_space import _SIFTScalePyramid

    ref = _SIFTScalePyramid()
    if not double:      # what l2g did before: Kornia's pyramid, first blur from 0.5, no doubling
        ref._sigmas[0] = math.sqrt(1.6 ** 2 - 0.5 ** 2)
        ref._register_kernels(torch.device("cpu"))
        ref._double = lambda im: im
    ours = siftspace.Pyramid(double)
    with torch.inference_mode():
        for g in gray:
            a, b = ref(g), ours(g)
            assert len(a) == len(b) >= 4
            for u, v in zip(a, b):
                assert torch.equal(u, v)     # the same sums in the same order
            other = g.flip(-1).contiguous()
            batch = ours(torch.cat([g, other]))     # each image of a batch as if alone, up to rounding
            for o in (0, 2):
                torch.testing.assert_close(batch[o][0], b[o][0], rtol=0, atol=1e-6)
                torch.testing.assert_close(batch[o][1], ours(other)[o][0], rtol=0, atol=1e-6)


def test_upsample2_is_exact_on_polynomials_and_keeps_the_coarse_samples():
    """Degree-7 polynomials are interpolated exactly away from the replicated borders; even pixels are the
    coarse ones; odd output sizes (2h + 1) too."""
    y, x = torch.meshgrid(torch.arange(-6.0, 7.0, dtype=torch.float64), torch.arange(-8.0, 9.0, dtype=torch.float64),
                          indexing="ij")
    poly = lambda y, x: 1e-4 * (x ** 7 - 3 * x ** 2 * y ** 5 + 5 * y ** 3 - x * y + 2)   # noqa: E731
    coarse = poly(y, x)[None, None]
    for h, w in ((26, 34), (27, 35)):
        out = siftspace.upsample2(coarse, coarse.new_empty(1, 1, h, w))
        fy, fx = torch.meshgrid(torch.arange(h, dtype=torch.float64) / 2 - 6,
                                torch.arange(w, dtype=torch.float64) / 2 - 8, indexing="ij")
        assert torch.equal(out[0, 0, ::2, ::2][:13, :17], coarse[0, 0])
        inner = (slice(7, 19), slice(7, 27))                  # 4 coarse samples (8 fine) from each border
        torch.testing.assert_close(out[0, 0][inner], poly(fy, fx)[inner], rtol=0, atol=1e-9)
        assert (out[0, 0] - poly(fy, fx)).abs().max() > 1e-3  # ... the borders are replicated, not extrapolated


def test_double_blur_is_kornias_doubled_and_blurred_image(gray):
    """One polyphase pass against Kornia's bilinear doubling (last row and column replicated) then its
    first blur (reflected borders): the same image up to float rounding, borders included, at even and
    odd sizes."""
    p = siftspace.Pyramid()
    k = p.kernel_0.float()
    with torch.inference_mode():
        for g in (gray[0], gray[1][..., :301, :257], torch.rand(2, 1, 40, 33)):
            want = p._blur(p._double(g), k)
            got = siftspace.double_blur(g, k, g.new_empty(want.shape))
            assert (got - want).abs().max() < 1e-6 and (got - want).abs().max() > 0


def test_resampled_levels_equal_the_blurred_ones(gray):
    """``resample``: levels 4 and 5 of an octave from the next octave's levels 1 and 2 (the same scales),
    within 1.5e-4 of the directly blurred levels on photographs (the Gaussian levels span [0, 1];
    measured <= 6e-5 at 1,024 px), and within EDGE px of a border blurred as Kornia does; every
    other level, and the small octaves, Kornia's up to the float rounding of :func:`double_blur`."""
    e = siftspace.EDGE
    with torch.inference_mode():
        for g in gray:
            a, b = siftspace.Pyramid(resample=False)(g), siftspace.Pyramid(resample=True)(g)
            assert len(a) == len(b) > 3 and min(a[0].shape[-2:]) >= siftspace.UPSAMPLE_MIN
            for o, (u, v) in enumerate(zip(a, b)):
                assert (u[:, :, :4] - v[:, :, :4]).abs().max() < 1e-6
                if o == len(a) - 1 or min(u.shape[-2:]) < siftspace.UPSAMPLE_MIN:
                    assert (u - v).abs().max() < 1e-6       # no next octave, or a small one: blurred
                    continue
                err = (u[:, :, 4:] - v[:, :, 4:]).abs()
                assert 1e-6 < err.mean() < 1e-5 and err.max() < 1.5e-4
                for edge in (err[..., :e, :], err[..., -e:, :], err[..., :e], err[..., -e:]):
                    assert edge.max() < 1e-6


def _straightforward(dog: torch.Tensor, border: int = 5) -> set:
    """Every interior voxel compared with its 26 neighbours, one comparison at a time."""
    _, d, h, w = dog.shape
    c = dog[:, 1:-1, border:h - border, border:w - border]
    hi, lo = torch.ones_like(c, dtype=torch.bool), torch.ones_like(c, dtype=torch.bool)
    for ds in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if (ds, dy, dx) != (0, 0, 0):
                    n = dog[:, 1 + ds:d - 1 + ds, border + dy:h - border + dy, border + dx:w - border + dx]
                    hi &= c > n
                    lo &= c < n
    return {(b, s + 1, y + border, x + border) for b, s, y, x in (hi | lo).nonzero().tolist()}


def test_fast_extremum_test_finds_the_straightforward_extrema(gray):
    with torch.inference_mode():
        levels = siftspace.Pyramid()(torch.cat([gray[0][..., :300, :300], gray[1][..., :300, :300]]))[1][:, 0]
        dog = levels.diff(dim=1)
        want = _straightforward(dog)
        assert 200 < len(want) and {k[0] for k in want} == {0, 1}
        for band in (siftspace.BAND, 5000):                # one band per octave, and many small ones
            for got in (siftdetect.strict_extrema(dog, band=band),
                        siftdetect.strict_extrema(levels.contiguous(), band=band, gaussian=True)):
                b, s, y, x, v = got
                assert set(zip(b.tolist(), s.tolist(), y.tolist(), x.tolist())) == want
                assert torch.equal(v, dog[b, s, y, x])
                key = ((b * 5 + s) * 10**4 + y) * 10**4 + x
                assert bool((key[1:] > key[:-1]).all())       # row-major, as Kornia's nonzero() orders them


def test_extremum_test_is_strict_on_plateaus():
    dog = torch.zeros(1, 5, 30, 30)
    dog[0, 2, 10, 10] = 1.0                      # a strict maximum
    dog[0, 2, 20, 20] = dog[0, 2, 20, 21] = 1.0  # a tied pair: neither is strict
    dog[0, 1, 15, 15] = -2.0                     # a strict minimum
    b, s, y, x, v = siftdetect.strict_extrema(dog)
    assert list(zip(s.tolist(), y.tolist(), x.tolist())) == [(1, 15, 15), (2, 10, 10)]
    assert v.tolist() == [-2.0, 1.0]


def test_flat_areas_cost_no_neighbour_gathers(monkeypatch):
    """Smooth or saturated areas (upscaled photographs: 17 % of their extraction time) make flat 3x3x3 blocks
    whose every voxel ties its max and min; none can be strict, so none reaches the 26-neighbour check."""
    seen = []
    real = siftdetect._dog_at
    monkeypatch.setattr(siftdetect, "_dog_at", lambda levels, index: seen.append(index.numel()) or real(levels, index))
    levels = torch.zeros(1, 6, 40, 40)
    levels[0, 3, 20, 20] = 1.0                    # one bump: the DoG levels 2 and 3 see a strict max and min
    b, s, y, x, v = siftdetect.strict_extrema(levels, gaussian=True)
    assert list(zip(s.tolist(), y.tolist(), x.tolist())) == [(2, 20, 20), (3, 20, 20)] and v.tolist() == [1.0, -1.0]
    assert sum(seen) < 27 * 20, seen              # the bump's neighbourhood only, not the 3 x 30 x 30 flat voxels


@pytest.mark.parametrize("upright", [False, True])
def test_with_kornias_grid_and_every_extremum_fitted_the_features_are_kornias(gray, upright):
    """refine 0 and a 41 x 41 grid: Kornia's keypoints and responses bit for bit, its orientations and
    descriptors up to the factor two of the gradient atlas (float rounding)."""
    ref = _kornia(upright=upright)
    ours = sift.build(C.FeatureConfig(upright=upright, **KORNIAS))
    with torch.inference_mode():
        for g in gray:
            (la, ra, da), (lb, rb, db) = ref(g), ours(g)
            assert torch.equal(ra, rb) and torch.equal(la[..., 2], lb[..., 2])     # responses, centres
            assert torch.equal(la, lb) if upright else (la - lb).abs().max() < 1e-3
            assert (da - db).abs().max() < 1e-4 and (da - db).abs().mean() < 1e-6 and int(ra.gt(0).sum()) > 500


def test_dense_dog_path_equals_the_lazy_one(gray):
    """The path CUDA takes (a DoG volume) against the CPU's (level differences read sparsely)."""
    m = sift.build(C.FeatureConfig(refine=2.0))
    with torch.inference_mode():
        a = m(gray[0])
        m.detector.lazy = False
        b = m(gray[0])
    for u, v in zip(a, b):
        assert torch.equal(u, v)


def test_workspace_reuses_its_buffers_and_changes_no_feature(demo_gallery):
    """run / run_batch build the pyramid and the gradient atlas in buffers kept from one image to the next
    (a smaller image in a view of a larger one's): the features equal the ones of a fresh allocation
    (the model called outside its workspace), bit for bit, and earlier results are not overwritten."""
    cfg = C.FeatureConfig(num_features=500)
    m = sift.build(cfg)
    big = load_image(demo_gallery / NAMES[0], max_side=480).rgb
    imgs = [big, load_image(demo_gallery / NAMES[1], max_side=400).rgb, big[::-1].copy()]
    got = [sift.run(m, im, cfg) for im in imgs]
    first = [a.copy() for a in got[0]]
    octave0 = m.workspace._buffers["octave0"]
    assert octave0.numel() == 6 * 4 * big.shape[0] * big.shape[1]     # the larger image's size
    assert {"octave0", "octave1", "blur", "atlas"} <= set(m.workspace._buffers) and not m.workspace.active
    with torch.inference_mode():
        want = [m(sift.gray_batch([im])) for im in imgs]     # outside the workspace: fresh tensors
    assert m.workspace._buffers["octave0"] is octave0
    for (kpts, desc), (lafs, resp, d) in zip(got, want):
        keep = resp[0] > 0
        assert len(kpts) > 300 and np.array_equal(kpts[:, 4], resp[0, keep].numpy())
        assert np.array_equal(kpts[:, :2], lafs[0, keep, :, 2].numpy())
        assert np.array_equal(desc, sift.rootsift(d[0, keep].numpy()))
    for a, b in zip(first, got[0]):
        assert np.array_equal(a, b)


@pytest.mark.skipif(not sift.keep_freed_memory(), reason="no glibc: the process's malloc is left alone")
def test_extraction_in_steady_state_takes_no_fresh_pages(demo_gallery):
    """The workspace and keep_freed_memory: once an image size has been seen, extracting another takes
    almost no fresh pages from the OS (measured at 480 px: 0 page faults; without mallopt ~7k, which
    cost ~5 % of the CPU time at 1,024 px)."""
    import resource

    cfg = C.FeatureConfig(num_features=500)
    m = sift.build(cfg)
    im = load_image(demo_gallery / NAMES[0], max_side=480).rgb
    for _ in range(2):
        sift.run(m, im, cfg)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    kpts, _ = sift.run(m, im[::-1].copy(), cfg)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before < 1000 and len(kpts) == 500


def _centres(lafs: torch.Tensor) -> torch.Tensor:
    return lafs[0, :, :, 2]


def test_refine_budget_keeps_the_keypoints(gray):
    """Fitting only the 2N extrema of largest |DoG|: the same N keypoints (measured: all within 1 px on
    realbench-dev photographs), and far fewer fits."""
    full = sift.build(C.FeatureConfig(num_features=500, refine=0))
    some = sift.build(C.FeatureConfig(num_features=500, refine=2.0))
    with torch.inference_mode():
        for g in gray:
            a, b = full(g), some(g)
            n_all = sum(len(f[0]) for f in full.detector._found if f is not None)
            n_fit = sum(len(f[0]) for f in some.detector._found if f is not None)
            assert n_fit <= 1000 + 5 < n_all       # ties at the floor may add a few
            d = torch.cdist(_centres(a[0]), _centres(b[0])).min(1).values
            assert (d < 1.0).float().mean() > 0.97


def test_resampled_pyramid_keeps_the_keypoints(gray):
    """The features of the resampled pyramid against the directly blurred one: >= 98 % of keypoints
    within 1 px at a scale within a factor 1.2 (measured 99.5 % on 8 realbench-dev photographs at
    1,024 px), their descriptors the same (median cosine > 0.999)."""
    a = sift.build(C.FeatureConfig(num_features=1000, resample=False))
    b = sift.build(C.FeatureConfig(num_features=1000, resample=True))
    with torch.inference_mode():
        for g in gray:
            (la, ra, da), (lb, _, db) = a(g), b(g)
            sa, sb = la[0, :, 0, 0].abs() + la[0, :, 0, 1].abs(), lb[0, :, 0, 0].abs() + lb[0, :, 0, 1].abs()
            d = torch.cdist(_centres(la), _centres(lb))
            d[(sa[:, None] / sb[None]).log().abs() > math.log(1.2)] = math.inf
            near, j = d.min(1)
            ok = near < 1.0
            cos = (da[0, ok] * db[0, j[ok]]).sum(1)
            assert int(ra.gt(0).sum()) == 1000 and 0.98 < ok.float().mean() < 1 and cos.median() > 0.999


def test_flat_areas_give_no_keypoints_above_the_noise_floor(demo_gallery):
    """A photograph on a flat border (a warped view's fill): without a floor, the resampled levels' float
    noise (~1e-8) in the flat area made strict extrema that filled the keypoint budget (the demo's local mAP
    fell from 91.7 to 86.0); min_contrast (the default) keeps the blurred pyramid's keypoints."""
    im = load_image(demo_gallery / NAMES[0], max_side=160).rgb
    canvas = np.full((400, 400, 3), 24, np.uint8)
    canvas[120:120 + im.shape[0], 120:120 + im.shape[1]] = im

    def keypoints(**kw):
        cfg = C.FeatureConfig(**kw)
        k = sift.run(sift.build(cfg), canvas, cfg)[0]
        off = (k[:, :2] < 100).any(1) | (k[:, :2] > 300).any(1)
        return k, int(off.sum())

    (noisy, noisy_off), (ours, off), (blurred, _) = (keypoints(resample=True, min_contrast=0.0), keypoints(),
                                                      keypoints(resample=False, min_contrast=0.0))
    assert len(noisy) == 2000 and noisy_off > 500                       # the failure the floor fixes
    assert C.FeatureConfig().resample and off <= 2 and ours[:, 4].min() > C.FeatureConfig().min_contrast
    d = np.linalg.norm(ours[:, None, :2] - blurred[None, :, :2], axis=2).min(1)
    assert 200 < len(ours) and abs(len(ours) - len(blurred)) <= 5 and (d < 1).mean() > 0.97


def test_coarser_descriptor_grid_keeps_the_descriptors(gray):
    a = sift.build(C.FeatureConfig(desc_grid=41))
    b = sift.build(C.FeatureConfig(desc_grid=25))
    with torch.inference_mode():
        (la, ra, da), (lb, _, db) = a(gray[1]), b(gray[1])
    assert torch.equal(la, lb)                     # the grid changes no keypoint
    cos = (da * db).sum(-1)[ra > 0]
    assert cos.mean() > 0.999 and cos.min() > 0.99 and cos.mean() < 1 - 1e-6


def test_coarser_orientation_grid_keeps_the_keypoints_and_their_angles(gray):
    import kornia.feature as KF

    a, b = sift.build(C.FeatureConfig(orient_grid=19)), sift.build(C.FeatureConfig(orient_grid=15))
    with torch.inference_mode():
        (la, ra, da), (lb, _, db) = a(gray[0]), b(gray[0])
    assert torch.equal(KF.get_laf_center(la), KF.get_laf_center(lb))      # the grid changes no keypoint ...
    assert torch.allclose(KF.get_laf_scale(la), KF.get_laf_scale(lb), rtol=1e-5)
    turn = (KF.get_laf_orientation(la) - KF.get_laf_orientation(lb))[0, :, 0][ra[0] > 0]
    turn = ((turn + 180) % 360 - 180).abs()                                 # ... and moves angles a little:
    assert 0 < turn.median() < 1 and (turn < 10).float().mean() > 0.98     # (19 x 19: 0.07 deg median)
    assert ((da * db).sum(-1)[ra > 0] > 0.9).float().mean() > 0.98


def test_orientation_and_descriptor_chunks_change_no_feature(gray):
    """siftdesc orients 2048 keypoints per call and sizes the descriptor's chunk by its grid (Kornia: 128 of
    each): the orientations are the same bit for bit, the descriptors up to the matmul's rounding."""
    from l2g import siftdesc

    cfg = C.FeatureConfig(num_features=600)
    ours, kornias = sift.build(cfg), sift.build(cfg)
    kornias.descriptor.orient_chunk = 128
    calls = {}
    for name, m in (("ours", ours), ("kornias", kornias)):
        for stage in ("_orientation", "_describe"):
            def counted(*a, _f=getattr(m.descriptor, stage), _k=(name, stage)):
                calls[_k] = calls.get(_k, 0) + 1
                return _f(*a)
            setattr(m.descriptor, stage, counted)
    with torch.inference_mode(), pytest.MonkeyPatch.context() as mp:
        (la, ra, da) = ours(gray[1])
        mp.setattr(siftdesc, "CHUNK_SAMPLES", 128 * 41 * 41 // 3)      # ... and odd descriptor chunks
        (lb, rb, db) = kornias(gray[1])
    assert calls[("kornias", "_orientation")] > calls[("ours", "_orientation")]
    assert calls[("kornias", "_describe")] > calls[("ours", "_describe")]
    assert int(ra.gt(0).sum()) == 600 and torch.equal(ra, rb) and torch.equal(la, lb)
    assert (da - db).abs().max() < 1e-5


def test_batched_equals_one_by_one(demo_gallery):
    """Each image of a batch has its own refine budget: the batch gives each image's own features."""
    cfg = C.FeatureConfig(num_features=300, max_side=480, refine=1.5)
    m = sift.build(cfg)
    imgs = [load_image(demo_gallery / n, max_side=480).rgb[:300, :400].copy() for n in NAMES]
    with torch.inference_mode():
        one = [sift.run(m, im, cfg) for im in imgs]
        both = sift.run_batch(m, imgs, cfg)
    for (ka, da), (kb, db) in zip(one, both):
        d = np.abs(kb[:, None, :3] - ka[None, :, :3]).max(2)
        same = (d.min(1) < 0.05) & (np.abs(db - da[d.argmin(1)]).max(1) < 1e-3)
        assert len(ka) == len(kb) > 100 and same.mean() > 0.97


def test_settings_are_in_the_name_and_checked():
    default = C.FeatureConfig()
    assert C.FeatureConfig(**KORNIAS).name == "sift-root-n2000-s1024-pyramid" != default.name    # Kornia's
    assert default.name == "sift-root-n2000-s1024-g31-r1.5-rs-o15-c1e-05-pyramid"      # the shipped preset
    classic = C.DEFAULT.replace(**C.PRESETS["classic"]).features                  # ... and the one of before
    assert classic.name == "sift-root-n2000-s1024-r2-pyramid" and P.features_key(classic) == P.features_key(
        P.stored_features({k: v for k, v in C.asdict(classic).items() if k not in P.ADDED_FEATURE_FIELDS}))
    assert "-rs-" in C.FeatureConfig(backend="pyramid-nd", resample=True).name
    assert "-rs-" not in C.FeatureConfig(resample=False).name
    assert "-g25-" in C.FeatureConfig(desc_grid=25).name
    assert "-o" not in C.FeatureConfig(orient_grid=19).name
    assert "-o" not in C.FeatureConfig(upright=True).name      # no orientation: no grid in the name
    # settings that cannot shape the features keep the names and keys of indexes built before them
    before = {"num_features": 2000, "rootsift": True, "max_side": 1024, "upright": False, "desc_grid": 41,
              "refine": 2.0}
    for old in ({"extractor": "sift", "backend": "patch", **before},
                {"extractor": "disk", "backend": "pyramid", **before}):
        now = C.FeatureConfig(extractor=old["extractor"], backend=old["backend"])
        assert P.features_key(P.stored_features(old)) == P.features_key(now)
        assert now.name == P.stored_features(old).name and "-g31" not in now.name
    assert P.features_key(C.FeatureConfig(upright=True)) == P.features_key(C.FeatureConfig(upright=True, orient_grid=7))
    assert C.FeatureConfig(min_contrast=1e-5).name != C.FeatureConfig(min_contrast=1.000001e-5).name
    assert C.FeatureConfig(backend="pyramid-nd", upright=True).name.endswith("-pyramid-nd-up")
    assert C.FeatureConfig(backend="patch").name == C.FeatureConfig(backend="patch", **KORNIAS).name
    with pytest.raises(ValueError, match="desc_grid"):
        sift.build(C.FeatureConfig(desc_grid=2))
    with pytest.raises(ValueError, match="orient_grid"):
        sift.build(C.FeatureConfig(orient_grid=3))
    with pytest.raises(ValueError, match="min_contrast"):
        sift.build(C.FeatureConfig(min_contrast=-1))
    with pytest.raises(ValueError, match="refine"):
        sift.build(C.FeatureConfig(refine=-1))
    with pytest.raises(ValueError, match="no mask"):
        sift.build(C.FeatureConfig())(torch.zeros(1, 1, 64, 64), mask=torch.ones(1, 1, 64, 64))
    m = sift.build(C.FeatureConfig())
    with torch.inference_mode():
        m(torch.rand(1, 1, 64, 64))
        m.detector.scale_pyr = siftspace.Pyramid()      # a pyramid without the detector's hook: never the
        with pytest.raises(RuntimeError, match="forward hook"):   # extrema of the image before
            m(torch.rand(1, 1, 64, 64))


@pytest.mark.parametrize("backend,side", [("pyramid", 5), ("pyramid-nd", 10)])
def test_an_image_too_small_for_any_octave_has_no_keypoints(backend, side):
    """Every octave skipped as too small: no keypoints, not a torch.cat error from the refine budget."""
    cfg = C.FeatureConfig(backend=backend)
    kpts, desc = sift.run(sift.build(cfg), np.full((side, side, 3), 128, np.uint8), cfg)
    assert kpts.shape[0] == desc.shape[0] == 0


def test_an_app_extractor_frees_its_buffers_and_no_extractor_sets_the_process_malloc(demo_gallery):
    """The app keeps extractors cached for its lifetime: with keep_buffers=False SIFT's ~180 MiB (1024 px) of
    per-image buffers go after each call, with the same features. Building an extractor never changes the
    process's malloc (thread arenas would keep their peaks in the app): only workers and the CLI do."""
    from unittest import mock

    from l2g.features import Extractor

    with mock.patch.object(sift, "keep_freed_memory") as kept:
        keep, drop = Extractor(C.FeatureConfig(num_features=300)), Extractor(C.FeatureConfig(num_features=300),
                                                                           keep_buffers=False)
    assert not kept.called
    im = load_image(demo_gallery / NAMES[0], max_side=480).rgb
    a, b = keep(im), drop(im)
    assert keep.model.workspace._buffers and not drop.model.workspace._buffers
    assert np.array_equal(a.kpts, b.kpts) and np.array_equal(a.desc, b.desc)
