"""Parallel indexing (l2g.parallel): worker processes extract, the result is a serial build's.

A build with two workers gives the same manifest, the same features files (byte for byte)
and the same rankings as a build in one process; a bad file is reported, not fatal; a build
killed with SIGKILL resumes without extracting anything it finished; a worker that dies ends
the build with a clear error, the finished features kept.
"""
from __future__ import annotations

import dataclasses
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
from l2g.errors import ConfigError, ExtractorUnavailable
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


def test_workers_do_not_run_the_callers_main_module(tiny_gallery, tiny_cfg, tmp_path, monkeypatch):
    """An app embedding l2g may have a main module that cannot run outside it (Streamlit installs its
    script as __main__, with names only its runner defines): spawn re-runs __main__ in each child by
    default, and the build's workers died of it. They must not run it at all; other spawns still do."""
    import multiprocessing as mp
    import types

    ran = tmp_path / "main_ran"
    script = tmp_path / "host_script.py"
    script.write_text(f"from pathlib import Path\nPath({str(ran)!r}).touch()\nrender(*__args)\n")
    main = types.ModuleType("__main__")
    main.__file__, main.__spec__ = str(script), None
    monkeypatch.setitem(sys.modules, "__main__", main)
    li, rep = build_index(tiny_gallery, tmp_path / "ix", tiny_cfg.replace(build__workers=2, build__parallel_min=1))
    assert len(rep.added) == li.n_images == 6 and not rep.failed
    assert not ran.exists(), "a worker ran the caller's __main__"
    assert sys.modules["__main__"] is main
    assert "init_main_from_path" in mp.spawn.get_preparation_data("other")   # any other spawn: unchanged


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


def _building(root, folder, n: int):
    """A 2-worker build of ``root`` into ``folder`` once n features are written: (process, its workers)."""
    p = _cli("index", root, "--out", folder, "--workers", "2", "--no-global", *SMALL_OPTS)
    _wait_features(p, folder, n)
    return p, _workers_of(p.pid)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the workers")
def test_workers_exit_when_their_build_is_killed(small_gallery, small_cfg, tmp_path):
    """kill -9 of the build process alone (not its group): its extraction workers must not live on."""
    root, _ = small_gallery
    p, workers = _building(root, tmp_path / "ix", 1)
    assert workers
    os.kill(p.pid, signal.SIGKILL)
    p.wait()                                         # not communicate(): a surviving worker holds its pipes open
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.2)
    alive = [w for w in workers if Path(f"/proc/{w}").exists()]
    for w in alive:                                  # leave nothing behind when the test fails
        os.kill(w, signal.SIGKILL)
    p.communicate()
    assert not alive, f"workers {alive} outlived their build"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the workers")
def test_a_dead_worker_is_a_clear_error_and_keeps_finished_features(small_gallery, small_cfg, tmp_path):
    root, keep = small_gallery
    folder = tmp_path / "ix"
    p, workers = _building(root, folder, 2)
    assert workers, "no worker process found"
    os.kill(workers[0], signal.SIGKILL)
    out, err = p.communicate(timeout=120)          # does not hang
    assert p.returncode == 2 and "worker stopped unexpectedly" in err, err
    done = len(list((folder / "features").glob("*.npz")))
    assert done >= 2
    li, rep = build_index(root, folder, _parallel_cfg(small_cfg))
    assert len(rep.reused) == done and sorted(rep.added + rep.reused) == keep


def _share_alike(a, b) -> float:
    """Share of b's keypoints with one of a's within 0.05 px, at the same scale and with the same descriptor
    (1e-3). Rows are not compared in order: keypoints of nearly equal response may swap places, or
    trade the last place, when a batch rounds them differently."""
    d = np.abs(b.kpts[:, None, :3] - a.kpts[None, :, :3]).max(2)
    j = d.argmin(1)
    return float(((d.min(1) < 0.05) & (np.abs(b.desc - a.desc[j]).max(1) < 1e-3)).mean())


