"""Local features: keypoints and 128-D descriptors for one image.

The default extractor is Kornia's hand-crafted DoG + SIFT
(``SIFTFeatureScaleSpace``, ``descriptor_backend='pyramid'``), which needs no
downloaded weights. Learned extractors are registered beside it and are only
offered when their weights are already on disk.

Rows are vectors: descriptors are ``(N, 128) float32``, keypoints ``(N, 5)``.

An ``Extractor`` runs on one device ('auto': CUDA when torch sees a GPU); ``Extractor.batch`` runs
equal-size images together (what pays on a GPU). The device is in no fingerprint (BuildConfig.device):
CUDA keypoints agree with CPU ones within 1 px for 97% of them, so either device searches an index.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import sift
from .config import DATA_DIR, REPO_ROOT, FeatureConfig
from .errors import ConfigError, ExtractorUnavailable, IndexFormatError, NoKeypointsError  # noqa: F401 (re-exported)
from .sift import rootsift  # noqa: F401 (re-exported)
from .store import load_npz, save_npz

DESC_DIM = 128
WEIGHTS_DIR = Path(os.environ.get("L2G_WEIGHTS", DATA_DIR / "weights"))
SHARED_WEIGHTS_DIR = REPO_ROOT.parent / "shared" / "weights"   # a checkout beside a shared folder


def weight_dirs() -> list[Path]:
    """Folders searched for weight files, in order: $L2G_WEIGHTS (or data/weights), data/weights,
    ../shared/weights relative to the repository."""
    return list(dict.fromkeys(Path(d) for d in (WEIGHTS_DIR, DATA_DIR / "weights", SHARED_WEIGHTS_DIR)))


def find_weights(rel: str) -> Path | None:
    """The first existing ``rel`` under :func:`weight_dirs`, or None."""
    for d in weight_dirs():
        if (d / rel).is_file():
            return d / rel
    return None


@dataclass
class Features:
    """Local features of one image, in the pixel frame of the loaded image.

    kpts: (N, 5) float32 -- x, y, scale, angle (degrees), response
    desc: (N, 128) float32 -- L2-normalised rows
    size: (W, H) of the image the features were computed on
    """

    kpts: np.ndarray
    desc: np.ndarray
    size: tuple[int, int]
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kpts.ndim != 2 or self.kpts.shape[1] != 5:
            raise ValueError(f"kpts must be (N, 5), got {self.kpts.shape}")
        if self.desc.ndim != 2 or self.desc.shape[0] != self.kpts.shape[0]:
            raise ValueError(f"desc must be (N, D) with N={self.kpts.shape[0]}, got {self.desc.shape}")

    def __len__(self) -> int:
        return int(self.kpts.shape[0])

    @property
    def xy(self) -> np.ndarray:   # (N, 2) float32 keypoint centres
        return self.kpts[:, :2]

    @classmethod
    def empty(cls, size=(0, 0), dim: int = DESC_DIM) -> "Features":
        return cls(np.zeros((0, 5), np.float32), np.zeros((0, dim), np.float32), tuple(size))


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' (CUDA when torch sees a GPU, else the CPU), 'cpu', 'cuda' or 'cuda:N' -> a torch device.
    CUDA asked for where torch sees none is an ExtractorUnavailable saying so; any other name a ConfigError."""
    d = str(device).strip().lower()
    if d in ("auto", "cpu"):
        return torch.device("cuda" if d == "auto" and torch.cuda.is_available() else "cpu")
    if d == "cuda" or (d.startswith("cuda:") and d[5:].isdigit()):
        if not torch.cuda.is_available():
            why = "a CPU-only build" if torch.version.cuda is None else "no GPU or driver found"
            raise ExtractorUnavailable(f"device {device!r} was asked for, but torch {torch.__version__} sees no "
                                       f"CUDA GPU ({why}); use --device cpu or auto ($L2G_DEVICE)")
        return torch.device(d)
    raise ConfigError(f"unknown device {device!r}; choose auto, cpu or cuda")


@dataclass(frozen=True)    # --------------------------------------------------------------- the registry
class ExtractorSpec:
    build: Callable[[FeatureConfig, bool], torch.nn.Module]
    run: Callable[[torch.nn.Module, np.ndarray, FeatureConfig], tuple[np.ndarray, np.ndarray]]
    weights: tuple[str, ...] = ()     # files expected under one of weight_dirs()
    note: str = ""
    run_batch: Callable | None = None  # equal-size images in one call (l2g.sift.run_batch), when the extractor has it


def _build_sift(cfg: FeatureConfig, pretrained: bool) -> torch.nn.Module:
    return sift.build(cfg)


