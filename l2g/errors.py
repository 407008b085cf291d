"""One exception root for l2g (kornia's ``core/exceptions.py`` style).

Every error that bad input, a missing file or a damaged index can cause is an
``L2GError``; its message names the file and says what to do. The CLI,
``evaluate`` and the app catch ``L2GError`` alone, so a programming error (a
plain ``ValueError``, ``KeyError``, ...) is never mistaken for bad input.

The built-in bases (``ValueError``, ``RuntimeError``) are kept for callers
that caught them before the root existed.
"""
from __future__ import annotations


class L2GError(Exception):
    """Root of every l2g error: something the user can fix, with a message that says how."""


class ImageError(L2GError, ValueError):
    """Anything that cannot be turned into an RGB image; ``str(err)`` names the file and the reason."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class NoKeypointsError(L2GError, ValueError):
    """The image yielded no keypoints (flat, tiny or blank)."""


class ExtractorUnavailable(L2GError, RuntimeError):
    """A registered extractor cannot run here (e.g. its weights are not on disk)."""


class DatasetError(L2GError, ValueError):
    """A dataset folder, ground-truth file or download that cannot be used; the message says why."""


class IndexFormatError(L2GError, RuntimeError):
    """The index folder is missing, incompatible or damaged; the message names the file and the fix."""


class UnknownMethod(L2GError, ValueError):
    """A retrieval method name that is not in the registry (``l2g.methods.METHODS``)."""


class QueryError(L2GError, ValueError):
    """A query that cannot be made from the given input (e.g. a too small query rectangle)."""


class ConfigError(L2GError, ValueError):
    """An option or preset that does not map to a valid configuration."""


class GalleryError(L2GError, ValueError):
    """A gallery folder the app may not open (outside every allowed root)."""
