"""The one image loader of l2g: any path, bytes or upload -> RGB uint8.

Everything that reads pixels (indexing, queries, the app, the demo checks)
goes through :func:`load_image`, so odd files fail the same way everywhere:
with an :class:`ImageError` whose message names the file and says why. Mode conversion and
box reduction in bounded memory are :mod:`l2g.pixels`.
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from l2g.config import ImageConfig
from l2g.errors import ImageError
from l2g.pixels import HIGH_DEPTH_MODES, finite_range, reducible_mode, shrink, to_rgb_array  # noqa: F401

# Pillow plugins we let parse untrusted files (no EPS/PDF: those shell out). JPEG covers MPO.
ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF", "PPM")
_ORIENTATION_TAG = 0x0112
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)   # EXIF orientations that swap width and height
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}     # as ImageOps.exif_transpose
REDUCING_GAP = 3.0      # integer box reduction first, then Lanczos over at most this factor

# Our own cfg.max_pixels check (in _decode) replaces Pillow's warning-level guard; Pillow's hard
# DecompressionBombError (above 2 * Image.MAX_IMAGE_PIXELS) still applies and becomes an ImageError.
# A module-level filter rather than catch_warnings(), which is not thread-safe (Streamlit uses threads).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

Source = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO

# A file's PIL mode in plain words, for notes such as "16-bit greyscale image converted to 8-bit RGB".
MODE_WORDS = {"1": "black-and-white (1-bit) image", "L": "8-bit greyscale image",
              "LA": "greyscale image with transparency", "La": "greyscale image with transparency",
              "P": "palette (indexed colour) image", "PA": "palette (indexed colour) image with transparency",
              "RGB": "8-bit RGB image", "RGBA": "RGB image with transparency", "RGBa": "RGB image with transparency",
              "RGBX": "8-bit RGB image", "CMYK": "CMYK (print colour) image", "YCbCr": "YCbCr colour image",
              "LAB": "CIE Lab colour image", "HSV": "HSV colour image", "I": "32-bit integer greyscale image",
              "I;16": "16-bit greyscale image", "I;16B": "16-bit greyscale image", "I;16L": "16-bit greyscale image",
              "I;16N": "16-bit greyscale image", "F": "32-bit floating-point greyscale image"}


def mode_words(mode: str) -> str:
    """A PIL mode ('I;16', 'CMYK', ...) in plain words ('16-bit greyscale image')."""
    return MODE_WORDS.get(mode) or ("16-bit greyscale image" if mode.startswith("I;16") else f"image in {mode} mode")


@dataclass
class LoadedImage:
    """A decoded image.

    rgb:         (H, W, 3) uint8, upright (EXIF applied), longest side <= max_side.
    scale:       loaded size / original size (same on both axes; 1.0 when not resized).
    orig_size:   (W, H) of the original after EXIF transpose.
    source_mode: the file's PIL mode before conversion ('RGB', 'CMYK', 'I;16', 'P', ...).
    name:        file name (or '<bytes>' / the upload's name).
    """

    rgb: np.ndarray
    scale: float
    orig_size: tuple[int, int]
    source_mode: str
    name: str


# ----------------------------------------------------------------------------- input


def _read_source(source: Source, max_bytes: int, name: str | None = None) -> tuple[object, str, str]:
    """Return (something Image.open accepts, short name, name for messages); ``name`` names bytes
    and file-likes (an upload's file name) in place of '<bytes>' / their ``.name``."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = str(path)
        if not path.exists():
            raise ImageError(label, "no such file")
        if path.is_dir():
            raise ImageError(label, "is a directory, not an image file")
        size = path.stat().st_size
        if size == 0:
            raise ImageError(label, "empty file (0 bytes)")
        if size > max_bytes:
            raise ImageError(label, f"file too large: {size} bytes (limit {max_bytes})")
        return path, path.name, label
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "<bytes>"
    elif hasattr(source, "read") or hasattr(source, "getvalue"):
        label = name or os.path.basename(str(getattr(source, "name", "") or "")) or "<upload>"
        try:
            if hasattr(source, "getvalue"):      # BytesIO / Streamlit UploadedFile: position-independent
                data = source.getvalue()
            else:
                data = source.read(max_bytes + 1)
        except (OSError, ValueError) as exc:
            raise ImageError(label, f"cannot read the upload ({exc})") from exc
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError(label, "the file-like object did not return bytes (open it in binary mode)")
        data = bytes(data)
    else:
        raise TypeError(f"load_image: expected a path, bytes or a binary file-like, got {type(source).__name__}")
    if len(data) == 0:
        raise ImageError(label, "empty file (0 bytes)")
    if len(data) > max_bytes:
        raise ImageError(label, f"file too large: {len(data)} bytes (limit {max_bytes})")
    return io.BytesIO(data), label, label


# ----------------------------------------------------------------------------- orientation


def _exif_orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:       # a broken EXIF block must not make the picture unreadable
        return 1
    return value if 1 <= value <= 8 else 1


# ----------------------------------------------------------------------------- public API


def load_image(source: Source, max_side: int | None = ImageConfig.max_side,
               cfg: ImageConfig = ImageConfig(), name: str | None = None) -> LoadedImage:
    """Decode ``source`` to an upright RGB uint8 image whose longest side is at most ``max_side``.

    source:   a path, bytes, or a binary file-like (e.g. a Streamlit UploadedFile).
    max_side: cap on the longest side (px); None or 0 keeps the full size. Never upscales.
    cfg:      ``max_pixels`` / ``max_bytes`` guards against decompression bombs and huge files.
    name:     the name of bytes / a file-like in messages and LoadedImage.name (e.g. the upload's
              file name); ignored for paths, which are named by themselves.

    Raises ImageError for anything unreadable, TypeError for a wrong argument type.
    """
    if max_side is not None and (not isinstance(max_side, (int, np.integer)) or max_side < 0):
        raise ValueError(f"load_image: max_side must be a positive int or None, got {max_side!r}")
    fp, name, label = _read_source(source, cfg.max_bytes, name)
    try:
        with Image.open(fp, formats=ALLOWED_FORMATS) as im:
            return _decode(im, name, label, max_side, cfg)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(label, f"too large: refused as a decompression bomb ({exc})") from exc
    except PermissionError as exc:
        raise ImageError(label, "permission denied (cannot read the file)") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(label, "not an image (unrecognised or unsupported file format)") from exc
    except (OSError, SyntaxError, EOFError, ValueError, IndexError, KeyError) as exc:
        raise ImageError(label, f"truncated or corrupt image data ({exc})") from exc
    except MemoryError as exc:
        raise ImageError(label, "too large to decode in memory") from exc


def _decode(im: Image.Image, name: str, label: str, max_side: int | None,
            cfg: ImageConfig) -> LoadedImage:
    """Bounded memory: the decoded file is the only full-size copy. JPEG decodes at 1/2-1/8 scale
    (draft); other formats are box-reduced in PIL (16-bit, palette and bilevel strip by strip) and
    resized before any 8-bit or float array exists; EXIF rotation is applied to the small image."""
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ImageError(label, f"invalid image size {width}x{height}")
    if width * height > cfg.max_pixels:
        raise ImageError(label, f"too large: {width * height / 1e6:.1f} megapixels "
                                f"(limit {cfg.max_pixels / 1e6:.1f}); refused as a possible decompression bomb")
    source_mode = im.mode
    orientation = _exif_orientation(im)
    swap = orientation in _SWAPPING_ORIENTATIONS
    orig = (height, width) if swap else (width, height)

    scale = 1.0
    if max_side and max(width, height) > max_side:
        scale = max_side / max(width, height)
    stored = (max(1, round(width * scale)), max(1, round(height * scale)))   # before EXIF rotation

    if scale < 1.0 and im.format in ("JPEG", "MPO"):
        # Let libjpeg decode at 1/2, 1/4 or 1/8 directly (never below the requested size).
        im.draft(None, stored)
    im.load()                                   # truncated / corrupt data surfaces here
    value_range = finite_range(im) if im.mode in HIGH_DEPTH_MODES else None
    if im.size != stored:
        factor = int(min(im.size[0] / stored[0], im.size[1] / stored[1]) / REDUCING_GAP)
        if factor >= 2:
            im = shrink(im, factor)
        mode = reducible_mode(im)
        if mode not in (im.mode, "I"):          # palette/bilevel: resize() would use nearest neighbour
            im = im.convert(mode)               # (small here: at most REDUCING_GAP x the target side)
        im = im.resize(stored, Image.Resampling.LANCZOS)
    if orientation in _TRANSPOSE:
        im = im.transpose(_TRANSPOSE[orientation])
    rgb = to_rgb_array(im, value_range)
    return LoadedImage(rgb=rgb, scale=float(scale), orig_size=(int(orig[0]), int(orig[1])),
                       source_mode=source_mode, name=name)


def thumbnail(rgb: np.ndarray, size: int = 256) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 with max(h, w) <= size (aspect kept, never upscaled)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"thumbnail: expected an (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}")
    if size <= 0:
        raise ValueError(f"thumbnail: size must be positive, got {size}")
    h, w = rgb.shape[:2]
    if h == 0 or w == 0 or max(h, w) <= size:
        return rgb.copy()
    s = size / max(h, w)
    target = (max(1, round(w * s)), max(1, round(h * s)))
    small = Image.fromarray(rgb).resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(small, dtype=np.uint8).copy()


NOT_A_FILE = "not a regular file (a named pipe, socket or device): not read"


def special_file(path: str | os.PathLike) -> bool:
    """True for a named pipe, socket or device (after symlinks): opening a FIFO blocks until a writer
    comes. A missing file or a dangling link is False (its reader reports it)."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def file_sha1(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-1 of a file's bytes, read in chunks (constant memory); ImageError for a named pipe,
    socket or device (never opened)."""
    if special_file(path):
        raise ImageError(Path(path).name, NOT_A_FILE)
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def bytes_sha1(data: bytes | bytearray | memoryview) -> str:
    """Hex SHA-1 of an in-memory byte string."""
    return hashlib.sha1(bytes(data)).hexdigest()
