"""Kornia's SIFT orientation and descriptor from the pyramid (``descriptor_backend='pyramid'``, kornia
0.9), its CPU costs cut (tests/test_sift.py checks each against Kornia's own path):

- the gradient atlas of an octave's used levels is written straight from the pyramid into the
  workspace (Kornia: a copy of the levels, a padded copy, then a halving pass; orientation and
  normalised descriptors ignore the factor);
- orientations are found for ``orient_chunk`` keypoints per call (Kornia: 128, the descriptor's
  chunk): the histogram's few dozen small ops per call were most of its time;
- the descriptor samples a ``grid`` x ``grid`` grid (Kornia: 41) and the orientation histogram an
  ``orient_grid`` x ``orient_grid`` one (Kornia: 19); the descriptor's chunk holds about as many
  samples as Kornia's 128 keypoints on its 41 x 41 grid.

Shapes: ``pyramid[o]`` is ``(B, 1, L, H, W)``; ``lafs (B, N, 2, 3)``, octave and level indices
``(B, N)``; descriptors ``(B, N, 128)`` plain SIFT.
"""
from __future__ import annotations

import torch
from kornia.core.utils import _l2_normalize
from kornia.feature.laf import laf_is_valid, rotate_laf
from kornia.feature.sift.scale_space import _SIFTScaleSpaceDescriptor

from .siftspace import Workspace

KORNIA_ORIENT_GRID = 19         # the grid side Kornia's _orientation asks _sample_gradients for
CHUNK_SAMPLES = 128 * 41 * 41   # CPU: descriptor samples per call (Kornia: 128 keypoints on 41 x 41)
ORIENT_CHUNK = 2048             # CPU: keypoints oriented per call (Kornia: 128; 2048: the same angles, ~7 % less time)
GPU_CHUNK = 1024                # CUDA / MPS: keypoints per call of either (Kornia's)


class Descriptor(_SIFTScaleSpaceDescriptor):
    """Kornia's pyramid descriptor (plain SIFT) on a ``grid`` x ``grid`` grid, its orientation histogram on
    an ``orient_grid`` x ``orient_grid`` one; the gradient atlas in the ``workspace``."""

    def __init__(self, grid: int = 41, workspace: Workspace | None = None, orient_grid: int = KORNIA_ORIENT_GRID,
                 orient_chunk: int = ORIENT_CHUNK) -> None:
        super().__init__(rootsift=False)
        self.grid, self.orient_grid, self.orient_chunk = int(grid), int(orient_grid), int(orient_chunk)
        self.workspace = workspace or Workspace()

    def _sample_gradients(self, gradients, lafs, layer_indices, level_height, size):
        """Kornia's, with Kornia's orientation grid (its _orientation's only request of 19) swapped for ours."""
        size = self.orient_grid if size == KORNIA_ORIENT_GRID else size
        return super()._sample_gradients(gradients, lafs, layer_indices, level_height, size)

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
        mag, angle, xx, yy = super()._sample_gradients(gradients, lafs, layer_indices, level_height, self.grid)
        weights = None
        if mag.device.type in ("mps", "cuda"):
            bins = torch.arange(4, device=mag.device, dtype=mag.dtype)
            weights = (1.0 - (2.5 * xx[:self.grid, None] + 1.5 - bins).abs()).clamp_min(0.0)
        desc = _l2_normalize(self._descriptor_histograms(mag, angle, xx, yy, weights), dim=-1)
        return _l2_normalize(desc.clamp(0.0, self.clipval), dim=-1)

    def _chunked(self, fn, atlas, lafs, layers, level_height, chunk):
        """``fn`` over (1, n, ...) LAFs ``chunk`` at a time, concatenated along dim 1."""
        n = lafs.shape[1]
        return torch.cat([fn(atlas, lafs[:, s:s + chunk], layers[:, s:s + chunk], level_height)
                          for s in range(0, n, chunk)], 1)

    def forward(self, pyramid, lafs, octave_indices, level_indices, upright=None):
        """Kornia's forward (0.9): oriented LAFs ``(B, N, 2, 3)`` and descriptors ``(B, N, 128)`` from the
        keypoints' own Gaussian levels; orientation and description each in chunks of their own size."""
        b, n = lafs.shape[:2]
        image = pyramid[0]
        out_dtype = image.dtype
        work_dtype = torch.float32 if out_dtype in (torch.float16, torch.bfloat16) else out_dtype
        valid = laf_is_valid(lafs)
        eye = torch.eye(2, 3, device=image.device, dtype=work_dtype)
        safe = torch.where(valid.view(b, n, 1, 1), lafs.to(work_dtype), eye)
        oriented, descriptors = safe.clone(), torch.zeros(b, n, 128, device=image.device, dtype=work_dtype)
        cpu = image.device.type == "cpu"
        desc_chunk = max(1, CHUNK_SAMPLES // self.grid ** 2) if cpu else GPU_CHUNK
        orient_chunk = self.orient_chunk if cpu else GPU_CHUNK
        upright = self.upright if upright is None else upright
        for octave, octave_images in enumerate(pyramid):
            pixel = 0.5 * float(2 ** octave)
            selected = valid & (octave_indices == octave)
            if not selected.any():
                continue
            used_levels = torch.unique(level_indices[selected], sorted=True)
            level_height = octave_images.shape[-2]
            atlas = self._gradient_atlas(octave_images, used_levels, work_dtype)
            for i in range(b):
                idx = selected[i].nonzero().flatten()
                if idx.numel() == 0:
                    continue
                layers = torch.searchsorted(used_levels, level_indices[i, idx]).view(1, -1)
                current = safe[i:i + 1, idx].clone()
                current[..., :2, :] /= pixel
                if not upright:
                    shrunk = current.clone()
                    shrunk[..., :2, :2] *= 0.75
                    alpha = self._chunked(self._orientation, atlas[i:i + 1], shrunk, layers, level_height, orient_chunk)
                    current = rotate_laf(current, torch.rad2deg(alpha).unsqueeze(-1))
                grown = current.clone()
                grown[..., :2, :2] *= 1.25
                oriented[i, idx] = current[0] * pixel
                descriptors[i, idx] = self._chunked(self._describe, atlas[i:i + 1], grown, layers, level_height,
                                                    desc_chunk)[0]
        oriented = torch.where(valid.view(b, n, 1, 1), oriented, lafs.to(oriented))
        return oriented.to(lafs.dtype), descriptors.masked_fill(~valid.unsqueeze(-1), 0.0).to(out_dtype)
