"""Kornia's SIFT pyramid backend (``descriptor_backend='pyramid'``, kornia 0.9), its CPU costs cut.

The profile of the default extractor (README, "Extraction") was the doubled first octave's pixels
pushed through many full-size ops. Four changes, each measured against Kornia's own path
(tests/test_sift.py):

- :class:`Pyramid`: the separable blur's taps run band by band, so each band stays in cache (the
  same sums in the same order: the same numbers as Kornia's).
- :func:`strict_extrema`: the 3x3x3 extremum test is a separable max / min over bands of rows of the
  DoG, which is itself made band by band from the Gaussian levels (no DoG volume), then a strict
  26-neighbour check of the few survivors (Kornia: 16 full-size comparisons, then a 27-value gather
  for each of ~150k spatial candidates). Exactly Kornia's extrema.
- :class:`Detector`: the sparse sub-pixel fit (Kornia's) runs only on the ``refine`` x N extrema of
  largest |DoG| of an image (0: all of them, as Kornia does); it reads the DoG from the Gaussians.
- :class:`Descriptor`: the descriptor samples a ``grid`` x ``grid`` grid (Kornia: 41 x 41), and the
  gradient atlas skips Kornia's pad copy and halving pass (orientation and normalised descriptors
  ignore the factor).
- :class:`Workspace`: the octave volumes, blur passes and gradient atlas of one image stay allocated
  for the next (inside ``with workspace:``), instead of ~200 MB of fresh pages per image at 1024 px
  that the kernel zeroes (46k page faults, ~0.08 s of CPU time per image).

Shapes: Gaussian octaves are ``(B, 1, 6, H, W)``; a DoG / level volume ``(B, D, H, W)``.
"""
from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F
from kornia.core.utils import _l2_normalize
from kornia.feature.sift.scale_space import _SIFTScalePyramid, _SIFTScaleSpaceDescriptor, _SIFTScaleSpaceDetector

BAND = 64 * 2048    # pixels per band of rows: 512 KiB of float32, within a core's L2 cache