def _input(model, rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1] on the model's device."""
    x = torch.from_numpy(np.require(rgb, requirements=["C", "W"])).permute(2, 0, 1)[None].float() / 255.0  # W: a
    # read-only array (np.asarray of a PIL image) is copied; torch warns on non-writable memory
    return x.to(model.l2g_device)


def _build_disk(cfg: FeatureConfig, pretrained: bool) -> torch.nn.Module:
    from kornia.feature import DISK

    model = DISK()
    if pretrained:
        state = torch.load(find_weights("disk/depth-save.pth") or WEIGHTS_DIR / "disk" / "depth-save.pth",
                           map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("extractor", state))
    return model.eval()


def _run_disk(model, rgb, cfg):
    f = model(_input(model, rgb), n=cfg.num_features, pad_if_not_divisible=True)[0]
    xy = f.keypoints.float().cpu().numpy()
    n = xy.shape[0]
    kpts = np.zeros((n, 5), np.float32)
    kpts[:, :2] = xy
    kpts[:, 2] = 8.0  # DISK has no scale: a nominal support radius for drawing
    kpts[:, 4] = f.detection_scores.float().cpu().numpy()
    d = f.descriptors.float().cpu().numpy()
    return kpts, (d / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-12)).astype(np.float32)


ALIKED_MODEL = "aliked-n16"


def _build_aliked(cfg: FeatureConfig, pretrained: bool) -> torch.nn.Module:
    import kornia.feature as KF

    model = KF.ALIKED(model_name=ALIKED_MODEL, max_num_keypoints=cfg.num_features)
    if pretrained:
        path = find_weights(f"{ALIKED_MODEL}.pth")
        if path is None:
            raise ExtractorUnavailable(_missing_message("aliked", [f"{ALIKED_MODEL}.pth"]))
        res = model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=False)
        # the checkpoint lacks only the derived buffer dkd.hw_grid; anything else is a wrong file
        if list(res.missing_keys) != ["dkd.hw_grid"] or list(res.unexpected_keys):
            raise ExtractorUnavailable(
                f"{path} is not an {ALIKED_MODEL} checkpoint: missing keys {list(res.missing_keys)[:5]}, "
                f"unexpected keys {list(res.unexpected_keys)[:5]}")
    return model.eval()


def _run_aliked(model, rgb, cfg):
    f = model(_input(model, rgb))[0]
    xy = f.keypoints.float().cpu().numpy()
    kpts = np.zeros((xy.shape[0], 5), np.float32)
    kpts[:, :2] = xy
    kpts[:, 2] = 8.0  # ALIKED has no scale: a nominal support radius for drawing
    kpts[:, 4] = f.keypoint_scores.float().cpu().numpy()
    d = f.descriptors.float().cpu().numpy()
    return kpts, (d / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-12)).astype(np.float32)


EXTRACTORS: dict[str, ExtractorSpec] = {
    "sift": ExtractorSpec(_build_sift, sift.run, note="Kornia DoG + SIFT, hand-crafted, no weights",
                          run_batch=sift.run_batch),
    "disk": ExtractorSpec(_build_disk, _run_disk, weights=("disk/depth-save.pth",),
                          note="Kornia DISK (learned); needs its checkpoint on disk"),
    "aliked": ExtractorSpec(_build_aliked, _run_aliked, weights=(f"{ALIKED_MODEL}.pth",),
                            note="Kornia ALIKED-N16 (learned, 128-D, BSD-3); needs aliked-n16.pth on disk, "
                                 "slow on a CPU"),
}


def missing_weights(name: str) -> list[Path]:
    """Weight files an extractor needs that are in none of :func:`weight_dirs`."""
    spec = EXTRACTORS[name]
    return [WEIGHTS_DIR / w for w in spec.weights if find_weights(w) is None]


def _missing_message(name: str, files) -> str:
    return (f"extractor {name!r} needs weights that are not on disk: {', '.join(map(str, files))} (looked in "
            f"{', '.join(str(d) for d in weight_dirs())}). l2g never downloads weights; copy the file there (or "
            "set L2G_WEIGHTS), or use the default 'sift' extractor.")


def available_extractors() -> dict[str, str]:
    """Extractors that can run here -> their description."""
    return {k: v.note for k, v in EXTRACTORS.items() if not missing_weights(k)}


