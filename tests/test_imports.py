"""The package's import structure: every module imports alone, no import cycles, the engine's chain
runs one way (config, images -> features -> index -> search -> graph -> mds -> rerank), and l2g/ outside
l2g/app/ never imports streamlit."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "l2g"
CHAIN = ["config", "images", "features", "index", "search", "graph", "mds", "rerank"]   # may import leftwards only
# nothing below imports these
TOP = {"pipeline", "evaluate", "viz", "viz_howto", "cli", "commands", "check", "bench", "app"}
SKIP = {"l2g.__main__"}                                                                  # runs the CLI on import


def _name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _targets(mod: str, node: ast.AST, is_pkg: bool) -> list:
    """The l2g modules an import statement of module ``mod`` loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name == "l2g" or a.name.startswith("l2g.")]
    if node.level == 0:
        base = node.module or ""
        if not (base == "l2g" or base.startswith("l2g.")):
            return []
    else:
        pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([node.module] if node.module else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _imports(mod: str) -> dict:
    """{'l2g' modules imported by mod (module level or inside functions): line}; also 'streamlit' if imported."""
    path = MODULES[mod]
    out = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import | ast.ImportFrom):
            roots = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if node.__dict__.get("level", 0) == 0 and any(r.split(".")[0] == "streamlit" for r in roots):
                out.setdefault("streamlit", node.lineno)
            for t in _targets(mod, node, path.name == "__init__.py"):
                if t != mod:
                    out.setdefault(t, node.lineno)
    return out


GRAPH = {m: {t: ln for t, ln in _imports(m).items() if t in MODULES} for m in MODULES}


def _short(mod: str) -> str:
    return mod.split(".")[1] if mod.count(".") >= 1 else mod


def test_module_discovery_sees_the_engine():
    assert {f"l2g.{m}" for m in CHAIN + ["pipeline", "cli"]} <= set(MODULES)
    assert GRAPH["l2g.rerank"].keys() >= {"l2g.mds", "l2g.graph"}       # the parser reads relative imports


def test_no_import_cycles():
    """Depth-first search over every import (module level and lazy ones inside functions)."""
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_engine_chain_imports_run_one_way():
    bad = []
    for i, m in enumerate(CHAIN):
        for t, line in GRAPH[f"l2g.{m}"].items():
            if _short(t) in CHAIN[i + 1:]:
                bad.append(f"l2g/{m}.py:{line} imports {t}, which comes after it in the chain")
    for m, deps in GRAPH.items():
        if _short(m) in TOP or m in SKIP or m == "l2g":
            continue
        bad += [f"{MODULES[m].relative_to(PKG.parent)}:{ln} imports {t} (pipeline, evaluate, viz, cli, bench "
                f"and app sit on top)" for t, ln in deps.items() if _short(t) in TOP]
    assert not bad, "\n".join(bad)


def test_engine_never_imports_streamlit_in_the_source():
    bad = [f"{MODULES[m].relative_to(PKG.parent)}:{_imports(m)['streamlit']}" for m in MODULES
           if not m.startswith("l2g.app") and "streamlit" in _imports(m)]
    assert not bad, f"only l2g/app/ may import streamlit: {bad}"


_ALONE = r"""
import importlib, json, sys, traceback
def alone(name):
    for k in [k for k in sys.modules if k == "l2g" or k.startswith("l2g.")]:
        del sys.modules[k]
    try:
        importlib.import_module(name)
    except BaseException:
        return traceback.format_exc(limit=-3)
engine, app = json.loads(sys.argv[1])
errors = {m: e for m in engine if (e := alone(m))}
streamlit = "streamlit" in sys.modules
errors.update({m: e for m in app if (e := alone(m))})
print(json.dumps({"errors": errors, "streamlit_after_engine": streamlit}))
"""


@pytest.mark.timeout(600)
def test_every_module_imports_alone_in_a_fresh_interpreter():
    """One fresh interpreter imports each module with every l2g module cleared from sys.modules first
    (third-party libraries stay loaded, so this takes seconds); the engine modules come first and must not
    load streamlit."""
    mods = sorted(set(MODULES) - SKIP)
    engine = [m for m in mods if not m.startswith("l2g.app")]
    app = [m for m in mods if m.startswith("l2g.app")]
    out = subprocess.run([sys.executable, "-c", _ALONE, json.dumps([engine, app])], cwd=PKG.parent,
                         capture_output=True, text=True, timeout=540)
    assert out.returncode == 0, out.stderr[-3000:]
    rep = json.loads(out.stdout.strip().splitlines()[-1])
    assert not rep["errors"], "\n".join(f"{m}:\n{e}" for m, e in rep["errors"].items())
    assert not rep["streamlit_after_engine"], "importing the engine (l2g/ outside l2g/app/) loaded streamlit"


def test_config_is_the_root_and_featkey_sits_on_it():
    """config.py (every default, the named presets included) imports no other l2g module and stays under the
    module size limit; the feature-settings key, which grew it past 300 lines, is l2g.featkey, on top of it."""
    assert GRAPH["l2g.config"] == {}
    assert set(GRAPH["l2g.featkey"]) == {"l2g.config"}
    assert len(MODULES["l2g.config"].read_text().splitlines()) <= 300
