"""Kornia's sparse DoG detector (``descriptor_backend='pyramid'``, kornia 0.9), its CPU costs cut
(tests/test_sift.py checks each against Kornia's own path):

- :func:`strict_extrema`: the 3x3x3 extremum test is a separable max / min over bands of rows of the
  DoG, which is itself made band by band from the Gaussian levels (no DoG volume), then a strict
  26-neighbour check of the few survivors (Kornia: 16 full-size comparisons, then a 27-value gather
  for each of ~150k spatial candidates). Exactly Kornia's extrema.
- :class:`Detector`: the sparse sub-pixel fit (Kornia's) runs only on the ``refine`` x N extrema of
  largest |DoG| of an image (0: all of them, as Kornia does); it reads the DoG from the Gaussians.

Shapes: Gaussian octaves are ``(B, 1, 6, H, W)``; a DoG / level volume ``(B, D, H, W)``.
"""
from __future__ import annotations

import math

import torch
from kornia.feature.sift.scale_space import _SIFTScaleSpaceDetector

from .siftspace import BAND


def _flat(levels: torch.Tensor) -> torch.Tensor:
    """The storage under a ``(B, L, H, W)`` view of contiguous Gaussian levels, flat (no copy)."""
    return torch.as_strided(levels, (levels.shape[0] * levels.stride(0),), (1,), levels.storage_offset())


def _dog_at(levels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """DoG at flat Gaussian indices (level s, y, x): level s+1 minus level s, as a dense DoG holds it."""
    flat = _flat(levels)
    return _take(flat, index + levels.stride(1)) - _take(flat, index)


def _take(flat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``flat[index]`` for any shape of ``index`` (index_select: ~4x faster than indexing at 100k)."""
    return flat.index_select(0, index.reshape(-1)).view(index.shape)


def strict_extrema(levels: torch.Tensor, border: int = 5, band: int = BAND, gaussian: bool = False,
                   floor: float = 0.0) -> tuple[torch.Tensor, ...]:
    """Voxels of a DoG volume ``(B, D, H, W)`` greater (or smaller) than all 26 neighbours, at least
    ``border`` pixels and one level inside, and of |DoG| above ``floor`` -> (b, s, y, x) long and their
    DoG values, in row-major order. ``gaussian``: ``levels`` are D+1 Gaussian levels whose differences
    are the DoG (made band by band, never whole)."""
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
        at = idx.unbind(1)     # a flat 3x3x3 block (smooth or saturated areas) is never strict: no 26 gathers
        idx = idx[hi3[at] > lo3[at]]
        found.append(idx + idx.new_tensor([0, 1, r0, border]))
    idx = torch.cat(found) if found else torch.zeros((0, 4), dtype=torch.long, device=levels.device)
    b, s, y, x = idx.unbind(1)
    st = levels.stride()
    center = b * st[0] + s * st[1] + y * st[2] + x * st[3]
    offsets = torch.tensor([ds * st[1] + dy * st[2] + dx * st[3] for ds in (-1, 0, 1) for dy in (-1, 0, 1)
                            for dx in (-1, 0, 1) if (ds, dy, dx) != (0, 0, 0)], device=levels.device)
    at = (lambda i: _dog_at(levels, i)) if gaussian else (lambda i: _take(_flat(levels), i))
    nb, c = at(center[:, None] + offsets), at(center)
    keep = ((c[:, None] > nb).all(1) | (c[:, None] < nb).all(1)) & (c.abs() > floor)
    order = center[keep].argsort()
    return tuple(v[keep][order] for v in (b, s, y, x, c))


class Detector(_SIFTScaleSpaceDetector):
    """Kornia's sparse DoG detector: :func:`strict_extrema` finds the extrema of every octave as soon as
    the pyramid is made (a forward hook), so that only the ``refine`` x ``num_features`` of largest
    |DoG| of each image are fitted (0: all). On the CPU there is no DoG volume: Kornia's fit reads
    level differences through ``_neighbourhood`` / ``_values``. No mask."""

    def __init__(self, num_features: int, scale_pyr: torch.nn.Module, refine: float = 0.0, floor: float = 0.0
                 ) -> None:
        super().__init__(num_features, scale_pyr)
        self.refine, self.floor = float(refine), float(floor)
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
            found.append(None if small else strict_extrema(levels if lazy else levels.diff(dim=1), gaussian=lazy,
                                                                floor=self.floor))
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
