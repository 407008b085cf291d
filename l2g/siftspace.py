"""Kornia's SIFT pyramid backend (``descriptor_backend='pyramid'``, kornia 0.9), its CPU costs cut.

The profile of the default extractor (README, "Extraction") was the doubled first octave's pixels
pushed through many full-size ops. Each change is measured against Kornia's own path
(tests/test_sift.py):

- :class:`Pyramid`: the separable blur's taps run band by band, so each band stays in cache (the
  same sums in the same order: the same numbers as Kornia's). ``resample``: levels 4 and 5 of an
  octave (the widest blurs) are the next octave's levels 1 and 2 upsampled (:func:`upsample2`),
  within 1.5e-4 of the blurred ones, and the doubled image is blurred as it is made
  (:func:`double_blur`).
- :class:`Workspace`: the octave volumes, blur passes and gradient atlas of one image stay allocated
  for the next (inside ``with workspace:``), instead of ~200 MB of fresh pages per image at 1024 px
  that the kernel zeroes (46k page faults, ~0.08 s of CPU time per image).
- :class:`l2g.siftdesc.Descriptor`: orientation and descriptor, with the atlas in the workspace.
- :mod:`l2g.siftdetect`: Kornia's extrema found with fewer ops, only the strongest fitted.

Shapes: Gaussian octaves are ``(B, 1, 6, H, W)``; images / levels ``(B, C, H, W)``.
"""
from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F
from kornia.feature.sift.scale_space import _SIFTScalePyramid

BAND = 64 * 2048    # pixels per band of rows: 512 KiB of float32, within a core's L2 cache


