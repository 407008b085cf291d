"""``python -m l2g bench``: runs the benchmarks of the repository's ``benchs/`` folder (one question per
script, as faiss's ``benchs/``) and writes one JSON report; see ``benchs/run_all.py``.

``benchs/`` sits beside ``l2g/`` in a clone and is not installed with the package; it is imported lazily,
from the clone this package was loaded from when it is not importable already.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

from .errors import L2GError

CLONE = Path(__file__).resolve().parent.parent


def load_benchs(clone: Path = CLONE):
    """The ``benchs.run_all`` module; L2GError with what to do when the folder is missing."""
    try:
        return importlib.import_module("benchs.run_all")
    except ModuleNotFoundError as e:
        if e.name not in ("benchs", "benchs.run_all"):
            raise
    if not (clone / "benchs" / "run_all.py").is_file():
        raise L2GError(f"the benchmarks live in the repository's benchs/ folder, not found beside {clone / 'l2g'}"
                           ": run `python -m l2g bench` from a clone of the repository")
    sys.path.insert(0, str(clone))
    return importlib.import_module("benchs.run_all")


def main(args) -> int:
    """Run every benchmark; args.out (JSON path), args.sizes (gallery sizes), args.quick (smoke run)."""
    return load_benchs().main(args)