def test_batched_in_process_build_matches_the_serial_build(serial, small_gallery, small_cfg, tmp_path):
    """The GPU's path (in-process, images of equal size batched) run on the CPU: same images, same
    failures, features equal up to float rounding, same top results."""
    root, keep = small_gallery
    folder, sli, srep = serial
    seen = []
    cfg = small_cfg.replace(build__device="cpu", build__batch=4, build__workers=2, build__parallel_min=1)
    li, rep = build_index(root, tmp_path / "ix", cfg, progress=lambda d, t, m: seen.append(d))
    assert rep.added == srep.added == keep and rep.failed == srep.failed and rep.empty == srep.empty
    assert seen == sorted(seen) and seen[-1] == len(keep) + 3
    assert not list(tmp_path.glob("ix/**/*.tmp*"))
    for i in range(li.n_images):
        a, b = sli.features(i), li.features(i)
        assert a.size == b.size and abs(len(a) - len(b)) <= 2
        assert _share_alike(a, b) > 0.97
    ra, rb = _rankings(sli), _rankings(li)
    assert {p: r[0][:3] for p, r in ra.items()} == {p: r[0][:3] for p, r in rb.items()}


def test_device_and_sift_options(tmp_path):
    import torch

    here = "cuda" if torch.cuda.is_available() else "cpu"
    assert options.make_config().build.device == "auto"
    assert options.make_config(None, {"L2G_DEVICE": "cpu"}).build.device == "cpu"
    args = parser().parse_args(["eval", "demo", "--device", "cpu", "--upright", "--backend", "pyramid-nd"])
    cfg = options.config_from_args(args, {})
    assert cfg.build.device == "cpu" and cfg.features.upright and not cfg.features.double_image
    assert cfg.features.name.endswith("-pyramid-nd-up")
    assert options.make_config(None, {"L2G_BACKEND": "pyramid-nd"}).features.double_image is False
    for env in ({}, {"L2G_DEVICE": "cpu"}):    # the preset's backend is kept, whatever the device
        assert options.make_config("draft", env).features == dataclasses.replace(cfg.features, upright=False)
    assert parser().parse_args(["search", "q.jpg", "--index", "ix", "--device", "cpu"]).device == "cpu"
    # the device never changes what is stored: the backend is pyramid unless asked for (patch pays on a GPU)
    assert options.make_config().features == options.make_config(device="cpu").features
    assert options.make_config().features.backend == "pyramid"
    assert options.make_config(None, {"L2G_BACKEND": "patch"}).features.name.endswith("-patch")
    for bad, match in [({"device": "tpu"}, "device must be"), ({"backend": "auto"}, "backend must be")]:
        with pytest.raises(ConfigError, match=match):
            options.make_config(**bad)
    with pytest.raises(ConfigError, match="L2G_UPRIGHT"):
        options.make_config(None, {"L2G_UPRIGHT": "maybe"})
    if here == "cpu":   # asked for, but absent: refused before anything is written
        from l2g.cli import main

        (tmp_path / "g").mkdir()
        assert main(["index", str(tmp_path / "g"), "--out", str(tmp_path / "ix"), "--device", "cuda"]) == 2
        assert not (tmp_path / "ix").exists()
        with pytest.raises(ExtractorUnavailable, match="sees no CUDA GPU"):
            build_index(tmp_path / "g", tmp_path / "ix2", options.make_config(device="cuda"))
        assert not list((tmp_path / "ix2").rglob("*.npz"))


def test_search_on_a_missing_gpu_is_a_clear_error(serial, small_gallery, capsys):
    import torch

    from l2g.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    root, keep = small_gallery
    folder = str(serial[0])
    assert main(["search", str(root / keep[0]), "--index", folder, "--device", "cuda"]) == 2
    assert "sees no CUDA GPU" in capsys.readouterr().err
    assert main(["search", str(root / keep[0]), "--index", folder, "--device", "cpu", "--top", "1", "--json"]) == 0
    assert '"rank": 1' in capsys.readouterr().out