class Extractor:
    """A loaded feature extractor (holds the model) on one device. Thread-safe, deterministic.
    ``keep_buffers``: SIFT's per-image buffers stay for the next image (a build); False: freed after each call."""

    def __init__(self, cfg: FeatureConfig = FeatureConfig(), pretrained: bool = True, device: str = "auto",
                 keep_buffers: bool = True):
        if cfg.extractor not in EXTRACTORS:
            raise ExtractorUnavailable(
                f"unknown extractor {cfg.extractor!r}; choose one of {sorted(EXTRACTORS)}")
        if cfg.backend not in sift.BACKENDS:
            raise ValueError(f"backend must be one of {sift.BACKENDS}, got {cfg.backend!r}")
        missing = missing_weights(cfg.extractor) if pretrained else []
        if missing:
            raise ExtractorUnavailable(_missing_message(cfg.extractor, missing))
        self.cfg = cfg
        self.device = resolve_device(device)
        self.spec = EXTRACTORS[cfg.extractor]
        torch.manual_seed(0)
        self.model = self.spec.build(cfg, pretrained).to(self.device)
        self.model.l2g_device = self.device    # where the run functions put their inputs
        if getattr(self.model, "workspace", None) is not None:   # SIFT's pyramid backends
            self.model.workspace.keep = keep_buffers
        self._lock = threading.Lock()

    @staticmethod
    def _check(rgb: np.ndarray) -> None:
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {getattr(rgb, 'shape', type(rgb))} "
                             f"{getattr(rgb, 'dtype', '')}")

    def _finish(self, kpts: np.ndarray, desc: np.ndarray, size: tuple, seconds: float) -> Features:
        """Strongest ``num_features`` first, rows with a non-finite or zero descriptor dropped."""
        order = np.argsort(-kpts[:, 4], kind="stable")[: self.cfg.num_features]
        kpts, desc = kpts[order], desc[order]
        ok = np.isfinite(desc).all(1) & (np.linalg.norm(desc, axis=1) > 0)
        return Features(np.ascontiguousarray(kpts[ok]), np.ascontiguousarray(desc[ok]), size,
                        {"extractor": self.cfg.name}, {"extract": seconds})

    def __call__(self, rgb: np.ndarray) -> Features:
        """Extract features from an (H, W, 3) uint8 image (already capped to max_side).

        Returns at most ``cfg.num_features`` keypoints, strongest first. An image
        with no keypoints returns empty (0, 5) / (0, 128) arrays, never raises.
        """
        self._check(rgb)
        h, w = rgb.shape[:2]
        if min(h, w) < 16:
            return Features(np.zeros((0, 5), np.float32), np.zeros((0, DESC_DIM), np.float32), (w, h),
                            {"extractor": self.cfg.name})
        t0 = time.perf_counter()
        with self._lock, torch.inference_mode():
            kpts, desc = self.spec.run(self.model, rgb, self.cfg)
        return self._finish(kpts, desc, (w, h), time.perf_counter() - t0)

    def batch(self, rgbs: list[np.ndarray], size: int = 16) -> list[Features]:
        """Features of each image, in order: images of equal size go through the model ``size`` at a
        time (one call each; what pays on a GPU), the others one by one. The same features as
        calling the extractor on each image, up to float rounding. ``timings['extract']`` is the
        image's share of its call."""
        for im in rgbs:
            self._check(im)
        out: list[Features | None] = [None] * len(rgbs)
        groups: dict[tuple, list[int]] = {}
        for i, im in enumerate(rgbs):
            groups.setdefault(im.shape, []).append(i)
        for shape, ids in groups.items():
            if self.spec.run_batch is None or min(shape[:2]) < 16 or size <= 1:
                for i in ids:
                    out[i] = self(rgbs[i])
                continue
            for s in range(0, len(ids), size):
                part = ids[s:s + size]
                t0 = time.perf_counter()
                with self._lock, torch.inference_mode():
                    res = self.spec.run_batch(self.model, [rgbs[i] for i in part], self.cfg)
                dt = (time.perf_counter() - t0) / len(part)
                for i, (kpts, desc) in zip(part, res):
                    out[i] = self._finish(kpts, desc, (shape[1], shape[0]), dt)
        return out


def save_features(path: Path, f: Features) -> dict:
    """Write features atomically (unique temporary file, then rename); returns the file's record.
    The extractor's preset name (``f.params['extractor']``) is stored with them."""
    return save_npz(Path(path), kpts=f.kpts, desc=f.desc, size=np.asarray(f.size, np.int64),
                    preset=np.asarray(str(f.params.get("extractor", ""))))


def load_features(path: Path, rec: dict | None = None) -> Features:
    """Features saved by save_features; checked against the manifest's record ``rec`` when given.

    A missing, truncated or damaged file raises IndexFormatError naming it (``python -m l2g index``
    re-extracts it).
    """
    fix = "Re-run `python -m l2g index` on the gallery: it re-extracts damaged features."
    z = load_npz(Path(path), rec, fix)
    try:
        params = {"extractor": str(z["preset"])} if "preset" in z else {}
        return Features(z["kpts"], z["desc"], tuple(int(v) for v in z["size"]), params)
    except (KeyError, ValueError, TypeError) as e:
        raise IndexFormatError(f"{path}: damaged ({type(e).__name__}: {e}). {fix}") from None
