"""pyproject.toml against requirements.txt: the same pins, the console script resolves, the tools are set up."""
from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _split(req: str) -> tuple[str, str]:
    """'faiss-cpu==1.15.1  # comment' -> ('faiss-cpu', '==1.15.1')."""
    req = req.split("#", 1)[0].strip()
    m = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", req)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _requirements() -> dict:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return dict(_split(ln) for ln in lines if ln.split("#", 1)[0].strip() and not ln.lstrip().startswith("-"))


def test_pyproject_pins_match_requirements_txt():
    project = PYPROJECT["project"]
    ours = dict(_split(d) for d in project["dependencies"] + project["optional-dependencies"]["test"])
    reqs = _requirements()
    assert ours == reqs, {k: (ours.get(k), reqs.get(k)) for k in set(ours) | set(reqs) if ours.get(k) != reqs.get(k)}


def test_requirements_install_the_package_itself():
    lines = [ln.split("#", 1)[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    assert "-e ." in lines


def test_console_script_resolves():
    target = PYPROJECT["project"]["scripts"]["l2g"]
    mod, _, fn = target.partition(":")
    assert callable(getattr(importlib.import_module(mod), fn))


def test_tool_settings():
    pytest_ini = PYPROJECT["tool"]["pytest"]["ini_options"]
    assert pytest_ini["testpaths"] == ["tests"] and any(m.startswith("slow:") for m in pytest_ini["markers"])
    assert PYPROJECT["tool"]["ruff"]["line-length"] == 120
    assert "ruff check ." in (ROOT / ".ci" / "run").read_text()
