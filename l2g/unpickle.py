"""A restricted unpickler for untrusted ground-truth files (Revisited Oxford/Paris ``gnd_*.pkl``).

Only plain containers, scalars and numpy arrays are admitted, no other callable, and nothing larger
than ``config.PICKLE_MAX_BYTES``: an array, bytes or list over it is refused before it is allocated.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
from typing import ClassVar

from l2g import config
from l2g.errors import DatasetError

_SAFE_BUILTINS = frozenset({"dict", "list", "tuple", "set", "str", "int", "float", "bool", "complex",
                            "bytes", "bytearray", "frozenset", "slice", "range"})
_SAFE_NUMPY = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    # protocol-5 pickles rebuild arrays from a byte buffer (harmless: frombuffer + reshape)
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    # protocol-2 pickles written by Python 3 store bytes as _codecs.encode(text, 'latin1')
    ("_codecs", "encode"),
}


def _too_big(what: str, size: int) -> DatasetError:
    return DatasetError(f"refusing a {what} of {size:,} bytes or items from an untrusted pickle "
                        f"(limit {config.PICKLE_MAX_BYTES:,}: config.PICKLE_MAX_BYTES)")


def _check_array(shape, dtype) -> None:
    """Refuse an array whose shape x itemsize exceeds the limit (Python ints: no overflow)."""
    import numpy as np

    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    try:
        dims = tuple(int(d) for d in dims)
        itemsize = np.dtype(dtype).itemsize
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"invalid array shape or dtype in an untrusted pickle ({exc})") from None
    n = itemsize
    for d in dims:
        if d < 0:
            raise DatasetError(f"invalid array shape {dims} in an untrusted pickle")
        n *= d
    if n > config.PICKLE_MAX_BYTES:
        raise _too_big(f"numpy array of shape {dims}", n)


def _checked_sized(fn):
    """A builtin constructor that refuses arguments asking for more than the limit."""
    def make(*args, **kw):
        for a in args:
            size = a if isinstance(a, int) and fn in (bytes, bytearray) else (
                len(a) if isinstance(a, (range, str, bytes, bytearray, list, tuple, set, frozenset, dict)) else 0)
            if size > config.PICKLE_MAX_BYTES:
                raise _too_big(fn.__name__, size)
        return fn(*args, **kw)
    make.__name__ = fn.__name__
    return make


def _checked_numpy(module: str, name: str, fn):
    """numpy.ndarray(shape, dtype) and _reconstruct(type, shape, dtype) allocate: check first."""
    import numpy as np

    if name == "ndarray":
        def make(shape, dtype=float, *args, **kw):
            _check_array(shape, dtype)
            return np.ndarray(shape, dtype, *args, **kw)
        return make
    if name == "_reconstruct":
        def reconstruct(subtype, shape, dtype):
            _check_array(shape, dtype)
            return fn(np.ndarray if not isinstance(subtype, type) else subtype, shape, dtype)
        return reconstruct
    return fn


class _RestrictedUnpickler(pickle._Unpickler):
    """Admits plain containers/scalars and numpy array reconstruction, nothing else, and nothing
    larger than config.PICKLE_MAX_BYTES. The pure-Python unpickler, so that BUILD (an array's
    __setstate__, which allocates object arrays by shape) can be checked as well."""

    dispatch: ClassVar[dict] = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str):
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return _checked_sized(super().find_class("builtins", name))
        if (module, name) in _SAFE_NUMPY:
            fn = super().find_class(module.replace("numpy.core.", "numpy._core."), name)
            return _checked_numpy(module, name, fn)
        raise DatasetError(f"refusing to load {module}.{name} from an untrusted pickle "
                           "(only plain data and numpy arrays are allowed)")

    def load_build(self):
        state, inst = self.stack[-1], self.stack[-2]
        if type(inst).__name__ == "ndarray" and isinstance(state, tuple) and len(state) >= 4:
            _check_array(state[1], state[2])
        return pickle._Unpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = load_build


def safe_load_pickle(path: str | os.PathLike):
    """Unpickle an untrusted ground-truth file without running any code from it.

    The file is read whole first (at most config.PICKLE_MAX_BYTES), so a forged length field
    cannot make a read allocate; arrays, bytes and lists over the limit are refused before they
    are allocated. Every problem is a DatasetError naming the file.
    """
    try:
        size = os.path.getsize(path)
        if size > config.PICKLE_MAX_BYTES:
            raise _too_big("pickle file", size)
        with open(path, "rb") as f:
            data = f.read()
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()  # latin1: Python 2 numpy data
    except DatasetError as exc:
        raise DatasetError(f"{path}: {exc}") from None
    except MemoryError:
        raise DatasetError(f"{path}: the pickle asks for more memory than is available; refused") from None
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, struct.error) as exc:
        raise DatasetError(f"{path}: not a readable ground-truth pickle ({exc})") from exc
