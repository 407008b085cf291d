"""Kornia DoG + SIFT, built from its parts: one image or a batch of equal-size images, on any device.

``descriptor_backend='pyramid'`` (the default) detects DoG extrema in one Gaussian pyramid and
describes them from the same pyramid, with the CPU stages of :mod:`l2g.siftspace`,
:mod:`l2g.siftdetect` and :mod:`l2g.siftdesc` (Kornia's extrema found with fewer ops;
``FeatureConfig.resample``: the two widest blurs of an octave replaced by upsampling the next
octave; ``refine``: only the strongest extrema fitted; ``min_contrast``: no extrema of noise-level
|DoG|; ``desc_grid`` / ``orient_grid``: coarser grids than Kornia's 41 x 41 / 19 x 19; ``with
model.workspace``: buffers kept between images); ``'patch'`` cuts a 41x41 patch per keypoint, which
is what pays on a GPU (``--backend patch``; realbench-dev l2g mAP 65.7 against the pyramid's 69.0,
an earlier session).
``'pyramid-nd'`` (``FeatureConfig.double_image`` False) starts the pyramid at the image's own size
instead of twice it (Lowe's and OpenCV's first octave): the first octave has a quarter of the
pixels, so the pyramid and the extrema search of that octave cost about 4x less (README,
"Extraction speed"); the small-scale keypoints that octave finds are lost. Kornia's pyramid
detector assumes the doubled first octave (its pixel is half an image pixel), so without doubling
it reports coordinates and scales in a frame half the image's size: they are doubled back here.

Shapes: an image is ``(H, W, 3) uint8``; a batch is a list of images of one size; each result is
``kpts (N, 5) float32`` (x, y, scale, angle in degrees, response) and ``desc (N, 128) float32``
(plain SIFT, L2-normalised, or RootSIFT), unsorted.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools

import numpy as np
import torch

from .config import SIFT_BACKENDS, FeatureConfig

GRAY = (0.299, 0.587, 0.114)
BACKENDS = SIFT_BACKENDS   # FeatureConfig.backend values (defined in l2g.config)


def rootsift(desc: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Hellinger map of SIFT rows: L1-normalise, square root (result is L2-normalised).

    desc: (N, D) non-negative -> (N, D) float32.
    """
    desc = np.maximum(np.asarray(desc, np.float32), 0.0)
    desc = desc / (desc.sum(1, keepdims=True) + eps)
    return np.sqrt(desc).astype(np.float32)