class Workspace:
    """Large CPU tensors of one extractor kept from one image to the next, by role. Inside ``with
    workspace:`` (one thread at a time: it holds a lock), :meth:`empty` hands out the role's buffer
    (grown when too small); outside, fresh memory as torch gives it. The model's outputs are never
    views of it, so a workspace only serves a model's own forward (l2g.sift.run_batch)."""

    def __init__(self) -> None:
        self.active = False
        self._lock = threading.Lock()
        self._buffers: dict[str, torch.Tensor] = {}

    def __enter__(self) -> "Workspace":
        self._lock.acquire()
        self.active = True
        return self

    def __exit__(self, *exc) -> None:
        self.active = False
        self._lock.release()

    def empty(self, role: str, shape, like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` with ``like``'s dtype and device."""
        if not self.active or like.device.type != "cpu":
            return like.new_empty(shape)
        n, buf = math.prod(shape), self._buffers.get(role)
        if buf is None or buf.numel() < n or buf.dtype != like.dtype:
            buf = self._buffers[role] = like.new_empty(n)
        return buf[:n].view(shape)


class Pyramid(_SIFTScalePyramid):
    """Kornia's six Gaussian images per octave; ``double_image`` False starts at the image's own size.
    With an active ``workspace`` (CPU, float32, no gradient) the octaves are built in its buffers."""

    def __init__(self, double_image: bool = True, workspace: Workspace | None = None) -> None:
        super().__init__()
        self.double_image = double_image
        self.workspace = workspace or Workspace()
        if not double_image:
            # the camera blur is 0.5 image pixels: the first blur brings it to 1.6 (Lowe's sigma_0)
            self._sigmas[0] = math.sqrt(1.6 ** 2 - 0.5 ** 2)
            self._register_kernels(torch.device("cpu"))

    def _double(self, image: torch.Tensor) -> torch.Tensor:
        return super()._double(image) if self.double_image else image

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Kornia's CPU path (0.9), each octave's volume and each blur's first pass in the workspace."""
        ws = self.workspace
        if not ws.active or image.device.type != "cpu" or image.dtype != torch.float32 or image.requires_grad:
            return super().forward(image)
        first = self._double(image)
        kernels = [getattr(self, f"kernel_{i}").to(first.dtype) for i in range(6)]
        pyramid = []
        while True:
            height, width = first.shape[-2:]
            gaussian = ws.empty(f"octave{len(pyramid)}", (*first.shape[:2], 6, height, width), first)
            for i in range(6):
                src, dst = (first if i == 0 else gaussian[:, :, i - 1]), gaussian[:, :, i]
                if i == 0 and pyramid:
                    dst.copy_(src)      # the octave's base: level 3 of the previous one, subsampled
                elif src.numel() >= 256 * 256:
                    self._blur_cpu(src, kernels[i], kernels[i].numel() // 2, out=dst)
                else:
                    dst.copy_(self._blur(src, kernels[i]))
            pyramid.append(gaussian)
            if min(height // 2, width // 2) < 12:
                return pyramid
            first = gaussian[:, :, 3, : 2 * (height // 2) : 2, : 2 * (width // 2) : 2]

    def _blur_cpu(self, image, kernel, radius, out=None):
        height, width = image.shape[-2:]
        if min(height, width) <= 2 * radius + 1:
            return super()._blur_cpu(image, kernel, radius, out)
        rows = max(1, BAND // (width * image.shape[0]))
        r = radius

        def taps(src, dst, dim, start):
            """dst[i] = sum over o of kernel[r + o] * src[start + i + o] along ``dim`` (Kornia's order)."""
            n = dst.shape[dim]
            torch.mul(src.narrow(dim, start, n), kernel[r], out=dst)
            for o in range(1, r + 1):
                dst.add_(src.narrow(dim, start - o, n), alpha=kernel[r - o])
                dst.add_(src.narrow(dim, start + o, n), alpha=kernel[r + o])

        def axis(src, dst, dim):
            """One pass, reflected borders: the borders from small padded strips, the rest band by band
            straight from ``src`` (no padded copy of the image)."""
            size = src.shape[dim]
            pad = (lambda a, b: (a, b, 0, 0)) if dim == -1 else (lambda a, b: (0, 0, a, b))
            taps(F.pad(src.narrow(dim, 0, 2 * r), pad(r, 0), mode="reflect"), dst.narrow(dim, 0, r), dim, r)
            taps(F.pad(src.narrow(dim, size - 2 * r, 2 * r), pad(0, r), mode="reflect"),
                 dst.narrow(dim, size - r, r), dim, r)
            for r0 in range(0, height, rows):
                r1 = min(r0 + rows, height)
                if dim == -1:
                    taps(src[..., r0:r1, :], dst[..., r0:r1, r:width - r], dim, r)
                elif r1 > r and r0 < height - r:
                    a, b = max(r0, r), min(r1, height - r)
                    taps(src, dst[..., a:b, :], dim, a)
            return dst

        horizontal = axis(image, self.workspace.empty("blur", image.shape, image), -1)
        return axis(horizontal, torch.empty_like(image) if out is None else out, -2)


def _flat(levels: torch.Tensor) -> torch.Tensor:
    """The storage under a ``(B, L, H, W)`` view of contiguous Gaussian levels, flat (no copy)."""
    return torch.as_strided(levels, (levels.shape[0] * levels.stride(0),), (1,), levels.storage_offset())


def _dog_at(levels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """DoG at flat Gaussian indices (level s, y, x): level s+1 minus level s, as a dense DoG holds it."""
    flat = _flat(levels)
    return flat[index + levels.stride(1)] - flat[index]


def strict_extrema(levels: torch.Tensor, border: int = 5, band: int = BAND, gaussian: bool = False
                   ) -> tuple[torch.Tensor, ...]:
    """Voxels of a DoG volume ``(B, D, H, W)`` greater (or smaller) than all 26 neighbours, at least
    ``border`` pixels and one level inside -> (b, s, y, x) long and their DoG values, in row-major
    order. ``gaussian``: ``levels`` are D+1 Gaussian levels whose differences are the DoG (made band
    by band, never whole)."""
    bsz, depth, height, width = levels.shape
    depth -= gaussian
    found = []
    rows = max(1, band // (width * depth * bsz))
    for r0 in range(border, height - border, rows):
        r1 = min(r0 + rows, height - border)
        t = levels[:, :, r0 - 1:r1 + 1, border - 1:width - border + 1]
        t = t[:, 1:] - t[:, :-1] if gaussian else t
        hi, lo = torch.maximum(t[..., :-2], t[..., 1:-1]), torch.minimum(t[..., :-2], t[..., 1:-1])
        hi, lo = torch.maximum(hi, t[..., 2:], out=hi), torch.minimum(lo, t[..., 2:], out=lo)
        hi2, lo2 = torch.maximum(hi[..., :-2, :], hi[..., 1:-1, :]), torch.minimum(lo[..., :-2, :], lo[..., 1:-1, :])
        hi2, lo2 = torch.maximum(hi2, hi[..., 2:, :], out=hi2), torch.minimum(lo2, lo[..., 2:, :], out=lo2)
        hi3, lo3 = torch.maximum(hi2[:, :-2], hi2[:, 1:-1]), torch.minimum(lo2[:, :-2], lo2[:, 1:-1])
        hi3, lo3 = torch.maximum(hi3, hi2[:, 2:], out=hi3), torch.minimum(lo3, lo2[:, 2:], out=lo3)
        c = t[:, 1:-1, 1:-1, 1:-1]
        idx = (c >= hi3).logical_or_(c <= lo3).nonzero()
        found.append(idx + idx.new_tensor([0, 1, r0, border]))
    idx = torch.cat(found) if found else torch.zeros((0, 4), dtype=torch.long, device=levels.device)
    b, s, y, x = idx.unbind(1)
    st = levels.stride()
    center = b * st[0] + s * st[1] + y * st[2] + x * st[3]
    offsets = torch.tensor([ds * st[1] + dy * st[2] + dx * st[3] for ds in (-1, 0, 1) for dy in (-1, 0, 1)
                            for dx in (-1, 0, 1) if (ds, dy, dx) != (0, 0, 0)], device=levels.device)
    at = (lambda i: _dog_at(levels, i)) if gaussian else (lambda i: _flat(levels)[i])
    nb, c = at(center[:, None] + offsets), at(center)
    keep = (c[:, None] > nb).all(1) | (c[:, None] < nb).all(1)
    order = center[keep].argsort()
    return tuple(v[keep][order] for v in (b, s, y, x, c))


class Detector(_SIFTScaleSpaceDetector):
    """Kornia's sparse DoG detector: :func:`strict_extrema` finds the extrema of every octave as soon as
    the pyramid is made (a forward hook), so that only the ``refine`` x ``num_features`` of largest
    |DoG| of each image are fitted (0: all). On the CPU there is no DoG volume: Kornia's fit reads
    level differences through ``_neighbourhood`` / ``_values``. No mask."""

    def __init__(self, num_features: int, scale_pyr: torch.nn.Module, refine: float = 0.0) -> None:
        super().__init__(num_features, scale_pyr)
        self.refine = float(refine)
        self._levels = None     # the octave's Gaussian levels (B, D+1, H, W) while its fit runs
        self._found = None      # per octave: its extrema (b, s, y, x, dog), kept by the budget
        self._shapes = []       # ... the shape of the octave they were found in
        self._pending = set()   # ... and the octaves not fitted yet (each once per pyramid)
        self.lazy = None        # read the DoG from the Gaussians (None: on the CPU; Kornia's CUDA fit wants a volume)
        self.scale_pyr.register_forward_hook(self._extrema)

    def _extrema(self, module, args, pyramid: list[torch.Tensor]) -> None:
        """(A forward hook of the pyramid.) The extrema of every octave, within the budget."""
        found = []
        for gaussian in pyramid:
            levels = gaussian[:, 0].contiguous()
            small = levels.shape[1] < 4 or min(levels.shape[-2:]) < 11
            lazy = self._lazy(levels)
            found.append(None if small else strict_extrema(levels if lazy else levels.diff(dim=1), gaussian=lazy))
        if self.refine > 0 and any(f is not None for f in found):   # (an image too small for any octave: none)
            budget = int(math.ceil(self.refine * self.num_features))
            for i in range(pyramid[0].shape[0]):      # each image's budget-th largest |DoG|
                mags = torch.cat([f[4][f[0] == i].abs() for f in found if f is not None])
                if mags.numel() > budget:
                    floor = mags.topk(budget).values[-1]
                    found = [f if f is None else tuple(v[(f[0] != i) | (f[4].abs() >= floor)] for v in f)
                             for f in found]
        self._found, self._shapes, self._pending = found, [g.shape for g in pyramid], set(range(len(pyramid)))

    def _lazy(self, levels: torch.Tensor) -> bool:
        return levels.device.type == "cpu" if self.lazy is None else bool(self.lazy)

    def _index(self, b, s, y, x):
        st = self._levels.stride()
        return b * st[0] + s * st[1] + y * st[2] + x

    def _values(self, dog, b, s, y, x):
        return dog[b, s, y, x] if self._levels is None else _dog_at(self._levels, self._index(b, s, y, x))

    def _neighbourhood(self, dog, b, s, y, x):
        if self._levels is None:
            return _SIFTScaleSpaceDetector._neighbourhood(dog, b, s, y, x)
        st = self._levels.stride()
        offsets = torch.tensor([ds * st[1] + dy * st[2] + dx for ds in (-1, 0, 1) for dy in (-1, 0, 1)
                                for dx in (-1, 0, 1)], device=dog.device)
        return _dog_at(self._levels, self._index(b, s, y, x)[:, None] + offsets).reshape(-1, 3, 3, 3)

    def _octave(self, gaussian, octave, mask):
        if mask is not None:
            raise ValueError("l2g's SIFT detector takes no mask")
        if octave not in self._pending or self._shapes[octave] != gaussian.shape:
            raise RuntimeError("the detector's extrema come from its own scale_pyr's forward hook: "
                               "build it with the pyramid (l2g.sift.build), do not swap scale_pyr afterwards")
        self._pending.discard(octave)
        found = self._found[octave]
        if found is None or found[0].numel() == 0:
            empty = torch.empty(0, device=gaussian.device, dtype=torch.long)
            return (empty,) * 4 + (gaussian.new_empty(0),) * 4
        levels = gaussian[:, 0].contiguous()
        lazy = self._lazy(levels)
        self._levels = levels if lazy else None
        try:
            return self._fit(levels[:, :-1] if lazy else levels.diff(dim=1), octave, *found[:4])
        finally:
            self._levels = None

    def _fit(self, dog, octave, b, s, y, x):
        """Kornia's _SIFTScaleSpaceDetector._octave (0.9) from its extrema on, without its mask."""
        _, depth, height, width = dog.shape
        chunk = 16384 if dog.device.type == "cpu" else 65536
        parts = [self._refine(dog, *p) for p in zip(b.split(chunk), s.split(chunk), y.split(chunk), x.split(chunk))]
        b, s, y, x, sx, sy, ss, good = (torch.cat(v) for v in zip(*parts))
        val = self._values
        c = val(dog, b, s, y, x)
        gx = (val(dog, b, s, y, x + 1) - val(dog, b, s, y, x - 1)) * 0.5
        gy = (val(dog, b, s, y + 1, x) - val(dog, b, s, y - 1, x)) * 0.5
        gs = (val(dog, b, s + 1, y, x) - val(dog, b, s - 1, y, x)) * 0.5
        contrast = c + 0.5 * (gx * sx + gy * sy + gs * ss)
        good = good & torch.isfinite(contrast)
        sigma = 1.6 * torch.exp2((s.to(dog.dtype) + ss) / 3.0) * (0.5 * float(2 ** octave))
        b, s, y, x, response, sigma, sx, sy, sign = (
            v[good] for v in (b, s, y, x, contrast.abs(), sigma, sx, sy, contrast >= 0))
        key = (((b * depth + s) * height + y) * width + x) * 2 + sign.long()
        order = key.argsort()
        keep = torch.ones_like(order, dtype=torch.bool)
        keep[1:] = key[order][1:] != key[order][:-1]
        order = order[keep]
        return b[order], s[order], y[order], x[order], response[order], sigma[order], sx[order], sy[order]


class Descriptor(_SIFTScaleSpaceDescriptor):
    """Kornia's pyramid descriptor (plain SIFT) on a ``grid`` x ``grid`` grid (Kornia: 41); the gradient
    atlas in the ``workspace`` (one octave's at a time, as Kornia's forward uses them)."""

    def __init__(self, grid: int = 41, workspace: Workspace | None = None) -> None:
        super().__init__(rootsift=False)
        self.grid = int(grid)
        self.workspace = workspace or Workspace()

    def _gradient_atlas(self, octave_images, used_levels, work_dtype):
        """Kornia's atlas of central differences (replicated borders) of the used levels, times two,
        straight from the pyramid (no copy of the levels, no pad, no halving pass)."""
        levels = octave_images[:, 0]
        like = levels if levels.dtype == work_dtype else levels.new_empty(0, dtype=work_dtype)
        out = self.workspace.empty("atlas", (levels.shape[0], 2, used_levels.numel(), *levels.shape[-2:]), like)
        for j, level in enumerate(used_levels.tolist()):
            im = levels[:, level]
            for g, src in ((out[:, 0, j], im), (out[:, 1, j].transpose(-1, -2), im.transpose(-1, -2))):
                torch.sub(src[..., 2:], src[..., :-2], out=g[..., 1:-1])
                torch.sub(src[..., 1:2], src[..., :1], out=g[..., :1])
                torch.sub(src[..., -1:], src[..., -2:-1], out=g[..., -1:])
        return out.flatten(2, 3)

    def _describe(self, gradients, lafs, layer_indices, level_height):
        mag, angle, xx, yy = self._sample_gradients(gradients, lafs, layer_indices, level_height, self.grid)
        weights = None
        if mag.device.type in ("mps", "cuda"):
            bins = torch.arange(4, device=mag.device, dtype=mag.dtype)
            weights = (1.0 - (2.5 * xx[:self.grid, None] + 1.5 - bins).abs()).clamp_min(0.0)
        desc = _l2_normalize(self._descriptor_histograms(mag, angle, xx, yy, weights), dim=-1)
        return _l2_normalize(desc.clamp(0.0, self.clipval), dim=-1)