class Workspace:
    """Large CPU tensors of one extractor kept from one image to the next, by role. Inside ``with
    workspace:`` (one thread at a time: it holds a lock), :meth:`empty` hands out the role's buffer
    (grown when too small); outside, fresh memory as torch gives it. The model's outputs are never
    views of it, so a workspace only serves a model's own forward (l2g.sift.run_batch)."""

    def __init__(self, keep: bool = True) -> None:
        self.active = False
        self.keep = keep        # False: the buffers are dropped on leaving (a long-lived process, the app)
        self._lock = threading.Lock()
        self._buffers: dict[str, torch.Tensor] = {}

    def __enter__(self) -> "Workspace":
        self._lock.acquire()
        self.active = True
        return self

    def __exit__(self, *exc) -> None:
        self.active = False
        if not self.keep:
            self._buffers.clear()
        self._lock.release()

    def empty(self, role: str, shape, like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` with ``like``'s dtype and device."""
        if not self.active or like.device.type != "cpu":
            return like.new_empty(shape)
        n, buf = math.prod(shape), self._buffers.get(role)
        if buf is None or buf.numel() < n or buf.dtype != like.dtype:
            buf = self._buffers[role] = like.new_empty(n)
        return buf[:n].view(shape)


EDGE = 16           # pixels from an octave's border where its levels 4-5 are blurred even when resampled
UPSAMPLE_MIN = 512  # ... and octaves with a side under this many pixels blur them throughout (little to save)
# septic Lagrange weights of the midpoint between samples 0 and 1, for samples 0 / 1, -1 / 2, -2 / 3, -3 / 4
MIDPOINT = (1225 / 2048, -245 / 2048, 49 / 2048, -5 / 2048)


def _midpoints(src: torch.Tensor, dst: torch.Tensor, dim: int) -> None:
    """``dst`` along ``dim`` (-1 or -2) from ``src`` padded by len(MIDPOINT) there: even samples copied,
    odd ones interpolated with MIDPOINT."""
    p, half = len(MIDPOINT), (slice(0, None, 2), slice(1, None, 2))
    even, odd = (dst[..., h] for h in half) if dim == -1 else (dst[..., h, :] for h in half)
    even.copy_(src.narrow(dim, p, even.shape[dim]))
    n = odd.shape[dim]
    torch.mul(src.narrow(dim, p, n), MIDPOINT[0], out=odd)
    odd.add_(src.narrow(dim, p + 1, n), alpha=MIDPOINT[0])
    for t in range(1, p):
        odd.add_(src.narrow(dim, p - t, n), alpha=MIDPOINT[t])
        odd.add_(src.narrow(dim, p + 1 + t, n), alpha=MIDPOINT[t])


def upsample2(coarse: torch.Tensor, out: torch.Tensor, workspace: Workspace | None = None) -> torch.Tensor:
    """``coarse`` (B, C, h, w) on the even pixels of ``out`` (B, C, H, W), H in {2h, 2h + 1} (likewise W):
    out[2i, 2j] = coarse[i, j], the others from the 8-tap MIDPOINT weights, along rows then columns
    (borders replicated). Exact for polynomials up to degree 7; on Gaussian levels of sigma >= 2 coarse
    pixels the error is ~1e-4 of the image range (tests/test_sift.py)."""
    p, (height, width) = len(MIDPOINT), out.shape[-2:]
    padded = F.pad(coarse, (p, p, p, p), mode="replicate")
    band = max(2, 4 * BAND // (width * math.prod(out.shape[:-2]))) // 2 * 2     # output rows per band (even)
    tmp = (workspace or Workspace()).empty("upsample", (*padded.shape[:-2], band // 2 + 2 * p + 1, width), padded)
    for r0 in range(0, height, band):        # the rows of a band, then its columns, while in cache
        r1, a = min(height, r0 + band), r0 // 2
        rows = tmp[..., :min((r1 - r0 + 1) // 2 + 2 * p, padded.shape[-2] - a), :]
        _midpoints(padded[..., a:a + rows.shape[-2], :], rows, -1)
        _midpoints(rows, out[..., r0:r1, :], -2)
    return out


def _taps(src: torch.Tensor, dst: torch.Tensor, dim: int, weights: list) -> None:
    """dst[i] = sum over j of weights[j] * src[i + j] along ``dim``."""
    n = dst.shape[dim]
    torch.mul(src.narrow(dim, 0, n), weights[0], out=dst)
    for j, w in enumerate(weights[1:], 1):
        if w:
            dst.add_(src.narrow(dim, j, n), alpha=w)


def double_blur(image: torch.Tensor, kernel: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Kornia's doubled image (bilinear, last row and column replicated) blurred with ``kernel`` (reflected
    borders), in one polyphase pass from ``image`` (B, C, H, W) into ``out`` (B, C, 2H, 2W): the even and
    the odd output pixels each weigh a few input pixels (about 40 % of the work; the same values up to
    float rounding, tests/test_sift.py)."""
    k = kernel.double().tolist()
    r = len(k) // 2
    at = lambda t: k[t + r] if -r <= t <= r else 0.0   # noqa: E731
    p = (r + 1) // 2
    even = [at(2 * v) + (at(2 * v - 1) + at(2 * v + 1)) / 2 for v in range(-p, p + 1)]
    odd = [at(2 * v - 1) + (at(2 * v) + at(2 * v - 2)) / 2 for v in range(-p, p + 2)]
    for dim in (-1, -2):    # reflected before the first pixel, symmetric after the last (the replicated one)
        n = image.shape[dim]
        idx = torch.cat([torch.arange(p, 0, -1), torch.arange(n), torch.arange(n - 1, n - p - 2, -1)])
        image = image.index_select(dim, idx.clamp(0, n - 1).to(image.device))
    rows = image.new_empty(*image.shape[:-1], out.shape[-1])
    for dim, src, dst in ((-1, image, rows), (-2, rows, out)):
        half = (slice(0, None, 2), slice(1, None, 2))
        for h, weights in zip(half, (even, odd)):
            _taps(src, dst[..., h] if dim == -1 else dst[..., h, :], dim, weights)
    return out


class Pyramid(_SIFTScalePyramid):
    """Kornia's six Gaussian images per octave; ``double_image`` False starts at the image's own size.
    With an active ``workspace`` (CPU) the octaves are built in its buffers."""

    def __init__(self, double_image: bool = True, workspace: Workspace | None = None,
                 resample: bool = False) -> None:
        super().__init__()
        self.double_image, self.resample = double_image, resample
        self.workspace = workspace or Workspace()
        if not double_image:
            # the camera blur is 0.5 image pixels: the first blur brings it to 1.6 (Lowe's sigma_0)
            self._sigmas[0] = math.sqrt(1.6 ** 2 - 0.5 ** 2)
            self._register_kernels(torch.device("cpu"))

    def _double(self, image: torch.Tensor) -> torch.Tensor:
        return super()._double(image) if self.double_image else image

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Kornia's octaves (0.9: six levels; the next octave's base is level 3 subsampled), built in the
        workspace. ``resample``: the doubled image's first level in one pass (:func:`double_blur`), and
        levels 4 and 5 of every octave but the last (and the small ones) the next octave's levels 1 and
        2 (the same scales, at half the resolution) upsampled (:func:`upsample2`) instead of blurred at
        full size with the two widest kernels, but within EDGE pixels of the borders (:meth:`_edges`)."""
        kernels = [getattr(self, f"kernel_{i}").to(image) for i in range(6)]
        polyphase = self.resample and self.double_image and min(image.shape[-2:]) > len(kernels[0])
        first = image.new_empty(*image.shape[:-2], 2 * image.shape[-2], 2 * image.shape[-1]) if polyphase \
            else self._double(image)
        pyramid, upsampled = [], []
        while True:
            height, width = first.shape[-2:]
            last = min(height // 2, width // 2) < 12
            top = self.resample and not last and min(height, width) >= UPSAMPLE_MIN
            gaussian = self.workspace.empty(f"octave{len(pyramid)}", (*first.shape[:2], 6, height, width), first)
            for i in range(4 if top else 6):
                src, dst = (first if i == 0 else gaussian[:, :, i - 1]), gaussian[:, :, i]
                if i == 0 and pyramid:
                    dst.copy_(src)      # the octave's base: level 3 of the previous one, subsampled
                elif i == 0 and polyphase:
                    double_blur(image, kernels[0], dst)
                elif src.device.type == "cpu" and src.numel() >= 256 * 256:
                    self._blur_cpu(src, kernels[i], kernels[i].numel() // 2, out=dst)
                else:
                    dst.copy_(self._blur(src, kernels[i]))
            upsampled += [len(pyramid)] if top else []
            pyramid.append(gaussian)
            if last:
                break
            first = gaussian[:, :, 3, : 2 * (height // 2) : 2, : 2 * (width // 2) : 2]
        for o in upsampled:
            for level in (4, 5):
                upsample2(pyramid[o + 1][:, :, level - 3], pyramid[o][:, :, level], self.workspace)
            self._edges(pyramid[o], kernels)
        return pyramid

    def _edges(self, gaussian: torch.Tensor, kernels: list) -> None:
        """Levels 4 and 5 within EDGE pixels of the octave's borders blurred from level 3, as Kornia does
        (the next octave reflects its blurs about its own last pixel, one pixel inside this octave's):
        each from a strip of level 3 wide enough that its cut side does not reach them."""
        r4, r5 = (kernels[i].numel() // 2 for i in (4, 5))
        wide = EDGE + r4 + r5
        cpu = gaussian.device.type == "cpu"
        blur = lambda x, k: self._blur_cpu(x, k, k.numel() // 2) if cpu else self._blur(x, k)   # noqa: E731
        for dim in (-2, -1):
            size = gaussian.shape[dim]
            for start in sorted({0, max(0, size - wide)}):
                strip = gaussian[:, :, 3].narrow(dim, start, min(wide, size)).contiguous()
                four = blur(strip, kernels[4])
                five = blur(four, kernels[5])
                for lv, blurred in ((4, four), (5, five)):
                    keep = 0 if start == 0 else strip.shape[dim] - EDGE
                    gaussian[:, :, lv].narrow(dim, start + keep, EDGE).copy_(blurred.narrow(dim, keep, EDGE))

    def _blur_cpu(self, image, kernel, radius, out=None):
        height, width = image.shape[-2:]
        if min(height, width) <= 2 * radius + 1:
            return super()._blur_cpu(image, kernel, radius, out)
        rows = max(1, BAND // (width * image.shape[0]))
        r, weights = radius, kernel.tolist()    # Python floats: no tensor-to-scalar step per tap

        def taps(src, dst, dim, start):
            """dst[i] = sum over o of kernel[r + o] * src[start + i + o] along ``dim`` (Kornia's order)."""
            n = dst.shape[dim]
            torch.mul(src.narrow(dim, start, n), weights[r], out=dst)
            for o in range(1, r + 1):
                dst.add_(src.narrow(dim, start - o, n), alpha=weights[r - o])
                dst.add_(src.narrow(dim, start + o, n), alpha=weights[r + o])

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