def gray_batch(rgbs: list[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
    """Equal-size (H, W, 3) uint8 images -> (B, 1, H, W) float32 in [0, 1] on ``device``."""
    shapes = {im.shape for im in rgbs}
    if not rgbs or len(shapes) != 1:
        raise ValueError(f"a batch needs one or more images of one size, got shapes {sorted(shapes)}")
    for im in rgbs:
        if im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"expected (H, W, 3) images, got {im.shape}")
    w = np.array(GRAY, np.float32)
    g = np.stack([im.astype(np.float32) @ w for im in rgbs]) / np.float32(255.0)
    return torch.from_numpy(np.ascontiguousarray(g))[:, None].to(device)


KEEP_FREED_MB = (32, 512)    # glibc: malloc (not mmap) up to 32 MiB; the heap returned to the OS above 512 MiB free


@functools.cache
def keep_freed_memory() -> bool:
    """Let this process reuse freed memory instead of returning it to the OS and taking fresh zeroed pages
    for the next image (glibc's mallopt: M_MMAP_THRESHOLD, M_TRIM_THRESHOLD = KEEP_FREED_MB): Kornia's
    descriptor chunks and the pyramid's temporaries took ~4.6k page faults per 1024 px image, ~5 % of
    its CPU time. Process-wide: the main arena keeps up to ~512 MiB of freed heap, and thread arenas then
    keep their peaks, so it is called by processes that extract on one thread (l2g.parallel's workers,
    the command line), never by the app. False where there is no glibc (nothing changes)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mmap_mb, trim_mb = KEEP_FREED_MB
        return bool(libc.mallopt(-3, mmap_mb << 20)) and bool(libc.mallopt(-1, trim_mb << 20))  # M_MMAP/TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


def build(cfg: FeatureConfig, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Kornia's SIFTFeatureScaleSpace for ``cfg`` (RootSIFT is applied by ``run``, identically for
    every backend, so Kornia returns plain SIFT), on ``device``; the pyramid backends with the
    cheaper stages above."""
    import kornia.feature as KF

    if cfg.backend not in BACKENDS:
        raise ValueError(f"SIFT backend must be one of {BACKENDS}, got {cfg.backend!r}")
    for field in ("desc_grid", "orient_grid"):
        if not 4 <= int(getattr(cfg, field)) <= 81:
            raise ValueError(f"{field} must be 4..81 samples per side, got {getattr(cfg, field)!r}")
    if not cfg.refine >= 0:
        raise ValueError(f"refine must be >= 0 (0: fit every extremum), got {cfg.refine!r}")
    if not 0 <= cfg.min_contrast < 1:
        raise ValueError(f"min_contrast must be in [0, 1) (0: no floor), got {cfg.min_contrast!r}")
    model = KF.SIFTFeatureScaleSpace(num_features=cfg.num_features, upright=cfg.upright, rootsift=False,
                                     descriptor_backend="patch" if cfg.backend == "patch" else "pyramid")
    if cfg.backend != "patch":
        from . import siftdesc, siftdetect, siftspace

        model.workspace = siftspace.Workspace()   # buffers kept between images (run_batch)
        pyramid = siftspace.Pyramid(cfg.double_image, model.workspace, cfg.resample)
        model.detector = siftdetect.Detector(cfg.num_features, pyramid, cfg.refine, cfg.min_contrast)
        model.descriptor = siftdesc.Descriptor(cfg.desc_grid, model.workspace, cfg.orient_grid)
    model = model.eval().to(device)
    model.l2g_device = torch.device(device)   # where run_batch puts its input
    return model


def _to_kpts(lafs: torch.Tensor, resp: torch.Tensor, factor: float) -> np.ndarray:
    """(N, 2, 3) LAFs + (N,) responses -> (N, 5) float32 keypoints, positions and scales times ``factor``."""
    import kornia.feature as KF

    lafs = lafs[None]
    xy = KF.get_laf_center(lafs)[0] * factor
    scale = KF.get_laf_scale(lafs)[0, :, 0, 0] * factor
    angle = KF.get_laf_orientation(lafs)[0, :, 0]
    return torch.cat([xy, scale[:, None], angle[:, None], resp[:, None]], 1).float().cpu().numpy()


def run_batch(model: torch.nn.Module, rgbs: list[np.ndarray], cfg: FeatureConfig
              ) -> list[tuple[np.ndarray, np.ndarray]]:
    """SIFT of equal-size images in one call -> one (kpts (N, 5), desc (N, 128)) per image."""
    import kornia.feature as KF

    gray = gray_batch(rgbs, model.l2g_device)
    with torch.inference_mode(), getattr(model, "workspace", contextlib.nullcontext()):
        lafs, resp, desc = model(gray)
    filled = KF.laf_is_filled(lafs)
    factor = 1.0 if cfg.double_image else 2.0
    out = []
    for i in range(len(rgbs)):
        keep = filled[i]
        kpts = _to_kpts(lafs[i, keep], resp[i, keep], factor)
        d = desc[i, keep].float().cpu().numpy()
        d = rootsift(d) if cfg.rootsift else d / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-12)
        out.append((kpts, d.astype(np.float32)))
    return out


def run(model: torch.nn.Module, rgb: np.ndarray, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """SIFT of one (H, W, 3) uint8 image -> (kpts (N, 5), desc (N, 128))."""
    return run_batch(model, [rgb], cfg)[0]
