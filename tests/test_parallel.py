"""Parallel indexing (l2g.parallel): worker processes extract, the result is a serial build's.

A build with two workers gives the same manifest, the same features files (byte for byte)
and the same rankings as a build in one process; a bad file is reported, not fatal; a build
killed with SIGKILL resumes without extracting anything it finished; a worker that dies ends
the build with a clear error, the finished features kept.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from l2g import options
from l2g.cli import parser
from l2g.errors import ConfigError
from l2g.index import build_index, read_manifest
from l2g.parallel import n_workers
from l2g.search import local_search

REPO = Path(__file__).resolve().parent.parent
SMALL_OPTS = ("--features", "400", "--max-side", "480")   # conftest's small_cfg


def _rankings(li) -> dict:
    out = {}
    for i in range(li.n_images):
        r = local_search(li, li.features(i), li.cfg.search, exclude=i, with_matches=False)
        out[li.paths[i]] = (list(r.paths), np.round(r.scores, 6).tolist())
    return out


def _features(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted((folder / "features").glob("*.npz"))}


def _same_index(a: Path, b: Path) -> None:
    ma, mb = read_manifest(a), read_manifest(b)
    assert ma["images"] == mb["images"] and ma["failed"] == mb["failed"]
    assert {k: v for k, v in ma["files"].items() if k.startswith("features/")} == \
           {k: v for k, v in mb["files"].items() if k.startswith("features/")}
    assert _features(a) == _features(b)


@pytest.fixture(scope="module")
def serial(small_gallery, small_cfg, tmp_path_factory):
    """A one-process build of the small gallery (its bad files included): folder, index, report."""
    root, _ = small_gallery
    folder = tmp_path_factory.mktemp("serial") / "ix"
    li, rep = build_index(root, folder, small_cfg.replace(build__workers=1))
    return folder, li, rep


def _parallel_cfg(small_cfg):
    return small_cfg.replace(build__workers=2, build__parallel_min=1)


def test_workers_default_to_every_core_and_are_an_option(small_cfg):
    assert n_workers(small_cfg) == os.cpu_count()
    assert n_workers(small_cfg.replace(build__workers=3)) == 3
    assert options.make_config(None, {"L2G_WORKERS": "3"}).build.workers == 3
    assert options.config_from_args(parser().parse_args(["index", "f", "--workers", "2"]), {}).build.workers == 2
    with pytest.raises(ConfigError):
        options.make_config(workers=0)


def test_parallel_build_equals_serial_and_reports_bad_files(serial, small_gallery, small_cfg, tmp_path):
    root, keep = small_gallery
    folder, sli, srep = serial
    seen = []
    li, rep = build_index(root, tmp_path / "ix", _parallel_cfg(small_cfg), progress=lambda d, t, m: seen.append(d))
    assert rep.added == srep.added == keep and not rep.reused
    # broken.jpg fails in a worker (truncated JPEG), notes.jpg / empty.png already when hashed
    assert rep.failed == srep.failed and {r for r, _ in rep.failed} >= {"broken.jpg", "notes.jpg", "empty.png"}
    assert rep.empty == srep.empty
    assert seen == sorted(seen) and seen[-1] == len(keep) + 3     # every image reported, in order
    _same_index(folder, tmp_path / "ix")
    assert _rankings(li) == _rankings(sli)
    # an unchanged re-run with workers extracts nothing (and starts none)
    li2, rep2 = build_index(root, tmp_path / "ix", _parallel_cfg(small_cfg))
    assert rep2.skipped == keep and not rep2.added and not rep2.reused


def _cli(*args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "l2g", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_features(p: subprocess.Popen, folder: Path, k: int, timeout: float = 300) -> None:
    t0 = time.time()
    while len(list((folder / "features").glob("*.npz"))) < k:
        assert p.poll() is None, p.communicate()
        assert time.time() - t0 < timeout
        time.sleep(0.02)


def test_kill_9_of_a_parallel_build_then_resume(serial, small_gallery, small_cfg, tmp_path):
    root, keep = small_gallery
    folder = tmp_path / "ix"
    p = _cli("index", root, "--out", folder, "--workers", "2", "--no-global", *SMALL_OPTS)
    _wait_features(p, folder, 3)
    os.killpg(p.pid, signal.SIGKILL)            # the build and its workers: no cleanup runs
    p.communicate()
    done = {f.stem for f in (folder / "features").glob("*.npz")}
    assert 3 <= len(done) < len(keep) and not (folder / "manifest.json").exists()
    li, rep = build_index(root, folder, _parallel_cfg(small_cfg))
    sha = {e.path: e.sha1 for e in li.images}
    assert {sha[r] for r in rep.reused} == done                     # nothing finished is extracted again
    assert sorted(rep.added + rep.reused) == keep
    _same_index(serial[0], folder)
    assert _rankings(li) == _rankings(serial[1])


def _workers_of(pid: int) -> list[int]:
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(k) for k in kids if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the workers")
def test_a_dead_worker_is_a_clear_error_and_keeps_finished_features(small_gallery, small_cfg, tmp_path):
    root, keep = small_gallery
    folder = tmp_path / "ix"
    p = _cli("index", root, "--out", folder, "--workers", "2", "--no-global", *SMALL_OPTS)
    _wait_features(p, folder, 2)
    workers = _workers_of(p.pid)
    assert workers, "no worker process found"
    os.kill(workers[0], signal.SIGKILL)
    out, err = p.communicate(timeout=120)          # does not hang
    assert p.returncode == 2 and "worker stopped unexpectedly" in err, err
    done = len(list((folder / "features").glob("*.npz")))
    assert done >= 2
    li, rep = build_index(root, folder, _parallel_cfg(small_cfg))
    assert len(rep.reused) == done and sorted(rep.added + rep.reused) == keep
