"""The app's pictures: thumbnails, their data URIs and gallery images at the feature resolution,
cached by path and modification time (``st.cache_data``), so a changed file is read again."""
from __future__ import annotations

import base64
import io

import numpy as np
import streamlit as st
from PIL import Image

from .. import pipeline as P
from ..images import ImageError, load_image, thumbnail


@st.cache_data(show_spinner=False, max_entries=4000)
def thumb(path: str, mtime: float, size: int = 160) -> np.ndarray:
    try:
        return thumbnail(load_image(path, max_side=max(size * 2, 256)).rgb, size)
    except ImageError:
        return np.full((size, size, 3), 200, np.uint8)


def _path_mtime(eng: P.Engine, j: int) -> tuple[str, float]:
    """Gallery image j's path and modification time (the cache key of its thumbnails)."""
    p = eng.li.image_path(int(j))
    try:
        return str(p), p.stat().st_mtime
    except OSError:
        return str(p), 0.0


def thumb_of(eng: P.Engine, j: int, size: int = 160) -> np.ndarray:
    return thumb(*_path_mtime(eng, j), size)


def data_uri(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


@st.cache_data(show_spinner=False, max_entries=4000)
def thumb_uri(path: str, mtime: float, size: int = 64) -> str:
    return data_uri(thumb(path, mtime, size))


def thumb_uri_of(eng: P.Engine, j: int, size: int = 64) -> str:
    return thumb_uri(*_path_mtime(eng, j), size)


@st.cache_data(show_spinner=False, max_entries=64)
def gallery_rgb(path: str, mtime: float, max_side: int) -> np.ndarray:
    """A gallery image at the feature resolution (its keypoints' pixel frame)."""
    return load_image(path, max_side=max_side).rgb
